/*
 * sluice-quarantine - inspect and re-feed input lines that could not be journaled.
 *
 * journal-append keeps every line it cannot journal, raw, with its source,
 * line number and reason. This shows them, and exports them so an operator
 * can fix them and feed them back:
 *
 *   sluice quarantine export --reason missing_key > fix.ndjson
 *   $EDITOR fix.ndjson && journal-append < fix.ndjson && sluice quarantine rm 3 4
 *
 * Rows are removed only by an explicit `rm`.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
"usage: sluice quarantine [-d PATH] list [--reason R] [--limit N]\n"
"       sluice quarantine [-d PATH] show ID\n"
"       sluice quarantine [-d PATH] export [--reason R] [--json]\n"
"       sluice quarantine [-d PATH] rm ID...\n"
"\n"
"Inspect and re-feed input lines that journal-append quarantined.\n"
"\n"
"  list          one line per quarantined input: id, time, source:line, reason, detail\n"
"  show ID       everything about one, then its raw bytes\n"
"  export        the raw lines, one per line, ready to fix and feed to journal-append;\n"
"                with --json, one record per line with the metadata\n"
"  rm ID...      forget quarantined lines (after they were fixed and re-fed)\n"
"\n"
"  -d, --db PATH     the journal\n"
"      --reason R    only lines quarantined for reason R\n"
"      --limit N     at most N lines (list; default 100, 0 for all)\n"
"      --json        export records instead of raw lines\n"
"  -h, --help        this help\n"
"  -V, --version     print the version\n"
"\n"
"Exit: 0, 64 usage, 65 an ID that does not exist, 66 no journal, 70 internal\n"
"error, 74 I/O error, 75 journal busy, 78 journal too new.\n";

/* Steps a listing; an error mid-way is fatal, never a silently short list. */
static int
more(sqlite3 *db, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc != SQLITE_DONE)
		db_die(db, rc, "cannot read the quarantine");
	return 0;
}

