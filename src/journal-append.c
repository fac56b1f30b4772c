/*
 * journal-append - append events (NDJSON on stdin) to the journal, durably.
 *
 * Reads:  one JSON object per line. Empty lines are skipped; CRLF is fine.
 * Writes: with --report, one disposition record per input line on stdout:
 *           {"line":3,"event_id":"...","seq":17,"status":"appended","reason":null}
 *         a one-line summary on stderr.
 * Promises:
 *   - a line reported appended or duplicate (or exit 0) is committed;
 *   - a line that cannot be journaled is quarantined with its raw bytes and a
 *     reason, and named on stderr; it is never silently dropped;
 *   - an event already in the journal is never overwritten: the same event_id
 *     with the same canonical payload is a duplicate, with another payload a
 *     conflict (quarantined);
 *   - the payload is stored byte for byte as received. When the event has no
 *     event_id, a UUIDv7 is inserted as its first member and every other
 *     byte is kept;
 *   - an event with a coalesce key supersedes the earlier events with that key
 *     (they are no longer sent where they were not sent yet; nothing is
 *     rewritten);
 *   - an event whose event_type matches --discard-type is not journaled, but
 *     counted in the discard audit, never silently.
 *
 * Lines are committed in transactions of --batch lines, and at least every
 * 200 ms while input trickles in. Within a transaction one multi-row insert
 * runs inside a savepoint; if it fails, each row is retried in a savepoint of
 * its own, so one bad row never takes its neighbours with it.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "journal.h"
#include "json.h"
#include "log.h"
#include "ndjson.h"

#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <pthread.h>
#include <unistd.h>

static const char usage[] =
"usage: journal-append [-d PATH] [--source NAME] [--producer NAME] [--report]\n"
"                      [--require KEY]... [--coalesce-key FIELD[,FIELD...]]\n"
"                      [--discard-type GLOB]... [--max-bytes N] [--batch N]\n"
"                      [--sync full|normal] [--busy-timeout DURATION] [-q] < events.ndjson\n"
"\n"
"Append events, one JSON object per line, to the journal.\n"
"\n"
"  -d, --db PATH            journal (default: $SLUICE_DB, config, ~/.local/state/sluice/journal.db)\n"
"      --source NAME        name recorded with quarantined lines (default: stdin)\n"
"      --producer NAME      producer stored with each event (default: $SLUICE_PRODUCER)\n"
"      --report             print one disposition record per input line on stdout\n"
"      --require KEY        quarantine events lacking KEY (dotted path: data.order_id)\n"
"      --coalesce-key F,..  build a coalesce key from these fields when an event has\n"
"                           none: a newer event with the same key supersedes older ones\n"
"      --discard-type GLOB  do not journal events whose event_type matches GLOB (count\n"
"                           them in the discard audit); default: the discard_types setting\n"
"      --max-bytes N        longest accepted line (default 1048576)\n"
"      --batch N            lines per transaction (default 1000)\n"
"      --sync MODE          full: fsync every commit (default); normal: faster, a power\n"
"                           loss may lose the last commits (never corrupts)\n"
"      --busy-timeout DUR   wait this long for a locked journal (default 5s), then exit 75\n"
"  -q, --quiet              no summary on stderr\n"
"  -v, --verbose            more diagnostics\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Exit: 0 all appended or duplicate, 64 usage, 65 some lines quarantined,\n"
"70 internal error, 73 cannot create the journal, 74 I/O error or disk full,\n"
"75 journal busy, 78 journal too new.\n";

/* The most rows one INSERT statement carries: 6 columns each, well below
 * SQLite's limit on bound parameters. */
#define ROWS_PER_INSERT 64
#define COMMIT_EVERY_MS 200
#define MAX_PENDING_BYTES (8u << 20)

enum disposition { D_APPENDED, D_DUPLICATE, D_QUARANTINED, D_DISCARDED };

struct row {
	unsigned long lineno;
	int quarantine;            /* 1: goes to the quarantine table */
	int discarded;             /* 1: not journaled, only counted (--discard-type) */
	char *bytes;               /* the payload, or the raw line when quarantined */
	size_t len;
	int64_t raw_bytes;         /* the line's length; -1 when it was cut */
	char event_id[129];
	char *event_type, *coalesce_key;
	const char *reason;        /* quarantine reason (a fixed word) */
	char *detail;              /* what exactly is wrong */
	int64_t seq;               /* the event's seq once appended or found */
	enum disposition result;
};

/* A growing list of rows: a chunk's while it is checked, the batch's after. */
struct rows {
	struct row *v;
	size_t n, cap, bytes;
};

