/*
 * backoff.h - when to try again.
 *
 *   delay(n) = min(cap, base * 2^(n-1)) + jitter,   jitter uniform in [0, 1 s)
 *
 * n is the number of consecutive failures (of a target, or of one event's
 * rejections). A receiver's Retry-After wins when it is longer.
 * SLUICE_JITTER=0 turns the jitter off so tests can predict the schedule.
 */
#ifndef SLUICE_BACKOFF_H
#define SLUICE_BACKOFF_H

#include <stdint.h>

#define BACKOFF_BASE_MS 1000
#define BACKOFF_CAP_MS 60000
#define BACKOFF_JITTER_MS 1000

int64_t backoff_delay_ms(int64_t failures, int64_t retry_after_ms);

#endif
