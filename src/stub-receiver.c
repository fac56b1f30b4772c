/*
 * stub-receiver - an HTTP receiver that implements the batch contract
 * (SLUICE.md section 6), with fault injection: for sluice's tests, `make
 * demo`, the benchmarks and users' own CI.
 *
 * Reads:  HTTP requests on 127.0.0.1 only. A POST to any path carries a
 *         batch ({"events":[...]}), a JSON array of events, or NDJSON
 *         (Content-Type application/x-ndjson), optionally gzip'd.
 * Writes: the answers; with --log, one NDJSON line per event it processed
 *         ({"request":7,"status":"success","event":<the event's bytes>});
 *         with --request-log, one line per request; with --print-port, the
 *         port on stdout, the only thing ever written there.
 * Promises:
 *   - it deduplicates by event_id over the whole run: an event it answered
 *     success (or accepted, warning) is answered duplicate when sent again;
 *     an event it rejected, or did not process, is not remembered;
 *   - both logs are written and flushed before the answer they describe is
 *     sent, so a client holding its answer can read them;
 *   - the token comes from the environment or a file, never from argv, and
 *     is never written anywhere;
 *   - SIGTERM or SIGINT stop it within ~100 ms, requests held by `hang`
 *     included, with the logs flushed; exit 0.
 *
 * --script makes it answer the next requests with scripted failures, one
 * step per POST. A step that only answers (a status, hang, close, garbage,
 * no-results) does so before anything else is looked at; `ok` and the steps
 * that shape a verdict (missing, unknown-status, accepted, warning,
 * 400:details...) go through the token check, the size check and parsing.
 *
 * With --accept-put DIR it is also a plain object store, for snapshot targets
 * without S3: a PUT stores its body as DIR/<path> (written aside, then
 * renamed into place), a GET answers it, a DELETE removes it; the script and
 * the token apply to these requests as to a POST.
 *
 * Benchmarks drain millions of events through this server, so per-event work
 * is kept small: bodies are split into raw spans by the scanner in json.h,
 * nothing but event_id is decoded, and a --reject-when/--permanent-when rule
 * walks the spans of the one path it names.
 */
#define _GNU_SOURCE /* memmem, POLLRDHUP */
#define ZLIB_CONST
#include "clock.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static const char usage[] =
"usage: stub-receiver --port N [--port-file F] [--print-port] [--log F] [--request-log F]\n"
"                     [--script SPEC] [--reject-when KEY=VALUE]... [--permanent-when KEY=VALUE]...\n"
"                     [--reject-mode event|batch] [--max-body BYTES]\n"
"                     [--token-env VAR | --token-file F] [--tls-cert F --tls-key F]\n"
"                     [--exit-after SECONDS] [--accept-put DIR]\n"
"\n"
"Receive batches of events over HTTP on 127.0.0.1, deduplicate them by event_id\n"
"and answer per event, or fail as scripted.\n"
"\n"
"      --port N             port to listen on; 0 picks a free one\n"
"      --port-file F        write the port to F once listening (atomically)\n"
"      --print-port         print the port on standard output once listening\n"
"      --log F              append one NDJSON line per event processed\n"
"      --request-log F      append one NDJSON line per request (no token values)\n"
"      --script SPEC        answer the next requests as scripted: comma-separated\n"
"                           steps, each with an optional repeat count (500x3)\n"
"      --reject-when K=V    reject events whose K (dotted path) is V (code validation)\n"
"      --permanent-when K=V answer failed_permanent for events whose K is V\n"
"      --reject-mode MODE   event: per-event verdicts (default); batch: a whole-batch\n"
"                           400 when any event matches --reject-when\n"
"      --max-body BYTES     largest body accepted as sent, K/M/G suffixes (default 64M)\n"
"      --token-env VAR      require 'Authorization: Bearer <token>', token from $VAR\n"
"      --token-file F       the same, token read from F (trailing newline trimmed)\n"
"      --tls-cert F         serve HTTPS with this PEM certificate (with --tls-key)\n"
"      --tls-key F          the PEM private key for --tls-cert\n"
"      --exit-after SECONDS stop by itself after this long (also 90s, 5m)\n"
"      --accept-put DIR     also be a plain object store: PUT /PATH stores the body\n"
"                           as DIR/PATH, GET answers it, DELETE removes it\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Steps: ok 400 400:details 400:details-string 400:reason 401 403 403:private-team\n"
"404 408 413 429 500 502 503 (a status step takes :retry-after=N or\n"
":retry-after-date=N) hang close garbage no-results missing unknown-status\n"
"accepted warning.\n"
"\n"
"Exit: 0 stopped by a signal or --exit-after, 64 usage, 66 cannot read a token,\n"
"certificate or key file, or no --accept-put directory, 69 cannot listen or no TLS\n"
"support, 70 internal error,\n"
"74 cannot write a log, the port file or stdout, 78 the token is empty.\n";

#define WORKER_THREADS 4
#define MAX_ID_BYTES 4096               /* longest event_id remembered */
#define MAX_INFLATED ((size_t)1 << 30)  /* largest body after gunzip */
#define KEEP_BUFFER_BYTES ((size_t)8 << 20) /* per-connection buffers kept between requests */
#define TICK_MS 50                      /* how often held requests are looked at */

/* --- options --- */

enum step_kind {
	STEP_OK, STEP_STATUS, STEP_HANG, STEP_CLOSE, STEP_GARBAGE, STEP_NO_RESULTS,
	STEP_MISSING, STEP_UNKNOWN_STATUS, STEP_ACCEPTED, STEP_WARNING,
	STEP_DETAILS, STEP_DETAILS_STRING, STEP_DETAILS_REASON
};

struct step {
	enum step_kind kind;
	char name[64];          /* as written, without the repeat count */
	unsigned status;
	const char *body;
	long retry_after;       /* seconds; -1: no Retry-After */
	int retry_after_date;   /* 1: sent as an HTTP-date */
	long repeat;
};

static const struct step_def {
	const char *name;
	enum step_kind kind;
	unsigned status;
	const char *body;
} step_table[] = {
	{ "ok", STEP_OK, 200, NULL },
	{ "hang", STEP_HANG, 0, NULL },
	{ "close", STEP_CLOSE, 200, NULL },
	{ "garbage", STEP_GARBAGE, 200, "<html>oops</html>" },
	{ "no-results", STEP_NO_RESULTS, 200, "{\"status\":\"ok\"}" },
	{ "missing", STEP_MISSING, 200, NULL },
	{ "unknown-status", STEP_UNKNOWN_STATUS, 200, NULL },
	{ "accepted", STEP_ACCEPTED, 200, NULL },
	{ "warning", STEP_WARNING, 200, NULL },
	{ "400:details", STEP_DETAILS, 400, NULL },
	{ "400:details-string", STEP_DETAILS_STRING, 400, NULL },
	{ "400:reason", STEP_DETAILS_REASON, 400, NULL },
	{ "400", STEP_STATUS, 400, "{\"error\":\"bad request\"}" },
	{ "401", STEP_STATUS, 401, "{\"error\":\"unauthorized\"}" },
	{ "403", STEP_STATUS, 403, "{\"error\":\"forbidden\"}" },
	{ "403:private-team", STEP_STATUS, 403,
	  "{\"error\":\"User is not a member of the required private team\","
	  "\"code\":\"missing_private_team\"}" },
	{ "404", STEP_STATUS, 404, "{\"error\":\"not found\"}" },
	{ "408", STEP_STATUS, 408, "{\"error\":\"request timeout\"}" },
	{ "413", STEP_STATUS, 413, "{\"error\":\"payload too large\"}" },
	{ "429", STEP_STATUS, 429, "{\"error\":\"rate limited\"}" },
	{ "500", STEP_STATUS, 500, "{\"error\":\"internal server error\"}" },
	{ "502", STEP_STATUS, 502, "{\"error\":\"bad gateway\"}" },
	{ "503", STEP_STATUS, 503, "{\"error\":\"service unavailable\"}" },
};

struct rule {
	char *key;              /* dotted path, as given */
	char **parts;           /* its components */
	int nparts;
	const char *value;
	size_t valuelen;
	char *needle;           /* "last-component", to skip events that cannot match */
	size_t needlelen;
	char *error_json;       /* "KEY is VALUE" as a JSON string */
	int permanent;
};

