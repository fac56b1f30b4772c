/* db.c - see db.h */
#include "db.h"
#include "clock.h"
#include "config.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The schema, one entry per version. Migrations only ever go forward:
 * entry i takes a journal from version i to version i+1.
 */
static const char *const migrations[] = {
	/* 0 -> 1 */
	"CREATE TABLE events("
	"  seq INTEGER PRIMARY KEY,"
	"  event_id TEXT NOT NULL UNIQUE,"
	"  event_type TEXT,"
	"  coalesce_key TEXT,"
	"  producer TEXT,"
	"  payload TEXT,"               /* NULL only after gc */
	"  appended_at INTEGER NOT NULL,"
	"  superseded_by INTEGER);"
	"CREATE INDEX events_coalesce ON events(coalesce_key, seq)"
	"  WHERE coalesce_key IS NOT NULL;"
	"CREATE TABLE quarantine("
	"  id INTEGER PRIMARY KEY,"
	"  received_at INTEGER NOT NULL,"
	"  source TEXT,"
	"  line_no INTEGER,"
	"  reason TEXT NOT NULL,"
	"  detail TEXT,"
	"  event_id TEXT,"
	"  producer TEXT,"
	"  raw BLOB NOT NULL,"
	"  raw_bytes INTEGER);" /* the line's length when known; raw is cut at --max-bytes */
	"CREATE TABLE targets("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  url TEXT NOT NULL,"
	"  format TEXT NOT NULL DEFAULT 'batch',"
	"  auth_env TEXT,"
	"  auth_file TEXT,"
	"  batch_events INTEGER NOT NULL DEFAULT 1000,"
	"  batch_bytes INTEGER NOT NULL DEFAULT 4194304,"
	"  max_event_bytes INTEGER NOT NULL DEFAULT 1048576,"
	"  timeout_ms INTEGER NOT NULL DEFAULT 10000,"
	"  gzip INTEGER NOT NULL DEFAULT 0,"
	"  headers TEXT NOT NULL DEFAULT '[]',"  /* JSON array of "Name: value" */
	"  cacert TEXT,"
	"  insecure INTEGER NOT NULL DEFAULT 0,"
	"  max_rejections INTEGER NOT NULL DEFAULT 10,"
	"  enabled INTEGER NOT NULL DEFAULT 1,"
	"  cursor_seq INTEGER NOT NULL DEFAULT 0,"
	"  consecutive_failures INTEGER NOT NULL DEFAULT 0,"
	"  failing_since INTEGER,"
	"  next_attempt_at INTEGER,"
	"  last_category TEXT,"
	"  last_error TEXT,"
	"  last_http_status INTEGER,"
	"  last_attempt_at INTEGER,"
	"  last_success_at INTEGER,"
	"  last_categories TEXT,"       /* JSON object: the last run's category counts */
	"  created_at INTEGER NOT NULL);"
	"CREATE TABLE deliveries("
	"  target_id INTEGER NOT NULL,"
	"  event_seq INTEGER NOT NULL,"
	"  state TEXT NOT NULL CHECK (state IN ('delivered','retrying','failed')),"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  http_status INTEGER,"
	"  category TEXT,"
	"  error TEXT,"
	"  first_attempt_at INTEGER,"
	"  last_attempt_at INTEGER,"
	"  next_attempt_at INTEGER,"
	"  delivered_at INTEGER,"
	"  PRIMARY KEY (target_id, event_seq)) WITHOUT ROWID;"
	"CREATE INDEX deliveries_due ON deliveries(target_id, next_attempt_at)"
	"  WHERE state = 'retrying';"
	"CREATE TABLE runs("
	"  id INTEGER PRIMARY KEY,"
	"  target_id INTEGER NOT NULL,"
	"  started_at INTEGER NOT NULL,"
	"  finished_at INTEGER,"
	"  counts TEXT,"
	"  exit_status INTEGER);"
	"CREATE INDEX runs_by_target ON runs(target_id, id);",
	/* 1 -> 2: routes (imported events meant for one target), the discard
	 * audit, and provenance and conflicts of imports. */
	"ALTER TABLE events ADD COLUMN route TEXT;"  /* NULL: every target */
	"CREATE TABLE discards("
	"  event_type TEXT PRIMARY KEY,"
	"  count INTEGER NOT NULL,"
	"  first_at INTEGER NOT NULL,"
	"  last_at INTEGER NOT NULL);"
	"CREATE TABLE import_provenance("
	"  source TEXT NOT NULL,"
	"  source_row INTEGER NOT NULL,"
	"  event_seq INTEGER NOT NULL,"
	"  original_timestamp INTEGER,"
	"  retry_count INTEGER,"
	"  imported_at INTEGER NOT NULL,"
	"  PRIMARY KEY (source, source_row));"
	"CREATE INDEX import_provenance_by_event ON import_provenance(event_seq);"
	"CREATE TABLE import_conflicts("
	"  event_id TEXT NOT NULL,"
	"  source TEXT NOT NULL,"
	"  source_row INTEGER NOT NULL,"
	"  data TEXT NOT NULL,"
	"  event_type TEXT,"
	"  coalesce_key TEXT,"
	"  original_timestamp INTEGER,"
	"  retry_count INTEGER,"
	"  route TEXT,"
	"  detected_at INTEGER NOT NULL,"
	"  resolved_at INTEGER,"
	"  PRIMARY KEY (event_id, source, source_row));",
	/* 2 -> 3: snapshot targets (a consistent copy of the journal in object
	 * storage) and the snapshots they hold. */
	"ALTER TABLE targets ADD COLUMN s3_region TEXT;"
	"ALTER TABLE targets ADD COLUMN s3_access_env TEXT;"
	"ALTER TABLE targets ADD COLUMN s3_secret_env TEXT;"
	"ALTER TABLE targets ADD COLUMN min_interval_ms INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE targets ADD COLUMN keep_snapshots INTEGER NOT NULL DEFAULT 0;" /* 0: all */
	"CREATE TABLE snapshots("
	"  id INTEGER PRIMARY KEY,"
	"  target_id INTEGER NOT NULL,"
	"  key TEXT NOT NULL,"
	"  seq INTEGER NOT NULL,"          /* the journal's highest seq in the copy */
	"  bytes INTEGER NOT NULL,"
	"  sha256 TEXT NOT NULL,"          /* of the object as stored */
	"  etag TEXT,"
	"  fingerprint TEXT NOT NULL,"     /* what the journal looked like */
	"  gzip INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  deleted_at INTEGER);"           /* removed by --keep */
	"CREATE INDEX snapshots_by_target ON snapshots(target_id, id);",
	/* 3 -> 4: the ledger's state check as ORs. SQLite 3.40 evaluates
	 * "state IN (...)" in a CHECK by building a temporary b-tree for every
	 * row written, which cost record-results a third of its time. */
	"CREATE TABLE deliveries_v4("
	"  target_id INTEGER NOT NULL,"
	"  event_seq INTEGER NOT NULL,"
	"  state TEXT NOT NULL CHECK (state = 'delivered' OR state = 'retrying' OR state = 'failed'),"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  http_status INTEGER,"
	"  category TEXT,"
	"  error TEXT,"
	"  first_attempt_at INTEGER,"
	"  last_attempt_at INTEGER,"
	"  next_attempt_at INTEGER,"
	"  delivered_at INTEGER,"
	"  PRIMARY KEY (target_id, event_seq)) WITHOUT ROWID;"
	"INSERT INTO deliveries_v4 SELECT target_id, event_seq, state, attempts, http_status, category,"
	"  error, first_attempt_at, last_attempt_at, next_attempt_at, delivered_at FROM deliveries;"
	"DROP TABLE deliveries;"
	"ALTER TABLE deliveries_v4 RENAME TO deliveries;"
	"CREATE INDEX deliveries_due ON deliveries(target_id, next_attempt_at)"
	"  WHERE state = 'retrying';",
	/* 4 -> 5: only events not yet superseded in the coalescing index, so that
	 * superseding is one lookup however long a key's history grows (the old
	 * index held the whole chain, and each new event walked it). */
	"DROP INDEX events_coalesce;"
	"CREATE INDEX events_coalesce ON events(coalesce_key, seq)"
	"  WHERE coalesce_key IS NOT NULL AND superseded_by IS NULL;",
	/* 5 -> 6: a target's retrying events in seq order, carrying every
	 * column the selection reads (state too, or SQLite reads the ledger row
	 * to test it), so that it takes due retries in order and stops at its
	 * limit instead of sorting every due one after a ledger lookup each.
	 * deliveries_due still answers "when is the earliest due". */
	"CREATE INDEX deliveries_retrying ON deliveries(target_id, event_seq, next_attempt_at,"
	"  attempts, state) WHERE state = 'retrying';"
	/* ... and what status counts, each a small partial index, so that it
	 * never scans the journal or a target's whole ledger: failures by
	 * category, gc'd payloads, superseded events, routed (imported) ones.
	 * Delivered is then the target's ledger rows less the others. */
	"CREATE INDEX deliveries_failed ON deliveries(target_id, category, state)"
	"  WHERE state = 'failed';"
	"CREATE INDEX events_gone ON events(seq) WHERE payload IS NULL;"
	"CREATE INDEX events_superseded ON events(superseded_by) WHERE superseded_by IS NOT NULL;"
	"CREATE INDEX events_routed ON events(route) WHERE route IS NOT NULL;",
};

