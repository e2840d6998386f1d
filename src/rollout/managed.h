/* cutover's own instances of a version (`run:`): started on free ports through the supervisor,
 * adopted across restarts and hand-overs, retired after their drain or the rollback window,
 * and reported to the engine through rollout->on_crash when they crash in a loop. Control loop
 * only. */
#ifndef CUTOVER_ROLLOUT_MANAGED_H
#define CUTOVER_ROLLOUT_MANAGED_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct managed_set;
struct rollout;
struct service;

/* A set is named by the version it runs, or VERSION MANAGED_BASELINE for a plan's baseline
 * (rollout/baseline.h): fresh instances of that version with records and logs of their own.
 * Version names never hold a '+'; ${VERSION} is the name up to it. */
#define MANAGED_BASELINE "+baseline"

/* Starts the service's run.command as version on free ports; *targets gets the instances'
 * "127.0.0.1:PORT" (heap, NULL-terminated). -EINVAL / -EADDRNOTAVAIL with err. */
int managed_start(struct service *s, const char *version, struct managed_set **out, char ***targets,
                  size_t *ntargets, char *err, size_t errlen);
/* Checks that the service's run.command can start and that its port range has room for nstart
 * more instances, then creates version's set of run.instances slots with nothing started (the
 * rollout owns it). NULL with err otherwise. */
struct managed_set *managed_prepare(struct service *s, const char *version, size_t nstart,
                                    char *err, size_t errlen);
/* Starts slot i of the set on a free port; *target gets "127.0.0.1:PORT" (heap). -EBUSY (the
 * slot runs), -EADDRNOTAVAIL (no free port) or -EINVAL (cannot start), with err. */
int managed_start_one(struct managed_set *ms, size_t i, char **target, char *err, size_t errlen);
/* Stops slot i after after_ms (its drain); the slot counts as running until then no more. */
void managed_stop_one(struct managed_set *ms, size_t i, uint64_t after_ms);
/* Cancels the pending stop of one instance stopped by managed_stop_one (still draining, so
 * still running): returns 1 with its "127.0.0.1:PORT" in *target (heap), or 0 when none. */
int managed_unretire_one(struct managed_set *ms, char **target);
/* 1 when some set of s named version still has a process (running, draining or stopping). */
int managed_version_running(const struct service *s, const char *version);
size_t managed_slots(const struct managed_set *ms);
/* 1 when slot i has a process (running, restarting, or draining before its stop). */
int managed_slot_used(const struct managed_set *ms, size_t i);
int managed_slot_port(const struct managed_set *ms, size_t i);
/* Re-attaches to version's recorded instances (adopting live ones, starting dead ones on the
 * same ports when start_missing or when records exist). NULL when the service is unmanaged. */
struct managed_set *managed_restore(struct service *s, const char *version, char *const *targets,
                                    size_t n, int start_missing);
/* A rolling replacement resumes: version's recorded instances on targets are adopted into
 * slots 0..n-1 of a set of nslots (the others empty, for the batches to come); nothing is
 * started. NULL when the service is unmanaged. */
struct managed_set *managed_resume(struct service *s, const char *version, char *const *targets,
                                   size_t n, size_t nslots);
/* Adopts and stops the recorded instances of version (an interrupted change's new version, a
 * rolled-back one, a baseline: none has a place in the service) once the service's drain is
 * over: a predecessor that handed over just after the change ended may still be draining
 * requests to them. Forgets the records of dead ones. */
void managed_reap(struct service *s, const char *version);
/* Stops the set's processes after after_ms (0: now). */
void managed_retire(struct managed_set *ms, uint64_t after_ms);
/* Cancels a pending retirement (a rollback within the rollback window reuses the processes). */
void managed_keep(struct managed_set *ms);
/* How long after a switch a version's processes are kept: its drain, or run.rollback_window
 * when longer (plus a margin for the workers to see the switch). */
uint64_t managed_retire_delay(const struct service *s);
/* The daemon stops for good: instances that serve are left running for the next daemon to
 * adopt (unless run.stop_with_daemon), retiring ones are stopped. */
void managed_stop_all(struct rollout *r);
/* The daemon hands over: every instance is left to the successor. */
void managed_release_all(struct rollout *r);
void managed_free_all(struct rollout *r);
const char *managed_last_exit(const struct managed_set *ms);
int managed_running(const struct managed_set *ms);
json_t *managed_json(const struct managed_set *ms);

#endif
