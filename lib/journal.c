/* journal.c - see journal.h */
#include "journal.h"
#include "db.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
valid_event_id(const char *id, size_t len)
{
	if (len < 1 || len > 128)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

char *
canonical_payload(const char *bytes, size_t len)
{
	json_t *v = json_loadb(bytes, len, JSON_ALLOW_NUL, NULL);
	char *c;

	/* Integers too big for jansson still compare, as reals. */
	if (!v)
		v = json_loadb(bytes, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
	if (!v)
		return NULL;
	c = json_canonical(v);
	json_decref(v);
	return c;
}

char *
payload_with_id(const char *text, size_t len, const char *id, int empty, size_t *outlen)
{
	const char *brace = memchr(text, '{', len);
	size_t head = brace ? (size_t)(brace - text) + 1 : 0;
	char member[160];
	int mlen = snprintf(member, sizeof member, "\"event_id\":\"%s\"%s", id, empty ? "" : ",");
	char *out = malloc(len + (size_t)mlen + 1);

	if (!out || !brace) {
		free(out);
		return NULL;
	}
	memcpy(out, text, head);
	memcpy(out + head, member, (size_t)mlen);
	memcpy(out + head + mlen, text + head, len - head);
	*outlen = len + (size_t)mlen;
	out[*outlen] = '\0';
	return out;
}

/* One statement per connection, prepared once. */
static sqlite3_stmt *
cached(sqlite3 *db, sqlite3_stmt **slot, sqlite3 **owner, const char *sql)
{
	if (*slot && *owner != db) {
		sqlite3_finalize(*slot);
		*slot = NULL;
	}
	if (!*slot) {
		*slot = db_prepare(db, sql);
		*owner = db;
	}
	return *slot;
}

int
journal_supersede(sqlite3 *db, int64_t seq, const char *coalesce_key, const char *route)
{
	static sqlite3_stmt *st;
	static sqlite3 *owner;
	sqlite3_stmt *s = cached(db, &st, &owner,
	    "UPDATE events SET superseded_by = ?1 WHERE coalesce_key = ?2 AND seq < ?1"
	    " AND superseded_by IS NULL AND route IS ?3");
	int rc;

	sqlite3_bind_int64(s, 1, seq);
	sqlite3_bind_text(s, 2, coalesce_key, -1, SQLITE_STATIC);
	db_bind_text(s, 3, route);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int
journal_quarantine(sqlite3 *db, const struct quarantined *q, int64_t now, int64_t *id)
{
	static sqlite3_stmt *st;
	static sqlite3 *owner;
	sqlite3_stmt *s = cached(db, &st, &owner,
	    "INSERT INTO quarantine(received_at, source, line_no, reason, detail, event_id,"
	    " producer, raw, raw_bytes) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id");
	int rc;

	sqlite3_bind_int64(s, 1, now);
	sqlite3_bind_text(s, 2, q->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, q->line_no);
	sqlite3_bind_text(s, 4, q->reason, -1, SQLITE_STATIC);
	db_bind_text(s, 5, q->detail);
	db_bind_text(s, 6, q->event_id && *q->event_id ? q->event_id : NULL);
	db_bind_text(s, 7, q->producer);
	sqlite3_bind_blob(s, 8, q->raw ? q->raw : "", (int)q->raw_len, SQLITE_STATIC);
	if (q->raw_bytes >= 0)
		sqlite3_bind_int64(s, 9, q->raw_bytes);
	else
		sqlite3_bind_null(s, 9);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (id)
			*id = sqlite3_column_int64(s, 0);
		rc = sqlite3_step(s);
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}
