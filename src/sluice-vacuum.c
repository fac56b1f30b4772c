/*
 * sluice-vacuum - give the space freed by gc back to the file system.
 *
 * Rebuilds the journal file (SQLite's VACUUM), then checkpoints and truncates
 * the write-ahead log. It needs the journal to itself for a moment: writers wait (their
 * busy timeout), and if it cannot get the journal within --busy-timeout it
 * exits 75 having changed nothing.
 */
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "log.h"

#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

static const char usage[] =
"usage: sluice vacuum [-d PATH] [--busy-timeout DURATION]\n"
"\n"
"Reclaim disk space after sluice gc.\n"
"\n"
"  -d, --db PATH            the journal\n"
"      --busy-timeout DUR   wait this long for the journal (default 5s)\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Exit: 0, 64 usage, 66 no journal, 70 internal error, 74 I/O error or disk\n"
"full, 75 journal busy, 78 journal too new.\n";

static long long
size_of(const char *path)
{
	char wal[4200];
	struct stat sb;
	long long n = 0;

	if (stat(path, &sb) == 0)
		n += sb.st_size;
	snprintf(wal, sizeof wal, "%s-wal", path);
	if (stat(wal, &sb) == 0)
		n += sb.st_size;
	return n;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "busy-timeout", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *busy = NULL, *path;
	long long before, after;
	sqlite3 *db;
	int c, rc;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 'B': busy = optarg; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);
	path = journal_path(db_flag);
	db = db_open(path, DB_MUST_EXIST, NULL, busy);
	before = size_of(path);
	if ((rc = db_try_exec(db, "VACUUM")) != SQLITE_OK)
		db_die(db, rc, "cannot vacuum");
	if ((rc = db_try_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)")) != SQLITE_OK)
		db_die(db, rc, "cannot checkpoint");
	db_close(db);
	after = size_of(path);
	warnmsg("%s: %.1f MiB -> %.1f MiB", path, (double)before / 1048576.0,
	    (double)after / 1048576.0);
	return finish_stdout();
}
