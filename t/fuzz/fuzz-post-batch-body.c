/*
 * fuzz-post-batch-body - post-batch's handling of a receiver's answer, and
 * classify's reading of the record that post-batch makes of it.
 *
 * Entry point: post_batch_answer() (glue-post-batch.c), what post-batch does
 * once libcurl has a body: jansson on the body, the split and stop decisions
 * (a whole-batch 400/413, a batch-level failure), the body passed on as JSON
 * or as a string cut to 64 KiB and made valid UTF-8; then classify_line() on
 * that record. The first bytes choose the HTTP status, the format, the number
 * of events, a transport error and a Retry-After value (libcurl parses the
 * header itself, CURLINFO_RETRY_AFTER; post-batch only passes the value on);
 * the rest is the body.
 * Checked: no memory error or undefined behaviour; the record is one line of
 * JSON; classify accepts every record post-batch prints and gives each event
 * of it exactly one well-formed outcome.
 */
#include "check.h"
#include "glue.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long statuses[] = { 200, 201, 204, 299, 400, 401, 403, 404, 408, 409, 413, 415, 422,
	429, 500, 502, 503, 504, 100, 302, 600, 0 };
static const char *const formats[] = { "batch", "batch", "ndjson", "json-array" };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pb_verdict v;
	char *record;
	size_t record_len, nevents, outcomes;
	const char *out;
	size_t outlen;
	long status;
	int64_t retry_after;

	if (size < 3)
		return 0;
	status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
	nevents = (size_t)(data[1] & 7) + 1;
	retry_after = data[2] & 0x80 ? (int64_t)(data[2] & 0x7f) * 1000 : -1;
	post_batch_answer(formats[(data[1] >> 3) & 3], status, (data[1] & 0x20) != 0, retry_after,
	    (data[1] & 0x40) != 0, nevents, (const char *)data + 3, size - 3, &v, &record,
	    &record_len);
	if (record_len == 0 || record[record_len - 1] != '\n' ||
	    memchr(record, '\n', record_len - 1) != NULL)
		fuzz_fail("the response record is not one line", record, record_len);
	if (!classify_line(record, record_len - 1, &out, &outlen))
		fuzz_fail("classify rejects a record post-batch printed", record, record_len);
	outcomes = check_outcomes(out, outlen);
	if (outcomes != nevents)
		fuzz_fail("not one outcome per event", record, record_len);
	free(record);
	return 0;
}
