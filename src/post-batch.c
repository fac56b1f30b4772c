/*
 * post-batch - send selected events to one target, in batches, over HTTP.
 *
 * Reads:  selection records (select-undelivered's output).
 * Writes: one response record per HTTP request, and records for the events
 *         that were never sent (note "oversized" or "not_attempted"):
 *           {"target":"prod","format":"batch","request":7,"http_status":200,
 *            "transport_error":null,"elapsed_ms":3,"retry_after_ms":null,
 *            "events":[{"seq":42,"event_id":"..."}],"response":{...},"note":null}
 * Touches the journal only to read the target's settings.
 *
 * Events are carried as the bytes they were journaled as: the record's
 * "event" member is located by the span scanner (lib/json.h) and copied into
 * the request body, never parsed or re-encoded.
 *
 * One curl handle is reused for every request (keep-alive), and the
 * "Expect: 100-continue" round trip is turned off. A 413, or a 400 or other
 * client error without per-event details, for a batch of several events is
 * never passed on as such: the batch is split in halves and each half sent,
 * down to single events, so one bad event cannot get its neighbours rejected.
 * After the first batch-level failure (transport error, 401, 403, 404, 408,
 * 429, 5xx, an unusable 2xx) nothing more is sent in this run; the rest of
 * the input is read and passed on as not_attempted. Memory: one batch.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "ndjson.h"
#include "target.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static const char usage[] =
"usage: post-batch [-d PATH] --target NAME [-v] < selection.ndjson\n"
"\n"
"POST selected events to a target in batches; print one response record per request.\n"
"\n"
"  -d, --db PATH        the journal (read for the target's settings only)\n"
"  -t, --target NAME    the target\n"
"  -v, --verbose        one line per request on stderr (tokens are never printed)\n"
"  -h, --help           this help\n"
"  -V, --version        print the version\n"
"\n"
"Exit: 0 (HTTP failures are reported in the records, not by the exit status),\n"
"64 usage, 65 bad input lines (skipped), 66 no journal, 69 unknown target,\n"
"70 internal error, 74 cannot write output, 75 journal busy, 78 bad target\n"
"settings (token variable unset, ...).\n";

#define BODY_KEEP_MAX (16u << 20)  /* response bytes kept for parsing */
#define BODY_STRING_MAX 65536      /* a non-JSON body is passed on cut to this */
#define RECORD_OVERHEAD 4096       /* a selection record's bytes besides its event */

struct event_ref {
	int64_t seq;
	char event_id[129];
	size_t off, len;           /* the event's bytes in batch.bytes */
};

static struct {
	struct event_ref *ev;
	size_t n, cap;
	char *bytes;               /* the events' raw bytes, back to back */
	size_t used, size;
} batch;

static struct {
	char *data;
	size_t len, cap;
	int truncated;
} body, response;

struct reply {
	long http_status;
	CURLcode curl_code;
	char curl_error[CURL_ERROR_SIZE];
	int64_t elapsed_ms, retry_after_ms;
	json_t *parsed;            /* the body, when it had to be parsed */
	int raw;                   /* the body is compact-safe JSON: passed on as it is */
	int has_results;           /* a JSON object with a "results" array */
};

static struct target target;
static CURL *curl;
static struct curl_slist *headers;
static char *token;
static long requests;
static int stopped;            /* a batch-level failure happened: send nothing more */
static int status = EXIT_OK;

static void
buf_append(char **data, size_t *len, size_t *cap, const char *p, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t want = *cap ? *cap : 65536;

		while (want < *len + n + 1)
			want *= 2;
		*data = xrealloc(*data, want);
		*cap = want;
	}
	memcpy(*data + *len, p, n);
	*len += n;
	(*data)[*len] = '\0';
}

/* --- HTTP --- */

static size_t
on_body(char *p, size_t size, size_t n, void *unused)
{
	size_t len = size * n;

	(void)unused;
	if (response.len + len > BODY_KEEP_MAX) {
		/* Read the rest but keep no more: memory stays bounded. */
		response.truncated = 1;
		return len;
	}
	buf_append(&response.data, &response.len, &response.cap, p, len);
	return len;
}

