/* Latency histogram with log-scaled buckets: constant memory, O(1) record, quantiles within 2 %
 * of exact. Bucket i holds the integers lo(i) .. lo(i+1) - 1; below 64 us each bucket holds one
 * value, above it lo(i+1) / lo(i) <= 33/32 (< 1.04), so reporting a bucket by its geometric
 * midpoint errs by at most 1.6 % (docs/internals/analysis.md). Values are microseconds,
 * 1 us .. ~100 s; smaller go to bucket 0, larger to the last bucket. No allocation; a histogram
 * has a single writer (one worker); readers sum copies. */
#ifndef CUTOVER_CORE_HIST_H
#define CUTOVER_CORE_HIST_H

#include <stddef.h>
#include <stdint.h>

/* 64 exact buckets for 0..63 us, then 32 per power of two up to 2^27 us (~134 s). */
#define HIST_BUCKETS 736

struct hist {
    uint64_t counts[HIST_BUCKETS];
};

/* Returns the bucket index for a value in microseconds. Pure; fast (no loop over buckets: use
 * the bit length plus a small table or a log computation). */
unsigned hist_bucket(uint64_t usec);

/* Returns the representative value (geometric midpoint, in us) of bucket b. */
double hist_bucket_value(unsigned b);

/* Adds one sample. */
void hist_record(struct hist *h, uint64_t usec);

/* dst += src, bucket by bucket. */
void hist_add(struct hist *dst, const struct hist *src);

/* dst = a - b, bucket by bucket (b is an earlier snapshot of a; never negative). */
void hist_diff(struct hist *dst, const struct hist *a, const struct hist *b);

/* Total number of samples. */
uint64_t hist_count(const struct hist *h);

/* The q-quantile (0 < q <= 1) in microseconds: the representative value of the bucket holding
 * the ceil(q * count)-th sample; 0 when empty. */
double hist_quantile(const struct hist *h, double q);

#endif
