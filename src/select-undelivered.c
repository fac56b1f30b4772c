/*
 * select-undelivered - print the events that are due for one target.
 *
 * Reads:  nothing (the journal, read only).
 * Writes: selection records in seq order, one per line:
 *           {"seq":42,"event_id":"...","target":"prod","attempt":0,"event":{...}}
 *         "event" is the payload exactly as journaled; it is never re-encoded.
 * Due means: pending (never tried for this target, not superseded, payload
 * kept) or retrying with its time come. Never delivered, failed or
 * superseded-without-a-ledger-row events. While the target backs off it
 * prints nothing (a note on stderr) unless --ignore-backoff.
 *
 * Cost is proportional to what is selected, not to the journal: pending
 * events are read from the target's cursor up, in seq order (primary key),
 * and due retries come from the partial index of retrying rows; the unary +
 * in their ORDER BY keeps SQLite from walking the whole ledger in seq order
 * instead, which it otherwise prefers.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "log.h"
#include "target.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
"usage: select-undelivered [-d PATH] --target NAME [--limit N] [--ignore-backoff]\n"
"       select-undelivered [-d PATH] --target NAME --next-due\n"
"\n"
"Print the events due for delivery to a target, as selection records.\n"
"\n"
"  -d, --db PATH        the journal\n"
"  -t, --target NAME    the target\n"
"  -n, --limit N        at most N events (default 10000)\n"
"      --ignore-backoff select even while the target backs off\n"
"      --next-due       print when something is next due, as Unix ms (0: now;\n"
"                       nothing when nothing is scheduled), and select nothing\n"
"  -q, --quiet          no note on stderr when the target is backing off or disabled\n"
"  -h, --help           this help\n"
"  -V, --version        print the version\n"
"\n"
"Exit: 0 (also when the target is backing off or disabled: nothing is printed),\n"
"64 usage, 66 no journal, 69 unknown target, 70 internal error, 74 I/O error,\n"
"75 journal busy, 78 journal too new.\n";

static sqlite3 *db;
static struct target target;

static void
emit(int64_t seq, const unsigned char *event_id, int64_t attempt, sqlite3_stmt *s, int col)
{
	printf("{\"seq\":%" PRId64 ",\"event_id\":\"%s\",\"target\":\"%s\",\"attempt\":%" PRId64
	    ",\"event\":", seq, (const char *)event_id, target.name, attempt);
	fwrite(sqlite3_column_text(s, col), 1, (size_t)sqlite3_column_bytes(s, col), stdout);
	fputs("}\n", stdout);
}

/* Steps s; returns 1 on a row, 0 when done, dies on error. */
static int
next_row(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc != SQLITE_DONE)
		db_die(db, rc, "cannot select events");
	return 0;
}

/* When something is next due: the earliest of "now" (anything pending) and
 * the first retry, but never before the target's own backoff ends. */
static int64_t
next_due(int64_t now)
{
	sqlite3_stmt *s;
	int64_t due = -1;

	if (!target.enabled)
		return -1;
	s = db_prepare(db, "SELECT 1 FROM events e WHERE" PENDING_WHERE " LIMIT 1");
	target_bind_pending(s, &target);
	if (next_row(s))
		due = now;
	sqlite3_finalize(s);
	if (due < 0) {
		s = db_prepare(db, "SELECT min(next_attempt_at) FROM deliveries"
		    " WHERE target_id = ? AND state = 'retrying'");
		sqlite3_bind_int64(s, 1, target.id);
		if (next_row(s) && sqlite3_column_type(s, 0) != SQLITE_NULL)
			due = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	if (due < 0)
		return -1;
	if (target.next_attempt_at > due)
		due = target.next_attempt_at;
	return due <= now ? 0 : due;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "target", required_argument, NULL, 't' },
		{ "limit", required_argument, NULL, 'n' },
		{ "ignore-backoff", no_argument, NULL, 'i' },
		{ "next-due", no_argument, NULL, 'N' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *name = NULL;
	long long limit = 10000, selected = 0;
	int c, ignore_backoff = 0, want_next_due = 0, quiet = 0, have_p, have_r;
	int64_t now;
	sqlite3_stmt *pending, *retrying;
	char when[32];

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:t:n:qhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 't': name = optarg; break;
		case 'n': limit = number_arg(usage, "--limit", optarg, 1); break;
		case 'i': ignore_backoff = 1; break;
		case 'N': want_next_due = 1; break;
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

	db = db_open(journal_path(db_flag), DB_MUST_EXIST, NULL, NULL);
	/* One read transaction: the target and its events seen at one moment. */
	db_exec(db, "BEGIN");
	target_load_or_die(db, name, &target);
	now = now_ms();

	if (TARGET_IS_SNAPSHOT(&target)) {
		/* It copies the journal, not events: the drain runs sluice-snapshot for it. */
		if (want_next_due && target.next_attempt_at > now)
			printf("%" PRId64 "\n", target.next_attempt_at);
		else if (!want_next_due && !quiet)
			warnmsg("%s is a snapshot target; it takes no events", target.name);
		goto done;
	}
	if (want_next_due) {
		int64_t due = next_due(now);

		if (due >= 0)
			printf("%" PRId64 "\n", due);
		goto done;
	}
	if (!target.enabled) {
		if (!quiet)
			warnmsg("%s is disabled; nothing selected", target.name);
		goto done;
	}
	if (target.next_attempt_at > now && !ignore_backoff) {
		if (!quiet)
			warnmsg("%s is backing off until %s after %" PRId64 " failure%s (%s); nothing selected",
			    target.name, format_time(target.next_attempt_at, when), target.consecutive_failures,
			    target.consecutive_failures == 1 ? "" : "s",
			    target.last_category ? target.last_category : "?");
		goto done;
	}

	pending = db_prepare(db, "SELECT e.seq, e.event_id, e.payload FROM events e WHERE"
	    PENDING_WHERE " ORDER BY e.seq LIMIT ?4");
	target_bind_pending(pending, &target);
	sqlite3_bind_int64(pending, 4, limit);
	retrying = db_prepare(db,
	    "SELECT d.event_seq, e.event_id, d.attempts, e.payload"
	    " FROM deliveries d INDEXED BY deliveries_retrying JOIN events e ON e.seq = d.event_seq"
	    " WHERE d.target_id = ?1 AND d.state = 'retrying' AND d.next_attempt_at <= ?2"
	    " AND e.payload IS NOT NULL ORDER BY d.event_seq LIMIT ?3");
	sqlite3_bind_int64(retrying, 1, target.id);
	sqlite3_bind_int64(retrying, 2, now);
	sqlite3_bind_int64(retrying, 3, limit);

	/* Merge the two seq-ordered streams. */
	have_p = next_row(pending);
	have_r = next_row(retrying);
	while ((have_p || have_r) && selected < limit) {
		if (have_p && (!have_r || sqlite3_column_int64(pending, 0) < sqlite3_column_int64(retrying, 0))) {
			emit(sqlite3_column_int64(pending, 0), sqlite3_column_text(pending, 1), 0, pending, 2);
			have_p = next_row(pending);
		} else {
			emit(sqlite3_column_int64(retrying, 0), sqlite3_column_text(retrying, 1),
			    sqlite3_column_int64(retrying, 2), retrying, 3);
			have_r = next_row(retrying);
		}
		selected++;
	}
	debugmsg("%s: %lld events selected", target.name, selected);
done:
	db_exec(db, "COMMIT");
	target_free(&target);
	db_close(db);
	return finish_stdout();
}
