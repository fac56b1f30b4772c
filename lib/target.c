/* target.c - see target.h */
#include "target.h"
#include "backoff.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char TARGET_COLUMNS[] =
	"id, name, url, format, auth_env, auth_file, batch_events, batch_bytes,"
	" max_event_bytes, timeout_ms, max_rejections, gzip, insecure, enabled, headers,"
	" cacert, cursor_seq, consecutive_failures, failing_since, next_attempt_at,"
	" last_attempt_at, last_success_at, last_category, last_error, last_categories,"
	" last_http_status, created_at, s3_region, s3_access_env, s3_secret_env, min_interval_ms,"
	" keep_snapshots";

int
target_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n < 1 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		    name[i] == '_' || name[i] == '-'))
			return 0;
	return 1;
}

static int64_t
col_int(sqlite3_stmt *s, int c)
{
	return sqlite3_column_type(s, c) == SQLITE_NULL ? 0 : sqlite3_column_int64(s, c);
}

void
target_from_row(sqlite3_stmt *s, struct target *t)
{
	memset(t, 0, sizeof *t);
	t->id = sqlite3_column_int64(s, 0);
	snprintf(t->name, sizeof t->name, "%s", (const char *)sqlite3_column_text(s, 1));
	t->url = db_column_strdup(s, 2);
	snprintf(t->format, sizeof t->format, "%s", (const char *)sqlite3_column_text(s, 3));
	t->auth_env = db_column_strdup(s, 4);
	t->auth_file = db_column_strdup(s, 5);
	t->batch_events = col_int(s, 6);
	t->batch_bytes = col_int(s, 7);
	t->max_event_bytes = col_int(s, 8);
	t->timeout_ms = col_int(s, 9);
	t->max_rejections = col_int(s, 10);
	t->gzip = (int)col_int(s, 11);
	t->insecure = (int)col_int(s, 12);
	t->enabled = (int)col_int(s, 13);
	t->headers = db_column_strdup(s, 14);
	t->cacert = db_column_strdup(s, 15);
	t->cursor_seq = col_int(s, 16);
	t->consecutive_failures = col_int(s, 17);
	t->failing_since = col_int(s, 18);
	t->next_attempt_at = col_int(s, 19);
	t->last_attempt_at = col_int(s, 20);
	t->last_success_at = col_int(s, 21);
	t->last_category = db_column_strdup(s, 22);
	t->last_error = db_column_strdup(s, 23);
	t->last_categories = db_column_strdup(s, 24);
	t->last_http_status = col_int(s, 25);
	t->created_at = col_int(s, 26);
	t->s3_region = db_column_strdup(s, 27);
	t->s3_access_env = db_column_strdup(s, 28);
	t->s3_secret_env = db_column_strdup(s, 29);
	t->min_interval_ms = col_int(s, 30);
	t->keep_snapshots = col_int(s, 31);
}

int
target_load(sqlite3 *db, const char *name, struct target *t)
{
	char sql[1024];
	sqlite3_stmt *s;
	int rc;

	snprintf(sql, sizeof sql, "SELECT %s FROM targets WHERE name = ?", TARGET_COLUMNS);
	s = db_prepare(db, sql);
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		target_from_row(s, t);
	else if (rc != SQLITE_DONE)
		db_die(db, rc, "cannot read targets");
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

void
target_load_or_die(sqlite3 *db, const char *name, struct target *t)
{
	if (!target_name_valid(name))
		die(EXIT_USAGE, "'%s' is not a valid target name ([a-z0-9_-], 1-64 characters)", name);
	if (target_load(db, name, t) != 0)
		die(EXIT_UNAVAILABLE, "no target named '%s' (see: sluice target list)", name);
}

char *
target_token(const struct target *t)
{
	char buf[16384];
	char *token = NULL;

	if (t->auth_env) {
		const char *v = getenv(t->auth_env);

		if (!v || !*v)
			die(EXIT_CONFIG, "target %s: the token variable $%s is not set", t->name,
			    t->auth_env);
		token = strdup(v);
	} else if (t->auth_file) {
		FILE *f = fopen(t->auth_file, "r");
		size_t n;

		if (!f)
			die(EXIT_CONFIG, "target %s: cannot read token file %s: %s", t->name,
			    t->auth_file, strerror(errno));
		n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = '\0';
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			buf[--n] = '\0';
		if (n == 0)
			die(EXIT_CONFIG, "target %s: token file %s is empty", t->name, t->auth_file);
		token = strdup(buf);
		memset(buf, 0, sizeof buf);
	} else {
		return NULL;
	}
	if (!token)
		die(EXIT_SOFTWARE, "out of memory");
	if (strpbrk(token, "\r\n"))
		die(EXIT_CONFIG, "target %s: the token contains a line break", t->name);
	return token;
}

void
target_record_success(sqlite3 *db, int64_t id, int64_t now)
{
	sqlite3_stmt *s = db_prepare(db, "UPDATE targets SET consecutive_failures = 0,"
	    " failing_since = NULL, next_attempt_at = NULL, last_category = NULL, last_error = NULL,"
	    " last_http_status = NULL, last_success_at = ?2, last_attempt_at = ?2 WHERE id = ?1");
	int rc;

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, now);
	if ((rc = sqlite3_step(s)) != SQLITE_DONE)
		db_die(db, rc, "cannot update the target");
	sqlite3_finalize(s);
}