static struct {
	long port;
	const char *port_file, *log_path, *request_log_path, *token_env, *token_file;
	const char *tls_cert, *tls_key;
	char *put_dir;
	int print_port, reject_batch;
	size_t max_body;
	int64_t exit_after_ms;
	struct step *steps;
	size_t nsteps;
	struct rule *rules;
	int nrules;
} opt = { .port = -1, .max_body = (size_t)64 << 20, .exit_after_ms = -1 };

/* --- the run's state; everything below `lock` is guarded by it --- */

struct key_chunk {
	struct key_chunk *next;
	size_t used, size;
	char data[];
};

struct id_slot {
	const char *key;
	uint32_t hash, len;
};

struct conn;

static struct {
	char *token;
	size_t tokenlen;
	atomic_int fatal;               /* exit status a worker asks main to stop with */
	pthread_mutex_t lock;
	uint64_t requests;
	size_t step_index;
	long step_used;
	int stopping;
	struct conn *held;              /* requests held by `hang` */
	FILE *log, *request_log;
	struct id_slot *slots;          /* the event_ids received: open addressing */
	size_t mask, nids;
	struct key_chunk *chunks;
} st = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* --- small helpers --- */

struct buf {
	char *p;
	size_t len, cap;
};

/* Makes room for n more bytes; 0, or -1 when that would pass limit. */
static int
buf_reserve(struct buf *b, size_t n, size_t limit)
{
	size_t cap;

	if (b->cap - b->len >= n)
		return 0;
	if (b->len + n > limit)
		return -1;
	cap = b->cap ? b->cap : 4096;
	while (cap - b->len < n)
		cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
	return 0;
}

static void
buf_add(struct buf *b, const char *p, size_t n)
{
	buf_reserve(b, n, SIZE_MAX);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void
buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Drops a buffer a big request left behind, so idle connections stay small. */
static void
buf_trim(struct buf *b)
{
	if (b->cap > KEEP_BUFFER_BYTES)
		buf_free(b);
	b->len = 0;
}

/* A JSON string for s, made valid UTF-8 if it is not (header values). */
static json_t *
json_text(const char *s)
{
	json_t *v;
	char *copy;

	if (!s)
		return json_null();
	if ((v = json_string(s)) != NULL)
		return v;
	copy = xstrdup(s);
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	v = json_string(copy);
	free(copy);
	return v ? v : json_null();
}

static char *
json_quote(const char *s)
{
	json_t *v = json_text(s);
	char *q = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

	json_decref(v);
	if (!q)
		die(EXIT_SOFTWARE, "out of memory");
	return q;
}

/* --- the set of event_ids received --- */

static uint32_t
hash_id(const char *p, size_t n)
{
	uint64_t h = 14695981039346656037u; /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211u;
	}
	return (uint32_t)(h ^ (h >> 32));
}

static struct id_slot *
id_slot_for(const char *key, size_t len, uint32_t h)
{
	for (size_t i = h & st.mask;; i = (i + 1) & st.mask) {
		struct id_slot *s = &st.slots[i];

		if (!s->key || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
			return s;
	}
}

static void
id_grow(void)
{
	struct id_slot *old = st.slots;
	size_t oldcap = st.slots ? st.mask + 1 : 0, cap = oldcap ? oldcap * 2 : (size_t)1 << 16;

	st.slots = calloc(cap, sizeof *st.slots);
	if (!st.slots)
		die(EXIT_SOFTWARE, "out of memory");
	st.mask = cap - 1;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].key)
			*id_slot_for(old[i].key, old[i].len, old[i].hash) = old[i];
	free(old);
}

/* Remembers key; 1 when it is new, 0 when it was received before. */
static int
id_remember(const char *key, size_t len)
{
	uint32_t h = hash_id(key, len);
	struct id_slot *s;
	struct key_chunk *c = st.chunks;

	if (!st.slots || (st.nids + 1) * 10 > (st.mask + 1) * 7)
		id_grow();
	s = id_slot_for(key, len, h);
	if (s->key)
		return 0;
	if (!c || c->size - c->used < len) {
		size_t size = (size_t)1 << 20;

		c = xmalloc(sizeof *c + size);
		c->next = st.chunks;
		c->used = 0;
		c->size = size;
		st.chunks = c;
	}
	memcpy(c->data + c->used, key, len);
	s->key = c->data + c->used;
	s->len = (uint32_t)len;
	s->hash = h;
	c->used += len;
	st.nids++;
	return 1;
}

static void
id_free(void)
{
	while (st.chunks) {
		struct key_chunk *next = st.chunks->next;

		free(st.chunks);
		st.chunks = next;
	}
	free(st.slots);
	st.slots = NULL;
}

/* --- connections and requests --- */

enum format { FMT_BATCH, FMT_JSON_ARRAY, FMT_NDJSON };
static const char *const format_names[] = { "batch", "json-array", "ndjson" };

enum verdict {
	V_SUCCESS, V_DUPLICATE, V_REJECTED, V_PERMANENT, V_ACCEPTED, V_WARNING, V_WEIRD,
	V_OMITTED
};
static const char *const verdict_names[] = {
	"success", "duplicate", "rejected", "failed_permanent", "accepted", "warning", "weird",
	NULL
};

enum id_state { ID_OK, ID_MISSING, ID_INVALID };

struct event {
	const char *raw;                /* the event's bytes as received */
	size_t len;
	const char *id_json;            /* the event_id member's raw value, or NULL */
	size_t id_json_len;
	const char *key;                /* the decoded event_id */
	size_t keylen;
	char *key_owned;                /* when decoding needed a copy */
	enum id_state id;
	const struct rule *rule;        /* the first rule it matches */
	enum verdict verdict;
};

struct conn {
	struct MHD_Connection *mc;
	struct buf body, inflated, out;
	struct event *events;
	size_t nevents, events_cap;
	struct json_member *spans;
	int spans_cap;
	/* the request in progress */
	uint64_t wire_bytes;
	const char *format;             /* once the body's format is known */
	int too_large, held;
	struct conn *held_next;
};

/* What a request is answered. */
enum answer_kind { ANSWER_BODY, ANSWER_HANG, ANSWER_CLOSE, ANSWER_DROP, ANSWER_FILE };

struct answer {
	enum answer_kind kind;
	unsigned status;
	const char *content_type;
	const char *body;
	size_t len;
	long retry_after;
	int retry_after_date;
	int fd;                 /* ANSWER_FILE: its body, len bytes; sending closes it */
	char etag[64];
};

static void
answer_json(struct answer *a, unsigned status, const char *body)
{
	a->kind = ANSWER_BODY;
	a->status = status;
	a->content_type = "application/json";
	a->body = body;
	a->len = strlen(body);
}

static void
clear_events(struct conn *c)
{
	for (size_t i = 0; i < c->nevents; i++)
		free(c->events[i].key_owned);
	c->nevents = 0;
}

static void
conn_free(struct conn *c)
{
	clear_events(c);
	free(c->events);
	free(c->spans);
	buf_free(&c->body);
	buf_free(&c->inflated);
	buf_free(&c->out);
	free(c);
}

/* --- rules --- */

/* The span at the rule's path in an event whose top-level members are m[0..n). */
static int
rule_span(const struct rule *r, const struct json_member *m, int n, const char **v, size_t *vlen)
{
	const struct json_member *at = json_member_find(m, n, r->parts[0]);
	struct json_member sub[64];

	for (int i = 1; at && i < r->nparts; i++) {
		const char *why;
		struct json_member *heap = NULL;
		int k;

		if (at->valuelen == 0 || at->value[0] != '{')
			return 0;
		k = json_members(at->value, at->valuelen, sub, 64, &why);
		if (k > 64) {
			heap = xmalloc((size_t)k * sizeof *heap);
			json_members(at->value, at->valuelen, heap, k, &why);
		}
		at = k < 0 ? NULL : json_member_find(heap ? heap : sub, k, r->parts[i]);
		if (at && heap) {
			/* Keep the span, not the array that held it. */
			sub[0] = *at;
			at = &sub[0];
		}
		free(heap);
	}
	if (!at)
		return 0;
	*v = at->value;
	*vlen = at->valuelen;
	return 1;
}

