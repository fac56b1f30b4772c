/*
 * sluice-import - migrate events still waiting in legacy offline queues.
 *
 * Reads SQLite queue files of the common shape
 *
 *   CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL,
 *     event_type TEXT NOT NULL, data TEXT NOT NULL, timestamp INTEGER NOT NULL,
 *     retry_count INTEGER DEFAULT 0, coalesce_key TEXT)      -- coalesce_key may be missing
 *
 * (every queue.db and queue-*.db under --dir, or the files named), or an
 * NDJSON export (--ndjson). Sources are opened read only and never changed.
 *
 * Promises:
 *   - every row is imported with its original event_id, or is already in
 *     the journal, or is a conflict, or is quarantined with a reason (a row
 *     whose data is not JSON); none is dropped;
 *   - provenance (source, row, original timestamp, retry_count) is kept;
 *   - the same event_id with the same canonical payload in several sources
 *     is imported once and every source recorded; with different payloads it
 *     is a conflict: neither version is imported until an operator chooses
 *     one (--resolve ID --keep FILE), and the exit status is 65 meanwhile;
 *   - each source is imported in one transaction; running again adds nothing;
 *   - the scope behind a queue is not guessed: events go to the --target
 *     named, or wait for an explicitly unknown target (--unknown-target)
 *     until `--assign NAME`.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "journal.h"
#include "json.h"
#include "log.h"
#include "ndjson.h"
#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
"usage: sluice import [-d PATH] (--dir DIR | FILE... | --ndjson FILE)\n"
"                     (--target NAME | --unknown-target) [--dry-run]\n"
"       sluice import [-d PATH] --conflicts\n"
"       sluice import [-d PATH] --resolve EVENT_ID --keep FILE|journal\n"
"       sluice import [-d PATH] --assign NAME\n"
"\n"
"Import the events still waiting in legacy offline-queue databases.\n"
"\n"
"  -d, --db PATH          the journal\n"
"      --dir DIR          every queue.db and queue-*.db under DIR\n"
"      --ndjson FILE      an NDJSON export, one event per line\n"
"      --target NAME      the imported events go to this target only\n"
"      --unknown-target   they wait, visible in status, until --assign NAME\n"
"  -n, --dry-run          say what would happen; change nothing\n"
"      --conflicts        list the unresolved conflicts\n"
"      --resolve ID       settle a conflict: import the version from --keep FILE,\n"
"      --keep FILE        or keep the journal's own with --keep journal\n"
"      --assign NAME      give the events waiting for an unknown target to NAME\n"
"  -h, --help             this help\n"
"  -V, --version          print the version\n"
"\n"
"Exit: 0, 64 usage, 65 conflicts remain, rows were quarantined or a source was\n"
"skipped, 66 no journal (--conflicts, --resolve, --assign), 69 unknown target,\n"
"70 internal error, 73 cannot create the journal, 74 I/O error, 75 journal busy,\n"
"78 journal too new.\n";

#define UNKNOWN_ROUTE "?"

static struct {
	sqlite3 *db;
	const char *route;            /* target name, or "?" */
	int dry_run;
	int status;
	char **sources;
	size_t nsources;
} g;

static void
add_source(const char *path)
{
	char real[PATH_MAX];
	char **grown = realloc(g.sources, (g.nsources + 1) * sizeof *grown);

	if (!grown)
		die(EXIT_SOFTWARE, "out of memory");
	g.sources = grown;
	/* Sources are named by their real path, so a source is the same source
	 * however it was reached (--dir, a relative name, a symlink). */
	g.sources[g.nsources] = strdup(realpath(path, real) ? real : path);
	if (!g.sources[g.nsources++])
		die(EXIT_SOFTWARE, "out of memory");
}