int64_t
target_record_failure(sqlite3 *db, int64_t id, int64_t failures_before, int64_t now,
    const char *category, const char *error, int64_t http_status, int64_t retry_after_ms)
{
	int64_t failures = failures_before + 1;
	int64_t next = now + backoff_delay_ms(failures, retry_after_ms);
	sqlite3_stmt *s = db_prepare(db, "UPDATE targets SET consecutive_failures = ?2,"
	    " failing_since = CASE WHEN ?2 = 1 OR failing_since IS NULL THEN ?3 ELSE failing_since END,"
	    " next_attempt_at = ?4, last_category = ?5, last_error = ?6, last_http_status = ?7,"
	    " last_attempt_at = ?3 WHERE id = ?1");
	int rc;

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, failures);
	sqlite3_bind_int64(s, 3, now);
	sqlite3_bind_int64(s, 4, next);
	db_bind_text(s, 5, category);
	db_bind_text(s, 6, error);
	if (http_status > 0)
		sqlite3_bind_int64(s, 7, http_status);
	else
		sqlite3_bind_null(s, 7);
	if ((rc = sqlite3_step(s)) != SQLITE_DONE)
		db_die(db, rc, "cannot update the target");
	sqlite3_finalize(s);
	return next;
}

void
target_bind_pending(sqlite3_stmt *s, const struct target *t)
{
	sqlite3_bind_int64(s, 1, t->id);
	sqlite3_bind_int64(s, 2, t->cursor_seq);
	sqlite3_bind_text(s, 3, t->name, -1, SQLITE_TRANSIENT);
}

void
target_free(struct target *t)
{
	free(t->url);
	free(t->auth_env);
	free(t->auth_file);
	free(t->headers);
	free(t->cacert);
	free(t->last_category);
	free(t->last_error);
	free(t->last_categories);
	free(t->s3_region);
	free(t->s3_access_env);
	free(t->s3_secret_env);
	memset(t, 0, sizeof *t);
}

void
target_state_to_json(json_t *o, const struct target *t)
{
	json_t *cats = t->last_categories ? json_loads(t->last_categories, 0, NULL) : NULL;

	json_object_set_new(o, "consecutive_failures", json_integer(t->consecutive_failures));
	json_object_set_new(o, "failing_since", json_time_or_null(t->failing_since));
	json_object_set_new(o, "next_attempt_at", json_time_or_null(t->next_attempt_at));
	json_object_set_new(o, "last_attempt_at", json_time_or_null(t->last_attempt_at));
	json_object_set_new(o, "last_success_at", json_time_or_null(t->last_success_at));
	json_object_set_new(o, "last_category", json_text_or_null(t->last_category));
	json_object_set_new(o, "last_error", json_text_or_null(t->last_error));
	json_object_set_new(o, "last_http_status", t->last_http_status ?
	    json_integer(t->last_http_status) : json_null());
	json_object_set_new(o, "last_categories", cats ? cats : json_object());
}
