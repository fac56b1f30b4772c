/*
 * record-results - write outcomes to the ledger; back off a failing target.
 *
 * Reads:  outcome records (classify's output), one per event:
 *           {"seq":42,"event_id":"...","target":"prod","status":"rejected",
 *            "category":"validation","http_status":400,"error":"...","retry_after_ms":null}
 * Writes: one summary record for the run on stdout, and a human line on stderr:
 *           prod: 480 delivered, 3 duplicate, 2 rejected, 14 transient (auth_expired: 14)
 *
 * success, duplicate  -> the event is delivered to this target.
 * rejected            -> its attempts grow and it is retried after a backoff of its
 *                        own; after max_rejections it has failed for good.
 * failed_permanent    -> failed for good (kept, visible, re-queueable).
 * failed_transient    -> the event is untouched: the *target* backs off.
 * Nothing is ever deleted. Any success clears the target's failing state.
 *
 * Outcomes are committed in transactions of --batch records (and whenever
 * input pauses), so appenders are never held up by a slow receiver. Each
 * transaction first applies its records together in a savepoint; if that
 * fails, each record is retried in a savepoint of its own, so one bad record
 * is reported and skipped and its neighbours still land. The target's state,
 * its cursor and the run row are written last.
 */
#include "backoff.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"
#include "ndjson.h"
#include "target.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
"usage: record-results [-d PATH] --target NAME [--batch N] < outcomes.ndjson\n"
"\n"
"Record delivery outcomes in the ledger and update the target's backoff.\n"
"\n"
"  -d, --db PATH            the journal\n"
"  -t, --target NAME        the target\n"
"      --batch N            outcomes per transaction (default 1000)\n"
"      --busy-timeout DUR   wait this long for a locked journal (default 5s)\n"
"  -q, --quiet              no summary line on stderr\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Exit: 0 done, 64 usage, 65 bad input lines (skipped), 66 no journal,\n"
"69 unknown target, 70 internal error, 74 I/O error or disk full, 75 the\n"
"target is backing off (or the journal stayed busy), 78 journal too new.\n";

#define STATUS_COUNT 5
static const char *const status_names[STATUS_COUNT] = {
	"success", "duplicate", "rejected", "failed_transient", "failed_permanent"
};
enum { S_SUCCESS, S_DUPLICATE, S_REJECTED, S_TRANSIENT, S_PERMANENT };

struct outcome {
	unsigned long lineno;
	int64_t seq;
	char event_id[129];
	int status;
	char category[64];
	int64_t http_status;       /* 0: none */
	char *error;
	int64_t retry_after_ms;    /* -1: none */
};

static struct {
	sqlite3 *db;
	struct target target;
	char target_name_copy[65];
	sqlite3_stmt *deliver, *attempts, *retry, *exists;
	struct outcome *pending;
	size_t npending, cap;
	int64_t first_pending_at;
	int in_tx;
	long long counts[STATUS_COUNT], recorded, stale;
	json_t *categories;        /* category -> count, this run */
	int64_t max_retry_after;
	char *transient_error;     /* the first batch-level failure's message */
	char transient_category[64];
	int64_t transient_http;
	int64_t started_at, started_mono, last_progress;
	int progress;              /* stderr is a terminal */
	int status;
} st;

static long batch_size = 1000;