static json_t *
raw_json(sqlite3_stmt *s, int col)
{
	const char *raw = sqlite3_column_blob(s, col);
	int n = sqlite3_column_bytes(s, col);
	json_t *str = json_stringn(raw ? raw : "", (size_t)n);

	if (!str) {
		/* Not UTF-8: give the bytes in hex so nothing is lost in the record. */
		char *hex = malloc((size_t)n * 2 + 1);

		if (!hex)
			die(EXIT_SOFTWARE, "out of memory");
		for (int i = 0; raw && i < n; i++)
			snprintf(hex + 2 * i, 3, "%02x", (unsigned char)raw[i]);
		str = json_pack("{s:s}", "hex", hex);
		free(hex);
	}
	return str;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "reason", required_argument, NULL, 'r' },
		{ "limit", required_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *reason = NULL, *cmd;
	long long limit = 100;
	int c, as_json = 0, status = EXIT_OK;
	sqlite3 *db;
	sqlite3_stmt *s;
	char when[32];

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 'r': reason = optarg; break;
		case 'l': limit = number_arg(usage, "--limit", optarg, 0); break;
		case 'j': as_json = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind >= argc)
		usage_error(usage, "no command given (list, show, export, rm)");
	cmd = argv[optind++];
	if (strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0 && strcmp(cmd, "export") != 0 &&
	    strcmp(cmd, "rm") != 0)
		usage_error(usage, "unknown command '%s' (list, show, export, rm)", cmd);
	if (strcmp(cmd, "show") == 0 && optind + 1 != argc)
		usage_error(usage, "show takes one ID");
	if (strcmp(cmd, "rm") == 0 && optind >= argc)
		usage_error(usage, "rm takes one or more IDs");
	for (int i = optind; i < argc; i++)
		number_arg(usage, "an ID", argv[i], 0);
	if ((strcmp(cmd, "list") == 0 || strcmp(cmd, "export") == 0) && optind < argc)
		usage_error(usage, "%s takes no arguments", cmd);
	db = db_open(journal_path(db_flag), DB_MUST_EXIST, NULL, NULL);

	if (strcmp(cmd, "list") == 0) {
		s = db_prepare(db, "SELECT id, received_at, source, line_no, reason, detail"
		    " FROM quarantine WHERE ?1 IS NULL OR reason = ?1 ORDER BY id LIMIT ?2");
		db_bind_text(s, 1, reason);
		sqlite3_bind_int64(s, 2, limit > 0 ? limit : -1);
		while (more(db, s))
			printf("%lld\t%s\t%s:%lld\t%s\t%s\n", (long long)sqlite3_column_int64(s, 0),
			    format_time(sqlite3_column_int64(s, 1), when),
			    (const char *)sqlite3_column_text(s, 2),
			    (long long)sqlite3_column_int64(s, 3), (const char *)sqlite3_column_text(s, 4),
			    sqlite3_column_text(s, 5) ? (const char *)sqlite3_column_text(s, 5) : "");
	} else if (strcmp(cmd, "show") == 0) {
		s = db_prepare(db, "SELECT id, received_at, source, line_no, reason, detail,"
		    " event_id, producer, raw, raw_bytes FROM quarantine WHERE id = ?");
		sqlite3_bind_int64(s, 1, number_arg(usage, "an ID", argv[optind], 0));
		if (!more(db, s)) {
			warnmsg("no quarantined line with id %s", argv[optind]);
			status = EXIT_DATAERR;
		} else {
			printf("id:       %lld\n", (long long)sqlite3_column_int64(s, 0));
			printf("received: %s\n", format_time(sqlite3_column_int64(s, 1), when));
			printf("source:   %s line %lld\n", (const char *)sqlite3_column_text(s, 2),
			    (long long)sqlite3_column_int64(s, 3));
			printf("reason:   %s\n", (const char *)sqlite3_column_text(s, 4));
			printf("detail:   %s\n", sqlite3_column_text(s, 5) ?
			    (const char *)sqlite3_column_text(s, 5) : "");
			if (sqlite3_column_text(s, 6))
				printf("event_id: %s\n", (const char *)sqlite3_column_text(s, 6));
			if (sqlite3_column_text(s, 7))
				printf("producer: %s\n", (const char *)sqlite3_column_text(s, 7));
			if (sqlite3_column_type(s, 9) == SQLITE_NULL)
				printf("bytes:    %d kept (the line was longer)\n", sqlite3_column_bytes(s, 8));
			else
				printf("bytes:    %lld\n", (long long)sqlite3_column_int64(s, 9));
			printf("\n");
			fwrite(sqlite3_column_blob(s, 8), 1, (size_t)sqlite3_column_bytes(s, 8), stdout);
			printf("\n");
		}
	} else if (strcmp(cmd, "export") == 0) {
		s = db_prepare(db, "SELECT id, received_at, source, line_no, reason, detail,"
		    " event_id, raw FROM quarantine WHERE ?1 IS NULL OR reason = ?1 ORDER BY id");
		db_bind_text(s, 1, reason);
		while (more(db, s)) {
			if (!as_json) {
				fwrite(sqlite3_column_blob(s, 7), 1, (size_t)sqlite3_column_bytes(s, 7),
				    stdout);
				putchar('\n');
				continue;
			}
			json_t *rec = json_pack("{s:I, s:s, s:s, s:I, s:s, s:s?, s:s?, s:o}",
			    "id", (json_int_t)sqlite3_column_int64(s, 0),
			    "received_at", format_time(sqlite3_column_int64(s, 1), when),
			    "source", (const char *)sqlite3_column_text(s, 2),
			    "line", (json_int_t)sqlite3_column_int64(s, 3),
			    "reason", (const char *)sqlite3_column_text(s, 4),
			    "detail", (const char *)sqlite3_column_text(s, 5),
			    "event_id", (const char *)sqlite3_column_text(s, 6),
			    "raw", raw_json(s, 7));

			if (!rec)
				die(EXIT_SOFTWARE, "cannot build a record for quarantined line %lld",
				    (long long)sqlite3_column_int64(s, 0));
			json_write(stdout, rec);
			putchar('\n');
			json_decref(rec);
		}
	} else if (strcmp(cmd, "rm") == 0) {
		s = db_prepare(db, "DELETE FROM quarantine WHERE id = ?");
		db_exec(db, "BEGIN IMMEDIATE");
		for (; optind < argc; optind++) {
			sqlite3_bind_int64(s, 1, number_arg(usage, "an ID", argv[optind], 0));
			if (sqlite3_step(s) != SQLITE_DONE)
				db_die(db, sqlite3_errcode(db), "cannot remove");
			if (sqlite3_changes(db) == 0) {
				warnmsg("no quarantined line with id %s", argv[optind]);
				status = EXIT_DATAERR;
			}
			sqlite3_reset(s);
		}
		db_exec(db, "COMMIT");
	}
	db_close(db);
	c = finish_stdout();
	return c != EXIT_OK ? c : status;
}