/* VALUE against a string's contents, or against any other value's JSON text. */
static int
rule_matches(const struct rule *r, const struct json_member *m, int n, const char *raw,
    size_t len)
{
	const char *v;
	size_t vlen;

	if (r->needle && !memchr(raw, '\\', len) && !memmem(raw, len, r->needle, r->needlelen))
		return 0;
	if (!rule_span(r, m, n, &v, &vlen))
		return 0;
	if (vlen >= 2 && v[0] == '"') {
		struct json_member s = { .value = v, .valuelen = vlen };
		char *text;
		int same;

		if (!memchr(v, '\\', vlen))
			return vlen - 2 == r->valuelen && memcmp(v + 1, r->value, r->valuelen) == 0;
		text = xmalloc(r->valuelen + 2);
		same = json_member_str(&s, text, r->valuelen + 2) == 0 &&
		    strlen(text) == r->valuelen && memcmp(text, r->value, r->valuelen) == 0;
		free(text);
		return same;
	}
	return vlen == r->valuelen && memcmp(v, r->value, vlen) == 0;
}

/* --- reading a body --- */

/* Adds the event at raw[0..len) with its top-level members; -1 when it is not an object. */
static int
add_event(struct conn *c, const char *raw, size_t len)
{
	struct json_member stack[64], *m = stack;
	const struct json_member *id;
	struct event *e;
	const char *why;
	int n = json_members(raw, len, m, 64, &why);

	if (n < 0)
		return -1;
	if (n > 64) {
		m = xmalloc((size_t)n * sizeof *m);
		json_members(raw, len, m, n, &why);
	}
	if (c->nevents == c->events_cap) {
		c->events_cap = c->events_cap ? c->events_cap * 2 : 256;
		c->events = xrealloc(c->events, c->events_cap * sizeof *c->events);
	}
	e = &c->events[c->nevents++];
	memset(e, 0, sizeof *e);
	e->raw = raw;
	e->len = len;
	e->verdict = V_SUCCESS;
	id = json_member_find(m, n, "event_id");
	if (!id) {
		e->id = ID_MISSING;
	} else {
		e->id_json = id->value;
		e->id_json_len = id->valuelen;
		e->id = ID_INVALID;
		if (id->valuelen > 2 && id->value[0] == '"' && id->valuelen - 2 <= MAX_ID_BYTES) {
			if (!memchr(id->value, '\\', id->valuelen)) {
				e->key = id->value + 1;
				e->keylen = id->valuelen - 2;
				e->id = ID_OK;
			} else {
				char *text = xmalloc(MAX_ID_BYTES + 1);

				if (json_member_str(id, text, MAX_ID_BYTES + 1) == 0 && text[0]) {
					e->key = e->key_owned = text;
					e->keylen = strlen(text);
					e->id = ID_OK;
				} else {
					free(text);
				}
			}
		}
	}
	/* Reject rules first: with --reject-mode batch they decide the whole batch. */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; opt.rules && i < opt.nrules && !e->rule; i++)
			if (opt.rules[i].permanent == pass &&
			    rule_matches(&opt.rules[i], m, n, raw, len))
				e->rule = &opt.rules[i];
	if (m != stack)
		free(m);
	return 0;
}

/* Splits a JSON array into c->spans; the number of elements, or -1. */
static int
split_array(struct conn *c, const char *text, size_t len, const char **why)
{
	int n = json_elements(text, len, c->spans, c->spans_cap, why);

	if (n > c->spans_cap) {
		c->spans_cap = n;
		c->spans = xrealloc(c->spans, (size_t)n * sizeof *c->spans);
		n = json_elements(text, len, c->spans, c->spans_cap, why);
	}
	return n;
}

/* Adds the n elements split_array() found as events; 0, or -1 with *why set. */
static int
add_elements(struct conn *c, int n, const char **why)
{
	if (n < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if (add_event(c, c->spans[i].value, c->spans[i].valuelen) != 0) {
			*why = "every event must be a JSON object";
			return -1;
		}
	}
	return 0;
}

/* Fills c->events from the body; 0, or -1 with *why set. */
static int
split_events(struct conn *c, const char *text, size_t len, enum format f, const char **why)
{
	clear_events(c);
	if (f == FMT_NDJSON) {
		const char *p = text, *end = text + len;

		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			const char *line_end = nl ? nl : end, *q = p;
			size_t n;

			while (q < line_end && (*q == ' ' || *q == '\t' || *q == '\r'))
				q++;
			n = (size_t)(line_end - p);
			if (n > 0 && p[n - 1] == '\r')
				n--;
			if (q < line_end && add_event(c, p, n) != 0) {
				*why = "every line must be a JSON object";
				return -1;
			}
			p = nl ? nl + 1 : end;
		}
		return 0;
	}
	if (f == FMT_BATCH) {
		const char *arr, *end;
		int n;

		/* The usual body is exactly {"events":[...]}: then the array's own
		 * scan checks all of it, and the body is not scanned twice. */
		arr = text;
		end = text + len;
		while (arr < end && strchr(" \t\r\n", *arr))
			arr++;
		while (end > arr && strchr(" \t\r\n", end[-1]))
			end--;
		if (end - arr > 12 && memcmp(arr, "{\"events\":", 10) == 0 && end[-1] == '}') {
			arr += 10;
			end--;
			while (arr < end && strchr(" \t\r\n", *arr))
				arr++;
			while (end > arr && strchr(" \t\r\n", end[-1]))
				end--;
			if (end > arr && *arr == '[' && end[-1] == ']' &&
			    (n = split_array(c, arr, (size_t)(end - arr), why)) >= 0)
				return add_elements(c, n, why);
		}
	}
	if (f == FMT_BATCH) {
		struct json_member top[16], *m = top;
		const struct json_member *events;
		int n = json_members(text, len, m, 16, why);

		if (n < 0)
			return -1;
		if (n > 16) {
			m = xmalloc((size_t)n * sizeof *m);
			json_members(text, len, m, n, why);
		}
		events = json_member_find(m, n, "events");
		if (events && events->valuelen > 0 && events->value[0] == '[') {
			text = events->value;
			len = events->valuelen;
		} else {
			text = NULL;
		}
		if (m != top)
			free(m);
		if (!text) {
			*why = "the body has no events array";
			return -1;
		}
	}
	return add_elements(c, split_array(c, text, len, why), why);
}

/* Inflates in[0..len) into c->inflated. 0; -1 bad data; -2 too large. */
static int
inflate_body(struct conn *c, const char *in, size_t len)
{
	z_stream zs;
	int rc = Z_OK, result = 0;

	memset(&zs, 0, sizeof zs);
	if (inflateInit2(&zs, 15 + 32) != Z_OK) /* gzip or zlib, detected */
		die(EXIT_SOFTWARE, "zlib: cannot initialize");
	c->inflated.len = 0;
	zs.next_in = (const Bytef *)in;
	for (;;) {
		size_t before;

		if (zs.avail_in == 0 && len > 0) {
			zs.avail_in = len > UINT_MAX ? UINT_MAX : (uInt)len;
			len -= zs.avail_in;
		}
		if (buf_reserve(&c->inflated, 64 * 1024, MAX_INFLATED) != 0 &&
		    c->inflated.cap == c->inflated.len) {
			result = -2;
			break;
		}
		before = c->inflated.cap - c->inflated.len;
		if (before > UINT_MAX)
			before = UINT_MAX;
		zs.next_out = (Bytef *)c->inflated.p + c->inflated.len;
		zs.avail_out = (uInt)before;
		rc = inflate(&zs, Z_NO_FLUSH);
		c->inflated.len += before - zs.avail_out;
		if (rc == Z_STREAM_END) {
			if (zs.avail_in == 0 && len == 0)
				break;
			/* Concatenated gzip members are one body. */
			if (inflateReset(&zs) != Z_OK) {
				result = -1;
				break;
			}
			continue;
		}
		if (rc == Z_OK)
			continue;
		if (rc == Z_BUF_ERROR && zs.avail_out != 0 && zs.avail_in == 0 && len == 0) {
			result = -1; /* truncated */
			break;
		}
		if (rc != Z_BUF_ERROR) {
			result = -1;
			break;
		}
	}
	inflateEnd(&zs);
	return result;
}