#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

_Static_assert(NMIGRATIONS == SCHEMA_VERSION, "one migration per schema version");

int
db_exit_status(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return EXIT_TEMPFAIL;
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_PROTOCOL:
		return EXIT_IOERR;
	default:
		return EXIT_SOFTWARE;
	}
}

void
db_die(sqlite3 *db, int rc, const char *what)
{
	const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);

	if ((rc & 0xff) == SQLITE_BUSY)
		die(EXIT_TEMPFAIL, "%s: journal is busy (locked by another process past the busy timeout)", what);
	die(db_exit_status(rc), "%s: %s", what, msg);
}

sqlite3_stmt *
db_prepare(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);

	if (rc != SQLITE_OK)
		db_die(db, rc, "cannot prepare statement");
	return st;
}

int
db_try_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

void
db_exec(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		db_die(db, rc, "journal");
}

int
db_exec_id(sqlite3 *db, const char *sql, int64_t id, const char *what)
{
	sqlite3_stmt *st = db_prepare(db, sql);
	int rc, changed;

	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	changed = sqlite3_changes(db);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		db_die(db, rc, what);
	return changed;
}

int64_t
db_int(sqlite3 *db, const char *sql, int64_t dflt)
{
	sqlite3_stmt *st = NULL;
	int64_t v = dflt;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		db_die(db, rc, "cannot prepare statement");
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(st, 0);
	else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		db_die(db, rc, "journal");
	sqlite3_finalize(st);
	return v;
}

