/*
 * fuzz-ndjson-append - the NDJSON line reader (lib/ndjson.c) and
 * journal-append's check of each line.
 *
 * src/journal-append.c is included whole, built with
 * -Dmain=journal_append_main, so that its static take_line() is reached:
 * what journal-append does with each line before anything is written. The
 * first byte chooses the line limit (--max-bytes) and whether a --require
 * path is checked; the rest is standard input, read through a memfd.
 * Checked: no memory error or undefined behaviour; the reader returns lines
 * numbered 1, 2, 3 ..., none longer than the limit and none holding a LF;
 * every line that is not quarantined becomes a payload that is a strict JSON
 * object whose event_id is the row's, 1-128 bytes of the id's characters
 * (also when journal-append inserted a UUIDv7 into it).
 */
#include "../../src/journal-append.c"

#include <sys/mman.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_failed(const char *what, const char *p, size_t n)
{
	fprintf(stderr, "fuzz check failed: %s: %.*s\n", what, (int)(n > 2000 ? 2000 : n), p);
	abort();
}

static void
check_rows(void)
{
	for (size_t i = 0; i < st.batch.n; i++) {
		struct row *r = &st.batch.v[i];
		json_t *v, *id;

		if (r->quarantine) {
			if (!r->reason || !r->detail)
				check_failed("quarantined without a reason", r->bytes, r->len);
			continue;
		}
		v = json_loadb(r->bytes, r->len, JSON_STRICT_FLAGS | JSON_ALLOW_NUL, NULL);
		if (!v)
			v = json_loadb(r->bytes, r->len, JSON_STRICT_FLAGS | JSON_ALLOW_NUL |
			    JSON_DECODE_INT_AS_REAL, NULL);
		if (!json_is_object(v))
			check_failed("a payload that is not a JSON object", r->bytes, r->len);
		id = json_object_get(v, "event_id");
		if (!json_is_string(id) || strcmp(json_string_value(id), r->event_id) != 0 ||
		    !valid_event_id(r->event_id, strlen(r->event_id)))
			check_failed("a payload without the row's event_id", r->bytes, r->len);
		json_decref(v);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[] = { 1, 2, 7, 16, 64, 100, 1000, 70000 };
	static char *require[] = { "data.order_id" };
	struct line_reader in;
	struct line line;
	enum line_result lr;
	unsigned long expect = 1;
	size_t limit;
	int fd;

	if (size < 1)
		return 0;
	limit = limits[data[0] & 7];
	opt.required = require;
	opt.nrequired = (data[0] & 8) != 0;
	opt.max_bytes = limit;
	fd = memfd_create("stdin", 0);
	if (fd < 0 || (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) ||
	    lseek(fd, 0, SEEK_SET) != 0)
		abort();
	line_reader_init(&in, fd, "stdin", limit);
	while ((lr = line_next(&in, &line, -1)) != LINE_EOF) {
		if (lr == LINE_ERROR || lr == LINE_TIMEOUT)
			abort();
		if (line.lineno != expect++)
			check_failed("line numbers skip", line.data, line.len);
		if (line.len > limit)
			check_failed("a line longer than the limit", line.data, line.len);
		if (lr == LINE_OK && memchr(line.data, '\n', line.len))
			check_failed("a line holding a LF", line.data, line.len);
		if (lr == LINE_TOOLONG)
			quarantine_row(&st.batch, new_row(&st.batch, line.lineno), line.data, line.len, -1,
			    "too_long", fmt("line longer than %zu bytes", limit));
		else
			take_line(&st.batch, line.data, line.len, line.lineno);
	}
	check_rows();
	clear_rows();
	line_reader_free(&in);
	close(fd);
	return 0;
}