static const char *
header(struct MHD_Connection *mc, const char *name)
{
	return MHD_lookup_connection_value(mc, MHD_HEADER_KIND, name);
}

static int
authorized(struct MHD_Connection *mc)
{
	const char *h;
	size_t n;
	unsigned char diff = 0;

	if (!st.token)
		return 1;
	h = header(mc, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	n = strlen(h);
	if (n != st.tokenlen)
		return 0;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(h[i] ^ st.token[i]);
	return diff == 0;
}

/* Decodes and splits the body. 0; or fills *a with the 4xx answer. */
static int
read_body(struct conn *c, struct MHD_Connection *mc, enum format *f, struct answer *a)
{
	const char *enc = header(mc, MHD_HTTP_HEADER_CONTENT_ENCODING);
	const char *type = header(mc, MHD_HTTP_HEADER_CONTENT_TYPE);
	const char *text = c->body.p, *why = NULL, *p;
	size_t len = c->body.len;

	if (enc && *enc && strcasecmp(enc, "identity") != 0) {
		int rc;

		if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "x-gzip") != 0 &&
		    strcasecmp(enc, "deflate") != 0) {
			answer_json(a, 415, "{\"error\":\"unsupported content encoding\"}");
			return -1;
		}
		rc = inflate_body(c, text ? text : "", len);
		if (rc == -2) {
			answer_json(a, 413, "{\"error\":\"payload too large\"}");
			return -1;
		}
		if (rc != 0) {
			answer_json(a, 400, "{\"error\":\"the body is not valid gzip data\"}");
			return -1;
		}
		text = c->inflated.p;
		len = c->inflated.len;
	}
	if (!text)
		text = "";
	for (p = text; p < text + len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'); p++)
		;
	if (type && (strncasecmp(type, "application/x-ndjson", 20) == 0 ||
	    strncasecmp(type, "application/ndjson", 18) == 0))
		*f = FMT_NDJSON;
	else if (p < text + len && *p == '[')
		*f = FMT_JSON_ARRAY;
	else
		*f = FMT_BATCH;
	c->format = format_names[*f];
	if (split_events(c, text, len, *f, &why) != 0) {
		char msg[256], *q;

		snprintf(msg, sizeof msg, "invalid %s body: %s", format_names[*f], why);
		q = json_quote(msg);
		buf_trim(&c->out);
		buf_adds(&c->out, "{\"error\":");
		buf_adds(&c->out, q);
		buf_adds(&c->out, "}");
		free(q);
		a->kind = ANSWER_BODY;
		a->status = 400;
		a->content_type = "application/json";
		a->body = c->out.p;
		a->len = c->out.len;
		return -1;
	}
	return 0;
}

/* --- the script --- */

/* The step for the next POST; NULL when the script is used up. Under the lock. */
static const struct step *
next_step(void)
{
	const struct step *s;

	if (st.step_index >= opt.nsteps)
		return NULL;
	s = &opt.steps[st.step_index];
	if (++st.step_used >= s->repeat) {
		st.step_index++;
		st.step_used = 0;
	}
	return s;
}

static int
answers_alone(const struct step *s)
{
	return s && (s->kind == STEP_STATUS || s->kind == STEP_HANG || s->kind == STEP_CLOSE ||
	    s->kind == STEP_GARBAGE || s->kind == STEP_NO_RESULTS);
}

static void
answer_step(const struct step *s, struct answer *a)
{
	switch (s->kind) {
	case STEP_HANG:
		a->kind = ANSWER_HANG;
		break;
	case STEP_CLOSE:
		a->kind = ANSWER_CLOSE;
		a->status = 200;
		break;
	case STEP_GARBAGE:
		a->kind = ANSWER_BODY;
		a->status = 200;
		a->content_type = "text/html";
		a->body = s->body;
		a->len = strlen(s->body);
		break;
	default:
		answer_json(a, s->status, s->body);
		a->retry_after = s->retry_after;
		a->retry_after_date = s->retry_after_date;
	}
}

/* 400 with per-event details naming the first event. */
static void
answer_details(struct conn *c, const struct step *s, struct answer *a)
{
	struct buf *o = &c->out;
	struct buf list = { 0 };

	buf_adds(&list, "[{\"event_id\":");
	if (c->nevents > 0 && c->events[0].id_json)
		buf_add(&list, c->events[0].id_json, c->events[0].id_json_len);
	else
		buf_adds(&list, "null");
	buf_adds(&list, s->kind == STEP_DETAILS_REASON ? ",\"reason\":\"bad field\"}]" :
	    ",\"error\":\"bad field\"}]");
	buf_trim(o);
	buf_adds(o, s->kind == STEP_DETAILS_REASON ? "{\"error_message\":\"validation failed\"" :
	    "{\"error\":\"validation failed\"");
	buf_adds(o, ",\"details\":");
	if (s->kind == STEP_DETAILS_STRING) {
		char *q;

		buf_add(&list, "", 1);
		q = json_quote(list.p);
		buf_adds(o, q);
		free(q);
	} else {
		buf_add(o, list.p, list.len);
	}
	buf_adds(o, "}");
	buf_free(&list);
	a->kind = ANSWER_BODY;
	a->status = 400;
	a->content_type = "application/json";
	a->body = o->p;
	a->len = o->len;
}

/* --- recording and answering --- */

/* Writes one event as one log line; line breaks between tokens become spaces. */
static void
log_event(const char *prefix, size_t prefixlen, const struct event *e)
{
	FILE *f = st.log;

	fwrite(prefix, 1, prefixlen, f);
	if (!memchr(e->raw, '\n', e->len) && !memchr(e->raw, '\r', e->len)) {
		fwrite(e->raw, 1, e->len, f);
	} else {
		for (size_t i = 0; i < e->len; i++)
			putc(e->raw[i] == '\n' || e->raw[i] == '\r' ? ' ' : e->raw[i], f);
	}
	fwrite("}\n", 1, 2, f);
}

/* Gives every event its verdict, remembers the ids received and logs the
 * events. Under the lock. 0, or -1 when the log cannot be written. */
static int
record_events(struct conn *c, enum format f, const struct step *s, uint64_t seq)
{
	enum step_kind k = s && f == FMT_BATCH ? s->kind : STEP_OK;

	for (size_t i = 0; i < c->nevents; i++) {
		struct event *e = &c->events[i];

		if (k == STEP_MISSING && i + 1 == c->nevents) {
			e->verdict = V_OMITTED;
			continue;
		}
		if (k == STEP_UNKNOWN_STATUS) {
			e->verdict = V_WEIRD;
			continue;
		}
		if (f == FMT_BATCH && e->id != ID_OK) {
			e->verdict = V_REJECTED;
			continue;
		}
		if (e->rule) {
			e->verdict = e->rule->permanent ? V_PERMANENT : V_REJECTED;
			continue;
		}
		e->verdict = e->id != ID_OK || id_remember(e->key, e->keylen) ? V_SUCCESS :
		    V_DUPLICATE;
		if (k == STEP_ACCEPTED)
			e->verdict = V_ACCEPTED;
		else if (k == STEP_WARNING)
			e->verdict = V_WARNING;
	}
	if (!st.log)
		return 0;
	{
		char prefix[8][96];
		size_t prefixlen[8];

		for (int v = 0; v < 8; v++)
			prefixlen[v] = verdict_names[v] ? (size_t)snprintf(prefix[v], sizeof prefix[v],
			    "{\"request\":%" PRIu64 ",\"status\":\"%s\",\"event\":", seq,
			    verdict_names[v]) : 0;
		for (size_t i = 0; i < c->nevents; i++) {
			enum verdict v = c->events[i].verdict;

			if (v != V_OMITTED && v != V_WEIRD)
				log_event(prefix[v], prefixlen[v], &c->events[i]);
		}
	}
	if (fflush(st.log) != 0 || ferror(st.log))
		return -1;
	return 0;
}