static void
setup_curl(void)
{
	char line[20000];
	json_t *fixed = json_loads(target.headers ? target.headers : "[]", 0, NULL);
	size_t i;
	json_t *h;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init()))
		die(EXIT_SOFTWARE, "cannot initialize libcurl");
	headers = curl_slist_append(headers, strcmp(target.format, "ndjson") == 0 ?
	    "Content-Type: application/x-ndjson" : "Content-Type: application/json");
	/* libcurl waits for "100 Continue" before big bodies; receivers rarely need it. */
	headers = curl_slist_append(headers, "Expect:");
	if (target.gzip)
		headers = curl_slist_append(headers, "Content-Encoding: gzip");
	json_array_foreach(fixed, i, h)
		if (json_is_string(h))
			headers = curl_slist_append(headers, json_string_value(h));
	json_decref(fixed);
	if (token) {
		snprintf(line, sizeof line, "Authorization: Bearer %s", token);
		headers = curl_slist_append(headers, line);
		memset(line, 0, sizeof line);
	}
	if (!headers)
		die(EXIT_SOFTWARE, "out of memory");

	curl_easy_setopt(curl, CURLOPT_URL, target.url);
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)target.timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)(target.timeout_ms < 10000 ? target.timeout_ms : 10000));
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	if (target.cacert)
		curl_easy_setopt(curl, CURLOPT_CAINFO, target.cacert);
	if (target.insecure) {
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

/* gzip (not zlib, not raw deflate) of body into *out. */
static void
gzip_body(const char *in, size_t len, char **out, size_t *outlen, size_t *outcap)
{
	z_stream z = { 0 };
	size_t bound;

	if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		die(EXIT_SOFTWARE, "cannot initialize zlib");
	bound = deflateBound(&z, (uLong)len) + 32;
	if (*outcap < bound) {
		*out = xrealloc(*out, bound);
		*outcap = bound;
	}
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)len;
	z.next_out = (Bytef *)*out;
	z.avail_out = (uInt)bound;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		die(EXIT_SOFTWARE, "cannot gzip a request body");
	*outlen = z.total_out;
	deflateEnd(&z);
}

/* Builds the request body for events [lo, hi) in the target's format. */
static void
build_body(size_t lo, size_t hi)
{
	const char *open = "{\"events\":[", *sep = ",", *close = "]}";

	if (strcmp(target.format, "ndjson") == 0)
		open = "", sep = "\n", close = "\n";
	else if (strcmp(target.format, "json-array") == 0)
		open = "[", close = "]";
	body.len = 0;
	buf_append(&body.data, &body.len, &body.cap, open, strlen(open));
	for (size_t i = lo; i < hi; i++) {
		if (i > lo)
			buf_append(&body.data, &body.len, &body.cap, sep, strlen(sep));
		buf_append(&body.data, &body.len, &body.cap, batch.bytes + batch.ev[i].off,
		    batch.ev[i].len);
	}
	buf_append(&body.data, &body.len, &body.cap, close, strlen(close));
}

/* A successful batch's body is long (a result per event) and needs no
 * decoding here: when it is one JSON value of plain ASCII on one line, the
 * span scanner's check is enough and its bytes go on as they are. Any other
 * body is parsed by jansson (and re-encoded compactly), or passed on as a
 * string when it is not JSON. */
static void
read_body(struct reply *r)
{
	struct json_member m[64];
	const char *why;
	int n, plain = 1;

	for (size_t i = 0; i < response.len && plain; i++) {
		unsigned char c = (unsigned char)response.data[i];

		plain = c >= 0x20 && c < 0x80;
	}
	if (plain && r->http_status >= 200 && r->http_status < 300) {
		n = response.data[0] == '[' ? json_elements(response.data, response.len, m, 0, &why) :
		    json_members(response.data, response.len, m, 64, &why);
		if (n >= 0) {
			const struct json_member *results = response.data[0] == '{' ?
			    json_member_find(m, n < 64 ? n : 64, "results") : NULL;

			r->raw = 1;
			r->has_results = results && results->valuelen > 0 && results->value[0] == '[';
			return;
		}
	}
	r->parsed = json_loadb(response.data, response.len, 0, NULL);
	r->has_results = json_is_array(json_object_get(r->parsed, "results"));
}

