/* Log-scaled latency histogram (see hist.h and docs/internals/analysis.md). The bucket of a value
 * is its bit length plus the next 5 bits below the leading one: values below 64 us get a bucket
 * each, every power of two above is split into 32 equal sub-buckets. hist_record runs on a
 * worker's hot path (no loop, no floating point); the rest runs wherever the copies are read. */
#include "core/hist.h"

#include <math.h>

/* 2^HIST_SUB_BITS sub-buckets per power of two; 1 + 1/32 bounds the ratio of a bucket's ends. */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
/* The first value past the last bucket: 2^27 us, about 134 s. */
#define HIST_MAX_BITS 27
#define HIST_LIMIT (1ULL << HIST_MAX_BITS)

/* Shifts run from 0 to HIST_MAX_BITS - 1 - HIST_SUB_BITS, and shift s ends at 32 * s + 63. */
_Static_assert(HIST_BUCKETS == (HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB,
               "HIST_BUCKETS must match the bucket scheme");

unsigned hist_bucket(uint64_t usec)
{
    /* Clamp first so the last bucket takes everything above the range; this compiles to a
     * conditional move. */
    uint64_t v = usec < HIST_LIMIT ? usec : HIST_LIMIT - 1;
    /* Index of the leading one; v | 1 keeps it defined for 0 and does not change it otherwise. */
    unsigned msb = 63u - (unsigned)__builtin_clzll(v | 1);
    /* How many low bits to drop so that 6 significant bits remain: 0 below 64 us, where the
     * value is its own bucket. */
    unsigned shift = msb > HIST_SUB_BITS ? msb - HIST_SUB_BITS : 0;

    /* v >> shift is in [32, 64) once shift > 0, so each power of two adds 32 buckets after the
     * 64 exact ones; below 64 the formula reduces to the value itself. */
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The smallest value of bucket b and the largest one (both held by it). */
static void bucket_range(unsigned b, uint64_t *lo, uint64_t *hi)
{
    unsigned shift = b < 2 * HIST_SUB ? 0 : b / HIST_SUB - 1;
    uint64_t mant = b - shift * HIST_SUB;

    *lo = mant << shift;
    *hi = ((mant + 1) << shift) - 1;
}

double hist_bucket_value(unsigned b)
{
    uint64_t lo, hi;

    if (b >= HIST_BUCKETS)
        b = HIST_BUCKETS - 1;
    bucket_range(b, &lo, &hi);
    /* Values are whole microseconds, so the midpoint is taken between the first and the last
     * integer the bucket holds: a one-value bucket reports that value exactly. */
    return sqrt((double)lo * (double)hi);
}

void hist_record(struct hist *h, uint64_t usec)
{
    h->counts[hist_bucket(usec)]++;
}

void hist_add(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
}

void hist_diff(struct hist *dst, const struct hist *a, const struct hist *b)
{
    /* A snapshot torn by a concurrent writer may run ahead of a later one in some bucket; a
     * wrapped-around count would then swamp every quantile, so clamp at zero. */
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] = a->counts[i] > b->counts[i] ? a->counts[i] - b->counts[i] : 0;
}

uint64_t hist_count(const struct hist *h)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        n += h->counts[i];
    return n;
}

double hist_quantile(const struct hist *h, double q)
{
    uint64_t n = hist_count(h);
    uint64_t rank, seen = 0;
    double x;

    if (n == 0)
        return 0;
    if (!(q > 0))
        q = 0;
    if (q > 1)
        q = 1;
    /* rank = ceil(q * n), minus a relative hair so that a product meant to be whole (0.99 * 100)
     * but rounded up in binary does not skip to the next sample. */
    x = q * (double)n;
    x -= x * 1e-12;
    rank = (uint64_t)ceil(x);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank)
            return hist_bucket_value(i);
    }
    return hist_bucket_value(HIST_BUCKETS - 1); /* unreachable: seen reaches n */
}
