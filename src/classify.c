/*
 * classify - turn response records into one outcome record per event.
 *
 * Reads:  response records (post-batch's output), one JSON object per line:
 *           {"target":"prod","format":"batch","request":7,"http_status":200,
 *            "transport_error":null,"elapsed_ms":3,"retry_after_ms":null,
 *            "events":[{"seq":42,"event_id":"..."}],"response":{...},"note":null}
 *         Empty lines are skipped; CRLF is fine.
 * Writes: one outcome record per event of each response, in the order of the
 *         response's events, compact, keys in this order:
 *           {"seq":42,"event_id":"...","target":"prod","status":"rejected",
 *            "category":"validation","http_status":400,"error":"...",
 *            "retry_after_ms":null}
 *         stdout is flushed after each response's outcomes: record-results
 *         waits on them.
 * Promises:
 *   - a pure function of its input: no database, no network, no clock, no
 *     environment; the same input gives the same output, byte for byte;
 *   - every event of a valid response gets exactly one outcome, decided by the
 *     first matching row of the table in SLUICE.md section 5 (and classify(1));
 *   - a line that is not a valid response record is named on stderr and
 *     skipped whole (none of its events gets an outcome); the rest goes on
 *     and the exit status is 65.
 *
 * Speed: every event of a drain passes through here, in lines of up to a
 * batch of events and their results. Building a jansson value for each of
 * those small objects took three times as long as everything else, so the
 * structure of a line (its members, the events list, a batch receiver's
 * results list and their entries) is found with the span scanner of json.h,
 * and jansson decodes only what classify uses that the scanner cannot take
 * as it is: the record's small members, any string that is not plain ASCII
 * without escapes, a message given as an object, and a body other than a
 * 2xx batch answer, whole. Results are found by event_id through a hash
 * table: a batch of n events costs O(n), not O(n^2).
 */
#include "exitcode.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "ndjson.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const char usage[] =
"usage: classify [--max-bytes N] < responses.ndjson > outcomes.ndjson\n"
"\n"
"Turn response records (from post-batch) into one outcome record per event:\n"
"success, duplicate, rejected, failed_transient or failed_permanent, with a\n"
"category. A pure filter: no database, no network.\n"
"\n"
"      --max-bytes N    longest accepted input line (default 67108864)\n"
"  -h, --help           this help\n"
"  -V, --version        print the version\n"
"\n"
"Exit: 0 every line classified, 64 usage, 65 some lines were not response\n"
"records (skipped), 70 out of memory, 74 cannot read input or write output.\n";

#define DEFAULT_MAX_BYTES (64u << 20)
/* Members looked at in one object; a record has about ten. */
#define MAX_MEMBERS 64

static struct {
	size_t max_bytes;
} opt = { .max_bytes = DEFAULT_MAX_BYTES };

/* --- records --- */

/* A string from the input: its bytes, and the jansson value when it had to
 * be decoded (then the bytes are the value's). */
struct str {
	const char *s;           /* not NUL-terminated */
	size_t len;
	json_t *value;
};

/* One event of a response, as checked. */
struct event {
	int64_t seq;
	struct str id;           /* not empty */
};

/* One entry of a batch receiver's results list, as scanned: the spans of
 * the members classify reads (value NULL when missing). */
struct result_span {
	struct json_member status, code;
	struct json_member message[3]; /* error, error_message, reason */
};

/* What a batch receiver said about one event (s NULL: nothing). */
struct result_fields {
	struct str status, code, error;
};

/* The outcomes of one response, written to stdout in one go. */
struct outbuf {
	char *data;
	size_t len, cap;
};

/* An index of list entries by event_id: open addressing, first entry wins. */
struct slot {
	const char *key;
	size_t len;
	uint64_t hash;
	size_t at;               /* the entry's position in its list */
};

struct index {
	struct slot *slots;
	size_t size;             /* in use for the current list; a power of two */
	size_t cap;              /* allocated */
};

/* Everything classify keeps from one line to the next: buffers only. */
struct classifier {
	struct index ix;
	struct json_member *spans;   /* the elements of a list */
	size_t spans_cap;
	struct event *events;
	size_t events_cap;
	struct result_span *results;
	size_t results_cap;
	struct outbuf out;
	char why[256];
};

/* A response record, checked. Everything points into the line, into
 * `owned`, or into the classifier's buffers. */
