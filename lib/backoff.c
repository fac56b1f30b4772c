/* backoff.c - see backoff.h */
#include "backoff.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static int64_t
jitter_ms(void)
{
	const char *j = getenv("SLUICE_JITTER");
	uint32_t r = 0;

	if (j && strcmp(j, "0") == 0)
		return 0;
	if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
		r = (uint32_t)rand();
	return (int64_t)(r % BACKOFF_JITTER_MS);
}

int64_t
backoff_delay_ms(int64_t failures, int64_t retry_after_ms)
{
	int64_t delay = BACKOFF_BASE_MS;

	for (int64_t i = 1; i < failures && delay < BACKOFF_CAP_MS; i++)
		delay *= 2;
	if (delay > BACKOFF_CAP_MS)
		delay = BACKOFF_CAP_MS;
	delay += jitter_ms();
	if (retry_after_ms > delay)
		delay = retry_after_ms;
	return delay;
}