static struct {
	const char *db_flag, *source, *producer, *sync, *busy;
	char **required, **discard, **coalesce;
	int nrequired, ndiscard, ncoalesce;
	size_t max_bytes;
	long batch;
	int report, quiet;
} opt = { .source = "stdin", .max_bytes = 1u << 20, .batch = 1000 };

static struct {
	sqlite3 *db;
	const char *path;
	sqlite3_stmt *insert_many, *insert_one, *find, *discard;
	struct rows batch;          /* checked, not yet committed, in input order */
	int64_t first_row_at;       /* monotonic ms of the oldest uncommitted row */
	int progress;               /* stderr is a terminal: show how far it is */
	int64_t started, last_progress;
	unsigned long committed_line; /* every input line up to here is durable */
	unsigned long appended, duplicates, quarantined, discarded;
} st;

/* --- UUIDv7: 48 bits of Unix ms, then random bits, monotonic per process --- */

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;

static void
uuid7(char out[37])
{
	static int64_t last_ms = -1;
	static unsigned char last[16];
	unsigned char b[16];
	int64_t ms;

	pthread_mutex_lock(&uuid_lock);
	ms = now_ms();

	if (ms == last_ms) {
		/* Same millisecond: count up from the previous id so ids stay ordered. */
		memcpy(b, last, sizeof b);
		for (int i = 15; i >= 6; i--)
			if (++b[i] != 0)
				break;
	} else {
		if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
			die(EXIT_SOFTWARE, "getrandom: %s", strerror(errno));
		for (int i = 0; i < 6; i++)
			b[i] = (unsigned char)(ms >> (40 - 8 * i));
		b[8] &= 0x3f; /* leave headroom for counting up */
	}
	b[6] = (unsigned char)(0x70 | (b[6] & 0x0f));
	b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
	memcpy(last, b, sizeof b);
	last_ms = ms;
	pthread_mutex_unlock(&uuid_lock);
	snprintf(out, 37,
	    "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
	    b[12], b[13], b[14], b[15]);
}

static char *
fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
fmt(const char *f, ...)
{
	va_list ap;
	char buf[512];

	va_start(ap, f);
	vsnprintf(buf, sizeof buf, f, ap);
	va_end(ap);
	return xstrdup(buf);
}

static struct row *
new_row(struct rows *list, unsigned long lineno)
{
	struct row *r;

	if (list->n == list->cap) {
		size_t cap = list->cap ? list->cap * 2 : 256;
		struct row *grown = realloc(list->v, cap * sizeof *grown);

		if (!grown)
			die(EXIT_SOFTWARE, "out of memory");
		list->v = grown;
		list->cap = cap;
	}
	r = &list->v[list->n++];
	memset(r, 0, sizeof *r);
	r->lineno = lineno;
	r->seq = -1;
	return r;
}

static void
quarantine_row(struct rows *list, struct row *r, const char *data, size_t len, int64_t raw_bytes,
    const char *reason, char *detail)
{
	r->quarantine = 1;
	r->bytes = xmemdup(data, len);
	r->len = len;
	r->raw_bytes = raw_bytes;
	r->reason = reason;
	r->detail = detail;
	list->bytes += len;
}

/* --- jansson's memory in the checking threads ---
 *
 * A checked line's tree lives only while take_line() runs, and allocating
 * and freeing its nodes one by one was a third of a checker's time. So in a
 * checking thread jansson allocates from an arena of that thread's, emptied
 * after each line; what does not fit, and every other thread, uses malloc.
 */

#define ARENA_BYTES (4u << 20)

static _Thread_local struct {
	char *base;
	size_t used;
} arena;

static void *
arena_alloc(size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (arena.base && arena.used + n <= ARENA_BYTES) {
		void *p = arena.base + arena.used;

		arena.used += n;
		return p;
	}
	return malloc(n);
}

static void
arena_free(void *p)
{
	if (arena.base && (char *)p >= arena.base && (char *)p < arena.base + ARENA_BYTES)
		return;
	free(p);
}

/* The key --coalesce-key names: the JSON array of those fields' values, or
 * NULL when one of them is missing (such an event is not coalesced). */
static char *
build_coalesce_key(json_t *event)
{
	json_t *values = json_array();
	char *key = NULL;

	for (int k = 0; k < opt.ncoalesce; k++) {
		json_t *v = json_get_path(event, opt.coalesce[k]);

		if (!v || json_is_null(v))
			goto out;
		json_array_append(values, v);
	}
	{
		/* jansson's string lives in this line's arena: keep a copy of our own. */
		char *text = json_dumps(values, JSON_COMPACT | JSON_SORT_KEYS);

		key = xstrdup(text);
		arena_free(text);
	}
out:
	json_decref(values);
	return key;
}