struct response {
	struct classifier *c;
	json_t *target;          /* non-empty string */
	struct event *events;
	size_t nevents;
	const char *format;      /* batch, ndjson, json-array, or NULL */
	json_t *transport;       /* transport_error object, or NULL */
	const char *note;        /* oversized, not_attempted, or NULL */
	int64_t http_status;     /* -1: none */
	int64_t retry_after_ms;  /* -1: none */
	struct json_member body_span; /* the response member; value NULL when missing */
	json_t *body;            /* the same decoded, once asked for (response_body) */
	int body_decoded;
	json_t *owned;           /* jansson values made for this line */
};

/* What happens to one event. A category or error is a literal of ours or a
 * string from the input (which wins when it is there). */
struct verdict {
	const char *status;
	const char *category;
	struct str category_value;
	const char *error;
	struct str error_value;
	int64_t http_status;     /* -1: null */
	int64_t retry_after_ms;  /* -1: null */
};

/* --- the index --- */

static uint64_t
hash_bytes(const char *s, size_t n)
{
	uint64_t h = 14695981039346656037u; /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211u;
	}
	return h;
}

/* Empties the index, sized for n entries. */
static void
index_reset(struct index *ix, size_t n)
{
	size_t want = 16;

	while (want < 2 * n)
		want *= 2;
	if (want > ix->cap) {
		free(ix->slots);
		ix->slots = malloc(want * sizeof *ix->slots);
		if (!ix->slots)
			die(EXIT_SOFTWARE, "out of memory");
		ix->cap = want;
	}
	ix->size = want;
	memset(ix->slots, 0, want * sizeof *ix->slots);
}

/* Adds key -> at unless key is there already (the first entry counts). */
static void
index_add(struct index *ix, const char *key, size_t len, size_t at)
{
	uint64_t h = hash_bytes(key, len);
	size_t i;

	for (i = h & (ix->size - 1); ix->slots[i].key; i = (i + 1) & (ix->size - 1))
		if (ix->slots[i].hash == h && ix->slots[i].len == len &&
		    memcmp(ix->slots[i].key, key, len) == 0)
			return;
	ix->slots[i] = (struct slot){ key, len, h, at };
}

/* The position of key's entry, or SIZE_MAX. */
static size_t
index_find(const struct index *ix, const struct str *key)
{
	uint64_t h = hash_bytes(key->s, key->len);

	for (size_t i = h & (ix->size - 1); ix->slots[i].key; i = (i + 1) & (ix->size - 1))
		if (ix->slots[i].hash == h && ix->slots[i].len == key->len &&
		    memcmp(ix->slots[i].key, key->s, key->len) == 0)
			return ix->slots[i].at;
	return SIZE_MAX;
}

/* Indexes the objects of a jansson list that carry a string event_id. */
static void
index_json_list(struct index *ix, json_t *items)
{
	json_t *item;
	size_t i;

	index_reset(ix, json_array_size(items));
	json_array_foreach(items, i, item) {
		json_t *id = json_object_get(item, "event_id");

		if (json_is_string(id))
			index_add(ix, json_string_value(id), json_string_length(id), i);
	}
}

/* --- small helpers over jansson --- */

/* An integral number (an integer, or a real without a fraction, as jansson
 * gives every number of a value that held one too big for an integer). */
static int
get_int(const json_t *v, int64_t *out)
{
	double d;

	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 1;
	}
	if (!json_is_real(v))
		return 0;
	d = json_real_value(v);
	if (!(d > -9007199254740992.0 && d < 9007199254740992.0) || (double)(int64_t)d != d)
		return 0;
	*out = (int64_t)d;
	return 1;
}

