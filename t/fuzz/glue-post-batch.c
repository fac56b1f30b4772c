/*
 * glue-post-batch.c - post-batch's handling of a receiver's answer, for the
 * fuzz harnesses.
 *
 * Compiled with -Dmain=post_batch_main, so that src/post-batch.c can be
 * included whole. post_batch_answer() does with a body what post() and
 * send_range() do once libcurl has it: parse it, decide whether it is a
 * whole-batch rejection (split) or a batch-level failure (stop), and write
 * the response record, into memory instead of standard output.
 */
#include <stdio.h>

static FILE *record_out;
static int record_putchar(int c);
#undef stdout
#define stdout record_out
#define putchar(c) record_putchar(c)

#include "../../src/post-batch.c"

#include "glue.h"

static int
record_putchar(int c)
{
	return fputc(c, record_out);
}

int
post_batch_answer(const char *format, long http_status, int transport_error, int64_t retry_after_ms,
    int truncated, size_t nevents, const char *body, size_t len, struct pb_verdict *v,
    char **record, size_t *record_len)
{
	static struct event_ref ev[PB_MAX_EVENTS];
	struct reply r;

	memset(&target, 0, sizeof target);
	snprintf(target.name, sizeof target.name, "prod");
	snprintf(target.format, sizeof target.format, "%s", format);
	if (nevents > PB_MAX_EVENTS)
		nevents = PB_MAX_EVENTS;
	for (size_t i = 0; i < nevents; i++) {
		ev[i].seq = (int64_t)i + 1;
		snprintf(ev[i].event_id, sizeof ev[i].event_id, "ev-%zu", i + 1);
	}
	/* What post() leaves behind for a body that libcurl handed over. */
	memset(&r, 0, sizeof r);
	r.retry_after_ms = retry_after_ms;
	response.len = 0;
	response.truncated = truncated;
	if (len > 0)
		buf_append(&response.data, &response.len, &response.cap, body, len);
	if (transport_error) {
		r.curl_code = CURLE_OPERATION_TIMEDOUT;
		r.http_status = 0;
		snprintf(r.curl_error, sizeof r.curl_error, "Operation timed out");
	} else {
		r.curl_code = CURLE_OK;
		r.http_status = http_status;
		if (response.len > 0 && !response.truncated)
			r.parsed = json_loadb(response.data, response.len, 0, NULL);
	}
	v->split = nevents > 1 && whole_batch_rejection(&r);
	v->stop = batch_level_failure(&r);
	v->has_details = r.parsed != NULL && has_details(r.parsed);
	*record = NULL;
	*record_len = 0;
	record_out = open_memstream(record, record_len);
	if (!record_out)
		abort();
	emit_record(ev, nevents, &r, NULL);
	fclose(record_out);
	json_decref(r.parsed);
	return 0;
}