/* Checks one line and adds it to list as an event or for quarantine. Runs
 * in the checking threads: it touches nothing but list and the line. */
static void
take_line(struct rows *list, const char *data, size_t len, unsigned long lineno)
{
	struct row *r;
	json_t *event, *v;
	json_error_t err;
	const char *nul;
	size_t i;

	for (i = 0; i < len && (data[i] == ' ' || data[i] == '\t'); i++)
		;
	if (i == len)
		return; /* empty line */
	arena.used = 0; /* the last line's tree is gone: its arena is free again */
	r = new_row(list, lineno);

	if ((nul = memchr(data, '\0', len)) != NULL) {
		quarantine_row(list, r, data, len, (int64_t)len, "nul_byte",
		    fmt("NUL byte at byte %zu", (size_t)(nul - data) + 1));
		return;
	}
	event = json_loadb(data, len, JSON_STRICT_FLAGS | JSON_ALLOW_NUL, &err);
	if (!event && json_error_code(&err) == json_error_numeric_overflow)
		event = json_loadb(data, len, JSON_STRICT_FLAGS | JSON_ALLOW_NUL |
		    JSON_DECODE_INT_AS_REAL, &err);
	if (!event) {
		int utf8 = json_error_code(&err) == json_error_invalid_utf8;

		quarantine_row(list, r, data, len, (int64_t)len, utf8 ? "invalid_utf8" : "invalid_json",
		    fmt("%s at byte %d", err.text, err.position));
		return;
	}
	if (!json_is_object(event)) {
		quarantine_row(list, r, data, len, (int64_t)len, "not_object",
		    fmt("a JSON %s, not an object", json_is_array(event) ? "array" :
		    json_is_string(event) ? "string" : "scalar"));
		goto done;
	}
	v = json_object_get(event, "event_id");
	if (v) {
		const char *id = json_string_value(v);

		if (!id || !valid_event_id(id, json_string_length(v))) {
			quarantine_row(list, r, data, len, (int64_t)len, "bad_event_id",
			    xstrdup("event_id must be a string of 1-128 characters from "
			    "A-Z a-z 0-9 . _ : -"));
			goto done;
		}
		memcpy(r->event_id, id, json_string_length(v) + 1);
	}
	for (const char *const *k = (const char *const[]){ "event_type", "coalesce_key", NULL };
	    *k; k++) {
		v = json_object_get(event, *k);
		if (v && !json_is_string(v)) {
			quarantine_row(list, r, data, len, (int64_t)len, "bad_field",
			    fmt("%s must be a string", *k));
			goto done;
		}
	}
	for (int k = 0; k < opt.nrequired; k++) {
		v = json_get_path(event, opt.required[k]);
		if (!v || json_is_null(v)) {
			quarantine_row(list, r, data, len, (int64_t)len, "missing_key",
			    fmt("required key %s is missing", opt.required[k]));
			goto done;
		}
	}
	r->event_type = xstrdup(json_str(event, "event_type"));
	for (int k = 0; r->event_type && k < opt.ndiscard; k++) {
		if (fnmatch(opt.discard[k], r->event_type, 0) == 0) {
			r->discarded = 1;
			goto done;
		}
	}
	r->coalesce_key = xstrdup(json_str(event, "coalesce_key"));
	if (!r->coalesce_key && opt.ncoalesce > 0)
		r->coalesce_key = build_coalesce_key(event);

	if (r->event_id[0]) {
		r->bytes = xmemdup(data, len);
		r->len = len;
	} else {
		uuid7(r->event_id);
		r->bytes = payload_with_id(data, len, r->event_id, json_object_size(event) == 0,
		    &r->len);
		if (!r->bytes)
			die(EXIT_SOFTWARE, "out of memory");
	}
	r->raw_bytes = (int64_t)len;
	list->bytes += r->len;
done:
	json_decref(event);
}

static void commit_rows(void);

/* --- checking in parallel ---
 *
 * Strict parsing is most of an append's work, so the lines are read here in
 * chunks, checked by two threads, and taken back in input order to be
 * committed: the order of the journal is the order of the input.
 */

#define CHUNK_LINES 256
#define CHUNK_BYTES (1u << 20)
#define CHUNKS_IN_FLIGHT 6
#define CHECKERS 2

struct chunk {
	char *text;                 /* the lines, back to back */
	size_t len, cap;
	struct { size_t off, len; unsigned long lineno; int toolong; } *lines;
	size_t nlines, linecap;
	struct rows rows;           /* filled by a checker */
	int checked;
	struct chunk *next_todo, *next_order;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	struct chunk *todo, *todo_tail;   /* waiting for a checker */
	struct chunk *order, *order_tail; /* every chunk in flight, in input order */
	int in_flight, stopping;
	pthread_t threads[CHECKERS];
} pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
	   NULL, NULL, NULL, NULL, 0, 0, { 0 } };