static int
bytes_are(const char *s, size_t n, const char *word)
{
	return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

/* s is a string equal to word, ignoring ASCII case. */
static int
word_is(const json_t *s, const char *word)
{
	return json_is_string(s) && bytes_are(json_string_value(s), json_string_length(s), word);
}

static int
contains_ci(const json_t *s, const char *needle)
{
	const char *hay = json_string_value(s);
	size_t n = json_string_length(s), m = strlen(needle);

	if (!hay)
		return 0;
	for (size_t i = 0; i + m <= n; i++)
		if (strncasecmp(hay + i, needle, m) == 0)
			return 1;
	return 0;
}

/* A message: v when a non-empty string, or v.message when v is an object (as
 * in {"error":{"message":"..."}}); else NULL. */
static json_t *
message_in(json_t *v)
{
	if (json_is_object(v))
		v = json_object_get(v, "message");
	return json_is_string(v) && json_string_length(v) > 0 ? v : NULL;
}

/* The message under the first of keys that has one. */
static json_t *
message_of(json_t *obj, const char *const *keys)
{
	json_t *m = NULL;

	for (; *keys && !m; keys++)
		m = message_in(json_object_get(obj, *keys));
	return m;
}

static const char *const body_message_keys[] = { "error", "error_message", "message", NULL };
static const char *const result_message_keys[] = { "error", "error_message", "reason", NULL };
static const char *const detail_message_keys[] = { "error", "reason", "error_message",
	"message", NULL };

/* A value kept until the line is done with. */
static json_t *
keep(struct response *r, json_t *v)
{
	if (v && json_array_append_new(r->owned, v) != 0)
		die(EXIT_SOFTWARE, "out of memory");
	return v;
}

static json_t *
owned_string(struct response *r, const char *text)
{
	json_t *s = keep(r, json_string(text));

	if (!s)
		die(EXIT_SOFTWARE, "out of memory");
	return s;
}

/* A jansson string as a struct str; nothing when v is not a string. */
static struct str
jstr(json_t *v)
{
	struct str s = { NULL, 0, NULL };

	if (json_is_string(v))
		s = (struct str){ json_string_value(v), json_string_length(v), v };
	return s;
}

/* How many of the first max bytes of s to keep without cutting a UTF-8
 * character in two. */
static int
utf8_prefix(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return (int)len;
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return (int)max;
}

/* Decodes JSON text with jansson; the value lives as long as the line. */
static json_t *
decode(struct response *r, const char *text, size_t len, json_error_t *err)
{
	json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, err);

	if (!v && json_error_code(err) == json_error_numeric_overflow)
		v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL |
		    JSON_DECODE_INT_AS_REAL, err);
	return keep(r, v);
}

/* A string literal's text (m->value is its bytes, quotes included): its own
 * bytes when plain ASCII without escapes, else decoded by jansson. */
static int
span_string(struct response *r, const struct json_member *m, struct str *out)
{
	json_error_t err;
	json_t *v;

	if (!m || !m->value || m->valuelen < 2 || m->value[0] != '"')
		return 0;
	for (size_t i = 1; i < m->valuelen - 1; i++)
		if ((unsigned char)m->value[i] >= 0x80 || m->value[i] == '\\')
			goto decode;
	*out = (struct str){ m->value + 1, m->valuelen - 2, NULL };
	return 1;
decode:
	v = decode(r, m->value, m->valuelen, &err);
	if (!json_is_string(v)) /* a macro that evaluates its argument twice */
		return 0;
	*out = jstr(v);
	return 1;
}

/* --- reading a response record --- */

/* Splits a list into c->spans; returns its length, -1 when it is not a list. */
static int
scan_list(struct classifier *c, const struct json_member *list, const char **why)
{
	int n;

	if (!list || list->valuelen == 0 || list->value[0] != '[')
		return -1;
	n = json_elements(list->value, list->valuelen, c->spans, (int)c->spans_cap, why);
	if (n > (int)c->spans_cap) {
		free(c->spans);
		c->spans_cap = (size_t)n * 2;
		c->spans = malloc(c->spans_cap * sizeof *c->spans);
		if (!c->spans)
			die(EXIT_SOFTWARE, "out of memory");
		n = json_elements(list->value, list->valuelen, c->spans, (int)c->spans_cap, why);
	}
	return n;
}

/* An event's seq: plain digits are read here, anything else by jansson. */
static int
event_seq(struct response *r, const struct json_member *m, int64_t *seq)
{
	json_error_t err;
	int64_t n = 0;
	size_t i;

	if (!m)
		return 0;
	for (i = 0; i < m->valuelen && i < 18 && m->value[i] >= '0' && m->value[i] <= '9'; i++)
		n = n * 10 + (m->value[i] - '0');
	if (i > 0 && i == m->valuelen && (m->value[0] != '0' || i == 1)) {
		*seq = n;
		return 1;
	}
	return get_int(decode(r, m->value, m->valuelen, &err), seq);
}

static int
read_events(struct response *r, const struct json_member *list, const char **why)
{
	struct classifier *c = r->c;
	struct json_member m[MAX_MEMBERS];
	int n = scan_list(c, list, why);

	if (n < 0)
		return *why = "events is missing or not an array", 0;
	if ((size_t)n > c->events_cap) {
		free(c->events);
		c->events_cap = (size_t)n * 2;
		c->events = malloc(c->events_cap * sizeof *c->events);
		if (!c->events)
			die(EXIT_SOFTWARE, "out of memory");
	}
	r->events = c->events;
	r->nevents = (size_t)n;
	for (int i = 0; i < n; i++) {
		struct event *e = &r->events[i];
		int k = json_members(c->spans[i].value, c->spans[i].valuelen, m, MAX_MEMBERS, why);

		if (k < 0)
			return *why = "events holds something that is not an object", 0;
		if (k > MAX_MEMBERS)
			return *why = "an event has too many members", 0;
		if (!event_seq(r, json_member_find(m, k, "seq"), &e->seq))
			return *why = "an event's seq is missing or not an integer", 0;
		if (!span_string(r, json_member_find(m, k, "event_id"), &e->id) || e->id.len == 0)
			return *why = "an event's event_id is missing or not a non-empty string "
			    "(of valid UTF-8)", 0;
	}
	return 1;
}