static void
add_result(struct buf *o, const struct event *e, int first)
{
	static const char *const missing_id = ",\"code\":\"missing_event_id\","
	    "\"error\":\"the event has no event_id\"}";
	static const char *const invalid_id = ",\"code\":\"invalid_event_id\","
	    "\"error\":\"event_id must be a non-empty string\"}";

	buf_adds(o, first ? "{\"event_id\":" : ",{\"event_id\":");
	if (e->id_json)
		buf_add(o, e->id_json, e->id_json_len);
	else
		buf_adds(o, "null");
	buf_adds(o, ",\"status\":\"");
	buf_adds(o, verdict_names[e->verdict]);
	buf_adds(o, "\"");
	if (e->verdict == V_REJECTED && e->id == ID_MISSING) {
		buf_adds(o, missing_id);
	} else if (e->verdict == V_REJECTED && e->id == ID_INVALID) {
		buf_adds(o, invalid_id);
	} else if (e->verdict == V_REJECTED || e->verdict == V_PERMANENT) {
		buf_adds(o, e->verdict == V_REJECTED ? ",\"code\":\"validation\",\"error\":" :
		    ",\"code\":\"permanent\",\"error\":");
		buf_adds(o, e->rule->error_json);
		buf_adds(o, "}");
	} else {
		buf_adds(o, "}");
	}
}

static void
answer_results(struct conn *c, enum format f, struct answer *a)
{
	struct buf *o = &c->out;

	buf_trim(o);
	if (f != FMT_BATCH) {
		answer_json(a, 200, "{\"ok\":true}");
		return;
	}
	buf_adds(o, "{\"results\":[");
	for (size_t i = 0, n = 0; i < c->nevents; i++)
		if (c->events[i].verdict != V_OMITTED)
			add_result(o, &c->events[i], n++ == 0);
	buf_adds(o, "]}");
	a->kind = ANSWER_BODY;
	a->status = 200;
	a->content_type = "application/json";
	a->body = o->p;
	a->len = o->len;
}

struct header_walk {
	json_t *headers;
};

static enum MHD_Result
collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct header_walk *w = cls;
	char name[256];
	size_t i;
	json_t *old;

	(void)kind;
	for (i = 0; key[i] && i + 1 < sizeof name; i++)
		name[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] - 'A' + 'a' : key[i]);
	name[i] = '\0';
	if (strcmp(name, "authorization") == 0 || strcmp(name, "proxy-authorization") == 0)
		return MHD_YES;
	old = json_object_get(w->headers, name);
	if (old && json_is_string(old) && value) {
		/* A repeated header: its values joined, as HTTP allows. */
		size_t a = strlen(json_string_value(old)), b = strlen(value);
		char *joined = xmalloc(a + b + 3);

		memcpy(joined, json_string_value(old), a);
		memcpy(joined + a, ", ", 2); /* NOLINT(bugprone-not-null-terminated-result): the next copy ends it */
		memcpy(joined + a + 2, value, b + 1);
		json_object_set_new(w->headers, name, json_text(joined));
		free(joined);
	} else {
		json_object_set_new(w->headers, name, json_text(value ? value : ""));
	}
	return MHD_YES;
}

/* One --request-log line. Under the lock. 0, or -1 when it cannot be written. */
static int
log_request(struct conn *c, uint64_t seq, const char *method, const char *url,
    const struct answer *a, const struct step *s, const char *format, long events)
{
	struct header_walk w = { json_object() };
	json_t *rec;
	const char *enc = header(c->mc, MHD_HTTP_HEADER_CONTENT_ENCODING);
	int rc;

	if (!st.request_log) {
		json_decref(w.headers);
		return 0;
	}
	MHD_get_connection_values(c->mc, MHD_HEADER_KIND, collect_header, &w);
	rec = json_object();
	json_object_set_new(rec, "request", json_integer((json_int_t)seq));
	json_object_set_new(rec, "method", json_text(method));
	json_object_set_new(rec, "path", json_text(url));
	json_object_set_new(rec, "status", a->kind == ANSWER_HANG || a->kind == ANSWER_DROP ?
	    json_null() : json_integer(a->status));
	json_object_set_new(rec, "step", s ? json_text(s->name) :
	    strcmp(method, "POST") == 0 ? json_string("ok") : json_null());
	json_object_set_new(rec, "format", json_text(format));
	json_object_set_new(rec, "events", events >= 0 ? json_integer(events) : json_null());
	json_object_set_new(rec, "bytes", json_integer((json_int_t)c->wire_bytes));
	json_object_set_new(rec, "content_encoding", json_text(enc));
	json_object_set_new(rec, "content_type",
	    json_text(header(c->mc, MHD_HTTP_HEADER_CONTENT_TYPE)));
	json_object_set_new(rec, "authorization",
	    json_string(header(c->mc, MHD_HTTP_HEADER_AUTHORIZATION) ? "present" : "absent"));
	json_object_set_new(rec, "headers", w.headers);
	rc = json_write(st.request_log, rec);
	json_decref(rec);
	if (rc != 0 || putc('\n', st.request_log) == EOF || fflush(st.request_log) != 0 ||
	    ferror(st.request_log))
		return -1;
	return 0;
}

static ssize_t
read_then_fail(void *cls, uint64_t pos, char *buf, size_t max)
{
	static const char part[] = "{\"results\":[{\"event_id\":";

	(void)cls;
	if (pos == 0 && max >= sizeof part - 1) {
		memcpy(buf, part, sizeof part - 1);
		return (ssize_t)(sizeof part - 1);
	}
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* Sun, 06 Nov 1994 08:49:37 GMT, from SLUICE_NOW or the clock. */
static void
http_date(int64_t ms, char *out, size_t size)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
		"Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
	    tm.tm_mday % 100, months[tm.tm_mon % 12], (tm.tm_year + 1900) % 10000,
	    tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
}

static enum MHD_Result
send_answer(struct MHD_Connection *mc, const struct answer *a)
{
	struct MHD_Response *r;
	enum MHD_Result rc;

	if (a->kind == ANSWER_DROP)
		return MHD_NO;
	if (a->kind == ANSWER_CLOSE)
		r = MHD_create_response_from_callback(4096, 64, read_then_fail, NULL, NULL);
	else if (a->kind == ANSWER_FILE)
		r = MHD_create_response_from_fd(a->len, a->fd); /* closes it when done */
	else
		r = MHD_create_response_from_buffer(a->len, (void *)(uintptr_t)a->body,
		    MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	if (a->content_type)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
	else if (a->kind == ANSWER_CLOSE)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (a->status == 405)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW,
		    opt.put_dir ? "POST, PUT, GET, DELETE" : "POST");
	if (a->etag[0])
		MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, a->etag);
	if (a->retry_after >= 0) {
		char value[64];

		if (a->retry_after_date)
			http_date(now_ms() + (int64_t)a->retry_after * 1000, value, sizeof value);
		else
			snprintf(value, sizeof value, "%ld", a->retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, value);
	}
	rc = MHD_queue_response(mc, a->status, r);
	MHD_destroy_response(r);
	return rc;
}

/* --- --accept-put: a plain object store in a directory --- */

/* DIR/PATH for a request path of non-empty segments that do not start with a
 * dot, so that it names nothing outside DIR and no file being written; NULL
 * for any other path. */