int
db_bind_text(sqlite3_stmt *st, int idx, const char *text)
{
	if (!text)
		return sqlite3_bind_null(st, idx);
	return sqlite3_bind_text(st, idx, text, -1, SQLITE_TRANSIENT);
}

char *
db_column_strdup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	char *copy;

	if (!t)
		return NULL;
	copy = strdup((const char *)t);
	if (!copy)
		die(EXIT_SOFTWARE, "out of memory");
	return copy;
}

int
make_private_dirs(const char *path)
{
	char dir[4096];
	char *slash;

	if (strlen(path) >= sizeof dir)
		return -1;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static void
migrate(sqlite3 *db, const char *path)
{
	int64_t version = db_int(db, "PRAGMA user_version", 0);
	int64_t app = db_int(db, "PRAGMA application_id", 0);
	int rc;

	if (version > SCHEMA_VERSION)
		die(EXIT_CONFIG, "%s: journal schema version %lld is newer than this sluice "
		    "understands (%d); upgrade sluice", path, (long long)version, SCHEMA_VERSION);
	if (version == SCHEMA_VERSION)
		return;
	if (version == 0 && app != SLUICE_APPLICATION_ID &&
	    db_int(db, "SELECT count(*) FROM sqlite_schema", 0) > 0)
		die(EXIT_CONFIG, "%s: not a sluice journal (it holds other tables)", path);

	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		db_die(db, rc, "cannot migrate journal");
	/* Another process may have migrated while we waited for the lock. */
	version = db_int(db, "PRAGMA user_version", 0);
	for (int64_t v = version; v < SCHEMA_VERSION; v++) {
		char sql[64];

		rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			db_die(db, rc, "cannot migrate journal");
		snprintf(sql, sizeof sql, "PRAGMA user_version = %lld", (long long)v + 1);
		db_exec(db, sql);
	}
	if (version == 0) {
		char sql[64];

		snprintf(sql, sizeof sql, "PRAGMA application_id = %d", SLUICE_APPLICATION_ID);
		db_exec(db, sql);
	}
	rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		db_die(db, rc, "cannot migrate journal");
}

sqlite3 *
db_open(const char *path, enum db_mode mode, const char *sync_flag, const char *busy_flag)
{
	sqlite3 *db = NULL;
	struct stat sb;
	struct setting sync_s, busy_s;
	const char *sync = setting_get("sync", sync_flag, &sync_s);
	const char *busy_text = setting_get("busy_timeout", busy_flag, &busy_s);
	int64_t busy = parse_duration(busy_text);
	int rc;
	char sql[64];

	if (!path || !*path)
		die(EXIT_USAGE, "no journal path");
	/* A bad flag is a usage error; a bad environment or config file, a configuration error. */
	if (strcmp(sync, "full") != 0 && strcmp(sync, "normal") != 0)
		die(sync_flag ? EXIT_USAGE : EXIT_CONFIG, "sync must be 'full' or 'normal', not '%s' (%s)",
		    sync, sync_s.source);
	if (busy < 0)
		die(busy_flag ? EXIT_USAGE : EXIT_CONFIG, "busy timeout '%s' is not a duration such as "
		    "5s or 500ms (%s)", busy_text, busy_s.source);

	if (stat(path, &sb) != 0) {
		int fd;

		if (errno != ENOENT)
			die(EXIT_IOERR, "cannot open journal %s: %s", path, strerror(errno));
		if (mode == DB_MUST_EXIST)
			die(EXIT_NOINPUT, "no journal at %s (nothing has been appended yet?)", path);
		if (make_private_dirs(path) != 0)
			die(EXIT_CANTCREAT, "cannot create directory for journal %s: %s", path,
			    strerror(errno));
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			die(EXIT_CANTCREAT, "cannot create journal %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
	} else if (S_ISDIR(sb.st_mode)) {
		die(EXIT_CANTCREAT, "journal %s is a directory", path);
	}

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		if (access(path, R_OK | W_OK) != 0)
			die(EXIT_IOERR, "cannot open journal %s: %s", path, strerror(errno));
		die(EXIT_IOERR, "cannot open journal %s: %s", path,
		    db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, busy > INT32_MAX ? INT32_MAX : (int)busy);

	rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		if ((rc & 0xff) == SQLITE_NOTADB)
			die(EXIT_IOERR, "%s: not an SQLite database (is it a journal?)", path);
		db_die(db, rc, path);
	}
	snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", sync);
	db_exec(db, sql);
	db_exec(db, "PRAGMA foreign_keys = OFF");
	migrate(db, path);
	return db;
}

void
db_close(sqlite3 *db)
{
	sqlite3_stmt *st;

	if (!db)
		return;
	while ((st = sqlite3_next_stmt(db, NULL)) != NULL)
		sqlite3_finalize(st);
	sqlite3_close(db);
}
