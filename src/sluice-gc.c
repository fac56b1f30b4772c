/*
 * sluice-gc - archive, then remove, the payloads of events delivered everywhere.
 *
 * Nothing is ever deleted implicitly: this runs only when asked. An event's
 * payload goes when it is older than the limit, no target (enabled or not)
 * has it retrying or failed, and every enabled target has it delivered or
 * never wants it (superseded before it was tried there, or older than where
 * a --no-backfill target started). Events pending for an enabled target,
 * retrying or failed anywhere are never touched. The event's
 * row, id and ledger rows stay, so history remains answerable, and a later
 * resend of the same id is still recognized as a duplicate.
 *
 * With --archive FILE the events are first appended to FILE as NDJSON (gzip
 * when the name ends in .gz) and the file is fsync'd before any payload is
 * removed. Work goes in chunks, so memory stays bounded.
 *
 * Without --older-than, the configured retention (`retain`, default forever)
 * applies.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static const char usage[] =
"usage: sluice gc [-d PATH] [--older-than DURATION] [--archive FILE] [--dry-run]\n"
"\n"
"Archive and remove the payloads of events delivered to every enabled target.\n"
"\n"
"  -d, --db PATH            the journal\n"
"      --older-than DUR     only events appended more than DUR ago (30d, 12h, ...);\n"
"                           default: the 'retain' setting (forever: nothing goes)\n"
"      --archive FILE       append the events to FILE first (NDJSON; gzip if FILE ends\n"
"                           in .gz), fsync'd before anything is removed\n"
"  -n, --dry-run            say what would go; change nothing\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Exit: 0, 64 usage, 66 no journal, 70 internal error, 74 I/O error (the archive\n"
"could not be written: what was not archived was kept), 75 journal busy,\n"
"78 bad 'retain' setting or journal too new.\n";

#define CHUNK 5000

/* No target, enabled or not, has it retrying or failed; and every enabled
 * target has it delivered or never wants it: superseded before that target
 * tried it, below where the target started (--no-backfill), or meant for
 * another target. An event meant for a target that does not exist (an
 * unknown one, or one removed) is always kept. */
static const char ELIGIBLE[] =
	" e.payload IS NOT NULL AND e.appended_at < ?1"
	" AND (e.route IS NULL OR EXISTS (SELECT 1 FROM targets r WHERE r.name = e.route))"
	" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq"
	"   AND d.state <> 'delivered')"
	" AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.enabled AND t.format <> 'snapshot' AND NOT ("
	"   EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = t.id AND d.event_seq = e.seq)"
	"   OR e.superseded_by IS NOT NULL OR e.seq <= t.cursor_seq"
	"   OR (e.route IS NOT NULL AND e.route <> t.name)))";

struct archive {
	const char *path;
	int fd;
	gzFile gz;
};