/* Reads and checks one line; on failure *why says what is wrong. */
static int
read_response(struct response *r, const struct line *line, const char **why)
{
	enum { TARGET, FORMAT, HTTP_STATUS, TRANSPORT, RETRY_AFTER, NOTE, NDECODED };
	static const char *const decoded[NDECODED] = { "target", "format", "http_status",
		"transport_error", "retry_after_ms", "note" };
	struct json_member top[MAX_MEMBERS];
	const struct json_member *m;
	json_t *value[NDECODED];
	json_error_t err;
	json_t *v;
	int n;

	n = json_members(line->data, line->len, top, MAX_MEMBERS, why);
	if (n < 0) {
		if (strcmp(*why, "not a JSON object") == 0)
			return 0;
		snprintf(r->c->why, sizeof r->c->why, "invalid JSON: %s", *why);
		return *why = r->c->why, 0;
	}
	if (n > MAX_MEMBERS)
		return *why = "too many members", 0;
	for (int i = 0; i < NDECODED; i++) {
		m = json_member_find(top, n, decoded[i]);
		value[i] = m ? decode(r, m->value, m->valuelen, &err) : NULL;
		if (m && !value[i]) {
			snprintf(r->c->why, sizeof r->c->why, "invalid JSON in %s: %s", decoded[i],
			    err.text);
			return *why = r->c->why, 0;
		}
	}
	r->target = value[TARGET];
	if (!json_is_string(r->target) || json_string_length(r->target) == 0)
		return *why = "target is missing or not a non-empty string", 0;
	if (!read_events(r, json_member_find(top, n, "events"), why))
		return 0;

	v = value[NOTE];
	if (v && !json_is_null(v)) {
		if (word_is(v, "oversized"))
			r->note = "oversized";
		else if (word_is(v, "not_attempted"))
			r->note = "not_attempted";
		else
			return *why = "note is not null, \"oversized\" or \"not_attempted\"", 0;
	}
	v = value[TRANSPORT];
	if (v && !json_is_null(v)) {
		if (!json_is_object(v))
			return *why = "transport_error is not an object or null", 0;
		r->transport = v;
	}
	v = value[HTTP_STATUS];
	r->http_status = -1;
	if (v && !json_is_null(v) && (!get_int(v, &r->http_status) || r->http_status < 0))
		return *why = "http_status is not a non-negative integer or null", 0;
	if (r->http_status == 0)
		r->http_status = -1; /* curl's "no response", not an HTTP status */
	v = value[RETRY_AFTER];
	r->retry_after_ms = -1;
	if (v && !json_is_null(v)) {
		double d = json_number_value(v);

		if (!json_is_number(v) || !(d >= 0 && d < 9.2e18))
			return *why = "retry_after_ms is not a non-negative number or null", 0;
		r->retry_after_ms = (int64_t)d;
		if ((double)r->retry_after_ms < d)
			r->retry_after_ms++; /* a fraction of a millisecond still has to pass */
	}
	v = value[FORMAT];
	if (v && !json_is_null(v)) {
		if (word_is(v, "batch"))
			r->format = "batch";
		else if (word_is(v, "ndjson"))
			r->format = "ndjson";
		else if (word_is(v, "json-array"))
			r->format = "json-array";
		else
			return *why = "format is not \"batch\", \"ndjson\" or \"json-array\"", 0;
	}
	if (!r->note && !r->transport && r->http_status >= 200 && r->http_status < 300 &&
	    !r->format)
		return *why = "a 2xx response without a format", 0;
	if ((m = json_member_find(top, n, "response")) != NULL)
		r->body_span = *m;
	return 1;
}

/* The receiver's body, decoded by jansson (NULL when missing or invalid). */
static json_t *
response_body(struct response *r)
{
	json_error_t err;

	if (!r->body_decoded && r->body_span.value)
		r->body = decode(r, r->body_span.value, r->body_span.valuelen, &err);
	r->body_decoded = 1;
	return r->body;
}