static void
post(size_t lo, size_t hi, struct reply *r)
{
	static char *gz;
	static size_t gzcap;
	const char *payload;
	size_t payload_len;
	curl_off_t elapsed_us = 0, retry_after = 0;

	build_body(lo, hi);
	payload = body.data;
	payload_len = body.len;
	if (target.gzip) {
		gzip_body(body.data, body.len, &gz, &payload_len, &gzcap);
		payload = gz;
	}
	memset(r, 0, sizeof *r);
	r->retry_after_ms = -1;
	response.len = 0;
	response.truncated = 0;
	requests++;
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload_len);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, r->curl_error);
	r->curl_code = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->http_status);
	curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME_T, &elapsed_us);
	r->elapsed_ms = (int64_t)(elapsed_us / 1000);
	if (r->curl_code == CURLE_OK) {
		/* Retry-After in either form (seconds or an HTTP date), as libcurl reads it. */
		if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
		    retry_after > 0)
			r->retry_after_ms = (int64_t)retry_after * 1000;
		if (response.len > 0 && !response.truncated)
			read_body(r);
	} else {
		r->http_status = 0;
		if (!r->curl_error[0])
			snprintf(r->curl_error, sizeof r->curl_error, "%s",
			    curl_easy_strerror(r->curl_code));
	}
	if (r->curl_code == CURLE_OK)
		debugmsg("POST %s: %zu events, %zu bytes%s: HTTP %ld in %" PRId64 " ms", target.url,
		    hi - lo, payload_len, target.gzip ? " (gzip)" : "", r->http_status, r->elapsed_ms);
	else
		debugmsg("POST %s: %zu events, %zu bytes: %s in %" PRId64 " ms", target.url, hi - lo,
		    payload_len, r->curl_error, r->elapsed_ms);
}

/* --- response records --- */

/* A JSON string: ids and names are plain, anything else is jansson's to encode. */
static void
put_string(const char *s)
{
	const char *p;
	json_t *j;

	for (p = s; *p; p++)
		if (*p < 0x20 || *p == '"' || *p == '\\' || (unsigned char)*p >= 0x80)
			break;
	if (!*p) {
		fprintf(stdout, "\"%s\"", s);
		return;
	}
	j = json_string(s);
	if (!j)
		j = json_string("(not UTF-8)");
	json_dumpf(j, stdout, JSON_ENCODE_ANY);
	json_decref(j);
}


/* A body that is not JSON goes on as a string, cut, and made valid UTF-8. */
static json_t *
body_string(void)
{
	size_t n = response.len < BODY_STRING_MAX ? response.len : BODY_STRING_MAX;
	json_t *s = json_stringn(response.data ? response.data : "", n);

	if (!s) {
		char *copy = malloc(n + 1);

		if (!copy)
			die(EXIT_SOFTWARE, "out of memory");
		for (size_t i = 0; i < n && response.data; i++) {
			unsigned char c = (unsigned char)response.data[i];

			copy[i] = (char)(c >= 0x80 || c == 0 ? '?' : c);
		}
		s = json_stringn(copy, n);
		free(copy);
	}
	return s;
}

/* Writes the response record by hand: a batch of results can be long, and
 * building and dumping a tree of it cost post-batch a third of its time. */
