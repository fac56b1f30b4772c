/*
 * gen-events - write N realistic events (~200 bytes each) as NDJSON, for
 * make bench.
 *
 *   gen-events COUNT v7|v4|none [SEED]
 *
 * v7:   every event carries an event_id that is a time-ordered UUIDv7 (48 bits
 *       of milliseconds, then random bits), as producers that make their own
 *       ids usually do;
 * v4:   a random UUIDv4 (the worst case for the UNIQUE index on event_id);
 * none: no event_id (journal-append generates one).
 *
 * The output is a pure function of the arguments (a fixed PRNG), so every
 * run of the benchmark appends the same bytes.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

/* splitmix64: fast, good enough, and the same everywhere. */
static uint64_t
rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void
uuid(char out[37], int version, uint64_t ms)
{
	unsigned char b[16];
	uint64_t r1 = rnd(), r2 = rnd();

	memcpy(b, &r1, 8);
	memcpy(b + 8, &r2, 8);
	if (version == 7)
		for (int i = 0; i < 6; i++)
			b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (unsigned char)((version << 4) | (b[6] & 0x0f));
	b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
	snprintf(out, 37,
	    "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
	    b[12], b[13], b[14], b[15]);
}

static const char *const types[] = {
	"build.finished", "deploy.started", "deploy.finished", "test.failed",
	"cron.ran", "backup.done", "user.login", "order.created",
};
static const char *const services[] = {
	"checkout", "billing", "search", "auth", "inventory", "mailer",
};
static const char *const branches[] = { "main", "release-2.4", "feature/cart", "hotfix-913" };

int
main(int argc, char **argv)
{
	long long count;
	int version;
	/* 2026-11-22T10:00:00Z, in ms; ids and timestamps step 1 ms per 3 events. */
	const uint64_t base_ms = 1795341600000ull;
	static char out[1 << 16];

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: gen-events COUNT v7|v4|none [SEED]\n");
		return 64;
	}
	count = strtoll(argv[1], NULL, 10);
	if (strcmp(argv[2], "v7") == 0)
		version = 7;
	else if (strcmp(argv[2], "v4") == 0)
		version = 4;
	else if (strcmp(argv[2], "none") == 0)
		version = 0;
	else {
		fprintf(stderr, "gen-events: id kind must be v7, v4 or none\n");
		return 64;
	}
	rng_state = argc == 4 ? strtoull(argv[3], NULL, 10) : 42;
	setvbuf(stdout, out, _IOFBF, sizeof out);

	for (long long i = 0; i < count; i++) {
		uint64_t ms = base_ms + (uint64_t)i / 3, r = rnd();
		unsigned secs = (unsigned)((ms / 1000) % 86400);
		char id[37];

		if (version)
			uuid(id, version, ms);
		printf("{%s%s%s\"event_type\":\"%s\",\"ts\":\"2026-11-22T%02u:%02u:%02u.%03uZ\","
		    "\"host\":\"ci-%02u\",\"service\":\"%s\",\"user_id\":%u,"
		    "\"data\":{\"duration_ms\":%u,\"ok\":%s,\"branch\":\"%s\"}}\n",
		    version ? "\"event_id\":\"" : "", version ? id : "", version ? "\"," : "",
		    types[r % 8], secs / 3600, secs / 60 % 60, secs % 60, (unsigned)(ms % 1000),
		    (unsigned)(r >> 8) % 40, services[(r >> 16) % 6], (unsigned)(r >> 20) % 100000,
		    (unsigned)(r >> 40) % 600000, (r >> 60) & 1 ? "true" : "false",
		    branches[(r >> 61) & 3]);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("gen-events: stdout");
		return 74;
	}
	return 0;
}