static void
tx_begin(void)
{
	int rc;

	if (st.in_tx)
		return;
	rc = sqlite3_exec(st.db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		db_die(st.db, rc, "cannot record outcomes");
	st.in_tx = 1;
}

static void
tx_commit(void)
{
	int rc;

	if (!st.in_tx)
		return;
	rc = sqlite3_exec(st.db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		char why[512];

		/* The rollback replaces SQLite's message: keep the cause. */
		snprintf(why, sizeof why, "%s", sqlite3_errmsg(st.db));
		sqlite3_exec(st.db, "ROLLBACK", NULL, NULL, NULL);
		die(db_exit_status(rc), "cannot commit outcomes: %s (they were rolled back; a later drain"
		    " resends those events and the receiver answers duplicate)", why);
	}
	st.in_tx = 0;
}

static int
step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Applies one outcome to the ledger. Returns an SQLite code; *missing is set
 * when the event does not exist (or has another id): the record is stale. */
static int
apply(const struct outcome *o, int64_t now, int *missing)
{
	sqlite3_stmt *s;
	int rc;

	*missing = 0;
	switch (o->status) {
	case S_SUCCESS:
	case S_DUPLICATE:
		s = st.deliver;
		sqlite3_bind_int64(s, 1, st.target.id);
		sqlite3_bind_int64(s, 2, o->seq);
		sqlite3_bind_text(s, 3, o->event_id, -1, SQLITE_STATIC);
		if (o->http_status)
			sqlite3_bind_int64(s, 4, o->http_status);
		else
			sqlite3_bind_null(s, 4);
		sqlite3_bind_int64(s, 5, now);
		rc = step_done(s);
		sqlite3_clear_bindings(s);
		if (rc == SQLITE_OK && sqlite3_changes(st.db) == 0) {
			/* Nothing changed: delivered already (a resend), or no such event. */
			sqlite3_bind_int64(st.exists, 1, o->seq);
			sqlite3_bind_text(st.exists, 2, o->event_id, -1, SQLITE_STATIC);
			rc = sqlite3_step(st.exists);
			*missing = rc == SQLITE_DONE;
			sqlite3_reset(st.exists);
			rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
		}
		return rc;
	case S_REJECTED:
	case S_PERMANENT: {
		int64_t attempts = 0, next;
		int failed;

		/* The event's own count decides its backoff and whether it is done for. */
		s = st.attempts;
		sqlite3_bind_int64(s, 1, st.target.id);
		sqlite3_bind_int64(s, 2, o->seq);
		sqlite3_bind_text(s, 3, o->event_id, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			attempts = sqlite3_column_int64(s, 0);
			if (sqlite3_column_int(s, 1)) {
				/* Delivered already (a resend answered late): keep it delivered. */
				sqlite3_reset(s);
				return SQLITE_OK;
			}
		} else if (rc == SQLITE_DONE) {
			sqlite3_reset(s);
			*missing = 1;
			return SQLITE_OK;
		}
		sqlite3_reset(s);
		if (rc != SQLITE_ROW)
			return rc;
		attempts++;
		failed = o->status == S_PERMANENT || attempts >= st.target.max_rejections;
		next = now + backoff_delay_ms(attempts, o->retry_after_ms);
		s = st.retry;
		sqlite3_bind_int64(s, 1, st.target.id);
		sqlite3_bind_int64(s, 2, o->seq);
		sqlite3_bind_text(s, 3, failed ? "failed" : "retrying", -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, attempts);
		if (o->http_status)
			sqlite3_bind_int64(s, 5, o->http_status);
		else
			sqlite3_bind_null(s, 5);
		sqlite3_bind_text(s, 6, o->category, -1, SQLITE_STATIC);
		db_bind_text(s, 7, o->error);
		sqlite3_bind_int64(s, 8, now);
		if (failed)
			sqlite3_bind_null(s, 9);
		else
			sqlite3_bind_int64(s, 9, next);
		rc = step_done(s);
		sqlite3_clear_bindings(s);
		return rc;
	}
	default:
		return SQLITE_OK; /* transient: the event is not touched */
	}
}

static int
fatal_rc(int rc)
{
	int p = rc & 0xff;

	return p == SQLITE_FULL || p == SQLITE_IOERR || p == SQLITE_BUSY || p == SQLITE_NOMEM ||
	    p == SQLITE_CORRUPT || p == SQLITE_READONLY;
}

static void
count(const struct outcome *o, int missing)
{
	if (missing) {
		linemsg("<stdin>", o->lineno, "no event %" PRId64 " with id %s in the journal; skipped",
		    o->seq, o->event_id);
		st.status = EXIT_DATAERR;
		st.stale++;
		return;
	}
	st.counts[o->status]++;
	st.recorded++;
	if (o->category[0]) {
		json_t *c = json_object_get(st.categories, o->category);

		json_object_set_new(st.categories, o->category,
		    json_integer(c ? json_integer_value(c) + 1 : 1));
	}
	if (o->status == S_TRANSIENT) {
		if (o->retry_after_ms > st.max_retry_after)
			st.max_retry_after = o->retry_after_ms;
		/* The first batch-level failure names the cause; not_attempted is its echo. */
		if (!st.transient_category[0] || (strcmp(st.transient_category, "not_attempted") == 0 &&
		    strcmp(o->category, "not_attempted") != 0)) {
			snprintf(st.transient_category, sizeof st.transient_category, "%s", o->category);
			free(st.transient_error);
			st.transient_error = o->error ? strdup(o->error) : NULL;
			st.transient_http = o->http_status;
		}
	}
}

static void
show_progress(int final)
{
	int64_t now = mono_ms(), secs;

	if (!st.progress || (!final && now - st.last_progress < 250))
		return;
	st.last_progress = now;
	secs = now - st.started_mono;
	if (final) {
		fprintf(stderr, "\r\033[K");
		return;
	}
	fprintf(stderr, "\r%s: %lld recorded, %lld/s", st.target.name, st.recorded,
	    secs > 0 ? st.recorded * 1000 / secs : 0);
}

/* Applies the pending outcomes: together in a savepoint, else one by one. */
static void
flush_pending(void)
{
	int64_t now = now_ms();
	int rc = SQLITE_OK, missing;
	size_t i;
	char *missing_flags;

	if (st.npending == 0)
		return;
	missing_flags = calloc(st.npending, 1);
	if (!missing_flags)
		die(EXIT_SOFTWARE, "out of memory");
	tx_begin();
	db_exec(st.db, "SAVEPOINT chunk");
	for (i = 0; i < st.npending && rc == SQLITE_OK; i++) {
		rc = apply(&st.pending[i], now, &missing);
		missing_flags[i] = (char)missing;
	}
	if (rc == SQLITE_OK) {
		db_exec(st.db, "RELEASE chunk");
		for (i = 0; i < st.npending; i++)
			count(&st.pending[i], missing_flags[i]);
	} else {
		if (fatal_rc(rc))
			db_die(st.db, rc, "cannot record outcomes");
		db_exec(st.db, "ROLLBACK TO chunk");
		db_exec(st.db, "RELEASE chunk");
		for (i = 0; i < st.npending; i++) {
			db_exec(st.db, "SAVEPOINT one");
			rc = apply(&st.pending[i], now, &missing);
			if (rc != SQLITE_OK) {
				if (fatal_rc(rc))
					db_die(st.db, rc, "cannot record outcomes");
				linemsg("<stdin>", st.pending[i].lineno, "cannot record outcome: %s; skipped",
				    sqlite3_errmsg(st.db));
				st.status = EXIT_DATAERR;
				db_exec(st.db, "ROLLBACK TO one");
			} else {
				count(&st.pending[i], missing);
			}
			db_exec(st.db, "RELEASE one");
		}
	}
	tx_commit();
	for (i = 0; i < st.npending; i++)
		free(st.pending[i].error);
	free(missing_flags);
	st.npending = 0;
	show_progress(0);
}

/* A member that is a string (0, copied to buf), null or missing (1), or
 * anything else (-1). */
static int
member_text(const struct json_member *m, char *buf, size_t size)
{
	buf[0] = '\0';
	if (!m || (m->valuelen == 4 && memcmp(m->value, "null", 4) == 0))
		return 1;
	return json_member_str(m, buf, size) == 0 ? 0 : -1;
}

/* A member that is an integer (0), null or missing (1), or anything else (-1). */
static int
member_int(const struct json_member *m, int64_t *v)
{
	int ok;

	if (!m || (m->valuelen == 4 && memcmp(m->value, "null", 4) == 0))
		return 1;
	*v = json_member_int(m, &ok);
	return ok ? 0 : -1;
}

/* Outcome records come from classify, one per event: their members are found
 * with the span scanner, and only the values used are decoded. */
static int
parse_outcome(const char *line, size_t len, unsigned long lineno, struct outcome *o,
    const char **why)
{
	static char text[65536];
	struct json_member m[24];
	int n = json_members(line, len, m, 24, why), i;
	int64_t v;

	memset(o, 0, sizeof *o);
	o->lineno = lineno;
	o->retry_after_ms = -1;
	if (n < 0)
		return -1;
	if (member_int(json_member_find(m, n, "seq"), &o->seq) != 0 || o->seq < 1) {
		*why = "seq missing or not a positive integer";
		return -1;
	}
	if (member_text(json_member_find(m, n, "event_id"), o->event_id, sizeof o->event_id) != 0 ||
	    !o->event_id[0]) {
		*why = "event_id missing or not a string";
		return -1;
	}
	i = member_text(json_member_find(m, n, "target"), text, sizeof text);
	if (i < 0 || (i == 0 && strcmp(text, st.target.name) != 0)) {
		*why = "outcome for another target";
		return -1;
	}
	o->status = -1;
	if (member_text(json_member_find(m, n, "status"), text, sizeof text) == 0)
		for (i = 0; i < STATUS_COUNT; i++)
			if (strcmp(text, status_names[i]) == 0)
				o->status = i;
	if (o->status < 0) {
		*why = "status missing or unknown";
		return -1;
	}
	if (member_text(json_member_find(m, n, "category"), o->category, sizeof o->category) < 0) {
		*why = "category is not a string";
		return -1;
	}
	if (!o->category[0] && (o->status == S_REJECTED || o->status == S_PERMANENT ||
	    o->status == S_TRANSIENT))
		snprintf(o->category, sizeof o->category, "%s", status_names[o->status]);
	if (member_int(json_member_find(m, n, "http_status"), &v) == 0)
		o->http_status = v;
	if (member_int(json_member_find(m, n, "retry_after_ms"), &v) == 0)
		o->retry_after_ms = v;
	i = member_text(json_member_find(m, n, "error"), text, sizeof text);
	if (i == 0) {
		o->error = strdup(text);
		if (!o->error)
			die(EXIT_SOFTWARE, "out of memory");
	}
	return 0;
}

/* Moves the cursor over every event that now has a ledger row (or needs
 * none), so selection starts where the work is. */
static void
advance_cursor(void)
{
	sqlite3_stmt *s = db_prepare(st.db,
	    "UPDATE targets SET cursor_seq = coalesce("
	    "  (SELECT e.seq - 1 FROM events e WHERE" PENDING_WHERE " ORDER BY e.seq LIMIT 1),"
	    "  (SELECT max(seq) FROM events), 0) WHERE id = ?1");
	int rc;

	target_bind_pending(s, &st.target);
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		db_die(st.db, rc, "cannot move the target's cursor");
	sqlite3_finalize(s);
}

/* The target's health after this run, the cursor and the run row. */
static int64_t
finish_run(void)
{
	int64_t now = now_ms(), next = 0;
	int succeeded = st.counts[S_SUCCESS] + st.counts[S_DUPLICATE] > 0;
	int failed = st.counts[S_TRANSIENT] > 0;
	char *cats = json_dumps(st.categories, JSON_COMPACT | JSON_SORT_KEYS);
	sqlite3_stmt *s;
	int rc;

	tx_begin();
	/* Reload: another process may have changed it while we recorded. */
	target_free(&st.target);
	target_load_or_die(st.db, st.target_name_copy, &st.target);
	/* A success clears the failing state; a failure in the same run then
	 * counts from there: the target's state is the latest news. */
	if (succeeded)
		target_record_success(st.db, st.target.id, now);
	if (failed)
		next = target_record_failure(st.db, st.target.id,
		    succeeded ? 0 : st.target.consecutive_failures, now, st.transient_category,
		    st.transient_error, st.transient_http, st.max_retry_after);
	if (st.recorded > 0) {
		s = db_prepare(st.db, "UPDATE targets SET last_attempt_at = ?2, last_categories = ?3"
		    " WHERE id = ?1");
		sqlite3_bind_int64(s, 1, st.target.id);
		sqlite3_bind_int64(s, 2, now);
		sqlite3_bind_text(s, 3, cats, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		if (rc != SQLITE_DONE)
			db_die(st.db, rc, "cannot update the target");
		sqlite3_finalize(s);
	}
	advance_cursor();
	if (st.recorded > 0) {
		s = db_prepare(st.db, "INSERT INTO runs(target_id, started_at, finished_at, counts,"
		    " exit_status) VALUES (?, ?, ?, ?, ?)");
		json_t *counts = json_object();

		for (int i = 0; i < STATUS_COUNT; i++)
			json_object_set_new(counts, status_names[i], json_integer(st.counts[i]));
		json_object_set(counts, "categories", st.categories);
		char *text = json_dumps(counts, JSON_COMPACT);

		sqlite3_bind_int64(s, 1, st.target.id);
		sqlite3_bind_int64(s, 2, st.started_at);
		sqlite3_bind_int64(s, 3, now);
		sqlite3_bind_text(s, 4, text, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(s, 5, failed ? EXIT_TEMPFAIL : st.status);
		rc = sqlite3_step(s);
		if (rc != SQLITE_DONE)
			db_die(st.db, rc, "cannot write the run");
		sqlite3_finalize(s);
		free(text);
		json_decref(counts);
	}
	tx_commit();
	free(cats);
	if (!failed && st.recorded == 0 && st.target.next_attempt_at > now)
		next = st.target.next_attempt_at; /* nothing was due: it is still backing off */
	return next;
}

static void
summarize(int64_t next, int quiet)
{
	json_t *sum = json_object();
	char when[32], line[1024];
	size_t off;
	const char *key;
	json_t *v;

	json_object_set_new(sum, "target", json_string(st.target.name));
	json_object_set_new(sum, "events", json_integer(st.recorded));
	for (int i = 0; i < STATUS_COUNT; i++)
		json_object_set_new(sum, status_names[i], json_integer(st.counts[i]));
	json_object_set(sum, "categories", st.categories);
	json_object_set_new(sum, "skipped", json_integer(st.stale));
	json_object_set_new(sum, "target_state", json_string(next ? "backing_off" : "ok"));
	json_object_set_new(sum, "next_attempt_at", next ? json_string(format_time(next, when)) :
	    json_null());
	if (json_dumpf(sum, stdout, JSON_COMPACT) != 0 || putchar('\n') == EOF)
		die(EXIT_IOERR, "cannot write standard output: %s", strerror(errno));
	json_decref(sum);
	if (quiet)
		return;
	off = (size_t)snprintf(line, sizeof line, "%s: %lld delivered, %lld duplicate, %lld rejected,"
	    " %lld failed, %lld transient", st.target.name, st.counts[S_SUCCESS],
	    st.counts[S_DUPLICATE], st.counts[S_REJECTED], st.counts[S_PERMANENT],
	    st.counts[S_TRANSIENT]);
	if (json_object_size(st.categories) > 0) {
		int first = 1;

		off += (size_t)snprintf(line + off, sizeof line - off, " (");
		json_object_foreach(st.categories, key, v) {
			if (off >= sizeof line - 64)
				break;
			off += (size_t)snprintf(line + off, sizeof line - off, "%s%s: %lld",
			    first ? "" : ", ", key, (long long)json_integer_value(v));
			first = 0;
		}
		off += (size_t)snprintf(line + off, sizeof line - off, ")");
	}
	if (next && off < sizeof line)
		snprintf(line + off, sizeof line - off, "; backing off until %s", when);
	warnmsg("%s", line);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "target", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'b' },
		{ "busy-timeout", required_argument, NULL, 'B' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *name = NULL, *busy = NULL;
	struct line_reader in;
	struct line line;
	int c, quiet = 0;
	int64_t next;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:t:qhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 't': name = optarg; break;
		case 'b': batch_size = (long)number_arg(usage, "--batch", optarg, 1); break;
		case 'B': busy = optarg; break;
		case 'q': quiet = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (!name)
		usage_error(usage, "--target is required");
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);

	st.db = db_open(journal_path(db_flag), DB_MUST_EXIST, NULL, busy);
	target_load_or_die(st.db, name, &st.target);
	snprintf(st.target_name_copy, sizeof st.target_name_copy, "%s", st.target.name);
	st.categories = json_object();
	st.started_at = now_ms();
	st.started_mono = mono_ms();
	st.progress = isatty(STDERR_FILENO) && !quiet;
	st.max_retry_after = -1;
	st.deliver = db_prepare(st.db,
	    "INSERT INTO deliveries(target_id, event_seq, state, attempts, http_status,"
	    " first_attempt_at, last_attempt_at, delivered_at)"
	    " SELECT ?1, seq, 'delivered', 0, ?4, ?5, ?5, ?5 FROM events WHERE seq = ?2 AND event_id = ?3"
	    " ON CONFLICT(target_id, event_seq) DO UPDATE SET state = 'delivered',"
	    " http_status = excluded.http_status, category = NULL, error = NULL,"
	    " last_attempt_at = excluded.last_attempt_at, next_attempt_at = NULL,"
	    " delivered_at = excluded.delivered_at WHERE state <> 'delivered'");
	st.exists = db_prepare(st.db, "SELECT 1 FROM events WHERE seq = ? AND event_id = ?");
	st.attempts = db_prepare(st.db,
	    "SELECT coalesce(d.attempts, 0), d.state = 'delivered' FROM events e"
	    " LEFT JOIN deliveries d ON d.target_id = ?1 AND d.event_seq = e.seq"
	    " WHERE e.seq = ?2 AND e.event_id = ?3");
	st.retry = db_prepare(st.db,
	    "INSERT INTO deliveries(target_id, event_seq, state, attempts, http_status, category,"
	    " error, first_attempt_at, last_attempt_at, next_attempt_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)"
	    " ON CONFLICT(target_id, event_seq) DO UPDATE SET state = excluded.state,"
	    " attempts = excluded.attempts, http_status = excluded.http_status,"
	    " category = excluded.category, error = excluded.error,"
	    " last_attempt_at = excluded.last_attempt_at, next_attempt_at = excluded.next_attempt_at");

	line_reader_init(&in, STDIN_FILENO, "<stdin>", 1u << 20);
	for (;;) {
		int timeout = -1;
		enum line_result lr;
		const char *why = NULL;
		struct outcome o;

		if (st.npending > 0) {
			int64_t left = 200 - (mono_ms() - st.first_pending_at);

			timeout = left > 0 ? (int)left : 0;
		}
		lr = line_next(&in, &line, timeout);
		if (lr == LINE_TIMEOUT) {
			flush_pending();
			continue;
		}
		if (lr == LINE_EOF)
			break;
		if (lr == LINE_ERROR)
			die(EXIT_IOERR, "cannot read standard input: %s", strerror(errno));
		if (lr == LINE_TOOLONG) {
			linemsg("<stdin>", line.lineno, "line too long for an outcome record; skipped");
			st.status = EXIT_DATAERR;
			continue;
		}
		if (line.len == 0)
			continue;
		if (parse_outcome(line.data, line.len, line.lineno, &o, &why) != 0) {
			linemsg("<stdin>", line.lineno, "not an outcome record: %s; skipped", why);
			st.status = EXIT_DATAERR;
			continue;
		}
		if (st.npending == st.cap) {
			st.cap = st.cap ? st.cap * 2 : 256;
			st.pending = realloc(st.pending, st.cap * sizeof *st.pending);
			if (!st.pending)
				die(EXIT_SOFTWARE, "out of memory");
		}
		if (st.npending == 0)
			st.first_pending_at = mono_ms();
		st.pending[st.npending++] = o;
		if (st.npending >= (size_t)batch_size)
			flush_pending();
	}
	flush_pending();
	show_progress(1);
	next = finish_run();
	line_reader_free(&in);
	summarize(next, quiet);
	free(st.pending);
	free(st.transient_error);
	json_decref(st.categories);
	target_free(&st.target);
	db_close(st.db);
	c = finish_stdout();
	if (c != EXIT_OK)
		return c;
	/* The target backing off matters more to a driver than skipped lines,
	 * which were named on stderr already. */
	if (next)
		return EXIT_TEMPFAIL;
	return st.status;
}