static void
check_chunk(struct chunk *c)
{
	for (size_t i = 0; i < c->nlines; i++) {
		const char *data = c->text + c->lines[i].off;
		size_t len = c->lines[i].len;

		if (c->lines[i].toolong)
			quarantine_row(&c->rows, new_row(&c->rows, c->lines[i].lineno), data, len, -1,
			    "too_long", fmt("line longer than %zu bytes (--max-bytes); its first %zu "
			    "bytes are kept", opt.max_bytes, opt.max_bytes));
		else
			take_line(&c->rows, data, len, c->lines[i].lineno);
	}
}

static void *
checker(void *unused)
{
	(void)unused;
	arena.base = malloc(ARENA_BYTES);
	pthread_mutex_lock(&pool.lock);
	for (;;) {
		struct chunk *c;

		while (!pool.todo && !pool.stopping)
			pthread_cond_wait(&pool.work, &pool.lock);
		if (!pool.todo)
			break;
		c = pool.todo;
		pool.todo = c->next_todo;
		if (!pool.todo)
			pool.todo_tail = NULL;
		pthread_mutex_unlock(&pool.lock);
		check_chunk(c);
		pthread_mutex_lock(&pool.lock);
		c->checked = 1;
		pthread_cond_broadcast(&pool.done);
	}
	pthread_mutex_unlock(&pool.lock);
	free(arena.base);
	arena.base = NULL;
	return NULL;
}

static struct chunk *
chunk_new(void)
{
	struct chunk *c = calloc(1, sizeof *c);

	if (!c)
		die(EXIT_SOFTWARE, "out of memory");
	return c;
}

static void
chunk_add(struct chunk *c, const struct line *line, int toolong)
{
	if (c->nlines == c->linecap) {
		c->linecap = c->linecap ? c->linecap * 2 : 64;
		c->lines = realloc(c->lines, c->linecap * sizeof *c->lines);
		if (!c->lines)
			die(EXIT_SOFTWARE, "out of memory");
	}
	if (c->len + line->len > c->cap) {
		c->cap = (c->len + line->len) * 2 + 4096;
		c->text = realloc(c->text, c->cap);
		if (!c->text)
			die(EXIT_SOFTWARE, "out of memory");
	}
	if (line->len > 0)
		memcpy(c->text + c->len, line->data, line->len);
	c->lines[c->nlines].off = c->len;
	c->lines[c->nlines].len = line->len;
	c->lines[c->nlines].lineno = line->lineno;
	c->lines[c->nlines].toolong = toolong;
	c->nlines++;
	c->len += line->len;
}

static void
chunk_submit(struct chunk *c)
{
	pthread_mutex_lock(&pool.lock);
	if (pool.todo_tail)
		pool.todo_tail->next_todo = c;
	else
		pool.todo = c;
	pool.todo_tail = c;
	if (pool.order_tail)
		pool.order_tail->next_order = c;
	else
		pool.order = c;
	pool.order_tail = c;
	pool.in_flight++;
	pthread_cond_signal(&pool.work);
	pthread_mutex_unlock(&pool.lock);
}

/* Moves the checked chunks at the head of the input order into the batch,
 * committing whenever it is full; with `wait`, first waits until the head is
 * checked. Returns how many chunks were taken. */
static int
take_checked(int wait)
{
	int taken = 0;

	pthread_mutex_lock(&pool.lock);
	if (wait) {
		while (pool.order && !pool.order->checked)
			pthread_cond_wait(&pool.done, &pool.lock);
	}
	while (pool.order && pool.order->checked) {
		struct chunk *c = pool.order;

		pool.order = c->next_order;
		if (!pool.order)
			pool.order_tail = NULL;
		pool.in_flight--;
		pthread_mutex_unlock(&pool.lock);
		for (size_t i = 0; i < c->rows.n; i++) {
			struct row *r = new_row(&st.batch, c->rows.v[i].lineno);

			*r = c->rows.v[i];
			if (st.batch.n == 1)
				st.first_row_at = mono_ms();
		}
		st.batch.bytes += c->rows.bytes;
		free(c->rows.v);
		free(c->lines);
		free(c->text);
		free(c);
		taken++;
		if (st.batch.n >= (size_t)opt.batch || st.batch.bytes >= MAX_PENDING_BYTES)
			commit_rows();
		pthread_mutex_lock(&pool.lock);
	}
	pthread_mutex_unlock(&pool.lock);
	return taken;
}