/* --- writing outcomes --- */

static void
out_grow(struct outbuf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 65536;
	char *grown;

	while (cap - b->len < more)
		cap *= 2;
	grown = realloc(b->data, cap);
	if (!grown)
		die(EXIT_SOFTWARE, "out of memory");
	b->data = grown;
	b->cap = cap;
}

static void
out_bytes(struct outbuf *b, const char *s, size_t n)
{
	if (b->cap - b->len < n)
		out_grow(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

#define out_lit(b, s) out_bytes((b), (s), sizeof(s) - 1)

static int
out_dumped(const char *s, size_t n, void *b)
{
	out_bytes(b, s, n);
	return 0;
}

/* Writes s as a JSON string. Most strings (event ids, target names, category
 * words) need no escaping and are copied; the rest go through jansson. The
 * bytes are valid UTF-8: they came out of jansson or the scanner as plain
 * ASCII, or are literals here. */
static void
out_string(struct outbuf *b, const char *s, size_t len, const json_t *value)
{
	json_t *made = NULL;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == '"' || c == '\\')
			goto escape;
	}
	if (b->cap - b->len < len + 2)
		out_grow(b, len + 2);
	b->data[b->len++] = '"';
	memcpy(b->data + b->len, s, len);
	b->len += len;
	b->data[b->len++] = '"';
	return;
escape:
	if (!value && !(value = made = json_stringn(s, len)))
		die(EXIT_SOFTWARE, "out of memory");
	if (json_dump_callback(value, out_dumped, b, JSON_ENCODE_ANY) != 0)
		die(EXIT_SOFTWARE, "cannot encode a string");
	json_decref(made);
}

/* A string from the input (which wins), a literal, or null. */
static void
out_value(struct outbuf *b, const char *literal, struct str value)
{
	if (value.s)
		out_string(b, value.s, value.len, value.value);
	else if (literal)
		out_string(b, literal, strlen(literal), NULL);
	else
		out_lit(b, "null");
}

/* n in decimal; a negative n is null (our "none") unless signed_ok. */
static void
out_int(struct outbuf *b, int64_t n, int signed_ok)
{
	char digits[24], *p = digits + sizeof digits;
	uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;

	if (n < 0 && !signed_ok) {
		out_lit(b, "null");
		return;
	}
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (n < 0)
		*--p = '-';
	out_bytes(b, p, (size_t)(digits + sizeof digits - p));
}

static void
emit(const struct response *r, const struct event *e, const struct verdict *v)
{
	struct outbuf *b = &r->c->out;

	out_lit(b, "{\"seq\":");
	out_int(b, e->seq, 1);
	out_lit(b, ",\"event_id\":");
	out_string(b, e->id.s, e->id.len, e->id.value);
	out_lit(b, ",\"target\":");
	out_value(b, NULL, jstr(r->target));
	out_lit(b, ",\"status\":");
	out_value(b, v->status, (struct str){ NULL, 0, NULL });
	out_lit(b, ",\"category\":");
	out_value(b, v->category, v->category_value);
	out_lit(b, ",\"http_status\":");
	out_int(b, v->http_status, 0);
	out_lit(b, ",\"error\":");
	out_value(b, v->error, v->error_value);
	out_lit(b, ",\"retry_after_ms\":");
	out_int(b, v->retry_after_ms, 0);
	out_lit(b, "}\n");
}

/* One verdict for every event of the response. */
static void
emit_all(const struct response *r, const struct verdict *v)
{
	for (size_t i = 0; i < r->nevents; i++)
		emit(r, &r->events[i], v);
}

/* --- the table --- */

/* The outcome a batch receiver's status word means; NULL when unknown. */
static const char *
outcome_of(const char *word, size_t n)
{
	if (bytes_are(word, n, "success") || bytes_are(word, n, "accepted") ||
	    bytes_are(word, n, "warning"))
		return "success";
	if (bytes_are(word, n, "duplicate"))
		return "duplicate";
	if (bytes_are(word, n, "rejected"))
		return "rejected";
	if (bytes_are(word, n, "failed_permanent") || bytes_are(word, n, "permanent"))
		return "failed_permanent";
	return NULL;
}

