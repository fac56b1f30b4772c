/*
 * target.h - a receiver, as configured with `sluice target add`.
 */
#ifndef SLUICE_TARGET_H
#define SLUICE_TARGET_H

#include <sqlite3.h>
#include <stdint.h>

struct target {
	int64_t id;
	char name[65];
	char *url;
	char format[16];           /* batch, ndjson, json-array */
	char *auth_env, *auth_file;
	int64_t batch_events, batch_bytes, max_event_bytes, timeout_ms, max_rejections;
	int gzip, insecure, enabled;
	char *headers;             /* JSON array of "Name: value" */
	char *cacert;
	int64_t cursor_seq, consecutive_failures;
	int64_t failing_since, next_attempt_at, last_attempt_at, last_success_at; /* 0: never */
	char *last_category, *last_error, *last_categories;
	int64_t last_http_status;
	int64_t created_at;
};

/*
 * The one definition of "pending": event e has never been tried for the
 * target (id ?1, cursor ?2, name ?3), is not superseded, still has its
 * payload, and is meant for every target or for this one. Every event at or
 * below the cursor has a ledger row, or is not wanted, or was gc'd.
 */
#define PENDING_WHERE \
	" e.seq > ?2 AND e.superseded_by IS NULL AND e.payload IS NOT NULL" \
	" AND (e.route IS NULL OR e.route = ?3)" \
	" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = ?1 AND d.event_seq = e.seq)"

/* Binds ?1, ?2 and ?3 of PENDING_WHERE. */
void target_bind_pending(sqlite3_stmt *s, const struct target *t);

/* Target names are [a-z0-9_-]{1,64}: safe in file names, SQL and shells. */
int target_name_valid(const char *name);
/* Loads the target; returns 0, or -1 when there is no such target. */
int target_load(sqlite3 *db, const char *name, struct target *t);
/* Loads it or dies: 69 for an unknown target, 64 for a malformed name. */
void target_load_or_die(sqlite3 *db, const char *name, struct target *t);
void target_free(struct target *t);
/* The SELECT list matching target_load's columns, for listing. */
extern const char TARGET_COLUMNS[];
void target_from_row(sqlite3_stmt *s, struct target *t);

#endif