static char *
object_path(const char *url)
{
	size_t dirlen = strlen(opt.put_dir), n = strlen(url);
	const char *p = url;
	char *path;

	if (*p != '/')
		return NULL;
	while (*p == '/') {
		p++;
		if (*p == '.' || *p == '/' || *p == '\0')
			return NULL;
		for (; *p && *p != '/'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return NULL;
	}
	path = xmalloc(dirlen + n + 1);
	memcpy(path, opt.put_dir, dirlen);
	memcpy(path + dirlen, url, n + 1);
	return path;
}

static void
object_etag(const struct stat *sb, char *out, size_t size)
{
	snprintf(out, size, "\"%llx-%llx.%09ld\"", (unsigned long long)sb->st_size,
	    (unsigned long long)sb->st_mtim.tv_sec, (long)sb->st_mtim.tv_nsec);
}

/* Writes the body aside in the object's directory, then renames it into
 * place: a reader sees the old object or the new one, never a part. */
static int
object_store(const char *path, const struct buf *body, uint64_t seq)
{
	const char *slash = strrchr(path, '/');
	size_t tmpsize = strlen(path) + 48, off = 0;
	char *tmp = xmalloc(tmpsize);
	int fd, rc = -1, saved;

	snprintf(tmp, tmpsize, "%.*s/.put-%" PRIu64 "-%ld", (int)(slash - path), path, seq,
	    (long)getpid());
	if (make_private_dirs(path) != 0 ||
	    (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		goto out;
	while (off < body->len) {
		ssize_t n = write(fd, body->p + off, body->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	saved = off == body->len ? 0 : errno ? errno : EIO;
	if (close(fd) != 0 && !saved)
		saved = errno;
	if (!saved && rename(tmp, path) == 0)
		rc = 0;
	else
		errno = saved ? saved : errno;
out:
	saved = errno;
	if (rc != 0)
		unlink(tmp);
	free(tmp);
	errno = saved;
	return rc;
}

static void
answer_object(struct conn *c, const char *method, const char *url, uint64_t seq,
    struct answer *a)
{
	char *path = object_path(url);
	struct stat sb;
	int fd;

	if (!path) {
		answer_json(a, 400, "{\"error\":\"an object path is /SEGMENT[/SEGMENT...], "
		    "no segment empty or starting with a dot\"}");
	} else if (strcmp(method, MHD_HTTP_METHOD_GET) == 0) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
			if (fd >= 0)
				close(fd);
			answer_json(a, 404, "{\"error\":\"no such object\"}");
		} else {
			a->kind = ANSWER_FILE;
			a->status = 200;
			a->fd = fd;
			a->len = (size_t)sb.st_size;
			a->content_type = "application/octet-stream";
			object_etag(&sb, a->etag, sizeof a->etag);
		}
	} else if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) {
		/* As S3 does: 204 whether or not there was one. */
		if (unlink(path) != 0 && errno != ENOENT) {
			warnmsg("cannot remove %s: %s", path, strerror(errno));
			answer_json(a, 500, "{\"error\":\"cannot remove the object\"}");
		} else {
			answer_json(a, 204, "");
			a->content_type = NULL;
		}
	} else if (object_store(path, &c->body, seq) != 0) {
		warnmsg("cannot store %s: %s", path, strerror(errno));
		answer_json(a, 500, "{\"error\":\"cannot store the object\"}");
	} else {
		answer_json(a, 200, "");
		a->content_type = NULL;
		if (stat(path, &sb) == 0)
			object_etag(&sb, a->etag, sizeof a->etag);
	}
	free(path);
}

/* The whole request is in: decide, record, log, answer. */
static enum MHD_Result
finish_request(struct conn *c, struct MHD_Connection *mc, const char *url, const char *method)
{
	struct answer a = { .kind = ANSWER_BODY, .retry_after = -1 };
	const struct step *s = NULL;
	enum format f = FMT_BATCH;
	long events = -1;
	uint64_t seq;
	int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0, failed = 0;
	int object = opt.put_dir && (strcmp(method, MHD_HTTP_METHOD_PUT) == 0 ||
	    strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_DELETE) == 0);

	pthread_mutex_lock(&st.lock);
	seq = ++st.requests;
	if (post || object)
		s = next_step();
	pthread_mutex_unlock(&st.lock);

	if (!post && !object) {
		answer_json(&a, 405, "{\"error\":\"method not allowed\"}");
	} else if (answers_alone(s)) {
		/* Counted for the request log only; not processed. */
		if (post && !c->too_large && read_body(c, mc, &f, &a) == 0)
			events = (long)c->nevents;
		a = (struct answer){ .retry_after = -1 };
		answer_step(s, &a);
	} else if (!authorized(mc)) {
		if (post && !c->too_large && read_body(c, mc, &f, &a) == 0)
			events = (long)c->nevents; /* counted, not processed */
		answer_json(&a, 401, "{\"error\":\"unauthorized\"}");
	} else if (c->too_large) {
		answer_json(&a, 413, "{\"error\":\"payload too large\"}");
	} else if (object) {
		answer_object(c, method, url, seq, &a);
	} else if (read_body(c, mc, &f, &a) == 0) {
		int matched = 0;

		events = (long)c->nevents;
		for (size_t i = 0; i < c->nevents && !matched; i++) {
			const struct rule *r = c->events[i].rule;

			/* ndjson and json-array have no per-event answer: any match fails them. */
			matched = r && (f != FMT_BATCH || (opt.reject_batch && !r->permanent));
		}
		if (matched) {
			/* No way to answer per event (or told not to): the whole request. */
			answer_json(&a, 400, "{\"error\":\"validation failed\"}");
		} else if (s && (s->kind == STEP_DETAILS || s->kind == STEP_DETAILS_STRING ||
		    s->kind == STEP_DETAILS_REASON)) {
			answer_details(c, s, &a);
		} else {
			pthread_mutex_lock(&st.lock);
			failed = record_events(c, f, s, seq) != 0;
			pthread_mutex_unlock(&st.lock);
			if (!failed)
				answer_results(c, f, &a);
		}
	}
	pthread_mutex_lock(&st.lock);
	if (failed || log_request(c, seq, method, url, &a, s, c->format, events) != 0) {
		warnmsg("cannot write the log: %s; stopping", strerror(errno));
		atomic_store(&st.fatal, EXIT_IOERR);
		answer_json(&a, 500, "{\"error\":\"cannot write the log\"}");
	}
	pthread_mutex_unlock(&st.lock);
	if (a.kind == ANSWER_HANG) {
		int stopping;

		/* Suspended before it is listed, so main never resumes a running
		 * request; MHD is never called under st.lock (its callbacks take it). */
		MHD_suspend_connection(mc);
		c->held = 1;
		pthread_mutex_lock(&st.lock);
		stopping = st.stopping;
		if (!stopping) {
			c->held_next = st.held;
			st.held = c;
		}
		pthread_mutex_unlock(&st.lock);
		if (stopping)
			MHD_resume_connection(mc); /* comes back here, and is closed */
		return MHD_YES;
	}
	return send_answer(mc, &a);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **req)
{
	const union MHD_ConnectionInfo *info =
	    MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *c = info ? info->socket_context : NULL;

	(void)cls;
	(void)version;
	if (!c)
		return MHD_NO;
	if (!*req) {
		/* Headers are in: a new request on this connection. */
		*req = c;
		c->mc = mc;
		c->wire_bytes = 0;
		c->too_large = 0;
		c->held = 0;
		c->format = NULL;
		clear_events(c);
		buf_trim(&c->body);
		buf_trim(&c->inflated);
		return MHD_YES;
	}
	if (c->held)
		return MHD_NO; /* resumed: the client gave up or we are stopping */
	if (*upload_data_size > 0) {
		c->wire_bytes += *upload_data_size;
		if (c->wire_bytes > opt.max_body) {
			/* Read to the end, kept nowhere, then answered 413. */
			c->too_large = 1;
			buf_trim(&c->body);
		} else {
			buf_add(&c->body, upload_data, *upload_data_size);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	return finish_request(c, mc, url, method);
}

static void
on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	(void)mc;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		struct conn *c = xmalloc(sizeof *c);

		memset(c, 0, sizeof *c);
		*socket_context = c;
	} else if (*socket_context) {
		struct conn *c = *socket_context;

		pthread_mutex_lock(&st.lock);
		for (struct conn **p = &st.held; *p; p = &(*p)->held_next) {
			if (*p == c) {
				*p = c->held_next;
				break;
			}
		}
		pthread_mutex_unlock(&st.lock);
		conn_free(c);
		*socket_context = NULL;
	}
}

/* libmicrohttpd's last message while starting, to say why it could not. */
static char startup_error[1024];
static atomic_int started;

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[1024];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	if (!atomic_load(&started))
		snprintf(startup_error, sizeof startup_error, "%s", msg);
	debugmsg("libmicrohttpd: %s", msg);
}

/* Resumes held requests whose client is gone (or all, when stopping): each
 * comes back to on_request(), which closes it. */