static int
in_flight(void)
{
	int n;

	pthread_mutex_lock(&pool.lock);
	n = pool.in_flight;
	pthread_mutex_unlock(&pool.lock);
	return n;
}

static void
pool_start(void)
{
	/* jansson seeds its hash function once; do it before the threads race to. */
	json_object_seed(0);
	json_set_alloc_funcs(arena_alloc, arena_free);
	for (int i = 0; i < CHECKERS; i++)
		if (pthread_create(&pool.threads[i], NULL, checker, NULL) != 0)
			die(EXIT_SOFTWARE, "cannot start a thread: %s", strerror(errno));
}

static void
pool_stop(void)
{
	pthread_mutex_lock(&pool.lock);
	pool.stopping = 1;
	pthread_cond_broadcast(&pool.work);
	pthread_mutex_unlock(&pool.lock);
	for (int i = 0; i < CHECKERS; i++)
		pthread_join(pool.threads[i], NULL);
}

/* --- writing a batch --- */

static _Noreturn void
fail(int rc, const char *what)
{
	char msg[512];

	/* The rollback replaces SQLite's message: keep the cause. */
	snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(st.db));
	sqlite3_exec(st.db, "ROLLBACK", NULL, NULL, NULL);
	if ((rc & 0xff) == SQLITE_BUSY)
		die(EXIT_TEMPFAIL, "%s: journal %s is busy past the busy timeout; input up to "
		    "line %lu is committed", what, st.path, st.committed_line);
	die(db_exit_status(rc), "%s: %s: %s; input up to line %lu is committed, "
	    "nothing after it was written", what, st.path, msg, st.committed_line);
}

static void
exec_or_fail(const char *sql)
{
	int rc = sqlite3_exec(st.db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		fail(rc, "cannot write the journal");
}

/* INSERT of n rows; a taken event_id makes its row do nothing. */
static void
insert_sql(char *sql, size_t size, int n)
{
	size_t off = (size_t)snprintf(sql, size,
	    "INSERT INTO events(event_id, event_type, coalesce_key, producer, payload,"
	    " appended_at) VALUES ");

	for (int i = 0; i < n; i++)
		off += (size_t)snprintf(sql + off, size - off, "%s(?,?,?,?,?,?)", i ? "," : "");
	snprintf(sql + off, size - off, " ON CONFLICT(event_id) DO NOTHING");
}

static void
bind_row(sqlite3_stmt *s, int base, const struct row *r, int64_t now)
{
	sqlite3_bind_text(s, base + 1, r->event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, base + 2, r->event_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, base + 3, r->coalesce_key, -1, SQLITE_STATIC);
	db_bind_text(s, base + 4, opt.producer);
	sqlite3_bind_text(s, base + 5, r->bytes, (int)r->len, SQLITE_STATIC);
	sqlite3_bind_int64(s, base + 6, now);
}

/* Inserts n event rows with one statement and marks the ones inserted; a row
 * whose event_id is taken is left for settle_existing(). Returns an SQLite code. */
static int
insert_chunk(struct row **rows, int n, int64_t now)
{
	sqlite3_stmt *s = n == ROWS_PER_INSERT ? st.insert_many : NULL;
	int64_t last;
	int rc, inserted;

	if (!s) {
		/* A short final chunk: a statement of its exact size. */
		char sql[8192];

		insert_sql(sql, sizeof sql, n);
		rc = sqlite3_prepare_v2(st.db, sql, -1, &s, NULL);
		if (rc != SQLITE_OK)
			return rc;
	}
	for (int i = 0; i < n; i++)
		bind_row(s, i * 6, rows[i], now);
	rc = sqlite3_step(s);
	inserted = sqlite3_changes(st.db);
	last = sqlite3_last_insert_rowid(st.db);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (s != st.insert_many)
		sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return rc;
	if (inserted == n) {
		/* The usual case: all new. They went in in VALUES order, and we hold
		 * the write lock, so their seqs are the n up to the last one. */
		for (int i = 0; i < n; i++) {
			rows[i]->seq = last - n + 1 + i;
			rows[i]->result = D_APPENDED;
		}
		return SQLITE_OK;
	}
	/* Some ids were taken: a lookup tells which rows went in (their seq is
	 * one of the last `inserted` ones) and which are for settle_existing(). */
	for (int i = 0; i < n; i++) {
		int again = 0;

		/* A second row with one id in the same statement never went in. */
		for (int j = 0; j < i && !again; j++)
			again = strcmp(rows[j]->event_id, rows[i]->event_id) == 0;
		if (again)
			continue;
		sqlite3_bind_text(st.find, 1, rows[i]->event_id, -1, SQLITE_STATIC);
		rc = sqlite3_step(st.find);
		if (rc == SQLITE_ROW && sqlite3_column_int64(st.find, 0) > last - inserted &&
		    sqlite3_column_int64(st.find, 0) <= last && inserted > 0) {
			rows[i]->seq = sqlite3_column_int64(st.find, 0);
			rows[i]->result = D_APPENDED;
		}
		sqlite3_reset(st.find);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return rc;
	}
	return SQLITE_OK;
}

static int
insert_one(struct row *r, int64_t now)
{
	int rc;

	bind_row(st.insert_one, 0, r, now);
	rc = sqlite3_step(st.insert_one);
	if (rc == SQLITE_DONE && sqlite3_changes(st.db) == 1) {
		r->seq = sqlite3_last_insert_rowid(st.db);
		r->result = D_APPENDED;
	}
	sqlite3_reset(st.insert_one);
	sqlite3_clear_bindings(st.insert_one);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The event_id of r is taken. Same canonical payload: duplicate; else conflict. */
static void
settle_existing(struct row *r)
{
	int rc;
	int64_t seq;
	const unsigned char *stored;
	int same = 0;

	sqlite3_bind_text(st.find, 1, r->event_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st.find);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st.find);
		fail(rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, "cannot look up event");
	}
	seq = sqlite3_column_int64(st.find, 0);
	stored = sqlite3_column_text(st.find, 1);
	if (!stored) {
		same = 1; /* its payload was archived by gc: it was delivered; a resend */
	} else {
		char *ca = canonical_payload((const char *)stored, (size_t)sqlite3_column_bytes(st.find, 1));
		char *cb = canonical_payload(r->bytes, r->len);

		same = ca && cb && strcmp(ca, cb) == 0;
		free(ca);
		free(cb);
	}
	sqlite3_reset(st.find);
	r->seq = seq;
	if (same) {
		r->result = D_DUPLICATE;
		return;
	}
	r->quarantine = 1;
	r->reason = "conflict";
	r->detail = fmt("event_id %s is already journaled (seq %" PRId64 ") with a different payload",
	    r->event_id, seq);
}

