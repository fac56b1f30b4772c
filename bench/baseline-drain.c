/*
 * baseline-drain - the least work any drain must do, in one process, for
 * make bench.
 *
 *   baseline-drain full   DB TARGET URL BATCH
 *   baseline-drain http   DB TARGET URL BATCH
 *   baseline-drain ledger DB TARGET URL BATCH
 *
 * full:   reads the due events' payloads from the journal with one query
 *         (the same "due" as select-undelivered: above the target's cursor,
 *         not superseded, payload kept, no ledger row), POSTs them in
 *         batches of BATCH ({"events":[...]}, the batch format) over one
 *         keep-alive libcurl connection without "Expect: 100-continue",
 *         checks each answer is a 200, and writes one ledger row per event
 *         (INSERT into deliveries, state 'delivered') in one transaction per
 *         batch, with synchronous=FULL as record-results has it. No pipes, no
 *         JSON parsing of events or answers.
 * http:   the pure HTTP limit: the same bodies, built from the journal before
 *         the clock starts, POSTed the same way; no journal work is timed.
 * ledger: the pure ledger-write limit: the same ledger rows, in the same
 *         transaction sizes; no HTTP, and the due seqs are read before the
 *         clock starts.
 *
 * Prints one line: "<events> <seconds>" (seconds of the timed part; for full
 * that is the whole run after opening the journal). Exit 0, or 1 on any
 * error, a non-200 answer included.
 */
#include <curl/curl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static sqlite3 *db;
static CURL *curl;
static sqlite3_stmt *ins;
static sqlite3_int64 target_id;

struct buf {
	char *data;
	size_t len, cap;
};

static void
die(const char *what)
{
	fprintf(stderr, "baseline-drain: %s%s%s\n", what, db ? ": " : "", db ? sqlite3_errmsg(db) : "");
	exit(1);
}

static void
append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 1 << 16;

		while (cap < b->len + n)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (!b->data)
			die("out of memory");
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sqlite3_int64
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (sqlite3_int64)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
exec(const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(sql);
}

/* The answer is read and dropped: the baseline trusts a 200. */
static size_t
discard(char *p, size_t size, size_t n, void *unused)
{
	(void)p;
	(void)unused;
	return size * n;
}

static void
setup_curl(const char *url)
{
	static struct curl_slist *headers;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init()))
		die("cannot initialize libcurl");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Expect:");
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
}

static void
post(const char *body, size_t len)
{
	long code = 0;
	CURLcode rc;

	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	rc = curl_easy_perform(curl);
	if (rc != CURLE_OK) {
		fprintf(stderr, "baseline-drain: POST: %s\n", curl_easy_strerror(rc));
		exit(1);
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		fprintf(stderr, "baseline-drain: POST: HTTP %ld\n", code);
		exit(1);
	}
}

/* One transaction of ledger rows. */
static void
record(const sqlite3_int64 *seqs, size_t n)
{
	sqlite3_int64 now = wall_ms();

	exec("BEGIN IMMEDIATE");
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_int64(ins, 1, target_id);
		sqlite3_bind_int64(ins, 2, seqs[i]);
		sqlite3_bind_int64(ins, 3, now);
		if (sqlite3_step(ins) != SQLITE_DONE)
			die("insert");
		sqlite3_reset(ins);
	}
	exec("COMMIT");
}

