/*
 * journal.h - what every program that adds events to the journal shares:
 * the event_id rule, "the same payload", coalescing, and the quarantine.
 */
#ifndef SLUICE_JOURNAL_H
#define SLUICE_JOURNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* 1-128 bytes of A-Z a-z 0-9 . _ : - */
int valid_event_id(const char *id, size_t len);

/* The canonical form of a payload (compact, keys sorted), or NULL when it
 * does not parse. Two payloads are the same when these are equal. */
char *canonical_payload(const char *bytes, size_t len);

/* The payload with "event_id":"<id>" inserted as its first member; every
 * other byte is kept. text must be a JSON object; empty tells whether it has
 * no members. Returns a malloc'd, NUL-terminated string; *outlen its length. */
char *payload_with_id(const char *text, size_t len, const char *id, int empty, size_t *outlen);

/* Marks the events before seq that share its coalesce key and its route
 * (NULL: every target) as superseded by it: one indexed lookup. An event
 * meant for one target never supersedes one meant for all. Returns an
 * SQLite code. */
int journal_supersede(sqlite3 *db, int64_t seq, const char *coalesce_key, const char *route);

struct quarantined {
	const char *source;    /* stdin, a file name, an import source */
	int64_t line_no;       /* or the source's row id */
	const char *reason;    /* a fixed word: invalid_json, conflict, ... */
	const char *detail;
	const char *event_id;  /* when known */
	const char *producer;
	const void *raw;
	size_t raw_len;
	int64_t raw_bytes;     /* the original's length; -1 when unknown (cut) */
};

/* Inserts a quarantine row; *id gets its id. Returns an SQLite code. */
int journal_quarantine(sqlite3 *db, const struct quarantined *q, int64_t now, int64_t *id);

#endif