static int
insert_quarantine(struct row *r, int64_t now)
{
	struct quarantined q = {
		.source = opt.source, .line_no = (int64_t)r->lineno, .reason = r->reason,
		.detail = r->detail, .event_id = r->event_id, .producer = opt.producer,
		.raw = r->bytes, .raw_len = r->len, .raw_bytes = r->raw_bytes,
	};

	return journal_quarantine(st.db, &q, now, &r->seq);
}

static int
is_fatal(int rc)
{
	int primary = rc & 0xff;

	return primary == SQLITE_FULL || primary == SQLITE_IOERR || primary == SQLITE_BUSY ||
	    primary == SQLITE_NOMEM || primary == SQLITE_CORRUPT || primary == SQLITE_READONLY;
}

static void
report_row(const struct row *r)
{
	json_t *rec;

	if (r->quarantine) {
		linemsg(opt.source, r->lineno, "quarantined (%s): %s", r->reason, r->detail);
		st.quarantined++;
	} else if (r->discarded) {
		st.discarded++;
	} else if (r->result == D_DUPLICATE) {
		st.duplicates++;
	} else {
		st.appended++;
	}
	if (!opt.report)
		return;
	rec = json_object();
	json_object_set_new(rec, "line", json_integer((json_int_t)r->lineno));
	json_object_set_new(rec, "event_id", r->event_id[0] ? json_string(r->event_id) : json_null());
	json_object_set_new(rec, "seq", !r->quarantine && !r->discarded && r->seq >= 0 ?
	    json_integer(r->seq) : json_null());
	json_object_set_new(rec, "status", json_string(r->quarantine ? "quarantined" :
	    r->discarded ? "discarded" : r->result == D_DUPLICATE ? "duplicate" : "appended"));
	json_object_set_new(rec, "reason", r->quarantine ? json_string(r->reason) : json_null());
	if (r->quarantine)
		json_object_set_new(rec, "quarantine_id", json_integer(r->seq));
	if (r->discarded)
		json_object_set_new(rec, "event_type", json_string(r->event_type));
	json_write(stdout, rec);
	putchar('\n');
	json_decref(rec);
}

static void
clear_rows(void)
{
	for (size_t i = 0; i < st.batch.n; i++) {
		free(st.batch.v[i].bytes);
		free(st.batch.v[i].event_type);
		free(st.batch.v[i].coalesce_key);
		free(st.batch.v[i].detail);
	}
	st.batch.n = 0;
	st.batch.bytes = 0;
}

