/* glue.h - what the fuzz harnesses reach inside the programs (see glue-*.c). */
#ifndef SLUICE_FUZZ_GLUE_H
#define SLUICE_FUZZ_GLUE_H

#include <stddef.h>
#include <stdint.h>

#define PB_MAX_EVENTS 8

/* classify: one input line; 1 when it is a response record. The outcome
 * records are in *out (valid until the next call). */
int classify_line(const char *data, size_t len, const char **out, size_t *outlen);

struct pb_verdict {
	int split;        /* post-batch would split the batch and resend halves */
	int stop;         /* a batch-level failure: nothing more is sent this run */
	int has_details;  /* a 400 with per-event details */
};

/* post-batch: the receiver answered http_status with body (or failed at
 * transport level); *record is the response record post-batch prints,
 * malloc'd. */
int post_batch_answer(const char *format, long http_status, int transport_error,
    int64_t retry_after_ms, int truncated, size_t nevents, const char *body, size_t len,
    struct pb_verdict *v, char **record, size_t *record_len);

#endif
