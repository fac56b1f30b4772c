/* ndjson.c - see ndjson.h */
#include "ndjson.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK 65536

void
line_reader_init(struct line_reader *r, int fd, const char *name, size_t limit)
{
	memset(r, 0, sizeof *r);
	r->fd = fd;
	r->name = name;
	r->limit = limit;
	/* Allocated now, so no path ever does arithmetic on a null buffer. */
	r->cap = READ_CHUNK * 2;
	r->buf = malloc(r->cap);
	if (!r->buf)
		die(EXIT_SOFTWARE, "out of memory");
}

void
line_reader_free(struct line_reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

/* Makes room for one more read: slides the unread part to the front and
 * grows the buffer, never beyond limit + READ_CHUNK. */
static void
make_room(struct line_reader *r)
{
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->cap - r->end < READ_CHUNK) {
		size_t want = r->cap ? r->cap * 2 : READ_CHUNK * 2;
		char *grown;

		if (want > r->limit + 2 * READ_CHUNK)
			want = r->limit + 2 * READ_CHUNK;
		if (want < r->end + READ_CHUNK)
			want = r->end + READ_CHUNK;
		grown = realloc(r->buf, want);
		if (!grown)
			die(EXIT_SOFTWARE, "out of memory");
		r->buf = grown;
		r->cap = want;
	}
}

/* Returns bytes read, 0 at EOF, -1 on error, -2 on timeout. */
static ssize_t
fill(struct line_reader *r, int timeout_ms)
{
	ssize_t n;

	make_room(r);
	if (timeout_ms >= 0) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int ready;

		do
			ready = poll(&p, 1, timeout_ms);
		while (ready < 0 && errno == EINTR);
		if (ready < 0)
			return -1;
		if (ready == 0)
			return -2;
	}
	do
		n = read(r->fd, r->buf + r->end, r->cap - r->end);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		r->end += (size_t)n;
	return n;
}

enum line_result
line_next(struct line_reader *r, struct line *out, int timeout_ms)
{
	for (;;) {
		char *base = r->buf + r->start;
		size_t avail = r->end - r->start;
		char *nl = avail ? memchr(base, '\n', avail) : NULL;
		ssize_t n;

		if (r->skipping) {
			/* Reading past the rest of a line that was too long. */
			if (nl) {
				r->start += (size_t)(nl - base) + 1;
				r->skipping = 0;
				continue;
			}
			r->start = r->end;
		} else if (nl || (r->eof && avail > 0)) {
			size_t full = nl ? (size_t)(nl - base) : avail;
			size_t len = full;

			r->start += nl ? full + 1 : full;
			if (len > 0 && base[len - 1] == '\r')
				len--;
			out->data = base;
			out->lineno = ++r->lineno;
			if (len > r->limit) {
				out->len = r->limit;
				return LINE_TOOLONG;
			}
			out->len = len;
			return LINE_OK;
		} else if (avail > r->limit + 1) {
			/* No end in sight: hand out the first `limit` bytes, skip the rest. */
			out->data = base;
			out->len = r->limit;
			out->lineno = ++r->lineno;
			r->start = r->end;
			r->skipping = 1;
			return LINE_TOOLONG;
		}
		if (r->eof)
			return LINE_EOF;
		n = fill(r, timeout_ms);
		if (n == 0)
			r->eof = 1;
		else if (n == -1)
			return LINE_ERROR;
		else if (n == -2)
			return LINE_TIMEOUT;
	}
}