static void
commit_rows(void)
{
	struct row *events[ROWS_PER_INSERT];
	int64_t now = now_ms();
	int n = 0, rc = SQLITE_OK;

	if (st.batch.n == 0)
		return;
	exec_or_fail("BEGIN IMMEDIATE");
	exec_or_fail("SAVEPOINT batch");
	for (size_t i = 0; i < st.batch.n && rc == SQLITE_OK; i++) {
		if (st.batch.v[i].quarantine || st.batch.v[i].discarded)
			continue;
		events[n++] = &st.batch.v[i];
		if (n == ROWS_PER_INSERT) {
			rc = insert_chunk(events, n, now);
			n = 0;
		}
	}
	if (rc == SQLITE_OK && n > 0)
		rc = insert_chunk(events, n, now);
	if (rc != SQLITE_OK) {
		if (is_fatal(rc))
			fail(rc, "cannot append");
		/* The optimistic insert failed: undo it and go row by row, so the
		 * one row at fault is quarantined and its neighbours still land. */
		debugmsg("batch insert failed (%s); inserting row by row", sqlite3_errmsg(st.db));
		exec_or_fail("ROLLBACK TO batch");
		for (size_t i = 0; i < st.batch.n; i++) {
			struct row *r = &st.batch.v[i];

			if (r->quarantine || r->discarded)
				continue;
			r->seq = -1;
			r->result = D_APPENDED;
			exec_or_fail("SAVEPOINT one");
			rc = insert_one(r, now);
			if (rc != SQLITE_OK) {
				if (is_fatal(rc))
					fail(rc, "cannot append");
				r->quarantine = 1;
				r->reason = "insert_failed";
				r->detail = fmt("%s", sqlite3_errmsg(st.db));
				exec_or_fail("ROLLBACK TO one");
			}
			exec_or_fail("RELEASE one");
		}
	}
	exec_or_fail("RELEASE batch");
	for (size_t i = 0; i < st.batch.n; i++) {
		struct row *r = &st.batch.v[i];

		if (r->discarded) {
			sqlite3_bind_text(st.discard, 1, r->event_type, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st.discard, 2, now);
			rc = sqlite3_step(st.discard);
			sqlite3_reset(st.discard);
			if (rc != SQLITE_DONE)
				fail(rc, "cannot count a discarded event");
			continue;
		}
		if (!r->quarantine && r->seq < 0)
			settle_existing(r);
		if (r->quarantine && (rc = insert_quarantine(r, now)) != SQLITE_OK)
			fail(rc, "cannot quarantine");
		/* In seq order, so the newest of a key is the one left standing. */
		if (!r->quarantine && r->result == D_APPENDED && r->coalesce_key &&
		    (rc = journal_supersede(st.db, r->seq, r->coalesce_key, NULL)) != SQLITE_OK)
			fail(rc, "cannot coalesce");
	}
	exec_or_fail("COMMIT");
	st.committed_line = st.batch.v[st.batch.n - 1].lineno;
	for (size_t i = 0; i < st.batch.n; i++)
		report_row(&st.batch.v[i]);
	if (opt.report && fflush(stdout) != 0)
		die(EXIT_IOERR, "cannot write standard output: %s", strerror(errno));
	clear_rows();
	if (st.progress && mono_ms() - st.last_progress >= 250) {
		int64_t ms = mono_ms() - st.started;

		st.last_progress = mono_ms();
		fprintf(stderr, "\r%s: line %lu, %lu appended, %lld lines/s\033[K", progname,
		    st.committed_line, st.appended, ms > 0 ? (long long)st.committed_line * 1000 / ms : 0);
	}
}

static void
prepare_statements(void)
{
	char sql[8192];

	insert_sql(sql, sizeof sql, ROWS_PER_INSERT);
	st.insert_many = db_prepare(st.db, sql);
	insert_sql(sql, sizeof sql, 1);
	st.insert_one = db_prepare(st.db, sql);
	st.find = db_prepare(st.db, "SELECT seq, payload FROM events WHERE event_id = ?");
	st.discard = db_prepare(st.db, "INSERT INTO discards(event_type, count, first_at, last_at)"
	    " VALUES (?1, 1, ?2, ?2) ON CONFLICT(event_type) DO UPDATE SET count = count + 1,"
	    " last_at = excluded.last_at");
}

