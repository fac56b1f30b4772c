/*
 * sluice-status - what is delivered, pending, failing, and why; at a glance.
 *
 * Human view by default (colour only on a terminal, never with NO_COLOR);
 * --json for one stable document; --prometheus for node_exporter's textfile
 * collector; --check for CI and monitoring (exit 1 and one line per problem).
 * With --output FILE the result is written to FILE.tmp and renamed, so a
 * reader never sees half of it.
 *
 * A target is FAILING when its last 3 or more attempts failed or it has been
 * failing for 5 minutes or more; "backing off" after a first failure or two.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"
#include "target.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
"usage: sluice status [-d PATH] [--json | --prometheus] [--output FILE]\n"
"       sluice status [-d PATH] --check [--max-age DURATION] [--max-failed N]\n"
"                     [--max-snapshot-age DURATION]\n"
"\n"
"Show, per target, what is delivered, pending, retrying and failed, and why.\n"
"\n"
"  -d, --db PATH          the journal\n"
"      --json             one JSON document (keys in sluice-status(1))\n"
"      --prometheus       Prometheus text format, for node_exporter's textfile collector\n"
"  -o, --output FILE      write to FILE atomically (FILE.tmp, then rename)\n"
"      --check            exit 1 and name each problem on stderr when a target is\n"
"                         FAILING, or over --max-failed, or has an undelivered event\n"
"                         older than --max-age\n"
"      --max-age DUR      oldest acceptable undelivered event for --check (e.g. 1h)\n"
"      --max-failed N     terminal failures acceptable per target for --check (default 0)\n"
"      --max-snapshot-age DUR  oldest acceptable last snapshot, for --check\n"
"  -h, --help             this help\n"
"  -V, --version          print the version\n"
"\n"
"Exit: 0, 1 (--check found a problem), 64 usage, 66 no journal, 70 internal\n"
"error, 74 I/O error, 75 journal busy, 78 journal too new.\n";

#define FAILING_AFTER 3                  /* consecutive failures */
#define FAILING_FOR_MS (5 * 60 * 1000)   /* or failing this long */

struct target_status {
	struct target t;
	const char *state;               /* ok, backing off, FAILING, disabled */
	int64_t delivered, pending, retrying, failed;
	int64_t oldest_undelivered_at;   /* appended_at; 0: none */
	json_t *failed_categories;
	/* snapshot targets: the last good snapshot, and how far behind it is */
	char *snapshot_key;
	int64_t snapshot_seq, snapshot_at, lag_events, lag_ms;
};

static sqlite3 *db;
static int64_t now;

static int64_t
count_of(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;

	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		db_die(db, rc, "cannot read the journal");
	sqlite3_reset(s);
	return v;
}

static void
gather_snapshot(struct target_status *ts)
{
	sqlite3_stmt *s = db_prepare(db, "SELECT key, seq, created_at FROM snapshots"
	    " WHERE target_id = ? AND deleted_at IS NULL ORDER BY id DESC LIMIT 1");
	int64_t top = db_int(db, "SELECT coalesce(max(seq), 0) FROM events", 0);

	sqlite3_bind_int64(s, 1, ts->t.id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		ts->snapshot_key = db_column_strdup(s, 0);
		ts->snapshot_seq = sqlite3_column_int64(s, 1);
		ts->snapshot_at = sqlite3_column_int64(s, 2);
	}
	sqlite3_finalize(s);
	ts->lag_events = top - ts->snapshot_seq;
	/* Never snapshotted: behind since the target exists. */
	ts->lag_ms = now - (ts->snapshot_at ? ts->snapshot_at : ts->t.created_at);
}