static void
emit_record(const struct event_ref *ev, size_t n, const struct reply *r, const char *note)
{
	int answered = r && r->curl_code == CURLE_OK;

	fprintf(stdout, "{\"target\":\"%s\",\"format\":\"%s\",\"request\":", target.name, target.format);
	if (r)
		fprintf(stdout, "%ld", requests);
	else
		fputs("null", stdout);
	if (answered)
		fprintf(stdout, ",\"http_status\":%ld,\"transport_error\":null", r->http_status);
	else if (r) {
		fprintf(stdout, ",\"http_status\":null,\"transport_error\":{\"kind\":\"%s\",\"curl_code\":%d,"
		    "\"message\":", transport_kind(r->curl_code), (int)r->curl_code);
		put_string(r->curl_error);
		fputc('}', stdout);
	} else {
		fputs(",\"http_status\":null,\"transport_error\":null", stdout);
	}
	if (r)
		fprintf(stdout, ",\"elapsed_ms\":%" PRId64, r->elapsed_ms);
	else
		fputs(",\"elapsed_ms\":null", stdout);
	if (r && r->retry_after_ms >= 0)
		fprintf(stdout, ",\"retry_after_ms\":%" PRId64, r->retry_after_ms);
	else
		fputs(",\"retry_after_ms\":null", stdout);
	fputs(",\"events\":[", stdout);
	for (size_t i = 0; i < n; i++) {
		fprintf(stdout, "%s{\"seq\":%" PRId64 ",\"event_id\":", i ? "," : "", ev[i].seq);
		put_string(ev[i].event_id);
		fputc('}', stdout);
	}
	fputs("],\"response\":", stdout);
	if (!answered || response.len == 0) {
		fputs("null", stdout);
	} else if (r->raw) {
		fwrite(response.data, 1, response.len, stdout);
	} else {
		json_t *value = r->parsed ? json_incref(r->parsed) : body_string();

		json_dumpf(value, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(value);
	}
	fputs(",\"note\":", stdout);
	if (note)
		fprintf(stdout, "\"%s\"", note);
	else
		fputs("null", stdout);
	if (fputs("}\n", stdout) == EOF || fflush(stdout) != 0)
		die(EXIT_IOERR, "cannot write standard output: %s", strerror(errno));
}

/* Does a 400 carry per-event details (a list, or a JSON string holding one)? */
static int
has_details(const json_t *parsed)
{
	json_t *d = json_object_get(parsed, "details");

	if (json_is_array(d))
		return json_array_size(d) > 0;
	if (json_is_string(d)) {
		json_t *inner = json_loads(json_string_value(d), 0, NULL);
		int yes = json_is_array(inner) && json_array_size(inner) > 0;

		json_decref(inner);
		return yes;
	}
	return 0;
}

/* A rejection of the whole batch that may be about one of its events. */
static int
whole_batch_rejection(const struct reply *r)
{
	long s = r->http_status;

	if (r->curl_code != CURLE_OK)
		return 0;
	if (s == 413)
		return 1;
	if (s == 400)
		return !has_details(r->parsed);
	return s >= 400 && s < 500 && s != 401 && s != 403 && s != 404 && s != 408 && s != 429;
}

/* A failure that says nothing about the events: the target is unhealthy. */
static int
batch_level_failure(const struct reply *r)
{
	long s = r->http_status;

	if (r->curl_code != CURLE_OK)
		return 1;
	if (s >= 200 && s < 300) {
		/* Only the batch format promises a body; an unusable one is the receiver's fault. */
		return strcmp(target.format, "batch") == 0 && !r->has_results;
	}
	return http_batch_category(s) != NULL;
}

static void
send_range(size_t lo, size_t hi)
{
	struct reply r;

	if (!curl && !stopped) {
		token = target_token(&target);
		setup_curl();
	}
	if (stopped) {
		emit_record(batch.ev + lo, hi - lo, NULL, "not_attempted");
		return;
	}
	post(lo, hi, &r);
	if (hi - lo > 1 && whole_batch_rejection(&r)) {
		size_t mid = lo + (hi - lo) / 2;

		debugmsg("HTTP %ld for %zu events: splitting the batch", r.http_status, hi - lo);
		json_decref(r.parsed);
		send_range(lo, mid);
		send_range(mid, hi);
		return;
	}
	emit_record(batch.ev + lo, hi - lo, &r, NULL);
	if (batch_level_failure(&r))
		stopped = 1;
	json_decref(r.parsed);
}

static void
flush_batch(void)
{
	if (batch.n > 0)
		send_range(0, batch.n);
	batch.n = 0;
	batch.used = 0;
}

static size_t
body_size_with(size_t extra)
{
	return batch.used + batch.n + extra + 16;
}

/* A record longer than any event we may send: its seq and event_id come
 * before the event, so they can be read from the first bytes. */
static int
read_cut_record(const char *line, size_t len, struct event_ref *e, const char **why)
{
	struct json_member m[16];
	char head[2048];
	size_t headlen = 0;
	int n, ok;

	for (size_t i = 0; i + 9 <= len && i + 2 < sizeof head; i++)
		if (memcmp(line + i, ",\"event\":", 9) == 0) {
			headlen = i;
			break;
		}
	if (headlen == 0) {
		*why = "record too long to read";
		return -1;
	}
	memcpy(head, line, headlen);
	head[headlen] = '}';
	n = json_members(head, headlen + 1, m, 16, why);
	if (n < 0)
		return -1;
	e->seq = json_member_int(json_member_find(m, n, "seq"), &ok);
	if (!ok || json_member_str(json_member_find(m, n, "event_id"), e->event_id,
	    sizeof e->event_id) != 0) {
		*why = "record lacks seq or event_id";
		return -1;
	}
	return 0;
}

/* One selection record; returns 0, or -1 with *why set when it is malformed. */
static int
take_record(const char *line, size_t len, int cut, const char **why)
{
	struct json_member m[16];
	const struct json_member *target_m, *event_m;
	char name[128];
	struct event_ref one = { 0 };
	int n, ok;

	if (cut) {
		if (read_cut_record(line, len, &one, why) != 0)
			return -1;
		emit_record(&one, 1, NULL, "oversized");
		return 0;
	}
	n = json_members(line, len, m, 16, why);
	if (n < 0)
		return -1;
	target_m = json_member_find(m, n, "target");
	event_m = json_member_find(m, n, "event");
	one.seq = json_member_int(json_member_find(m, n, "seq"), &ok);
	if (!ok || one.seq < 1) {
		*why = "seq missing or not a positive integer";
		return -1;
	}
	if (json_member_str(json_member_find(m, n, "event_id"), one.event_id,
	    sizeof one.event_id) != 0 || !one.event_id[0]) {
		*why = "event_id missing or not a string";
		return -1;
	}
	if (target_m && (json_member_str(target_m, name, sizeof name) != 0 ||
	    strcmp(name, target.name) != 0)) {
		*why = "record is for another target";
		return -1;
	}
	if (!event_m || event_m->valuelen < 2 || event_m->value[0] != '{') {
		*why = "event missing or not an object";
		return -1;
	}
	if ((int64_t)event_m->valuelen > target.max_event_bytes) {
		/* Never sent: it is bigger than the target takes. */
		emit_record(&one, 1, NULL, "oversized");
		return 0;
	}
	one.len = stopped ? 0 : event_m->valuelen; /* not to be sent: remember who, not what */
	if (batch.n == (size_t)target.batch_events ||
	    (batch.n > 0 && body_size_with(one.len) > (size_t)target.batch_bytes))
		flush_batch();
	if (batch.n == batch.cap) {
		batch.cap = batch.cap ? batch.cap * 2 : 1024;
		batch.ev = xrealloc(batch.ev, batch.cap * sizeof *batch.ev);
	}
	one.off = batch.used;
	if (one.len) {
		size_t cap = batch.size;

		buf_append(&batch.bytes, &batch.used, &cap, event_m->value, one.len);
		batch.size = cap;
	}
	batch.ev[batch.n++] = one;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "target", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *name = NULL;
	struct line_reader in;
	struct line line;
	enum line_result lr;
	sqlite3 *db;
	int c;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:t:vhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 't': name = optarg; break;
		case 'v': log_verbose = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (!name)
		usage_error(usage, "--target is required");
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);

	db = db_open(journal_path(db_flag), DB_MUST_EXIST, NULL, NULL);
	target_load_or_die(db, name, &target);
	db_close(db);
	if (strstr(target.url, "@")) {
		CURLU *u = curl_url();
		char *user = NULL;

		if (u && curl_url_set(u, CURLUPART_URL, target.url, 0) == CURLUE_OK &&
		    curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK && user)
			die(EXIT_CONFIG, "target %s: the URL carries credentials; refused", target.name);
		curl_url_cleanup(u);
	}
	/* The token and the connection are set up at the first request: with
	 * nothing to send, nothing is read, checked or opened. */

	line_reader_init(&in, STDIN_FILENO, "<stdin>",
	    (size_t)target.max_event_bytes + RECORD_OVERHEAD);
	while ((lr = line_next(&in, &line, -1)) != LINE_EOF) {
		const char *why = NULL;
		size_t i;

		if (lr == LINE_ERROR)
			die(EXIT_IOERR, "cannot read standard input: %s", strerror(errno));
		for (i = 0; i < line.len && (line.data[i] == ' ' || line.data[i] == '\t'); i++)
			;
		if (i == line.len)
			continue;
		if (take_record(line.data, line.len, lr == LINE_TOOLONG, &why) != 0) {
			linemsg("<stdin>", line.lineno, "not a selection record: %s; skipped", why);
			status = EXIT_DATAERR;
		}
	}
	flush_batch();
	line_reader_free(&in);

	if (curl) {
		curl_easy_cleanup(curl);
		curl_slist_free_all(headers);
		curl_global_cleanup();
	}
	if (token) {
		memset(token, 0, strlen(token));
		free(token);
	}
	free(batch.ev);
	free(batch.bytes);
	free(body.data);
	free(response.data);
	target_free(&target);
	c = finish_stdout();
	return c != EXIT_OK ? c : status;
}
