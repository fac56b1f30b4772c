/*
 * ndjson.h - a bounded line reader for NDJSON on a file descriptor.
 *
 * Lines end in LF; a CR before it is dropped. A line longer than the limit is
 * returned cut at the limit, flagged, and the rest of it is read past without
 * being held in memory: memory never exceeds limit + 64 KiB.
 * A timeout lets a writer commit while its input trickles in.
 */
#ifndef SLUICE_NDJSON_H
#define SLUICE_NDJSON_H

#include <stddef.h>

enum line_result {
	LINE_OK,       /* a whole line */
	LINE_TOOLONG,  /* the line's first `limit` bytes; the rest is skipped */
	LINE_EOF,
	LINE_TIMEOUT,  /* nothing arrived within the timeout */
	LINE_ERROR     /* read(2) failed; errno is set */
};

struct line_reader {
	int fd;
	const char *name;      /* "<stdin>" or a file name, for messages */
	size_t limit;
	char *buf;
	size_t cap, start, end;
	int eof, skipping;
	unsigned long lineno;  /* of the line last returned */
};

struct line {
	const char *data;      /* not NUL-terminated; valid until the next call */
	size_t len;
	unsigned long lineno;
};

void line_reader_init(struct line_reader *r, int fd, const char *name, size_t limit);
void line_reader_free(struct line_reader *r);
/* timeout_ms < 0 waits for ever. Empty lines are returned too (len 0). */
enum line_result line_next(struct line_reader *r, struct line *out, int timeout_ms);

#endif