int
main(int argc, char **argv)
{
	sqlite3_stmt *sel, *tgt;
	const char *mode;
	struct buf body = { 0 }, all = { 0 };
	sqlite3_int64 *seqs, cursor;
	size_t *ends = NULL, nseqs = 0, capseqs = 1024, n = 0;
	long batch;
	double t0;

	if (argc != 6) {
		fprintf(stderr, "usage: baseline-drain full|http|ledger DB TARGET URL BATCH\n");
		return 64;
	}
	mode = argv[1];
	batch = strtol(argv[5], NULL, 10);
	if (batch < 1 || (strcmp(mode, "full") && strcmp(mode, "http") && strcmp(mode, "ledger"))) {
		fprintf(stderr, "baseline-drain: bad mode or BATCH\n");
		return 64;
	}
	seqs = malloc(capseqs * sizeof *seqs);
	if (!seqs)
		die("out of memory");
	if (sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK)
		die(argv[2]);
	sqlite3_busy_timeout(db, 5000);
	exec("PRAGMA journal_mode = WAL");
	exec("PRAGMA synchronous = FULL");
	if (sqlite3_prepare_v2(db, "SELECT id, cursor_seq FROM targets WHERE name = ?", -1, &tgt,
	    NULL) != SQLITE_OK)
		die("prepare");
	sqlite3_bind_text(tgt, 1, argv[3], -1, SQLITE_STATIC);
	if (sqlite3_step(tgt) != SQLITE_ROW)
		die("no such target");
	target_id = sqlite3_column_int64(tgt, 0);
	cursor = sqlite3_column_int64(tgt, 1);
	sqlite3_finalize(tgt);
	if (sqlite3_prepare_v2(db, "SELECT e.seq, e.payload FROM events e"
	    " WHERE e.seq > ?2 AND e.superseded_by IS NULL AND e.payload IS NOT NULL"
	    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = ?1 AND d.event_seq = e.seq)"
	    " ORDER BY e.seq", -1, &sel, NULL) != SQLITE_OK)
		die("prepare");
	sqlite3_bind_int64(sel, 1, target_id);
	sqlite3_bind_int64(sel, 2, cursor);
	if (sqlite3_prepare_v2(db, "INSERT INTO deliveries(target_id, event_seq, state, attempts,"
	    " http_status, first_attempt_at, last_attempt_at, delivered_at)"
	    " VALUES (?1, ?2, 'delivered', 0, 200, ?3, ?3, ?3)", -1, &ins, NULL) != SQLITE_OK)
		die("prepare");
	setup_curl(argv[4]);

	if (strcmp(mode, "full") != 0) {
		/* Read everything first; only the HTTP or the ledger part is timed. */
		int rc;

		while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
			if (nseqs == capseqs) {
				capseqs *= 2;
				seqs = realloc(seqs, capseqs * sizeof *seqs);
				if (!seqs)
					die("out of memory");
			}
			seqs[nseqs++] = sqlite3_column_int64(sel, 0);
			if (strcmp(mode, "http") == 0) {
				if (all.len > 0 && (nseqs - 1) % (size_t)batch != 0)
					append(&all, ",", 1);
				append(&all, sqlite3_column_blob(sel, 1), (size_t)sqlite3_column_bytes(sel, 1));
				if (nseqs % (size_t)batch == 0) {
					ends = realloc(ends, (nseqs / (size_t)batch + 1) * sizeof *ends);
					if (!ends)
						die("out of memory");
					ends[nseqs / (size_t)batch - 1] = all.len;
				}
			}
		}
		if (rc != SQLITE_DONE)
			die("select");
		sqlite3_reset(sel);
		t0 = now_s();
		if (strcmp(mode, "ledger") == 0) {
			for (size_t i = 0; i < nseqs; i += (size_t)batch)
				record(seqs + i, nseqs - i < (size_t)batch ? nseqs - i : (size_t)batch);
		} else {
			size_t nbatches = (nseqs + (size_t)batch - 1) / (size_t)batch, start = 0;

			for (size_t b = 0; b < nbatches; b++) {
				size_t end = b + 1 < nbatches || nseqs % (size_t)batch == 0 ? ends[b] : all.len;

				body.len = 0;
				append(&body, "{\"events\":[", 11);
				append(&body, all.data + start, end - start);
				append(&body, "]}", 2);
				post(body.data, body.len);
				start = end;
			}
		}
		printf("%zu %.6f\n", nseqs, now_s() - t0);
		return 0;
	}

	t0 = now_s();
	for (;;) {
		int rc = sqlite3_step(sel);

		if (rc == SQLITE_ROW) {
			if (n == 0) {
				body.len = 0;
				append(&body, "{\"events\":[", 11);
			} else {
				append(&body, ",", 1);
			}
			if (n == capseqs) {
				capseqs *= 2;
				seqs = realloc(seqs, capseqs * sizeof *seqs);
				if (!seqs)
					die("out of memory");
			}
			seqs[n++] = sqlite3_column_int64(sel, 0);
			append(&body, sqlite3_column_blob(sel, 1), (size_t)sqlite3_column_bytes(sel, 1));
		} else if (rc != SQLITE_DONE) {
			die("select");
		}
		if (n > 0 && (n == (size_t)batch || rc == SQLITE_DONE)) {
			append(&body, "]}", 2);
			post(body.data, body.len);
			record(seqs, n);
			nseqs += n;
			n = 0;
		}
		if (rc == SQLITE_DONE)
			break;
	}
	sqlite3_finalize(sel);
	sqlite3_finalize(ins);
	if (sqlite3_close(db) != SQLITE_OK)
		die("close");
	curl_easy_cleanup(curl);
	curl_global_cleanup();
	printf("%zu %.6f\n", nseqs, now_s() - t0);
	free(seqs);
	free(body.data);
	return 0;
}