static void
release_held(int all)
{
	struct conn **p, *gone_list = NULL;

	pthread_mutex_lock(&st.lock);
	if (all)
		st.stopping = 1;
	p = &st.held;
	while (*p) {
		struct conn *c = *p;
		int gone = all;

		if (!gone) {
			const union MHD_ConnectionInfo *info =
			    MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
			struct pollfd pfd = { .fd = info ? info->connect_fd : -1,
				.events = POLLIN | POLLRDHUP };

			gone = !info || (poll(&pfd, 1, 0) > 0 &&
			    (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)));
		}
		if (gone) {
			*p = c->held_next;
			c->held_next = gone_list;
			gone_list = c;
		} else {
			p = &c->held_next;
		}
	}
	pthread_mutex_unlock(&st.lock);
	/* Suspended connections are never closed under us, so c is still valid. */
	while (gone_list) {
		struct conn *c = gone_list;

		gone_list = c->held_next;
		MHD_resume_connection(c->mc);
	}
}

/* --- startup --- */

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b = { 0 };
	char chunk[8192];
	size_t n;

	if (!f)
		die(EXIT_NOINPUT, "cannot read %s: %s", path, strerror(errno));
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_add(&b, chunk, n);
	if (ferror(f))
		die(EXIT_NOINPUT, "cannot read %s: %s", path, strerror(errno));
	fclose(f);
	buf_add(&b, "", 1);
	*len = b.len - 1;
	return b.p;
}

static void
load_token(void)
{
	if (opt.token_env) {
		const char *v = getenv(opt.token_env);

		if (!v || !*v)
			die(EXIT_CONFIG, "the token variable %s is unset or empty", opt.token_env);
		st.token = xstrdup(v);
		st.tokenlen = strlen(v);
	} else if (opt.token_file) {
		st.token = read_file(opt.token_file, &st.tokenlen);
		while (st.tokenlen > 0 && (st.token[st.tokenlen - 1] == '\n' ||
		    st.token[st.tokenlen - 1] == '\r'))
			st.token[--st.tokenlen] = '\0';
		if (st.tokenlen == 0 || strlen(st.token) != st.tokenlen)
			die(EXIT_CONFIG, "the token file %s is empty or holds a NUL byte",
			    opt.token_file);
	}
}

static void
parse_step(const char *text, size_t len, struct step *s)
{
	char word[64];
	const char *x = NULL, *colon;
	size_t base = len;
	long repeat = 1;

	/* A repeat count: a last 'x' followed by digits only. */
	for (size_t i = len; i-- > 0;) {
		if (text[i] == 'x') {
			if (i + 1 < len)
				x = text + i;
			break;
		}
		if (text[i] < '0' || text[i] > '9')
			break;
	}
	if (x) {
		char *end;

		base = (size_t)(x - text);
		errno = 0;
		repeat = strtol(x + 1, &end, 10);
		if (errno || repeat < 1 || end != text + len)
			usage_error(usage, "bad repeat count in script step '%.*s'", (int)len, text);
	}
	if (base == 0 || base >= sizeof word)
		usage_error(usage, "unknown script step '%.*s'", (int)len, text);
	memcpy(word, text, base);
	word[base] = '\0';
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", word);
	s->repeat = repeat;
	s->retry_after = -1;
	colon = strchr(word, ':');
	if (colon && (strncmp(colon, ":retry-after=", 13) == 0 ||
	    strncmp(colon, ":retry-after-date=", 18) == 0)) {
		int date = colon[12] == '-';
		const char *num = colon + (date ? 18 : 13);
		char *end;

		errno = 0;
		s->retry_after = strtol(num, &end, 10);
		if (errno || end == num || *end || s->retry_after < 0)
			usage_error(usage, "bad Retry-After in script step '%s'", word);
		s->retry_after_date = date;
		word[colon - word] = '\0';
	}
	for (size_t i = 0; i < sizeof step_table / sizeof step_table[0]; i++) {
		if (strcmp(step_table[i].name, word) == 0) {
			if (s->retry_after >= 0 && step_table[i].kind != STEP_STATUS)
				usage_error(usage, "script step '%s': only a status step takes a "
				    "Retry-After", s->name);
			s->kind = step_table[i].kind;
			s->status = step_table[i].status;
			s->body = step_table[i].body;
			return;
		}
	}
	usage_error(usage, "unknown script step '%s' (known: ok, 400, 400:details, "
	    "400:details-string, 400:reason, 401, 403, 403:private-team, 404, 408, 413, 429, "
	    "500, 502, 503, hang, close, garbage, no-results, missing, unknown-status, "
	    "accepted, warning)", s->name);
}

static void
parse_script(const char *spec)
{
	const char *p = spec;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		opt.steps = xrealloc(opt.steps, (opt.nsteps + 1) * sizeof *opt.steps);
		parse_step(p, len, &opt.steps[opt.nsteps++]);
		if (!comma)
			break;
		p = comma + 1;
	}
}

static void
add_rule(const char *arg, int permanent)
{
	const char *eq = strchr(arg, '=');
	struct rule *r;
	char *key, *msg, *tok, *save = NULL;

	if (!eq || eq == arg)
		usage_error(usage, "%s needs KEY=VALUE, not '%s'",
		    permanent ? "--permanent-when" : "--reject-when", arg);
	opt.rules = xrealloc(opt.rules, (size_t)(opt.nrules + 1) * sizeof *opt.rules);
	r = &opt.rules[opt.nrules++];
	memset(r, 0, sizeof *r);
	r->permanent = permanent;
	r->key = key = xmemdup(arg, (size_t)(eq - arg));
	r->value = eq + 1;
	r->valuelen = strlen(r->value);
	for (tok = strtok_r(key, ".", &save); tok; tok = strtok_r(NULL, ".", &save)) {
		r->parts = xrealloc(r->parts, (size_t)(r->nparts + 1) * sizeof *r->parts);
		r->parts[r->nparts++] = tok;
	}
	if (r->nparts == 0)
		usage_error(usage, "bad key in '%s'", arg);
	{
		const char *last = r->parts[r->nparts - 1];
		size_t n = strlen(last);
		int plain = 1;

		for (size_t i = 0; i < n; i++)
			if ((unsigned char)last[i] < 0x20 || (unsigned char)last[i] >= 0x80 ||
			    last[i] == '"' || last[i] == '\\')
				plain = 0;
		if (plain) {
			r->needle = xmalloc(n + 3);
			snprintf(r->needle, n + 3, "\"%s\"", last);
			r->needlelen = n + 2;
		}
	}
	msg = xmalloc(strlen(arg) + 8);
	/* The key before it was cut into components. */
	snprintf(msg, strlen(arg) + 8, "%.*s is %s", (int)(eq - arg), arg, r->value);
	r->error_json = json_quote(msg);
	free(msg);
}

static void
free_options(void)
{
	for (int i = 0; i < opt.nrules; i++) {
		free(opt.rules[i].key);
		free(opt.rules[i].parts);
		free(opt.rules[i].needle);
		free(opt.rules[i].error_json);
	}
	free(opt.rules);
	free(opt.steps);
	free(opt.put_dir);
	free(st.token);
}

static size_t
parse_size(const char *arg, const char *name)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (end != arg && *end && !end[1]) {
		switch (*end) {
		case 'k': case 'K': shift = 10; end++; break;
		case 'm': case 'M': shift = 20; end++; break;
		case 'g': case 'G': shift = 30; end++; break;
		}
	}
	if (errno || end == arg || *end || *arg == '-' || v < 1 || v > (SIZE_MAX >> 1 >> shift))
		usage_error(usage, "%s must be a number of bytes >= 1 (K, M, G allowed), not '%s'",
		    name, arg);
	return (size_t)v << shift;
}