/* Appends the comma-separated items of text to *list. */
static void
split_list(const char *text, char ***list, int *n)
{
	char *copy = xstrdup(text), *save = NULL;

	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char **grown = realloc(*list, (size_t)(*n + 1) * sizeof *grown);

		if (!grown)
			die(EXIT_SOFTWARE, "out of memory");
		*list = grown;
		(*list)[(*n)++] = xstrdup(item);
	}
	free(copy);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "source", required_argument, NULL, 's' },
		{ "producer", required_argument, NULL, 'p' },
		{ "report", no_argument, NULL, 'r' },
		{ "require", required_argument, NULL, 'R' },
		{ "coalesce-key", required_argument, NULL, 'k' },
		{ "discard-type", required_argument, NULL, 'D' },
		{ "max-bytes", required_argument, NULL, 'm' },
		{ "batch", required_argument, NULL, 'b' },
		{ "sync", required_argument, NULL, 'S' },
		{ "busy-timeout", required_argument, NULL, 'B' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct line_reader in;
	struct line line;
	struct chunk *cur;
	int c, status = EXIT_OK;

	log_init(argv[0]);
	opt.required = calloc((size_t)argc, sizeof *opt.required);
	if (!opt.required)
		die(EXIT_SOFTWARE, "out of memory");
	while ((c = getopt_long(argc, argv, "d:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': opt.db_flag = optarg; break;
		case 's': opt.source = optarg; break;
		case 'p': opt.producer = optarg; break;
		case 'r': opt.report = 1; break;
		case 'R': opt.required[opt.nrequired++] = optarg; break;
		case 'k': split_list(optarg, &opt.coalesce, &opt.ncoalesce); break;
		case 'D': split_list(optarg, &opt.discard, &opt.ndiscard); break;
		case 'm': opt.max_bytes = (size_t)number_arg(usage, "--max-bytes", optarg, 1); break;
		case 'b': opt.batch = (long)number_arg(usage, "--batch", optarg, 1); break;
		case 'S': opt.sync = optarg; break;
		case 'B': opt.busy = optarg; break;
		case 'q': opt.quiet = 1; break;
		case 'v': log_verbose = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s' (events are read from standard input)",
		    argv[optind]);
	opt.producer = setting_get("producer", opt.producer, NULL);
	if (opt.ndiscard == 0) {
		const char *types = setting_get("discard_types", NULL, NULL);

		if (types)
			split_list(types, &opt.discard, &opt.ndiscard);
	}
	st.path = journal_path(opt.db_flag);
	st.db = db_open(st.path, DB_CREATE, opt.sync, opt.busy);
	prepare_statements();

	line_reader_init(&in, STDIN_FILENO, opt.source, opt.max_bytes);
	st.progress = !opt.quiet && isatty(STDERR_FILENO);
	st.started = st.last_progress = mono_ms();
	pool_start();
	cur = chunk_new();
	for (;;) {
		int timeout = -1;
		enum line_result lr;

		take_checked(0);
		/* Memory stays bounded: wait for the oldest chunk when enough are out. */
		while (in_flight() >= CHUNKS_IN_FLIGHT)
			take_checked(1);
		/* Input pausing: check what is here, and commit it within 200 ms. */
		if (cur->nlines > 0 || in_flight() > 0)
			timeout = 20;
		if (st.batch.n > 0) {
			int64_t left = COMMIT_EVERY_MS - (mono_ms() - st.first_row_at);

			if (left <= 0) {
				commit_rows();
				continue;
			}
			if (timeout < 0 || left < timeout)
				timeout = (int)left;
		}
		lr = line_next(&in, &line, timeout);
		if (lr == LINE_TIMEOUT) {
			if (cur->nlines > 0) {
				chunk_submit(cur);
				cur = chunk_new();
			}
			continue;
		}
		if (lr == LINE_EOF)
			break;
		if (lr == LINE_ERROR) {
			int err = errno;

			chunk_submit(cur);
			while (in_flight() > 0)
				take_checked(1);
			commit_rows();
			die(EXIT_IOERR, "cannot read %s: %s; input up to line %lu is committed",
			    opt.source, strerror(err), st.committed_line);
		}
		chunk_add(cur, &line, lr == LINE_TOOLONG);
		if (cur->nlines >= CHUNK_LINES || cur->len >= CHUNK_BYTES) {
			chunk_submit(cur);
			cur = chunk_new();
		}
	}
	chunk_submit(cur);
	while (in_flight() > 0)
		take_checked(1);
	pool_stop();
	commit_rows();
	line_reader_free(&in);
	db_close(st.db);
	if (st.progress && st.committed_line > 0)
		fprintf(stderr, "\r\033[K");
	if (!opt.quiet && st.discarded)
		warnmsg("%lu appended, %lu duplicate, %lu quarantined, %lu discarded", st.appended,
		    st.duplicates, st.quarantined, st.discarded);
	else if (!opt.quiet)
		warnmsg("%lu appended, %lu duplicate, %lu quarantined", st.appended, st.duplicates,
		    st.quarantined);
	if (st.quarantined > 0)
		status = EXIT_DATAERR;
	c = finish_stdout();
	return c != EXIT_OK ? c : status;
}
