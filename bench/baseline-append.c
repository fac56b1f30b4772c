/*
 * baseline-append - the SQLite limit for journal-append, for make bench.
 *
 *   baseline-append DB BATCH full|normal < events.ndjson
 *
 * Inserts every line of its input into the events table of DB (a journal
 * that journal-append created, so the schema and its indexes are the same)
 * with one prepared single-row statement, committing every BATCH rows, with
 * PRAGMA synchronous as given, in WAL mode. It does the least any journal
 * must: no JSON parsing (event_id and event_type are found by a plain search
 * for their keys, which only works on gen-events' output), no validation, no
 * quarantine, no duplicate detection beyond the UNIQUE index.
 *
 * Prints the number of rows inserted. Exit 0, or 1 on any error.
 */
#define _GNU_SOURCE /* memmem, getline */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static sqlite3 *db;

static void
die(const char *what)
{
	fprintf(stderr, "baseline-append: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
	exit(1);
}

static void
exec(const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(sql);
}

/* The string value of "key":"..." in line (no escapes in gen-events' ids and
 * types), or NULL. */
static const char *
find_string(const char *line, size_t len, const char *key, int *vlen)
{
	size_t klen = strlen(key);
	const char *p = memmem(line, len, key, klen), *end;

	if (!p)
		return NULL;
	p += klen;
	end = memchr(p, '"', len - (size_t)(p - line));
	if (!end)
		return NULL;
	*vlen = (int)(end - p);
	return p;
}

int
main(int argc, char **argv)
{
	sqlite3_stmt *ins;
	char *line = NULL, sql[64];
	size_t cap = 0;
	ssize_t n;
	long batch, inserted = 0, in_tx = 0;
	struct timeval tv;
	sqlite3_int64 now;

	if (argc != 4) {
		fprintf(stderr, "usage: baseline-append DB BATCH full|normal < events.ndjson\n");
		return 64;
	}
	batch = strtol(argv[2], NULL, 10);
	if (batch < 1 || (strcmp(argv[3], "full") != 0 && strcmp(argv[3], "normal") != 0)) {
		fprintf(stderr, "baseline-append: bad BATCH or sync mode\n");
		return 64;
	}
	if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK)
		die(argv[1]);
	exec("PRAGMA journal_mode = WAL");
	snprintf(sql, sizeof sql, "PRAGMA synchronous = %s", argv[3]);
	exec(sql);
	if (sqlite3_prepare_v2(db, "INSERT INTO events(event_id, event_type, coalesce_key,"
	    " producer, payload, appended_at) VALUES (?, ?, NULL, NULL, ?, ?)", -1, &ins, NULL) !=
	    SQLITE_OK)
		die("prepare");

	gettimeofday(&tv, NULL);
	now = (sqlite3_int64)tv.tv_sec * 1000 + tv.tv_usec / 1000;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		const char *id, *type;
		int idlen = 0, typelen = 0;

		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if (n == 0)
			continue;
		id = find_string(line, (size_t)n, "\"event_id\":\"", &idlen);
		type = find_string(line, (size_t)n, "\"event_type\":\"", &typelen);
		if (!id) {
			fprintf(stderr, "baseline-append: a line without event_id\n");
			return 1;
		}
		if (!in_tx) {
			exec("BEGIN IMMEDIATE");
			in_tx = 1;
		}
		sqlite3_bind_text(ins, 1, id, idlen, SQLITE_STATIC);
		if (type)
			sqlite3_bind_text(ins, 2, type, typelen, SQLITE_STATIC);
		else
			sqlite3_bind_null(ins, 2);
		sqlite3_bind_text(ins, 3, line, (int)n, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 4, now);
		if (sqlite3_step(ins) != SQLITE_DONE)
			die("insert");
		sqlite3_reset(ins);
		if (++inserted % batch == 0) {
			exec("COMMIT");
			in_tx = 0;
		}
	}
	if (in_tx)
		exec("COMMIT");
	if (ferror(stdin)) {
		perror("baseline-append: stdin");
		return 1;
	}
	sqlite3_finalize(ins);
	if (sqlite3_close(db) != SQLITE_OK)
		die("close");
	free(line);
	printf("%ld\n", inserted);
	return 0;
}
