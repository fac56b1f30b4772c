/*
 * db.h - the journal: opening it, its schema, and SQLite errors as exit codes.
 *
 * The journal is one SQLite file in WAL mode, created 0600 in a 0700
 * directory. Its schema is versioned with PRAGMA user_version and migrated
 * forward on open; a journal newer than this program is refused (78).
 */
#ifndef SLUICE_DB_H
#define SLUICE_DB_H

#include <sqlite3.h>
#include <stdint.h>

#define SCHEMA_VERSION 6
#define SLUICE_APPLICATION_ID 0x534c4345 /* "SLCE" */

enum db_mode {
	DB_MUST_EXIST, /* a program that reads: a missing journal is exit 66 */
	DB_CREATE      /* a program that writes: create it (exit 73 if it can't) */
};

/* Opens (and if asked creates) the journal at path, applies the sync and
 * busy_timeout settings, and migrates the schema. Dies on failure with the
 * contract's exit status. sync_flag and busy_flag are the command line's
 * values or NULL. */
sqlite3 *db_open(const char *path, enum db_mode mode, const char *sync_flag,
    const char *busy_flag);
void db_close(sqlite3 *db);

/* The exit status an SQLite error code maps to (busy 75, full/io 74, ...). */
int db_exit_status(int rc);
/* "fatal: <what>: <sqlite message>" and exit with db_exit_status(rc). */
_Noreturn void db_die(sqlite3 *db, int rc, const char *what);

/* mkdir -p for the directory of path; directories created are 0700. */
int make_private_dirs(const char *path);

sqlite3_stmt *db_prepare(sqlite3 *db, const char *sql);
/* Runs SQL without results; dies on failure. */
void db_exec(sqlite3 *db, const char *sql);
/* Runs SQL without results; returns the SQLite code instead of dying. */
int db_try_exec(sqlite3 *db, const char *sql);

/* Runs SQL without results whose one parameter is id (a target's, say);
 * dies with `what` on failure. Returns the number of rows changed. */
int db_exec_id(sqlite3 *db, const char *sql, int64_t id, const char *what);

/* Steps a statement expected to return one integer row (or none: dflt). */
int64_t db_int(sqlite3 *db, const char *sql, int64_t dflt);

/* Binds text or NULL. */
int db_bind_text(sqlite3_stmt *st, int idx, const char *text);
/* The column as a malloc'd string, or NULL when it is NULL. */
char *db_column_strdup(sqlite3_stmt *st, int col);

#endif