static void
gather(struct target_status *ts)
{
	static sqlite3_stmt *rows, *retrying, *failed, *pending, *oldest_pending, *oldest_retrying;
	struct target *t = &ts->t;
	int rc;

	ts->failed_categories = json_object();
	if (TARGET_IS_SNAPSHOT(t)) {
		gather_snapshot(ts);
		goto state;
	}
	if (!rows) {
		/* The retrying and failed rows are counted in their partial
		 * indexes; delivered is what is left of the target's ledger rows,
		 * which are counted without reading one. */
		rows = db_prepare(db, "SELECT count(*) FROM deliveries WHERE target_id = ?");
		retrying = db_prepare(db, "SELECT count(*) FROM deliveries INDEXED BY"
		    " deliveries_retrying WHERE target_id = ? AND state = 'retrying'");
		failed = db_prepare(db, "SELECT coalesce(category, 'unknown'), count(*) FROM deliveries"
		    " INDEXED BY deliveries_failed WHERE target_id = ? AND state = 'failed'"
		    " GROUP BY 1 ORDER BY 1");
		pending = db_prepare(db, "SELECT count(*) FROM events e WHERE" PENDING_WHERE);
		oldest_pending = db_prepare(db, "SELECT e.appended_at FROM events e WHERE"
		    PENDING_WHERE " ORDER BY e.seq LIMIT 1");
		oldest_retrying = db_prepare(db, "SELECT min(e.appended_at) FROM deliveries d"
		    " JOIN events e ON e.seq = d.event_seq WHERE d.target_id = ? AND d.state = 'retrying'");
	}
	sqlite3_bind_int64(failed, 1, t->id);
	while ((rc = sqlite3_step(failed)) == SQLITE_ROW) {
		int64_t n = sqlite3_column_int64(failed, 1);

		ts->failed += n;
		json_object_set_new(ts->failed_categories,
		    (const char *)sqlite3_column_text(failed, 0), json_integer(n));
	}
	if (rc != SQLITE_DONE)
		db_die(db, rc, "cannot read the ledger");
	sqlite3_reset(failed);
	sqlite3_bind_int64(retrying, 1, t->id);
	ts->retrying = count_of(retrying);
	sqlite3_bind_int64(rows, 1, t->id);
	ts->delivered = count_of(rows) - ts->retrying - ts->failed;

	target_bind_pending(pending, t);
	ts->pending = count_of(pending);
	target_bind_pending(oldest_pending, t);
	ts->oldest_undelivered_at = count_of(oldest_pending);
	sqlite3_bind_int64(oldest_retrying, 1, t->id);
	{
		int64_t r = count_of(oldest_retrying);

		if (r && (!ts->oldest_undelivered_at || r < ts->oldest_undelivered_at))
			ts->oldest_undelivered_at = r;
	}
state:
	if (!t->enabled)
		ts->state = "disabled";
	else if (t->consecutive_failures >= FAILING_AFTER ||
	    (t->consecutive_failures > 0 && now - t->failing_since >= FAILING_FOR_MS))
		ts->state = "FAILING";
	else if (t->consecutive_failures > 0)
		ts->state = "backing off";
	else
		ts->state = "ok";
}


static const char *
state_key(const char *state)
{
	return strcmp(state, "FAILING") == 0 ? "failing" :
	    strcmp(state, "backing off") == 0 ? "backing_off" : state;
}

static void
print_json(FILE *out, const char *path, json_t *journal, struct target_status *ts, size_t n)
{
	json_t *doc = json_object(), *targets = json_array();

	json_object_set_new(journal, "path", json_string(path));
	json_object_set_new(doc, "journal", journal);
	json_object_set_new(doc, "now", json_time_or_null(now));
	for (size_t i = 0; i < n; i++) {
		struct target *t = &ts[i].t;
		json_t *o = json_object();

		json_object_set_new(o, "name", json_string(t->name));
		json_object_set_new(o, "url", json_string(t->url));
		json_object_set_new(o, "state", json_string(state_key(ts[i].state)));
		json_object_set_new(o, "enabled", json_boolean(t->enabled));
		json_object_set_new(o, "tls_verified", json_boolean(!t->insecure));
		json_object_set_new(o, "delivered", json_integer(ts[i].delivered));
		json_object_set_new(o, "pending", json_integer(ts[i].pending));
		json_object_set_new(o, "retrying", json_integer(ts[i].retrying));
		json_object_set_new(o, "failed", json_integer(ts[i].failed));
		json_object_set_new(o, "failed_categories", json_incref(ts[i].failed_categories));
		json_object_set_new(o, "oldest_pending_at", json_time_or_null(ts[i].oldest_undelivered_at));
		json_object_set_new(o, "oldest_pending_seconds", ts[i].oldest_undelivered_at ?
		    json_integer((now - ts[i].oldest_undelivered_at) / 1000) : json_null());
		target_state_to_json(o, t);
		json_object_set_new(o, "kind", json_string(TARGET_IS_SNAPSHOT(t) ? "snapshot" : "events"));
		if (TARGET_IS_SNAPSHOT(t))
			json_object_set_new(o, "snapshot", json_pack("{s:o, s:I, s:o, s:I, s:I}",
			    "last_key", json_text_or_null(ts[i].snapshot_key),
			    "last_seq", (json_int_t)ts[i].snapshot_seq,
			    "last_at", json_time_or_null(ts[i].snapshot_at),
			    "lag_events", (json_int_t)ts[i].lag_events,
			    "lag_seconds", (json_int_t)(ts[i].lag_ms / 1000)));
		json_array_append_new(targets, o);
	}
	json_object_set_new(doc, "targets", targets);
	json_dumpf(doc, out, JSON_COMPACT);
	fputc('\n', out);
	json_decref(doc);
}

