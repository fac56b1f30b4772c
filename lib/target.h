/*
 * target.h - a receiver, as configured with `sluice target add`.
 */
#ifndef SLUICE_TARGET_H
#define SLUICE_TARGET_H

#include <jansson.h>
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
	/* snapshot targets */
	char *s3_region, *s3_access_env, *s3_secret_env;
	int64_t min_interval_ms, keep_snapshots;
};

/* Snapshot targets copy the whole journal; the others deliver events. */
#define TARGET_IS_SNAPSHOT(t) (strcmp((t)->format, "snapshot") == 0)

/* The bearer token of the target, from its variable or its file; NULL when
 * it has none. Dies with 78 when the variable is unset or the file unreadable.
 * The caller wipes and frees it. */
char *target_token(const struct target *t);

/*
 * The one definition of "pending": event e has never been tried for the
 * target (id ?1, cursor ?2, name ?3), is not superseded, still has its
 * payload, and is meant for every target or for this one. Every event at or
 * below the cursor has a ledger row, or is not wanted, or was gc'd. Above
 * the target's highest ledger row there is nothing to look up: the newest
 * events, the usual pending ones, cost no ledger lookup each.
 */
#define PENDING_WHERE \
	" e.seq > ?2 AND e.superseded_by IS NULL AND e.payload IS NOT NULL" \
	" AND (e.route IS NULL OR e.route = ?3)" \
	" AND (e.seq > (SELECT max(x.event_seq) FROM deliveries x WHERE x.target_id = ?1)" \
	" OR NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = ?1 AND d.event_seq = e.seq))"

/* Binds ?1, ?2 and ?3 of PENDING_WHERE. */
void target_bind_pending(sqlite3_stmt *s, const struct target *t);

/* After any success: the failing state is cleared (count, since, next
 * attempt, last error), last_success_at and last_attempt_at are now. */
void target_record_success(sqlite3 *db, int64_t id, int64_t now);
/* After a batch-level failure: the count grows from failures_before, the
 * target backs off (backoff.h; Retry-After wins when longer). Returns the
 * time of the next attempt. */
int64_t target_record_failure(sqlite3 *db, int64_t id, int64_t failures_before, int64_t now,
    const char *category, const char *error, int64_t http_status, int64_t retry_after_ms);

/* Adds the target's delivery state to a JSON object, as `target show --json`
 * and `status --json` both print it: consecutive_failures, failing_since,
 * next/last attempt, last success, the last error and the last run's
 * category counts. */
void target_state_to_json(json_t *o, const struct target *t);

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