static int
found(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	const char *base = path + ftw->base;
	size_t n = strlen(base);

	(void)sb;
	if (type == FTW_F && (strcmp(base, "queue.db") == 0 ||
	    (strncmp(base, "queue-", 6) == 0 && n > 9 && strcmp(base + n - 3, ".db") == 0)))
		add_source(path);
	return 0;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* --- phase 1: read every source into a scratch table --- */

static sqlite3_stmt *scan_insert;

static void
scan_row(const char *source, int64_t row, const char *event_id, const char *event_type,
    const char *coalesce_key, int64_t ts, int has_ts, int64_t retry, int has_retry,
    const char *data, size_t len)
{
	const char *problem = NULL;
	char *payload = NULL, *canonical = NULL, detail[256] = "";
	size_t plen = len;
	json_error_t err;
	json_t *v = json_loadb(data, len, JSON_STRICT_FLAGS | JSON_ALLOW_NUL, &err);
	const char *inner_id;

	if (!v && json_error_code(&err) == json_error_numeric_overflow)
		v = json_loadb(data, len, JSON_STRICT_FLAGS | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
		    &err);
	if (!v) {
		problem = json_error_code(&err) == json_error_invalid_utf8 ? "invalid_utf8" :
		    "invalid_json";
		snprintf(detail, sizeof detail, "%s at byte %d", err.text, err.position);
	} else if (!json_is_object(v)) {
		problem = "not_object";
		snprintf(detail, sizeof detail, "data is not a JSON object");
	} else if (!event_id || !valid_event_id(event_id, strlen(event_id))) {
		problem = "bad_event_id";
		snprintf(detail, sizeof detail, "event_id must be 1-128 characters from "
		    "A-Z a-z 0-9 . _ : -");
	} else if (json_object_get(v, "event_id") &&
	    (!(inner_id = json_str(v, "event_id")) || strcmp(inner_id, event_id) != 0)) {
		problem = "id_mismatch";
		snprintf(detail, sizeof detail, "the row's event_id %.80s differs from its data's %.80s",
		    event_id, inner_id ? inner_id : "(not a string)");
	} else if (!json_object_get(v, "event_id")) {
		/* The receiver needs the id in the event: put it first, keep the rest. */
		payload = payload_with_id(data, len, event_id, json_object_size(v) == 0, &plen);
	}
	if (!problem) {
		canonical = canonical_payload(payload ? payload : data, plen);
		if (!canonical)
			die(EXIT_SOFTWARE, "cannot canonicalize a parsed payload");
	}
	json_decref(v);

	sqlite3_bind_text(scan_insert, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(scan_insert, 2, row);
	db_bind_text(scan_insert, 3, event_id);
	db_bind_text(scan_insert, 4, event_type);
	db_bind_text(scan_insert, 5, coalesce_key);
	if (has_ts)
		sqlite3_bind_int64(scan_insert, 6, ts);
	else
		sqlite3_bind_null(scan_insert, 6);
	if (has_retry)
		sqlite3_bind_int64(scan_insert, 7, retry);
	else
		sqlite3_bind_null(scan_insert, 7);
	sqlite3_bind_blob(scan_insert, 8, payload ? payload : data, (int)plen, SQLITE_TRANSIENT);
	db_bind_text(scan_insert, 9, canonical);
	db_bind_text(scan_insert, 10, problem);
	db_bind_text(scan_insert, 11, problem ? detail : NULL);
	if (sqlite3_step(scan_insert) != SQLITE_DONE)
		db_die(g.db, sqlite3_errcode(g.db), "cannot stage a row");
	sqlite3_reset(scan_insert);
	sqlite3_clear_bindings(scan_insert);
	free(payload);
	free(canonical);
}

/* 1 when the queue table has the column. */
static int
has_column(sqlite3 *src, const char *name)
{
	sqlite3_stmt *s;
	int yes = 0;

	if (sqlite3_prepare_v2(src, "SELECT 1 FROM pragma_table_info('queue') WHERE name = ?", -1,
	    &s, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	yes = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_finalize(s);
	return yes;
}

/* Returns NULL, or why the source is skipped. */
static const char *
scan_queue(const char *path)
{
	static char why[512];
	static const char *const required[] = { "id", "event_id", "event_type", "data", "timestamp" };
	sqlite3 *src = NULL;
	sqlite3_stmt *s;
	int with_key, with_retry, rc;
	char sql[256];

	if (sqlite3_open_v2(path, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		snprintf(why, sizeof why, "cannot open: %s", src ? sqlite3_errmsg(src) : "out of memory");
		sqlite3_close(src);
		return why;
	}
	sqlite3_busy_timeout(src, 5000);
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
		if (!has_column(src, required[i])) {
			snprintf(why, sizeof why, "schema not recognized: no table queue with columns "
			    "id, event_id, event_type, data, timestamp (missing %s)", required[i]);
			sqlite3_close(src);
			return why;
		}
	}
	with_key = has_column(src, "coalesce_key");
	with_retry = has_column(src, "retry_count");
	snprintf(sql, sizeof sql, "SELECT id, event_id, event_type, data, timestamp, %s, %s"
	    " FROM queue ORDER BY id", with_retry ? "retry_count" : "NULL",
	    with_key ? "coalesce_key" : "NULL");
	if (sqlite3_prepare_v2(src, sql, -1, &s, NULL) != SQLITE_OK) {
		snprintf(why, sizeof why, "cannot read: %s", sqlite3_errmsg(src));
		sqlite3_close(src);
		return why;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		scan_row(path, sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1),
		    (const char *)sqlite3_column_text(s, 2), (const char *)sqlite3_column_text(s, 6),
		    sqlite3_column_int64(s, 4), sqlite3_column_type(s, 4) != SQLITE_NULL,
		    sqlite3_column_int64(s, 5), sqlite3_column_type(s, 5) != SQLITE_NULL,
		    sqlite3_column_blob(s, 3) ? (const char *)sqlite3_column_blob(s, 3) : "",
		    (size_t)sqlite3_column_bytes(s, 3));
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		snprintf(why, sizeof why, "cannot read: %s", sqlite3_errmsg(src));
		sqlite3_close(src);
		return why;
	}
	sqlite3_close(src);
	return NULL;
}

static const char *
scan_ndjson(const char *path)
{
	static char why[512];
	struct line_reader in;
	struct line line;
	enum line_result lr;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(why, sizeof why, "cannot open: %s", strerror(errno));
		return why;
	}
	line_reader_init(&in, fd, path, 16u << 20);
	while ((lr = line_next(&in, &line, -1)) == LINE_OK || lr == LINE_TOOLONG) {
		json_t *v;
		char *id = NULL, *type = NULL, *key = NULL;

		size_t blank = 0;

		while (blank < line.len && (line.data[blank] == ' ' || line.data[blank] == '\t'))
			blank++;
		if (blank == line.len)
			continue;
		v = json_loadb(line.data, line.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		if (json_is_object(v)) {
			id = json_str(v, "event_id") ? strdup(json_str(v, "event_id")) : NULL;
			type = json_str(v, "event_type") ? strdup(json_str(v, "event_type")) : NULL;
			key = json_str(v, "coalesce_key") ? strdup(json_str(v, "coalesce_key")) : NULL;
		}
		json_decref(v);
		/* A line cut at 16 MiB does not parse: it is quarantined, as much as was read. */
		scan_row(path, (int64_t)line.lineno, id, type, key, 0, 0, 0, 0, line.data, line.len);
		free(id);
		free(type);
		free(key);
	}
	line_reader_free(&in);
	close(fd);
	if (lr == LINE_ERROR) {
		snprintf(why, sizeof why, "cannot read: %s", strerror(errno));
		return why;
	}
	return NULL;
}

/* --- phase 2: which ids conflict --- */

static void
find_conflicts(void)
{
	sqlite3_stmt *s, *journal, *mark;
	int rc;

	/* Different payloads under one id among the sources... */
	db_exec(g.db, "UPDATE scan.rows SET problem = 'conflict' WHERE problem IS NULL AND event_id IN"
	    " (SELECT event_id FROM scan.rows WHERE problem IS NULL GROUP BY event_id"
	    "  HAVING count(DISTINCT canonical) > 1)");
	/* ...or unresolved from an earlier run... */
	db_exec(g.db, "UPDATE scan.rows SET problem = 'conflict' WHERE problem IS NULL AND event_id IN"
	    " (SELECT event_id FROM main.import_conflicts WHERE resolved_at IS NULL)");
	/* ...or another payload in the journal already (it is never overwritten). */
	s = db_prepare(g.db, "SELECT DISTINCT event_id, canonical FROM scan.rows WHERE problem IS NULL");
	journal = db_prepare(g.db, "SELECT payload FROM main.events WHERE event_id = ?");
	mark = db_prepare(g.db, "UPDATE scan.rows SET problem = 'conflict' WHERE event_id = ?");
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);

		sqlite3_bind_text(journal, 1, id, -1, SQLITE_STATIC);
		if (sqlite3_step(journal) == SQLITE_ROW && sqlite3_column_text(journal, 0)) {
			char *c = canonical_payload((const char *)sqlite3_column_text(journal, 0),
			    (size_t)sqlite3_column_bytes(journal, 0));

			if (!c || strcmp(c, (const char *)sqlite3_column_text(s, 1)) != 0) {
				sqlite3_bind_text(mark, 1, id, -1, SQLITE_STATIC);
				if (sqlite3_step(mark) != SQLITE_DONE)
					db_die(g.db, sqlite3_errcode(g.db), "cannot mark a conflict");
				sqlite3_reset(mark);
			}
			free(c);
		}
		sqlite3_reset(journal);
	}
	if (rc != SQLITE_DONE)
		db_die(g.db, rc, "cannot look for conflicts");
	sqlite3_finalize(s);
	sqlite3_finalize(journal);
	sqlite3_finalize(mark);
}

/* --- phase 3: import, one transaction per source --- */

struct counts {
	long long imported, present, conflicts, quarantined, quarantined_before;
};

static int64_t
insert_event(sqlite3_stmt *row, const char *route, int64_t now)
{
	static sqlite3_stmt *ins;
	int64_t seq;
	int rc;

	if (!ins)
		ins = db_prepare(g.db, "INSERT INTO main.events(event_id, event_type, coalesce_key,"
		    " producer, payload, appended_at, route) VALUES (?, ?, ?, 'import', ?, ?, ?)"
		    " RETURNING seq");
	sqlite3_bind_text(ins, 1, (const char *)sqlite3_column_text(row, 1), -1, SQLITE_STATIC);
	sqlite3_bind_text(ins, 2, (const char *)sqlite3_column_text(row, 2), -1, SQLITE_STATIC);
	sqlite3_bind_text(ins, 3, (const char *)sqlite3_column_text(row, 3), -1, SQLITE_STATIC);
	sqlite3_bind_text(ins, 4, (const char *)sqlite3_column_blob(row, 6),
	    sqlite3_column_bytes(row, 6), SQLITE_STATIC);
	sqlite3_bind_int64(ins, 5, now);
	db_bind_text(ins, 6, route);
	rc = sqlite3_step(ins);
	if (rc != SQLITE_ROW)
		db_die(g.db, rc, "cannot import an event");
	seq = sqlite3_column_int64(ins, 0);
	sqlite3_step(ins);
	sqlite3_reset(ins);
	if (sqlite3_column_type(row, 3) != SQLITE_NULL &&
	    (rc = journal_supersede(g.db, seq, (const char *)sqlite3_column_text(row, 3), route)) !=
	    SQLITE_OK)
		db_die(g.db, rc, "cannot coalesce");
	return seq;
}

static void
import_source(const char *source, struct counts *c)
{
	sqlite3_stmt *rows, *find, *prov, *conflict, *seen, *settled;
	int64_t now = now_ms();
	int rc;

	rows = db_prepare(g.db, "SELECT row, event_id, event_type, coalesce_key, ts, retry, data,"
	    " problem, detail FROM scan.rows WHERE source = ? ORDER BY row");
	find = db_prepare(g.db, "SELECT seq FROM main.events WHERE event_id = ?");
	prov = db_prepare(g.db, "INSERT OR IGNORE INTO main.import_provenance(source, source_row,"
	    " event_seq, original_timestamp, retry_count, imported_at) VALUES (?, ?, ?, ?, ?, ?)");
	conflict = db_prepare(g.db, "INSERT OR IGNORE INTO main.import_conflicts(event_id, source,"
	    " source_row, data, event_type, coalesce_key, original_timestamp, retry_count, route,"
	    " detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
	seen = db_prepare(g.db, "SELECT 1 FROM main.quarantine WHERE source = ? AND line_no = ?"
	    " AND reason = ?");
	settled = db_prepare(g.db, "SELECT 1 FROM main.import_conflicts WHERE event_id = ?"
	    " AND source = ? AND source_row = ? AND resolved_at IS NOT NULL");
	/* A dry run is one transaction around every source, rolled back at the end. */
	db_exec(g.db, g.dry_run ? "SAVEPOINT source" : "BEGIN IMMEDIATE");
	sqlite3_bind_text(rows, 1, source, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
		int64_t row = sqlite3_column_int64(rows, 0), seq;
		const char *id = (const char *)sqlite3_column_text(rows, 1);
		const char *problem = (const char *)sqlite3_column_text(rows, 7);

		if (problem && strcmp(problem, "conflict") == 0) {
			int done;

			/* An operator settled it: this row's version was not the one kept. */
			sqlite3_bind_text(settled, 1, id, -1, SQLITE_STATIC);
			sqlite3_bind_text(settled, 2, source, -1, SQLITE_STATIC);
			sqlite3_bind_int64(settled, 3, row);
			done = sqlite3_step(settled) == SQLITE_ROW;
			sqlite3_reset(settled);
			if (done) {
				c->present++;
				continue;
			}
			sqlite3_bind_text(conflict, 1, id, -1, SQLITE_STATIC);
			sqlite3_bind_text(conflict, 2, source, -1, SQLITE_STATIC);
			sqlite3_bind_int64(conflict, 3, row);
			sqlite3_bind_text(conflict, 4, (const char *)sqlite3_column_blob(rows, 6),
			    sqlite3_column_bytes(rows, 6), SQLITE_STATIC);
			sqlite3_bind_value(conflict, 5, sqlite3_column_value(rows, 2));
			sqlite3_bind_value(conflict, 6, sqlite3_column_value(rows, 3));
			sqlite3_bind_value(conflict, 7, sqlite3_column_value(rows, 4));
			sqlite3_bind_value(conflict, 8, sqlite3_column_value(rows, 5));
			db_bind_text(conflict, 9, g.route);
			sqlite3_bind_int64(conflict, 10, now);
			if (sqlite3_step(conflict) != SQLITE_DONE)
				db_die(g.db, sqlite3_errcode(g.db), "cannot record a conflict");
			sqlite3_reset(conflict);
			linemsg(source, (unsigned long)row, "conflict: event_id %s has another payload in "
			    "another source or in the journal; neither is imported (sluice import "
			    "--conflicts)", id);
			c->conflicts++;
			continue;
		}
		if (problem) {
			struct quarantined q = {
				.source = source, .line_no = row, .reason = problem,
				.detail = (const char *)sqlite3_column_text(rows, 8), .event_id = id,
				.producer = "import", .raw = sqlite3_column_blob(rows, 6),
				.raw_len = (size_t)sqlite3_column_bytes(rows, 6),
				.raw_bytes = sqlite3_column_bytes(rows, 6),
			};
			int again;

			/* Quarantined once, however often the import runs. */
			sqlite3_bind_text(seen, 1, source, -1, SQLITE_STATIC);
			sqlite3_bind_int64(seen, 2, row);
			sqlite3_bind_text(seen, 3, problem, -1, SQLITE_STATIC);
			again = sqlite3_step(seen) == SQLITE_ROW;
			sqlite3_reset(seen);
			if (again) {
				c->quarantined_before++;
				continue;
			}
			if ((rc = journal_quarantine(g.db, &q, now, NULL)) != SQLITE_OK)
				db_die(g.db, rc, "cannot quarantine");
			linemsg(source, (unsigned long)row, "quarantined (%s): %s", problem, q.detail);
			c->quarantined++;
			continue;
		}
		sqlite3_bind_text(find, 1, id, -1, SQLITE_STATIC);
		if (sqlite3_step(find) == SQLITE_ROW) {
			seq = sqlite3_column_int64(find, 0);
			c->present++;
		} else {
			seq = insert_event(rows, g.route, now);
			c->imported++;
		}
		sqlite3_reset(find);
		sqlite3_bind_text(prov, 1, source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(prov, 2, row);
		sqlite3_bind_int64(prov, 3, seq);
		sqlite3_bind_value(prov, 4, sqlite3_column_value(rows, 4));
		sqlite3_bind_value(prov, 5, sqlite3_column_value(rows, 5));
		sqlite3_bind_int64(prov, 6, now);
		if (sqlite3_step(prov) != SQLITE_DONE)
			db_die(g.db, sqlite3_errcode(g.db), "cannot record provenance");
		sqlite3_reset(prov);
	}
	if (rc != SQLITE_DONE)
		db_die(g.db, rc, "cannot import");
	db_exec(g.db, g.dry_run ? "RELEASE source" : "COMMIT");
	sqlite3_finalize(rows);
	sqlite3_finalize(find);
	sqlite3_finalize(prov);
	sqlite3_finalize(conflict);
	sqlite3_finalize(seen);
	sqlite3_finalize(settled);
}

static void
summary(const char *source, const struct counts *c, const char *skipped)
{
	json_t *rec = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s?, s:b, s:I}", "source", source,
	    "imported", (json_int_t)c->imported, "present", (json_int_t)c->present,
	    "conflicts", (json_int_t)c->conflicts, "quarantined", (json_int_t)c->quarantined,
	    "skipped", skipped, "dry_run", g.dry_run,
	    "quarantined_before", (json_int_t)c->quarantined_before);

	json_write(stdout, rec);
	putchar('\n');
	json_decref(rec);
	if (skipped)
		warnmsg("%s: skipped: %s", source, skipped);
	else
		warnmsg("%s: %s%lld imported, %lld already present, %lld conflict%s, %lld quarantined"
		    "%s", source, g.dry_run ? "(dry run) " : "", c->imported, c->present, c->conflicts,
		    c->conflicts == 1 ? "" : "s", c->quarantined,
		    c->quarantined_before ? " (and rows quarantined by an earlier import)" : "");
	if (skipped || c->conflicts || c->quarantined)
		g.status = EXIT_DATAERR;
}

/* --- the operator's follow-ups --- */

static int
list_conflicts(void)
{
	sqlite3_stmt *s = db_prepare(g.db, "SELECT event_id, source, source_row, data FROM"
	    " import_conflicts WHERE resolved_at IS NULL ORDER BY event_id, source, source_row");
	int n = 0;

	while (sqlite3_step(s) == SQLITE_ROW) {
		json_t *rec = json_pack("{s:s, s:s, s:I, s:s}", "event_id", sqlite3_column_text(s, 0),
		    "source", sqlite3_column_text(s, 1), "row", (json_int_t)sqlite3_column_int64(s, 2),
		    "data", sqlite3_column_text(s, 3));

		if (rec) {
			json_write(stdout, rec);
			putchar('\n');
		}
		json_decref(rec);
		n++;
	}
	sqlite3_finalize(s);
	return n ? EXIT_DATAERR : EXIT_OK;
}

static int
resolve(const char *event_id, const char *keep)
{
	char real[PATH_MAX];
	const char *source = strcmp(keep, "journal") == 0 ? NULL : realpath(keep, real) ? real : keep;
	sqlite3_stmt *s, *done;
	int64_t now = now_ms(), seq = -1;
	int found = 0;

	db_exec(g.db, "BEGIN IMMEDIATE");
	s = db_prepare(g.db, "SELECT seq FROM events WHERE event_id = ?");
	sqlite3_bind_text(s, 1, event_id, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		seq = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	if (source && seq >= 0)
		die(EXIT_DATAERR, "the journal already holds event %s (seq %lld) and a journaled event "
		    "is never overwritten; resolve with --keep journal", event_id, (long long)seq);
	if (!source && seq < 0)
		die(EXIT_DATAERR, "the journal holds no event %s; keep one of the sources", event_id);
	s = db_prepare(g.db, "SELECT source_row, event_id, event_type, coalesce_key,"
	    " original_timestamp, retry_count, data, route, source FROM import_conflicts"
	    " WHERE event_id = ?1 AND resolved_at IS NULL AND (?2 IS NULL OR source = ?2)"
	    " ORDER BY source_row LIMIT 1");
	sqlite3_bind_text(s, 1, event_id, -1, SQLITE_STATIC);
	db_bind_text(s, 2, source);
	if (sqlite3_step(s) == SQLITE_ROW) {
		found = 1;
		if (source) {
			sqlite3_stmt *prov = db_prepare(g.db, "INSERT OR IGNORE INTO import_provenance("
			    "source, source_row, event_seq, original_timestamp, retry_count, imported_at)"
			    " VALUES (?, ?, ?, ?, ?, ?)");

			seq = insert_event(s, (const char *)sqlite3_column_text(s, 7), now);
			sqlite3_bind_text(prov, 1, source, -1, SQLITE_STATIC);
			sqlite3_bind_int64(prov, 2, sqlite3_column_int64(s, 0));
			sqlite3_bind_int64(prov, 3, seq);
			sqlite3_bind_value(prov, 4, sqlite3_column_value(s, 4));
			sqlite3_bind_value(prov, 5, sqlite3_column_value(s, 5));
			sqlite3_bind_int64(prov, 6, now);
			if (sqlite3_step(prov) != SQLITE_DONE)
				db_die(g.db, sqlite3_errcode(g.db), "cannot record provenance");
			sqlite3_finalize(prov);
		}
	}
	sqlite3_finalize(s);
	if (!found)
		die(EXIT_DATAERR, "no unresolved conflict for event %s%s%s", event_id,
		    source ? " from " : "", source ? source : "");
	done = db_prepare(g.db, "UPDATE import_conflicts SET resolved_at = ? WHERE event_id = ?"
	    " AND resolved_at IS NULL");
	sqlite3_bind_int64(done, 1, now);
	sqlite3_bind_text(done, 2, event_id, -1, SQLITE_STATIC);
	if (sqlite3_step(done) != SQLITE_DONE)
		db_die(g.db, sqlite3_errcode(g.db), "cannot resolve");
	sqlite3_finalize(done);
	db_exec(g.db, "COMMIT");
	warnmsg("%s: kept the version from %s", event_id, source ? source : "the journal");
	return EXIT_OK;
}

static int
assign(const char *name)
{
	struct target t;
	sqlite3_stmt *s;
	long long n;

	db_exec(g.db, "BEGIN IMMEDIATE");
	target_load_or_die(g.db, name, &t);
	/* Those the target's cursor has passed are made due as retries (a ledger
	 * row, no attempt yet), so the cursor never moves back over events the
	 * target was never meant to have (--no-backfill). */
	s = db_prepare(g.db, "INSERT OR IGNORE INTO deliveries(target_id, event_seq, state, attempts,"
	    " next_attempt_at) SELECT ?1, seq, 'retrying', 0, ?2 FROM events WHERE route = '"
	    UNKNOWN_ROUTE "' AND seq <= ?3 AND payload IS NOT NULL AND superseded_by IS NULL");
	sqlite3_bind_int64(s, 1, t.id);
	sqlite3_bind_int64(s, 2, now_ms());
	sqlite3_bind_int64(s, 3, t.cursor_seq);
	if (sqlite3_step(s) != SQLITE_DONE)
		db_die(g.db, sqlite3_errcode(g.db), "cannot assign");
	sqlite3_finalize(s);
	s = db_prepare(g.db, "UPDATE events SET route = ? WHERE route = '" UNKNOWN_ROUTE "'");
	sqlite3_bind_text(s, 1, t.name, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		db_die(g.db, sqlite3_errcode(g.db), "cannot assign");
	n = sqlite3_changes(g.db);
	sqlite3_finalize(s);
	db_exec(g.db, "COMMIT");
	printf("%lld\n", n);
	warnmsg("%lld event%s that waited for an unknown target now go%s to %s", n,
	    n == 1 ? "" : "s", n == 1 ? "es" : "", t.name);
	target_free(&t);
	return EXIT_OK;
}

int
main(int argc, char **argv)
{
	enum { O_DIR = 256, O_NDJSON, O_TARGET, O_UNKNOWN, O_CONFLICTS, O_RESOLVE, O_KEEP, O_ASSIGN };
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "dir", required_argument, NULL, O_DIR },
		{ "ndjson", required_argument, NULL, O_NDJSON },
		{ "target", required_argument, NULL, O_TARGET },
		{ "unknown-target", no_argument, NULL, O_UNKNOWN },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "conflicts", no_argument, NULL, O_CONFLICTS },
		{ "resolve", required_argument, NULL, O_RESOLVE },
		{ "keep", required_argument, NULL, O_KEEP },
		{ "assign", required_argument, NULL, O_ASSIGN },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *dir = NULL, *ndjson = NULL, *target = NULL, *resolve_id = NULL;
	const char *keep = NULL, *assign_to = NULL;
	int c, unknown = 0, conflicts = 0;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:nhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case O_DIR: dir = optarg; break;
		case O_NDJSON: ndjson = optarg; break;
		case O_TARGET: target = optarg; break;
		case O_UNKNOWN: unknown = 1; break;
		case 'n': g.dry_run = 1; break;
		case O_CONFLICTS: conflicts = 1; break;
		case O_RESOLVE: resolve_id = optarg; break;
		case O_KEEP: keep = optarg; break;
		case O_ASSIGN: assign_to = optarg; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (conflicts || resolve_id || assign_to) {
		if (conflicts + !!resolve_id + !!assign_to > 1 || dir || ndjson || optind < argc)
			usage_error(usage, "--conflicts, --resolve and --assign go alone");
		if (!!resolve_id != !!keep)
			usage_error(usage, "--resolve ID needs --keep FILE (or --keep journal)");
		if (g.dry_run || target || unknown)
			usage_error(usage, "--conflicts, --resolve and --assign take no --dry-run, "
			    "--target or --unknown-target");
		g.db = db_open(journal_path(db_flag), DB_MUST_EXIST, NULL, NULL);
		c = conflicts ? list_conflicts() : resolve_id ? resolve(resolve_id, keep) :
		    assign(assign_to);
		db_close(g.db);
		return c != EXIT_OK ? c : finish_stdout();
	}
	if (!!dir + !!ndjson + (optind < argc) != 1)
		usage_error(usage, "give --dir DIR, --ndjson FILE, or queue files");
	if (keep)
		usage_error(usage, "--keep goes with --resolve");
	if (!!target == unknown)
		usage_error(usage, "say where the events go: --target NAME or --unknown-target "
		    "(the scope behind a legacy queue cannot be guessed)");

	g.db = db_open(journal_path(db_flag), DB_CREATE, NULL, NULL);
	if (target) {
		struct target t;

		target_load_or_die(g.db, target, &t);
		target_free(&t);
		g.route = target;
	} else {
		g.route = UNKNOWN_ROUTE;
	}
	if (dir) {
		if (nftw(dir, found, 16, FTW_PHYS) != 0)
			die(EXIT_IOERR, "cannot walk %s: %s", dir, strerror(errno));
		if (g.nsources == 0)
			warnmsg("no queue.db or queue-*.db under %s", dir);
	} else if (ndjson) {
		add_source(ndjson);
	} else {
		for (; optind < argc; optind++)
			add_source(argv[optind]);
	}
	qsort(g.sources, g.nsources, sizeof *g.sources, by_name);

	db_exec(g.db, "ATTACH DATABASE '' AS scan");
	db_exec(g.db, "CREATE TABLE scan.rows(source TEXT, row INTEGER, event_id TEXT, event_type TEXT,"
	    " coalesce_key TEXT, ts INTEGER, retry INTEGER, data BLOB, canonical TEXT, problem TEXT,"
	    " detail TEXT)");
	db_exec(g.db, "CREATE INDEX scan.rows_by_source ON rows(source, row)");
	db_exec(g.db, "CREATE INDEX scan.rows_by_id ON rows(event_id)");
	scan_insert = db_prepare(g.db, "INSERT INTO scan.rows VALUES (?,?,?,?,?,?,?,?,?,?,?)");
	{
		char **skipped = calloc(g.nsources + 1, sizeof *skipped);

		if (!skipped)
			die(EXIT_SOFTWARE, "out of memory");
		db_exec(g.db, "BEGIN");
		for (size_t i = 0; i < g.nsources; i++) {
			const char *why = ndjson ? scan_ndjson(g.sources[i]) : scan_queue(g.sources[i]);

			skipped[i] = why ? strdup(why) : NULL;
		}
		db_exec(g.db, "COMMIT");
		find_conflicts();
		if (g.dry_run)
			db_exec(g.db, "BEGIN IMMEDIATE");
		for (size_t i = 0; i < g.nsources; i++) {
			struct counts counts = { 0, 0, 0, 0, 0 };

			if (!skipped[i])
				import_source(g.sources[i], &counts);
			summary(g.sources[i], &counts, skipped[i]);
			free(skipped[i]);
			free(g.sources[i]);
		}
		if (g.dry_run)
			db_exec(g.db, "ROLLBACK");
		free(skipped);
	}
	sqlite3_finalize(scan_insert);
	free(g.sources);
	db_close(g.db);
	c = finish_stdout();
	return c != EXIT_OK ? c : g.status;
}