/* Sets e from what the receiver said about the event. */
static void
judge_result(struct response *r, const struct result_fields *f, struct verdict *e)
{
	const char *outcome = f->status.s ? outcome_of(f->status.s, f->status.len) : NULL;

	e->error_value = f->error;
	if (outcome) {
		e->status = outcome;
		/* Refusals have a category: the receiver's code, else the verdict. */
		if (strcmp(outcome, "rejected") == 0 || strcmp(outcome, "failed_permanent") == 0) {
			e->category = outcome;
			if (f->code.s && f->code.len > 0)
				e->category_value = f->code;
		}
		return;
	}
	e->status = "failed_transient";
	e->category = "unknown_status";
	if (!e->error_value.s) {
		char text[256];

		if (f->status.s)
			snprintf(text, sizeof text, "unknown result status '%.*s'",
			    utf8_prefix(f->status.s, f->status.len, 200), f->status.s);
		else
			snprintf(text, sizeof text, "the result has no status string");
		e->error_value = jstr(owned_string(r, text));
	}
}

static void
fields_from_json(json_t *result, struct result_fields *f)
{
	f->status = jstr(json_object_get(result, "status"));
	f->code = jstr(json_object_get(result, "code"));
	f->error = jstr(message_of(result, result_message_keys));
}

/* The same from the scanned spans: jansson only decodes a string that is not
 * plain ASCII, or a message given as an object. */
static void
fields_from_spans(struct response *r, const struct result_span *res, struct result_fields *f)
{
	json_error_t err;

	memset(f, 0, sizeof *f);
	span_string(r, &res->status, &f->status);
	span_string(r, &res->code, &f->code);
	for (int i = 0; i < 3 && !f->error.s; i++) {
		const struct json_member *m = &res->message[i];

		if (!m->value)
			continue;
		if (m->value[0] == '{')
			f->error = jstr(message_in(decode(r, m->value, m->valuelen, &err)));
		else if (span_string(r, m, &f->error) && f->error.len == 0)
			f->error.s = NULL;
	}
}

static void
missing_result(struct verdict *e)
{
	e->status = "failed_transient";
	e->category = "missing_result";
	e->error = "the receiver's results do not list this event";
}

/* 2xx from a batch receiver, from the decoded body. */
static void
judge_results_decoded(struct response *r, const struct verdict *v)
{
	json_t *body = response_body(r), *results = json_object_get(body, "results");
	struct index *ix = &r->c->ix;

	if (!json_is_array(results)) {
		struct verdict all = *v;

		all.status = "failed_transient";
		all.category = "malformed_response";
		all.error = json_is_string(body) ? "the response body is not JSON" :
		    !body || json_is_null(body) ? "the response has no body" :
		    !json_is_object(body) ? "the response body is not a JSON object" :
		    "the response body has no results array";
		emit_all(r, &all);
		return;
	}
	index_json_list(ix, results);
	for (size_t i = 0; i < r->nevents; i++) {
		size_t at = index_find(ix, &r->events[i].id);
		struct verdict e = *v;

		if (at == SIZE_MAX) {
			missing_result(&e);
		} else {
			struct result_fields f;

			fields_from_json(json_array_get(results, at), &f);
			judge_result(r, &f, &e);
		}
		emit(r, &r->events[i], &e);
	}
}

/* Indexes the results list found by the scanner. Returns 0 when something
 * is out of the ordinary for the scanner (the decoded body then decides). */
static int
index_result_spans(struct response *r, const struct json_member *list)
{
	struct classifier *c = r->c;
	struct json_member m[MAX_MEMBERS];
	const char *why;
	int n = scan_list(c, list, &why);

	if (n < 0)
		return 0;
	if ((size_t)n > c->results_cap) {
		free(c->results);
		c->results_cap = (size_t)n * 2;
		c->results = malloc(c->results_cap * sizeof *c->results);
		if (!c->results)
			die(EXIT_SOFTWARE, "out of memory");
	}
	index_reset(&c->ix, (size_t)n);
	for (int i = 0; i < n; i++) {
		static const struct json_member none = { NULL, 0, NULL, 0 };
		static const char *const message_keys[3] = { "error", "error_message", "reason" };
		struct result_span *res = &c->results[i];
		const struct json_member *found;
		struct str id;
		int k;

		if (c->spans[i].valuelen == 0 || c->spans[i].value[0] != '{')
			continue; /* not an entry: it names no event */
		k = json_members(c->spans[i].value, c->spans[i].valuelen, m, MAX_MEMBERS, &why);
		if (k < 0 || k > MAX_MEMBERS)
			return 0;
		if (!span_string(r, json_member_find(m, k, "event_id"), &id))
			continue;
		index_add(&c->ix, id.s, id.len, (size_t)i);
		res->status = (found = json_member_find(m, k, "status")) ? *found : none;
		res->code = (found = json_member_find(m, k, "code")) ? *found : none;
		for (int j = 0; j < 3; j++)
			res->message[j] = (found = json_member_find(m, k, message_keys[j])) ?
			    *found : none;
	}
	return 1;
}