static void
archive_open(struct archive *a)
{
	size_t n = strlen(a->path);

	a->fd = open(a->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (a->fd < 0)
		die(EXIT_IOERR, "cannot open archive %s: %s", a->path, strerror(errno));
	if (n > 3 && strcmp(a->path + n - 3, ".gz") == 0) {
		/* A new gzip member per run: concatenated members are one valid gzip file. */
		int dupfd = dup(a->fd);

		if (dupfd < 0 || !(a->gz = gzdopen(dupfd, "ab")))
			die(EXIT_IOERR, "cannot open archive %s for gzip", a->path);
	}
}

static void
archive_write(struct archive *a, const char *p, size_t n)
{
	if (a->gz) {
		if (gzwrite(a->gz, p, (unsigned)n) != (int)n)
			die(EXIT_IOERR, "cannot write archive %s; payloads not yet archived were kept",
			    a->path);
		return;
	}
	while (n > 0) {
		ssize_t w = write(a->fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die(EXIT_IOERR, "cannot write archive %s: %s; payloads not yet archived were kept",
			    a->path, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

/* Everything written so far is on disk. */
static void
archive_sync(struct archive *a)
{
	if (a->gz && gzflush(a->gz, Z_FULL_FLUSH) != Z_OK)
		die(EXIT_IOERR, "cannot write archive %s; payloads not yet archived were kept", a->path);
	if (fsync(a->fd) != 0)
		die(EXIT_IOERR, "cannot sync archive %s: %s; payloads not yet archived were kept",
		    a->path, strerror(errno));
}

static void
archive_close(struct archive *a)
{
	if (a->gz && gzclose(a->gz) != Z_OK)
		die(EXIT_IOERR, "cannot finish archive %s", a->path);
	if (fsync(a->fd) != 0 || close(a->fd) != 0)
		die(EXIT_IOERR, "cannot sync archive %s: %s", a->path, strerror(errno));
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "older-than", required_argument, NULL, 'o' },
		{ "archive", required_argument, NULL, 'a' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *older = NULL;
	struct archive arc = { NULL, -1, NULL };
	int c, dry = 0;
	int64_t age, cutoff, after = 0;
	long long removed = 0, bytes = 0;
	struct setting retain;
	sqlite3 *db;
	sqlite3_stmt *pick, *drop;
	char sql[2048], when[32];

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:nhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 'o': older = optarg; break;
		case 'a': arc.path = optarg; break;
		case 'n': dry = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);
	if (older) {
		if ((age = parse_duration(older)) < 0)
			usage_error(usage, "--older-than wants a duration such as 30d, not '%s'", older);
	} else {
		setting_get("retain", NULL, &retain);
		if (strcmp(retain.value, "forever") == 0) {
			warnmsg("retention is forever (%s): nothing to do; give --older-than or set "
			    "retain", retain.source);
			printf("0\n");
			return finish_stdout();
		}
		if ((age = parse_duration(retain.value)) < 0)
			die(EXIT_CONFIG, "retain = '%s' (%s) is neither 'forever' nor a duration",
			    retain.value, retain.source);
	}
	cutoff = now_ms() - age;

	db = db_open(journal_path(db_flag), DB_MUST_EXIST, NULL, NULL);
	snprintf(sql, sizeof sql, "SELECT e.seq, e.event_id, e.event_type, e.appended_at, e.payload"
	    " FROM events e WHERE e.seq > ?2 AND %s ORDER BY e.seq LIMIT %d", ELIGIBLE, CHUNK);
	pick = db_prepare(db, sql);
	snprintf(sql, sizeof sql, "UPDATE events AS e SET payload = NULL WHERE e.seq = ?2 AND %s",
	    ELIGIBLE);
	drop = db_prepare(db, sql);
	if (arc.path && !dry)
		archive_open(&arc);

	for (;;) {
		int64_t seqs[CHUNK];
		int n = 0, rc;

		/* Read a chunk and archive it... */
		db_exec(db, "BEGIN");
		sqlite3_bind_int64(pick, 1, cutoff);
		sqlite3_bind_int64(pick, 2, after);
		while ((rc = sqlite3_step(pick)) == SQLITE_ROW) {
			const char *type = (const char *)sqlite3_column_text(pick, 2);
			char head[512];
			int hn;

			seqs[n++] = sqlite3_column_int64(pick, 0);
			bytes += sqlite3_column_bytes(pick, 4);
			if (dry || !arc.path)
				continue;
			{
				/* event_type is the producer's string: let jansson encode it. */
				json_t *t = type ? json_string(type) : json_null();
				char *enc = json_dumps(t, JSON_ENCODE_ANY);

				hn = snprintf(head, sizeof head, "{\"seq\":%lld,\"event_id\":\"%s\","
				    "\"event_type\":%s,\"appended_at\":\"%s\",\"event\":",
				    (long long)seqs[n - 1], (const char *)sqlite3_column_text(pick, 1),
				    enc ? enc : "null", format_time(sqlite3_column_int64(pick, 3), when));
				free(enc);
				json_decref(t);
				if (hn >= (int)sizeof head)
					hn = (int)sizeof head - 1;
			}
			archive_write(&arc, head, (size_t)hn);
			archive_write(&arc, (const char *)sqlite3_column_text(pick, 4),
			    (size_t)sqlite3_column_bytes(pick, 4));
			archive_write(&arc, "}\n", 2);
		}
		if (rc != SQLITE_DONE)
			db_die(db, rc, "cannot read events");
		sqlite3_reset(pick);
		db_exec(db, "COMMIT");
		if (n == 0)
			break;
		after = seqs[n - 1];
		if (dry) {
			removed += n;
			continue;
		}
		if (arc.path)
			archive_sync(&arc);
		/* ...then, only then, drop what is still eligible. */
		db_exec(db, "BEGIN IMMEDIATE");
		for (int i = 0; i < n; i++) {
			sqlite3_bind_int64(drop, 1, cutoff);
			sqlite3_bind_int64(drop, 2, seqs[i]);
			rc = sqlite3_step(drop);
			if (rc != SQLITE_DONE)
				db_die(db, rc, "cannot remove payloads");
			removed += sqlite3_changes(db);
			sqlite3_reset(drop);
		}
		db_exec(db, "COMMIT");
	}
	if (arc.path && !dry)
		archive_close(&arc);
	printf("%lld\n", removed);
	warnmsg("%s %lld payload%s (%.1f MiB) appended before %s%s%s", dry ? "would remove" : "removed",
	    removed, removed == 1 ? "" : "s", (double)bytes / (1024.0 * 1024.0),
	    format_time(cutoff, when), arc.path && !dry ? "; archived to " : "",
	    arc.path && !dry ? arc.path : "");
	db_close(db);
	return finish_stdout();
}