static void
write_port_file(const char *path, unsigned port)
{
	size_t n = strlen(path) + 5;
	char *tmp = xmalloc(n);
	FILE *f;
	int ok;

	snprintf(tmp, n, "%s.tmp", path);
	f = fopen(tmp, "w");
	ok = f && fprintf(f, "%u\n", port) > 0;
	if (f && fclose(f) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		warnmsg("cannot write the port file %s: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		atomic_store(&st.fatal, EXIT_IOERR);
		return;
	}
	free(tmp);
}

static FILE *
open_log(const char *path)
{
	FILE *f = fopen(path, "a");

	if (!f)
		die(EXIT_IOERR, "cannot open the log %s: %s", path, strerror(errno));
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	return f;
}

int
main(int argc, char **argv)
{
	enum {
		O_PORT = 256, O_PORT_FILE, O_PRINT_PORT, O_LOG, O_REQUEST_LOG, O_SCRIPT,
		O_REJECT_WHEN, O_PERMANENT_WHEN, O_REJECT_MODE, O_MAX_BODY, O_TOKEN_ENV,
		O_TOKEN_FILE, O_TLS_CERT, O_TLS_KEY, O_EXIT_AFTER, O_ACCEPT_PUT
	};
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, O_PORT },
		{ "port-file", required_argument, NULL, O_PORT_FILE },
		{ "print-port", no_argument, NULL, O_PRINT_PORT },
		{ "log", required_argument, NULL, O_LOG },
		{ "request-log", required_argument, NULL, O_REQUEST_LOG },
		{ "script", required_argument, NULL, O_SCRIPT },
		{ "reject-when", required_argument, NULL, O_REJECT_WHEN },
		{ "permanent-when", required_argument, NULL, O_PERMANENT_WHEN },
		{ "reject-mode", required_argument, NULL, O_REJECT_MODE },
		{ "max-body", required_argument, NULL, O_MAX_BODY },
		{ "token-env", required_argument, NULL, O_TOKEN_ENV },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "tls-cert", required_argument, NULL, O_TLS_CERT },
		{ "tls-key", required_argument, NULL, O_TLS_KEY },
		{ "exit-after", required_argument, NULL, O_EXIT_AFTER },
		{ "accept-put", required_argument, NULL, O_ACCEPT_PUT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct sockaddr_in addr;
	struct MHD_OptionItem tls[3] = { { MHD_OPTION_END, 0, NULL } };
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	sigset_t stop_signals;
	char *cert = NULL, *key = NULL;
	unsigned flags, port;
	int64_t deadline = -1;
	int c, status;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		switch (c) {
		case O_PORT: {
			char *end;

			errno = 0;
			opt.port = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || opt.port < 0 || opt.port > 65535)
				usage_error(usage, "--port must be a number from 0 to 65535, not '%s'",
				    optarg);
			break;
		}
		case O_PORT_FILE: opt.port_file = optarg; break;
		case O_PRINT_PORT: opt.print_port = 1; break;
		case O_LOG: opt.log_path = optarg; break;
		case O_REQUEST_LOG: opt.request_log_path = optarg; break;
		case O_SCRIPT:
			if (opt.nsteps)
				usage_error(usage, "--script given twice");
			parse_script(optarg);
			break;
		case O_REJECT_WHEN: add_rule(optarg, 0); break;
		case O_PERMANENT_WHEN: add_rule(optarg, 1); break;
		case O_REJECT_MODE:
			if (strcmp(optarg, "batch") == 0)
				opt.reject_batch = 1;
			else if (strcmp(optarg, "event") == 0)
				opt.reject_batch = 0;
			else
				usage_error(usage, "--reject-mode must be event or batch, not '%s'",
				    optarg);
			break;
		case O_MAX_BODY: opt.max_body = parse_size(optarg, "--max-body"); break;
		case O_TOKEN_ENV: opt.token_env = optarg; break;
		case O_TOKEN_FILE: opt.token_file = optarg; break;
		case O_TLS_CERT: opt.tls_cert = optarg; break;
		case O_TLS_KEY: opt.tls_key = optarg; break;
		case O_EXIT_AFTER:
			opt.exit_after_ms = parse_duration(optarg);
			if (opt.exit_after_ms <= 0)
				usage_error(usage, "--exit-after must be a duration > 0 (300, 90s, 5m), "
				    "not '%s'", optarg);
			break;
		case O_ACCEPT_PUT:
			free(opt.put_dir);
			opt.put_dir = xstrdup(optarg);
			break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);
	if (opt.put_dir) {
		struct stat sb;
		size_t n = strlen(opt.put_dir);

		if (stat(opt.put_dir, &sb) != 0)
			die(EXIT_NOINPUT, "--accept-put %s: %s", opt.put_dir, strerror(errno));
		if (!S_ISDIR(sb.st_mode))
			die(EXIT_NOINPUT, "--accept-put %s: not a directory", opt.put_dir);
		while (n > 1 && opt.put_dir[n - 1] == '/')
			opt.put_dir[--n] = '\0'; /* DIR/ and DIR name the same objects */
	}
	if (opt.port < 0)
		usage_error(usage, "--port is required (0 picks a free port)");
	if (opt.token_env && opt.token_file)
		usage_error(usage, "--token-env and --token-file exclude each other");
	if (!opt.tls_cert != !opt.tls_key)
		usage_error(usage, "--tls-cert and --tls-key go together");

	load_token();
	if (opt.tls_cert) {
		size_t n;

		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
			die(EXIT_UNAVAILABLE, "this libmicrohttpd was built without TLS support; "
			    "cannot serve HTTPS");
		cert = read_file(opt.tls_cert, &n);
		key = read_file(opt.tls_key, &n);
	}
	if (opt.log_path)
		st.log = open_log(opt.log_path);
	if (opt.request_log_path)
		st.request_log = open_log(opt.request_log_path);
	json_object_seed(0); /* before any thread can create a JSON value */

	/* Stop signals are taken by sigtimedwait() below, in this thread only;
	 * SIG_DFL first, as a shell starts background jobs with SIGINT ignored
	 * and an ignored signal never reaches sigtimedwait(). */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);

	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)opt.port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
	    MHD_USE_ERROR_LOG;
	if (cert) {
		flags |= MHD_USE_TLS;
		tls[0] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, cert };
		tls[1] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, key };
		tls[2] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
	}
	errno = 0;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)WORKER_THREADS,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_ARRAY, tls,
	    MHD_OPTION_END);
	if (!d && cert)
		die(EXIT_UNAVAILABLE, "cannot serve HTTPS on 127.0.0.1:%ld with %s and %s: %s",
		    opt.port, opt.tls_cert, opt.tls_key,
		    startup_error[0] ? startup_error : errno ? strerror(errno) : "unknown error");
	if (!d) /* libmicrohttpd's own message names port 0: the one given it apart */
		die(EXIT_UNAVAILABLE, "cannot listen on 127.0.0.1:%ld: %s", opt.port,
		    errno ? strerror(errno) : startup_error[0] ? startup_error : "unknown error");
	atomic_store(&started, 1);
	free(cert);
	free(key);
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : (unsigned)opt.port;
	if (port == 0) {
		MHD_stop_daemon(d);
		die(EXIT_SOFTWARE, "cannot tell which port the server listens on");
	}
	if (opt.port_file)
		write_port_file(opt.port_file, port);
	if (opt.print_port) {
		printf("%u\n", port);
		if (fflush(stdout) != 0) {
			warnmsg("cannot write standard output: %s", strerror(errno));
			atomic_store(&st.fatal, EXIT_IOERR);
		}
	}
	debugmsg("listening on 127.0.0.1:%u", port);
	if (opt.exit_after_ms > 0)
		deadline = mono_ms() + opt.exit_after_ms;

	while (atomic_load(&st.fatal) == 0) {
		struct timespec tick = { 0, TICK_MS * 1000000L };
		int sig = sigtimedwait(&stop_signals, NULL, &tick);

		if (sig > 0) {
			debugmsg("stopping on signal %d", sig);
			break;
		}
		if (deadline >= 0 && mono_ms() >= deadline) {
			char took[32];

			warnmsg("stopping: --exit-after %s has passed",
			    format_duration(opt.exit_after_ms, took, sizeof took));
			break;
		}
		release_held(0);
	}
	release_held(1);
	MHD_stop_daemon(d);

	status = atomic_load(&st.fatal);
	if (st.log && fclose(st.log) != 0) {
		warnmsg("cannot write the log %s: %s", opt.log_path, strerror(errno));
		status = EXIT_IOERR;
	}
	if (st.request_log && fclose(st.request_log) != 0) {
		warnmsg("cannot write the log %s: %s", opt.request_log_path, strerror(errno));
		status = EXIT_IOERR;
	}
	id_free();
	free_options();
	c = finish_stdout();
	return status != EXIT_OK ? status : c;
}