/* 2xx from a batch receiver: each event as its result says. */
static void
classify_batch(struct response *r, const struct verdict *v)
{
	const struct json_member *body = &r->body_span, *results;
	struct json_member m[MAX_MEMBERS];
	const char *why;
	int k;

	if (!body->value || body->valuelen == 0 || body->value[0] != '{' ||
	    (k = json_members(body->value, body->valuelen, m, MAX_MEMBERS, &why)) < 0 ||
	    k > MAX_MEMBERS || !(results = json_member_find(m, k, "results")) ||
	    !index_result_spans(r, results)) {
		judge_results_decoded(r, v);
		return;
	}
	for (size_t i = 0; i < r->nevents; i++) {
		size_t at = index_find(&r->c->ix, &r->events[i].id);
		struct verdict e = *v;

		if (at == SIZE_MAX) {
			missing_result(&e);
		} else {
			struct result_fields f;

			fields_from_spans(r, &r->c->results[at], &f);
			judge_result(r, &f, &e);
		}
		emit(r, &r->events[i], &e);
	}
}

/* details as a list, also when the receiver sent the list as a JSON string.
 * NULL when there is no list. */
static json_t *
details_list(struct response *r, json_t *body)
{
	json_t *d = json_object_get(body, "details");
	json_error_t err;

	if (json_is_string(d))
		d = decode(r, json_string_value(d), json_string_length(d), &err);
	return json_is_array(d) ? d : NULL;
}

/* 400 that names the events it refused. Returns 0 when the details name
 * none of this request's events: then they say nothing per event. */
static int
classify_details(struct response *r, json_t *body, const struct verdict *v)
{
	json_t *details = details_list(r, body);
	struct index *ix = &r->c->ix;
	size_t i;

	if (!details)
		return 0;
	index_json_list(ix, details);
	for (i = 0; i < r->nevents; i++)
		if (index_find(ix, &r->events[i].id) != SIZE_MAX)
			break;
	if (i == r->nevents)
		return 0;
	for (i = 0; i < r->nevents; i++) {
		size_t at = index_find(ix, &r->events[i].id);
		struct verdict e = *v;

		if (at != SIZE_MAX) {
			e.status = "rejected";
			e.category = "validation";
			e.error_value = jstr(message_of(json_array_get(details, at),
			    detail_message_keys));
			if (!e.error_value.s)
				e.error_value = v->error_value; /* the top-level message */
		} else {
			e.status = "failed_transient";
			e.category = "not_processed";
			e.error = "not named in the 400 response's details; not processed";
			e.error_value = (struct str){ NULL, 0, NULL };
		}
		emit(r, &r->events[i], &e);
	}
	return 1;
}

static int
says_missing_private_team(json_t *body)
{
	if (json_is_string(body))
		return contains_ci(body, "private team");
	if (word_is(json_object_get(body, "code"), "missing_private_team"))
		return 1;
	for (const char *const *k = body_message_keys; *k; k++)
		if (contains_ci(message_in(json_object_get(body, *k)), "private team"))
			return 1;
	return 0;
}

static void
classify_transport(struct response *r, struct verdict *v)
{
	json_t *kind = json_object_get(r->transport, "kind");
	json_t *message = json_object_get(r->transport, "message");

	v->status = "failed_transient";
	v->category = transport_category(json_string_value(kind));
	if (json_is_string(message) && json_string_length(message) > 0) {
		v->error_value = jstr(message);
	} else {
		char text[160];
		int64_t curl_code;
		const char *k = json_is_string(kind) ? json_string_value(kind) : "other";

		if (get_int(json_object_get(r->transport, "curl_code"), &curl_code))
			snprintf(text, sizeof text, "transport error %.64s (curl error %" PRId64 ")",
			    k, curl_code);
		else
			snprintf(text, sizeof text, "transport error %.64s", k);
		v->error_value = jstr(owned_string(r, text));
	}
	emit_all(r, v);
}

