/*
 * check.h - what every outcome record classify prints must be, checked by
 * the fuzz harnesses (abort() on a violation, so libFuzzer keeps the input).
 */
#ifndef SLUICE_FUZZ_CHECK_H
#define SLUICE_FUZZ_CHECK_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
fuzz_fail(const char *what, const char *data, size_t len)
{
	fprintf(stderr, "fuzz check failed: %s: %.*s\n", what, (int)(len > 2000 ? 2000 : len), data);
	abort();
}

/* Checks classify's output: compact outcome records, one per line, each with
 * the contract's keys in order and a status of the five. Returns how many. */
static size_t
check_outcomes(const char *out, size_t len)
{
	static const char *const keys[] = { "seq", "event_id", "target", "status", "category",
		"http_status", "error", "retry_after_ms" };
	static const char *const statuses[] = { "success", "duplicate", "rejected",
		"failed_transient", "failed_permanent" };
	size_t n = 0;
	const char *p, *end;

	if (len == 0)
		return 0;
	p = out;
	end = out + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		json_error_t err;
		json_t *o, *status, *category;
		const char *key;
		json_t *v;
		size_t i = 0;
		int known = 0;

		if (!nl)
			fuzz_fail("an outcome without its newline", p, (size_t)(end - p));
		o = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
		if (!json_is_object(o))
			fuzz_fail("an outcome that is not a JSON object", p, (size_t)(nl - p));
		json_object_foreach(o, key, v) {
			if (i >= sizeof keys / sizeof keys[0] || strcmp(key, keys[i]) != 0)
				fuzz_fail("outcome keys not as documented", p, (size_t)(nl - p));
			i++;
		}
		if (i != sizeof keys / sizeof keys[0])
			fuzz_fail("outcome keys missing", p, (size_t)(nl - p));
		if (!json_is_integer(json_object_get(o, "seq")) ||
		    !json_is_string(json_object_get(o, "event_id")) ||
		    json_string_length(json_object_get(o, "event_id")) == 0 ||
		    !json_is_string(json_object_get(o, "target")))
			fuzz_fail("outcome seq, event_id or target wrong", p, (size_t)(nl - p));
		status = json_object_get(o, "status");
		for (size_t s = 0; s < sizeof statuses / sizeof statuses[0]; s++)
			if (json_is_string(status) && strcmp(json_string_value(status), statuses[s]) == 0)
				known = 1;
		if (!known)
			fuzz_fail("outcome status not one of the five", p, (size_t)(nl - p));
		category = json_object_get(o, "category");
		if (strcmp(json_string_value(status), "success") == 0 ||
		    strcmp(json_string_value(status), "duplicate") == 0) {
			if (!json_is_null(category))
				fuzz_fail("a success with a category", p, (size_t)(nl - p));
		} else if (!json_is_string(category) || json_string_length(category) == 0) {
			fuzz_fail("a failure without a category", p, (size_t)(nl - p));
		}
		json_decref(o);
		n++;
		p = nl + 1;
	}
	return n;
}

#endif
