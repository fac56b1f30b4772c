/* clock.c - see clock.h */
#include "clock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t
now_ms(void)
{
	const char *fixed = getenv("SLUICE_NOW");
	struct timespec ts;

	if (fixed && *fixed) {
		char *end;
		long long v;

		errno = 0;
		v = strtoll(fixed, &end, 10);
		if (!errno && *end == '\0' && v >= 0)
			return v;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *
format_time(int64_t ms, char *buf)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
	    (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
	    tm.tm_sec % 100, (int)(ms % 1000));
	return buf;
}

int64_t
parse_duration(const char *text)
{
	char *end;
	long long v;
	int64_t unit;

	if (!text || !*text || *text == '-' || *text == '+')
		return -1;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || end == text)
		return -1;
	if (*end == '\0' || strcmp(end, "s") == 0)
		unit = 1000;
	else if (strcmp(end, "ms") == 0)
		unit = 1;
	else if (strcmp(end, "m") == 0)
		unit = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		unit = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		unit = 86400 * 1000;
	else if (strcmp(end, "w") == 0)
		unit = 7 * 86400 * 1000LL;
	else
		return -1;
	if (v > INT64_MAX / unit)
		return -1;
	return (int64_t)v * unit;
}

char *
format_duration(int64_t ms, char *buf, int size)
{
	int64_t s = ms / 1000;

	if (ms < 0)
		ms = 0, s = 0;
	if (ms < 1000)
		snprintf(buf, (size_t)size, "%" PRId64 "ms", ms);
	else if (s < 60)
		snprintf(buf, (size_t)size, "%" PRId64 "s", s);
	else if (s < 3600)
		snprintf(buf, (size_t)size, "%" PRId64 "m %" PRId64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, (size_t)size, "%" PRId64 "h %" PRId64 "m", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, (size_t)size, "%" PRId64 "d %" PRId64 "h", s / 86400, s % 86400 / 3600);
	return buf;
}