/* Any HTTP status but 2xx. */
static void
classify_http_failure(struct response *r, struct verdict *v)
{
	json_t *body = response_body(r);
	int64_t code = r->http_status;

	v->status = "failed_transient";
	v->error_value = jstr(json_is_object(body) ? message_of(body, body_message_keys) : NULL);
	if (!v->error_value.s) {
		char text[64];

		if (code < 0)
			snprintf(text, sizeof text, "neither an HTTP status nor a transport error");
		else
			snprintf(text, sizeof text, "HTTP %" PRId64, code);
		v->error_value = jstr(owned_string(r, text));
	}
	if (code == 400) {
		if (json_is_object(body) && classify_details(r, body, v))
			return;
		v->status = "rejected";
		v->category = "bad_request";
	} else if (code == 403 && says_missing_private_team(body)) {
		v->category = "missing_private_team";
	} else if (code == 413) {
		/* post-batch splits a batch down to one event on 413, so the second
		 * case means a stage upstream did not; keep the events, retry. */
		if (r->nevents == 1) {
			v->status = "failed_permanent";
			v->category = "oversized";
		} else {
			v->category = "oversized_batch";
		}
	} else if ((v->category = http_batch_category((long)code)) != NULL) {
		/* The receiver's state, not the events': the target backs off. */
		if (code == 429 || (code >= 500 && code < 600))
			v->retry_after_ms = r->retry_after_ms;
	} else {
		v->status = "rejected";
		v->category = "client_error";
	}
	emit_all(r, v);
}

/* The table of SLUICE.md section 5; the first row that matches decides. */
static void
classify_response(struct response *r)
{
	struct verdict v = { .http_status = r->http_status, .retry_after_ms = -1 };

	if (r->note)
		v.http_status = -1; /* never sent: whatever the record says, no answer */
	if (r->note && strcmp(r->note, "oversized") == 0) {
		v.status = "failed_permanent";
		v.category = "oversized";
		v.error = "larger than the target's size limit; never sent";
		emit_all(r, &v);
	} else if (r->note) {
		v.status = "failed_transient";
		v.category = "not_attempted";
		v.error = "not sent: an earlier batch of this run failed";
		emit_all(r, &v);
	} else if (r->transport) {
		classify_transport(r, &v);
	} else if (r->http_status >= 200 && r->http_status < 300) {
		if (strcmp(r->format, "batch") == 0) {
			classify_batch(r, &v);
		} else {
			v.status = "success";
			emit_all(r, &v);
		}
	} else {
		classify_http_failure(r, &v);
	}
}

/* Classifies one line into c->out; returns 0 when it is not a response record. */
static int
take_line(struct classifier *c, const struct line *line)
{
	struct response r = { .c = c };
	const char *why = NULL;
	int ok;

	r.owned = json_array();
	if (!r.owned)
		die(EXIT_SOFTWARE, "out of memory");
	ok = read_response(&r, line, &why);
	if (ok)
		classify_response(&r);
	else
		linemsg("<stdin>", line->lineno, "%s", why);
	json_decref(r.owned);
	return ok;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "max-bytes", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct classifier cl = { 0 };
	struct line_reader in;
	struct line line;
	enum line_result lr;
	unsigned long bad = 0;
	int c;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.max_bytes = (size_t)number_arg(usage, "--max-bytes", optarg, 1); break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s' (responses are read from standard input)",
		    argv[optind]);

	line_reader_init(&in, STDIN_FILENO, "<stdin>", opt.max_bytes);
	while ((lr = line_next(&in, &line, -1)) != LINE_EOF) {
		size_t i;

		if (lr == LINE_ERROR)
			die(EXIT_IOERR, "cannot read <stdin>: %s", strerror(errno));
		if (lr == LINE_TOOLONG) {
			linemsg("<stdin>", line.lineno, "line longer than %zu bytes (--max-bytes); skipped",
			    opt.max_bytes);
			bad++;
			continue;
		}
		for (i = 0; i < line.len && (line.data[i] == ' ' || line.data[i] == '\t'); i++)
			;
		if (i == line.len)
			continue; /* an empty line */
		cl.out.len = 0;
		if (!take_line(&cl, &line))
			bad++;
		/* Flushed per response: record-results is waiting on these. */
		if ((cl.out.len > 0 && fwrite(cl.out.data, 1, cl.out.len, stdout) != cl.out.len) ||
		    fflush(stdout) != 0)
			die(EXIT_IOERR, "cannot write standard output: %s", strerror(errno));
	}
	line_reader_free(&in);
	free(cl.ix.slots);
	free(cl.spans);
	free(cl.events);
	free(cl.results);
	free(cl.out.data);
	if (bad > 0)
		warnmsg("%lu input line%s skipped", bad, bad == 1 ? "" : "s");
	c = finish_stdout();
	return c != EXIT_OK ? c : bad > 0 ? EXIT_DATAERR : EXIT_OK;
}
