/*
 * sluice-retry - the manual retry.
 *
 *   sluice retry TARGET          clear the target's backoff, make its retrying
 *                                events due now, and drain it now
 *   sluice retry --failed TARGET re-queue events that failed for good (all, by
 *                                --event id, or by --category); they are due now
 *                                and get max_rejections fresh attempts
 *
 * Re-queued events keep their ledger row (state retrying, attempts 0) so the
 * target's cursor, which has moved past them, never has to move back.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "execpath.h"
#include "exitcode.h"
#include "log.h"
#include "target.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
"usage: sluice retry [-d PATH] [--no-drain] TARGET\n"
"       sluice retry [-d PATH] --failed TARGET [--event ID]... [--category C]\n"
"\n"
"Clear a target's backoff and drain it now; or re-queue events that failed for good.\n"
"\n"
"  -d, --db PATH      the journal\n"
"      --failed       re-queue terminal failures instead (prints how many)\n"
"      --event ID     only this event (repeatable)\n"
"      --category C   only events that failed with category C\n"
"      --no-drain     clear the backoff but do not drain now\n"
"  -h, --help         this help\n"
"  -V, --version      print the version\n"
"\n"
"Exit: the drain's status (0 done, 75 still failing, ...); with --failed or\n"
"--no-drain 0; 64 usage, 66 no journal, 69 unknown target.\n";

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "failed", no_argument, NULL, 'f' },
		{ "event", required_argument, NULL, 'e' },
		{ "category", required_argument, NULL, 'c' },
		{ "no-drain", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *category = NULL, *path;
	char **ids;
	int c, nids = 0, failed = 0, no_drain = 0;
	sqlite3 *db;
	sqlite3_stmt *s;
	struct target t;
	int64_t now;
	long long requeued = 0;

	log_init(argv[0]);
	ids = calloc((size_t)argc, sizeof *ids);
	if (!ids)
		die(EXIT_SOFTWARE, "out of memory");
	while ((c = getopt_long(argc, argv, "d:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 'f': failed = 1; break;
		case 'e': ids[nids++] = optarg; break;
		case 'c': category = optarg; break;
		case 'n': no_drain = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind + 1 != argc)
		usage_error(usage, "give exactly one TARGET");
	if (!failed && (nids || category))
		usage_error(usage, "--event and --category go with --failed");
	path = journal_path(db_flag);
	db = db_open(path, DB_MUST_EXIST, NULL, NULL);
	now = now_ms();
	db_exec(db, "BEGIN IMMEDIATE");
	target_load_or_die(db, argv[optind], &t);

	if (failed) {
		s = db_prepare(db, "UPDATE deliveries SET state = 'retrying', attempts = 0,"
		    " next_attempt_at = ?2 WHERE target_id = ?1 AND state = 'failed'"
		    " AND (?3 IS NULL OR category = ?3)"
		    " AND (?4 IS NULL OR event_seq = (SELECT seq FROM events WHERE event_id = ?4))");
		sqlite3_bind_int64(s, 1, t.id);
		sqlite3_bind_int64(s, 2, now);
		db_bind_text(s, 3, category);
		for (int i = 0; i < (nids ? nids : 1); i++) {
			db_bind_text(s, 4, nids ? ids[i] : NULL);
			if (sqlite3_step(s) != SQLITE_DONE)
				db_die(db, sqlite3_errcode(db), "cannot re-queue");
			if (nids && sqlite3_changes(db) == 0)
				warnmsg("%s: no failed event with id %s", t.name, ids[i]);
			requeued += sqlite3_changes(db);
			sqlite3_reset(s);
		}
		sqlite3_finalize(s);
		db_exec(db, "COMMIT");
		printf("%lld\n", requeued);
		warnmsg("%s: %lld event%s re-queued", t.name, requeued, requeued == 1 ? "" : "s");
		target_free(&t);
		db_close(db);
		free(ids);
		return finish_stdout();
	}

	db_exec_id(db, "UPDATE targets SET next_attempt_at = NULL WHERE id = ?", t.id,
	    "cannot clear the backoff");
	s = db_prepare(db, "UPDATE deliveries SET next_attempt_at = ?2"
	    " WHERE target_id = ?1 AND state = 'retrying' AND next_attempt_at > ?2");
	sqlite3_bind_int64(s, 1, t.id);
	sqlite3_bind_int64(s, 2, now);
	if (sqlite3_step(s) != SQLITE_DONE)
		db_die(db, sqlite3_errcode(db), "cannot make retries due");
	sqlite3_finalize(s);
	db_exec(db, "COMMIT");
	db_close(db);
	if (no_drain) {
		target_free(&t);
		free(ids);
		return finish_stdout();
	}
	{
		/* Drain it now, under its lock; a snapshot target uploads, changed or not. */
		char drain[PATH_MAX];
		char *args[] = { drain, (char *)"--db", (char *)path, (char *)"--target", t.name,
		    TARGET_IS_SNAPSHOT(&t) ? (char *)"--force-snapshot" : NULL, NULL };

		exec_program("drain", drain, sizeof drain);
		fflush(stdout);
		execv(drain, args);
		die(EXIT_SOFTWARE, "cannot run %s: %s", drain, strerror(errno));
	}
}