/* Prometheus label values escape backslash, quote and newline. */
static void
label(FILE *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', out);
		if (*v == '\n') {
			fputs("\\n", out);
			continue;
		}
		fputc(*v, out);
	}
}

static void
metric_head(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
print_prometheus(FILE *out, json_t *journal, struct target_status *ts, size_t n)
{
	static const struct {
		const char *name, *help;
		int which;
	} per_target[] = {
		{ "sluice_delivered", "Events delivered to the target.", 0 },
		{ "sluice_pending", "Events never tried for the target yet.", 1 },
		{ "sluice_retrying", "Events rejected by the target, to be retried.", 2 },
		{ "sluice_failed", "Events that failed for good for the target.", 3 },
		{ "sluice_target_failing", "1 when the target is FAILING.", 4 },
		{ "sluice_target_backing_off", "1 when the target's next attempt is in the future.", 5 },
		{ "sluice_target_consecutive_failures", "Batch-level failures in a row.", 6 },
		{ "sluice_oldest_pending_seconds", "Age of the oldest undelivered event (0: none).", 7 },
		{ "sluice_last_success_timestamp_seconds", "When the target last accepted an event (0: never).", 8 },
		{ "sluice_target_enabled", "1 when the target is enabled.", 9 },
		{ "sluice_snapshot_lag_events", "Events appended since the last good snapshot.", 10 },
		{ "sluice_snapshot_age_seconds", "Seconds since the last good snapshot.", 11 },
	};

	metric_head(out, "sluice_events_total", "counter", "Events appended to the journal.");
	fprintf(out, "sluice_events_total %" JSON_INTEGER_FORMAT "\n",
	    json_integer_value(json_object_get(journal, "events")));
	metric_head(out, "sluice_quarantined", "gauge", "Input lines in quarantine.");
	fprintf(out, "sluice_quarantined %" JSON_INTEGER_FORMAT "\n",
	    json_integer_value(json_object_get(journal, "quarantined")));
	metric_head(out, "sluice_journal_bytes", "gauge", "Size of the journal on disk.");
	fprintf(out, "sluice_journal_bytes %" JSON_INTEGER_FORMAT "\n",
	    json_integer_value(json_object_get(journal, "bytes")));
	for (size_t m = 0; m < sizeof per_target / sizeof per_target[0]; m++) {
		metric_head(out, per_target[m].name, "gauge", per_target[m].help);
		for (size_t i = 0; i < n; i++) {
			struct target *t = &ts[i].t;
			int64_t v = 0;

			switch (per_target[m].which) {
			case 0: v = ts[i].delivered; break;
			case 1: v = ts[i].pending; break;
			case 2: v = ts[i].retrying; break;
			case 3: v = ts[i].failed; break;
			case 4: v = strcmp(ts[i].state, "FAILING") == 0; break;
			case 5: v = t->next_attempt_at > now; break;
			case 6: v = t->consecutive_failures; break;
			case 7: v = ts[i].oldest_undelivered_at ? (now - ts[i].oldest_undelivered_at) / 1000 : 0; break;
			case 8: v = t->last_success_at / 1000; break;
			case 9: v = t->enabled; break;
			case 10: v = ts[i].lag_events; break;
			case 11: v = ts[i].lag_ms / 1000; break;
			}
			/* Ledger metrics for event targets, lag metrics for snapshot targets. */
			if (TARGET_IS_SNAPSHOT(t) ? per_target[m].which <= 3 || per_target[m].which == 7 :
			    per_target[m].which >= 10)
				continue;
			fprintf(out, "%s{target=\"", per_target[m].name);
			label(out, t->name);
			fprintf(out, "\"} %" PRId64 "\n", v);
		}
	}
}

/* 2026-11-22T12:03:00Z: the time without milliseconds, to fit 80 columns. */
static char *
short_time(int64_t ms, char *buf)
{
	format_time(ms, buf);
	strcpy(buf + 19, "Z");
	return buf;
}

static const char *
paint(const char *state, int colour)
{
	if (!colour)
		return "";
	if (strcmp(state, "FAILING") == 0)
		return "\033[1;31m";
	if (strcmp(state, "backing off") == 0)
		return "\033[33m";
	if (strcmp(state, "disabled") == 0)
		return "\033[2m";
	return "\033[32m";
}

static void
print_human(FILE *out, const char *path, json_t *journal, struct target_status *ts, size_t n,
    int colour)
{
	const char *reset = colour ? "\033[0m" : "";
	int64_t bytes = json_integer_value(json_object_get(journal, "bytes"));

	fprintf(out, "journal   %s\n", path);
	fprintf(out, "          %" JSON_INTEGER_FORMAT " events (%" JSON_INTEGER_FORMAT
	    " superseded), %.1f MiB on disk, %" JSON_INTEGER_FORMAT " quarantined\n",
	    json_integer_value(json_object_get(journal, "events")),
	    json_integer_value(json_object_get(journal, "superseded")),
	    (double)bytes / (1024.0 * 1024.0),
	    json_integer_value(json_object_get(journal, "quarantined")));
	if (json_object_size(json_object_get(journal, "discarded")) > 0) {
		const char *k;
		json_t *v;
		int first = 1;

		fprintf(out, "          discarded by type:");
		json_object_foreach(json_object_get(journal, "discarded"), k, v) {
			fprintf(out, "%s %s: %" JSON_INTEGER_FORMAT, first ? "" : ",", k,
			    json_integer_value(v));
			first = 0;
		}
		fprintf(out, "\n");
	}
	if (json_integer_value(json_object_get(journal, "unknown_target")) > 0)
		fprintf(out, "          %" JSON_INTEGER_FORMAT " imported events wait for an unknown"
		    " target (sluice import --assign NAME)\n",
		    json_integer_value(json_object_get(journal, "unknown_target")));
	if (n == 0) {
		fprintf(out, "\nno targets: events stay in the journal (sluice target add NAME URL)\n");
		return;
	}
	fprintf(out, "\n%-12s %-12s %9s %8s %6s %6s %8s %9s\n", "TARGET", "STATE", "DELIVERED",
	    "PENDING", "RETRY", "FAILED", "OLDEST", "LAST OK");
	for (size_t i = 0; i < n; i++) {
		struct target *t = &ts[i].t;
		char oldest[32], ok[32], when[32], d[32];

		if (ts[i].oldest_undelivered_at)
			format_duration(now - ts[i].oldest_undelivered_at, oldest, sizeof oldest);
		else
			snprintf(oldest, sizeof oldest, "-");
		if (TARGET_IS_SNAPSHOT(t)) {
			char age[32];

			fprintf(out, "%-12.12s %s%-12s%s snapshot lag: %" PRId64 " events, %s\n", t->name,
			    paint(ts[i].state, colour), ts[i].state, reset, ts[i].lag_events,
			    ts[i].snapshot_at ? format_duration(ts[i].lag_ms, age, sizeof age) :
			    "no snapshot yet");
		} else {
			fprintf(out, "%-12.12s %s%-12s%s %9" PRId64 " %8" PRId64 " %6" PRId64 " %6" PRId64
			    " %8s %9s\n", t->name, paint(ts[i].state, colour), ts[i].state, reset,
			    ts[i].delivered, ts[i].pending, ts[i].retrying, ts[i].failed, oldest,
			    t->last_success_at ? format_duration(now - t->last_success_at, ok, sizeof ok) :
			    "never");
		}
		if (t->consecutive_failures > 0) {
			json_t *cats = t->last_categories ? json_loads(t->last_categories, 0, NULL) : NULL;
			const char *k;
			json_t *v;
			int first = 1;

			fprintf(out, "               %" PRId64 " failure%s since %s", t->consecutive_failures,
			    t->consecutive_failures == 1 ? "" : "s", short_time(t->failing_since, when));
			json_object_foreach(cats, k, v) {
				fprintf(out, "%s%s: %" JSON_INTEGER_FORMAT, first ? "; last run: " : ", ", k,
				    json_integer_value(v));
				first = 0;
			}
			if (first)
				fprintf(out, " (%s)", t->last_category ? t->last_category : "?");
			fprintf(out, "\n");
			json_decref(cats);
			if (t->last_error)
				fprintf(out, "               last error: %.50s\n", t->last_error);
			if (t->next_attempt_at > now)
				fprintf(out, "               next attempt in %s; now: sluice retry %s\n",
				    format_duration(t->next_attempt_at - now, d, sizeof d), t->name);
		}
		if (ts[i].failed > 0) {
			const char *k;
			json_t *v;
			int first = 1;

			fprintf(out, "               failed for good: ");
			json_object_foreach(ts[i].failed_categories, k, v) {
				fprintf(out, "%s%s: %" JSON_INTEGER_FORMAT, first ? "" : ", ", k,
				    json_integer_value(v));
				first = 0;
			}
			fprintf(out, " (sluice retry --failed %s)\n", t->name);
		}
		if (t->insecure)
			fprintf(out, "               %swarning: TLS is not verified (--insecure)%s\n",
			    colour ? "\033[33m" : "", reset);
	}
}

/* --check: one line per problem on stderr; the number of problems. */
static int
check(struct target_status *ts, size_t n, int64_t max_age, int64_t max_failed,
    int64_t max_snapshot_age)
{
	int problems = 0;
	char d[32];

	for (size_t i = 0; i < n; i++) {
		struct target *t = &ts[i].t;

		if (!t->enabled)
			continue;
		if (strcmp(ts[i].state, "FAILING") == 0) {
			warnmsg("%s is failing: %" PRId64 " failures in a row (%s)", t->name,
			    t->consecutive_failures, t->last_category ? t->last_category : "?");
			problems++;
		}
		if (ts[i].failed > max_failed) {
			warnmsg("%s has %" PRId64 " event%s failed for good (limit %" PRId64 ")", t->name,
			    ts[i].failed, ts[i].failed == 1 ? "" : "s", max_failed);
			problems++;
		}
		/* A journal unchanged since its last snapshot is not behind, however old. */
		if (max_snapshot_age >= 0 && TARGET_IS_SNAPSHOT(t) && ts[i].lag_ms > max_snapshot_age &&
		    (ts[i].lag_events > 0 || !ts[i].snapshot_at)) {
			char limit[32];

			format_duration(max_snapshot_age, limit, sizeof limit);
			if (ts[i].snapshot_at)
				warnmsg("%s: the last good snapshot is %s old and %" PRId64 " event%s behind"
				    " (limit %s)", t->name, format_duration(ts[i].lag_ms, d, sizeof d),
				    ts[i].lag_events, ts[i].lag_events == 1 ? "" : "s", limit);
			else
				warnmsg("%s: no snapshot yet, %s after the target was added (limit %s)",
				    t->name, format_duration(ts[i].lag_ms, d, sizeof d), limit);
			problems++;
		}
		if (max_age >= 0 && ts[i].oldest_undelivered_at &&
		    now - ts[i].oldest_undelivered_at > max_age) {
			char limit[32];

			warnmsg("%s has an undelivered event %s old (limit %s)", t->name,
			    format_duration(now - ts[i].oldest_undelivered_at, d, sizeof d),
			    format_duration(max_age, limit, sizeof limit));
			problems++;
		}
	}
	return problems;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "prometheus", no_argument, NULL, 'p' },
		{ "output", required_argument, NULL, 'o' },
		{ "check", no_argument, NULL, 'c' },
		{ "max-age", required_argument, NULL, 'a' },
		{ "max-failed", required_argument, NULL, 'f' },
		{ "max-snapshot-age", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *output = NULL, *path;
	int c, as_json = 0, prom = 0, do_check = 0, problems = 0, colour;
	int64_t max_age = -1, max_failed = 0, max_snapshot_age = -1;
	struct target_status *ts = NULL;
	size_t n = 0;
	json_t *journal;
	sqlite3_stmt *s;
	char sql[1024], tmp[4200];
	struct stat sb;
	int64_t bytes = 0, events;
	FILE *out = stdout;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:o:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 'j': as_json = 1; break;
		case 'p': prom = 1; break;
		case 'o': output = optarg; break;
		case 'c': do_check = 1; break;
		case 'a':
			if ((max_age = parse_duration(optarg)) < 0)
				usage_error(usage, "--max-age wants a duration such as 30m or 2h, not '%s'", optarg);
			break;
		case 's':
			if ((max_snapshot_age = parse_duration(optarg)) < 0)
				usage_error(usage, "--max-snapshot-age wants a duration such as 1h, not '%s'",
				    optarg);
			break;
		case 'f': max_failed = number_arg(usage, "--max-failed", optarg, 0); break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);
	if (as_json + prom > 1)
		usage_error(usage, "--json and --prometheus exclude each other");
	if (do_check && (as_json || prom || output))
		usage_error(usage, "--check prints problems only; it takes no --json, --prometheus"
		    " or --output");
	if (!do_check && (max_age >= 0 || max_failed > 0 || max_snapshot_age >= 0))
		usage_error(usage, "--max-age, --max-failed and --max-snapshot-age go with --check");

	path = journal_path(db_flag);
	db = db_open(path, DB_MUST_EXIST, NULL, NULL);
	now = now_ms();
	/* One read transaction: every count from the same moment. */
	db_exec(db, "BEGIN");
	/* Each count through an index (the gc'd, superseded and routed events
	 * have partial ones): never a scan of the events themselves. */
	events = db_int(db, "SELECT count(*) FROM events", 0);
	journal = json_pack("{s:I, s:I, s:I, s:I}",
	    "events", (json_int_t)events,
	    "retained", (json_int_t)(events - db_int(db, "SELECT count(*) FROM events"
	    " WHERE payload IS NULL", 0)),
	    "superseded", (json_int_t)db_int(db, "SELECT count(*) FROM events"
	    " WHERE superseded_by IS NOT NULL", 0),
	    "quarantined", (json_int_t)db_int(db, "SELECT count(*) FROM quarantine", 0));
	if (stat(path, &sb) == 0)
		bytes += sb.st_size;
	snprintf(tmp, sizeof tmp, "%s-wal", path);
	if (stat(tmp, &sb) == 0)
		bytes += sb.st_size;
	json_object_set_new(journal, "bytes", json_integer(bytes));
	json_object_set_new(journal, "unknown_target", json_integer(db_int(db,
	    "SELECT count(*) FROM events WHERE route = '?' AND payload IS NOT NULL", 0)));
	{
		json_t *discarded = json_object();

		s = db_prepare(db, "SELECT event_type, count FROM discards ORDER BY event_type");
		while (sqlite3_step(s) == SQLITE_ROW)
			json_object_set_new(discarded, (const char *)sqlite3_column_text(s, 0),
			    json_integer(sqlite3_column_int64(s, 1)));
		sqlite3_finalize(s);
		json_object_set_new(journal, "discarded", discarded);
	}

	snprintf(sql, sizeof sql, "SELECT %s FROM targets ORDER BY name", TARGET_COLUMNS);
	s = db_prepare(db, sql);
	while (sqlite3_step(s) == SQLITE_ROW) {
		ts = realloc(ts, (n + 1) * sizeof *ts);
		if (!ts)
			die(EXIT_SOFTWARE, "out of memory");
		memset(&ts[n], 0, sizeof ts[n]);
		target_from_row(s, &ts[n].t);
		gather(&ts[n]);
		n++;
	}
	sqlite3_finalize(s);
	db_exec(db, "COMMIT");

	if (do_check) {
		problems = check(ts, n, max_age, max_failed, max_snapshot_age);
	} else {
		if (output) {
			snprintf(tmp, sizeof tmp, "%s.tmp", output);
			out = fopen(tmp, "w");
			if (!out)
				die(EXIT_IOERR, "cannot write %s: %s", tmp, strerror(errno));
		}
		colour = !output && isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
		if (as_json)
			print_json(out, path, json_incref(journal), ts, n);
		else if (prom)
			print_prometheus(out, journal, ts, n);
		else
			print_human(out, path, journal, ts, n, colour);
		if (output) {
			if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0)
				die(EXIT_IOERR, "cannot write %s: %s", tmp, strerror(errno));
			if (rename(tmp, output) != 0)
				die(EXIT_IOERR, "cannot rename %s to %s: %s", tmp, output, strerror(errno));
		}
	}
	json_decref(journal);
	for (size_t i = 0; i < n; i++) {
		json_decref(ts[i].failed_categories);
		free(ts[i].snapshot_key);
		target_free(&ts[i].t);
	}
	free(ts);
	db_close(db);
	c = finish_stdout();
	if (c != EXIT_OK)
		return c;
	return problems ? EXIT_PROBLEM : EXIT_OK;
}
