/*
 * clock.h - "now", durations and timestamps.
 *
 * Every program takes now from $SLUICE_NOW (Unix milliseconds) when it is
 * set, so that backoff can be tested without sleeping.
 */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

int64_t now_ms(void);
/* Milliseconds from a monotonic clock: for timeouts and rates, never stored. */
int64_t mono_ms(void);
/* 2026-11-21T12:00:00.000Z; buf must hold 32 bytes. */
char *format_time(int64_t ms, char *buf);
/* "90", "90s", "15m", "2h", "7d", "500ms" -> milliseconds; -1 when malformed. */
int64_t parse_duration(const char *text);
/* "1h 3m", "42s", "800ms": a short human form of a duration. */
char *format_duration(int64_t ms, char *buf, int size);

#endif
