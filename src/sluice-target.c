/*
 * sluice-target - add, change, list, show, remove, enable and disable receivers.
 *
 * A target is a receiver URL with its delivery settings. Its token is never
 * stored: only the name of the environment variable or the path of the file
 * that holds it. A URL with credentials in it is refused. A new target
 * receives every retained event, unless --no-backfill starts it at the
 * journal's current end.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"
#include "target.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
"usage: sluice target [-d PATH] add NAME URL [OPTIONS]\n"
"       sluice target [-d PATH] set NAME [URL] [OPTIONS]\n"
"       sluice target [-d PATH] list [--json] [--enabled] [--names] [--kind K]\n"
"       sluice target [-d PATH] show NAME [--json]\n"
"       sluice target [-d PATH] rm NAME\n"
"       sluice target [-d PATH] enable|disable NAME\n"
"\n"
"Manage the receivers events are delivered to.\n"
"\n"
"Options of add and set:\n"
"      --format F           batch (default), ndjson or json-array; or snapshot: a copy\n"
"                           of the whole journal PUT under the URL (object storage)\n"
"      --auth-env VAR       send 'Authorization: Bearer $VAR' (the token is never stored)\n"
"      --auth-file PATH     read the bearer token from PATH at each drain\n"
"      --no-auth            no Authorization header (set)\n"
"      --batch-events N     events per request (default 1000)\n"
"      --batch-bytes B      bytes per request body (default 4194304)\n"
"      --max-event-bytes B  larger events are never sent: failed, oversized (default 1048576)\n"
"      --timeout-ms T       total time per request; connecting gets at most 10 s of it\n"
"                           (default 10000)\n"
"      --gzip               gzip request bodies (Content-Encoding: gzip)\n"
"      --no-gzip            do not (set)\n"
"      --header 'N: V'      add a fixed header to every request (repeatable)\n"
"      --no-headers         drop the fixed headers (set)\n"
"      --cacert FILE        verify the receiver's certificate against FILE\n"
"      --insecure           do not verify TLS (shown by status as a warning)\n"
"      --max-rejections N   rejections before an event fails for good (default 10)\n"
"      --no-backfill        (add) start at the journal's end instead of every retained event\n"
"Options of snapshot targets:\n"
"      --s3-region R        the region S3 requests are signed for (default us-east-1;\n"
"                           signing needs the two key variables below)\n"
"      --s3-access-env VAR  the access key id comes from $VAR (never stored)\n"
"      --s3-secret-env VAR  the secret access key comes from $VAR (never stored)\n"
"      --min-interval DUR   at most one snapshot per DUR (default 0: on every change)\n"
"      --keep N             keep the newest N snapshots, remove older ones (default 0: all)\n"
"Other options:\n"
"  -d, --db PATH            the journal\n"
"      --json               machine-readable output (list, show)\n"
"      --enabled            list only enabled targets\n"
"      --names              list names only, one per line\n"
"      --kind K             list only targets of kind K: events or snapshot\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Names are 1-64 characters of a-z 0-9 _ -. Exit: 0, 64 usage, 66 no journal\n"
"(all but add), 69 unknown target, 70 internal error, 73 cannot create the\n"
"journal, 74 I/O error, 75 journal busy, 78 bad target settings.\n";

enum {
	O_FORMAT = 256, O_AUTH_ENV, O_AUTH_FILE, O_NO_AUTH, O_BATCH_EVENTS, O_BATCH_BYTES,
	O_MAX_EVENT, O_TIMEOUT, O_GZIP, O_NO_GZIP, O_HEADER, O_NO_HEADERS, O_CACERT,
	O_INSECURE, O_MAX_REJ, O_NO_BACKFILL, O_JSON, O_ENABLED, O_NAMES, O_KIND, O_S3_REGION,
	O_S3_ACCESS, O_S3_SECRET, O_MIN_INTERVAL, O_KEEP
};

struct settings {
	const char *format, *auth_env, *auth_file, *cacert, *s3_region, *s3_access_env, *s3_secret_env;
	int no_auth, gzip, no_gzip, insecure, no_headers, no_backfill;
	int64_t batch_events, batch_bytes, max_event_bytes, timeout_ms, max_rejections;
	int64_t min_interval_ms, keep;      /* -1: not given */
	int adding;                         /* the command is add */
	json_t *headers;
};

static void
check_url(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *user = NULL, *password = NULL;
	CURLUcode rc;

	if (!u)
		die(EXIT_SOFTWARE, "out of memory");
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
		die(EXIT_CONFIG, "'%s' is not a valid URL: %s", url, curl_url_strerror(rc));
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	curl_url_get(u, CURLUPART_PASSWORD, &password, 0);
	if (user || password)
		die(EXIT_CONFIG, "the URL carries credentials; refused (they would be stored in "
		    "the journal and shown in logs): use --auth-env or --auth-file");
	if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
		die(EXIT_CONFIG, "the URL must be http:// or https://");
	curl_free(scheme);
	curl_free(user);
	curl_free(password);
	curl_url_cleanup(u);
}

static void
check_env_name(const char *v)
{
	for (const char *p = v; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_' ||
		    (p > v && *p >= '0' && *p <= '9')))
			die(EXIT_CONFIG, "'%s' is not an environment variable name", v);
	if (!*v)
		die(EXIT_CONFIG, "empty environment variable name");
}

static void
check_settings(const struct settings *s)
{
	if (s->format && strcmp(s->format, "batch") != 0 && strcmp(s->format, "ndjson") != 0 &&
	    strcmp(s->format, "json-array") != 0 && strcmp(s->format, "snapshot") != 0)
		die(EXIT_CONFIG, "format must be batch, ndjson, json-array or snapshot, not '%s'",
		    s->format);
	if (!!s->s3_access_env != !!s->s3_secret_env)
		die(EXIT_CONFIG, "give both --s3-access-env and --s3-secret-env");
	if (s->s3_access_env) {
		check_env_name(s->s3_access_env);
		check_env_name(s->s3_secret_env);
	}
	/* add: the format given (batch by default) decides; set: the target's own. */
	if (s->adding && (!s->format || strcmp(s->format, "snapshot") != 0) && (s->s3_region ||
	    s->s3_access_env || s->min_interval_ms >= 0 || s->keep >= 0))
		die(EXIT_CONFIG, "--s3-*, --min-interval and --keep are for --format snapshot");
	if (s->auth_env && s->auth_file)
		die(EXIT_CONFIG, "give --auth-env or --auth-file, not both");
	if (s->auth_env)
		check_env_name(s->auth_env);
	if (s->auth_file && s->auth_file[0] != '/')
		die(EXIT_CONFIG, "--auth-file needs an absolute path");
	if (s->cacert && s->cacert[0] != '/')
		die(EXIT_CONFIG, "--cacert needs an absolute path");
	if (s->insecure && s->cacert)
		die(EXIT_CONFIG, "--insecure and --cacert contradict each other");
}


static void
print_json_target(const struct target *t)
{
	json_t *headers = json_loads(t->headers ? t->headers : "[]", 0, NULL);
	json_t *o = json_object();

	json_object_set_new(o, "name", json_string(t->name));
	json_object_set_new(o, "url", json_string(t->url));
	json_object_set_new(o, "format", json_string(t->format));
	json_object_set_new(o, "auth_env", json_text_or_null(t->auth_env));
	json_object_set_new(o, "auth_file", json_text_or_null(t->auth_file));
	json_object_set_new(o, "batch_events", json_integer(t->batch_events));
	json_object_set_new(o, "batch_bytes", json_integer(t->batch_bytes));
	json_object_set_new(o, "max_event_bytes", json_integer(t->max_event_bytes));
	json_object_set_new(o, "timeout_ms", json_integer(t->timeout_ms));
	json_object_set_new(o, "gzip", json_boolean(t->gzip));
	json_object_set_new(o, "headers", headers ? headers : json_array());
	json_object_set_new(o, "cacert", json_text_or_null(t->cacert));
	json_object_set_new(o, "insecure", json_boolean(t->insecure));
	json_object_set_new(o, "max_rejections", json_integer(t->max_rejections));
	json_object_set_new(o, "enabled", json_boolean(t->enabled));
	json_object_set_new(o, "cursor_seq", json_integer(t->cursor_seq));
	target_state_to_json(o, t);
	json_object_set_new(o, "created_at", json_time_or_null(t->created_at));
	if (TARGET_IS_SNAPSHOT(t)) {
		json_object_set_new(o, "s3_region", json_text_or_null(t->s3_region));
		json_object_set_new(o, "s3_access_env", json_text_or_null(t->s3_access_env));
		json_object_set_new(o, "s3_secret_env", json_text_or_null(t->s3_secret_env));
		json_object_set_new(o, "min_interval_ms", json_integer(t->min_interval_ms));
		json_object_set_new(o, "keep", json_integer(t->keep_snapshots));
	}
	json_write(stdout, o);
	putchar('\n');
	json_decref(o);
}

static void
print_human_target(const struct target *t)
{
	json_t *headers = json_loads(t->headers ? t->headers : "[]", 0, NULL);
	size_t i;
	json_t *h;
	char when[32];

	printf("name:             %s\n", t->name);
	printf("url:              %s\n", t->url);
	printf("format:           %s\n", t->format);
	if (TARGET_IS_SNAPSHOT(t)) {
		char d[32];

		if (t->s3_access_env)
			printf("s3:               SigV4, region %s, keys from $%s and $%s\n", t->s3_region,
			    t->s3_access_env, t->s3_secret_env);
		printf("min interval:     %s\n", t->min_interval_ms ?
		    format_duration(t->min_interval_ms, d, sizeof d) : "none (on every change)");
		if (t->keep_snapshots)
			printf("keep:             the newest %" PRId64 "\n", t->keep_snapshots);
		else
			printf("keep:             every snapshot\n");
	}
	if (t->auth_env)
		printf("auth:             bearer token from $%s\n", t->auth_env);
	else if (t->auth_file)
		printf("auth:             bearer token from file %s\n", t->auth_file);
	else
		printf("auth:             none\n");
	printf("batch:            %" PRId64 " events, %" PRId64 " bytes%s\n", t->batch_events,
	    t->batch_bytes, t->gzip ? ", gzip" : "");
	printf("max event size:   %" PRId64 " bytes\n", t->max_event_bytes);
	printf("timeout:          %" PRId64 " ms\n", t->timeout_ms);
	json_array_foreach(headers, i, h)
		printf("header:           %s\n", json_string_value(h));
	if (t->insecure)
		printf("tls:              NOT VERIFIED (--insecure)\n");
	else if (t->cacert)
		printf("tls:              verified against %s\n", t->cacert);
	else
		printf("tls:              verified (system CAs)\n");
	printf("max rejections:   %" PRId64 "\n", t->max_rejections);
	printf("enabled:          %s\n", t->enabled ? "yes" : "no");
	printf("cursor:           %" PRId64 "\n", t->cursor_seq);
	if (t->consecutive_failures) {
		printf("failing:          %" PRId64 " consecutive failures since %s (%s)\n",
		    t->consecutive_failures, format_time(t->failing_since, when),
		    t->last_category ? t->last_category : "?");
		if (t->last_error)
			printf("last error:       %s\n", t->last_error);
	}
	if (t->next_attempt_at)
		printf("next attempt:     %s\n", format_time(t->next_attempt_at, when));
	if (t->last_success_at)
		printf("last success:     %s\n", format_time(t->last_success_at, when));
	json_decref(headers);
}

/* Writes the settings given on the command line into target `name`. */
static void
apply_settings(sqlite3 *db, const char *name, const char *url, const struct settings *s)
{
	sqlite3_stmt *st = db_prepare(db,
	    "UPDATE targets SET url = coalesce(?2, url), format = coalesce(?3, format),"
	    " auth_env = CASE WHEN ?4 IS NOT NULL THEN ?4 WHEN ?5 IS NOT NULL OR ?6 THEN NULL"
	    "   ELSE auth_env END,"
	    " auth_file = CASE WHEN ?5 IS NOT NULL THEN ?5 WHEN ?4 IS NOT NULL OR ?6 THEN NULL"
	    "   ELSE auth_file END,"
	    " batch_events = coalesce(?7, batch_events), batch_bytes = coalesce(?8, batch_bytes),"
	    " max_event_bytes = coalesce(?9, max_event_bytes), timeout_ms = coalesce(?10, timeout_ms),"
	    " gzip = CASE WHEN ?11 THEN 1 WHEN ?12 THEN 0 ELSE gzip END,"
	    " headers = CASE WHEN ?13 IS NOT NULL THEN ?13 WHEN ?14 THEN '[]' ELSE headers END,"
	    " cacert = CASE WHEN ?15 IS NOT NULL THEN ?15 WHEN ?16 THEN NULL ELSE cacert END,"
	    " insecure = CASE WHEN ?16 THEN 1 WHEN ?15 IS NOT NULL THEN 0 ELSE insecure END,"
	    " max_rejections = coalesce(?17, max_rejections),"
	    " s3_region = coalesce(?18, s3_region), s3_access_env = coalesce(?19, s3_access_env),"
	    " s3_secret_env = coalesce(?20, s3_secret_env),"
	    " min_interval_ms = coalesce(?21, min_interval_ms),"
	    " keep_snapshots = coalesce(?22, keep_snapshots)"
	    " WHERE name = ?1");
	char *headers = s->headers && json_array_size(s->headers) ?
	    json_dumps(s->headers, JSON_COMPACT) : NULL;
	int rc;

	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	db_bind_text(st, 2, url);
	db_bind_text(st, 3, s->format);
	db_bind_text(st, 4, s->auth_env);
	db_bind_text(st, 5, s->auth_file);
	sqlite3_bind_int(st, 6, s->no_auth);
	if (s->batch_events) sqlite3_bind_int64(st, 7, s->batch_events);
	if (s->batch_bytes) sqlite3_bind_int64(st, 8, s->batch_bytes);
	if (s->max_event_bytes) sqlite3_bind_int64(st, 9, s->max_event_bytes);
	if (s->timeout_ms) sqlite3_bind_int64(st, 10, s->timeout_ms);
	sqlite3_bind_int(st, 11, s->gzip);
	sqlite3_bind_int(st, 12, s->no_gzip);
	db_bind_text(st, 13, headers);
	sqlite3_bind_int(st, 14, s->no_headers);
	db_bind_text(st, 15, s->cacert);
	sqlite3_bind_int(st, 16, s->insecure);
	if (s->max_rejections) sqlite3_bind_int64(st, 17, s->max_rejections);
	db_bind_text(st, 18, s->s3_region ? s->s3_region : s->s3_access_env && !s->s3_region ?
	    "us-east-1" : NULL);
	db_bind_text(st, 19, s->s3_access_env);
	db_bind_text(st, 20, s->s3_secret_env);
	if (s->min_interval_ms >= 0) sqlite3_bind_int64(st, 21, s->min_interval_ms);
	if (s->keep >= 0) sqlite3_bind_int64(st, 22, s->keep);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		db_die(db, rc, "cannot update target");
	sqlite3_finalize(st);
	free(headers);
}

static sqlite3 *
open_journal(const char *db_flag, enum db_mode mode)
{
	return db_open(journal_path(db_flag), mode, NULL, NULL);
}

static void
need_args(int have, int want, const char *what)
{
	if (have != want)
		usage_error(usage, "%s", what);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "format", required_argument, NULL, O_FORMAT },
		{ "auth-env", required_argument, NULL, O_AUTH_ENV },
		{ "auth-file", required_argument, NULL, O_AUTH_FILE },
		{ "no-auth", no_argument, NULL, O_NO_AUTH },
		{ "batch-events", required_argument, NULL, O_BATCH_EVENTS },
		{ "batch-bytes", required_argument, NULL, O_BATCH_BYTES },
		{ "max-event-bytes", required_argument, NULL, O_MAX_EVENT },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "gzip", no_argument, NULL, O_GZIP },
		{ "no-gzip", no_argument, NULL, O_NO_GZIP },
		{ "header", required_argument, NULL, O_HEADER },
		{ "no-headers", no_argument, NULL, O_NO_HEADERS },
		{ "cacert", required_argument, NULL, O_CACERT },
		{ "insecure", no_argument, NULL, O_INSECURE },
		{ "max-rejections", required_argument, NULL, O_MAX_REJ },
		{ "no-backfill", no_argument, NULL, O_NO_BACKFILL },
		{ "json", no_argument, NULL, O_JSON },
		{ "enabled", no_argument, NULL, O_ENABLED },
		{ "names", no_argument, NULL, O_NAMES },
		{ "kind", required_argument, NULL, O_KIND },
		{ "s3-region", required_argument, NULL, O_S3_REGION },
		{ "s3-access-env", required_argument, NULL, O_S3_ACCESS },
		{ "s3-secret-env", required_argument, NULL, O_S3_SECRET },
		{ "min-interval", required_argument, NULL, O_MIN_INTERVAL },
		{ "keep", required_argument, NULL, O_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct settings s = { .min_interval_ms = -1, .keep = -1 };
	const char *db_flag = NULL, *cmd, *kind = NULL;
	int c, as_json = 0, only_enabled = 0, names_only = 0, nargs;
	char **args;
	sqlite3 *db;
	struct target t;

	log_init(argv[0]);
	s.headers = json_array();
	while ((c = getopt_long(argc, argv, "d:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case O_FORMAT: s.format = optarg; break;
		case O_AUTH_ENV: s.auth_env = optarg; break;
		case O_AUTH_FILE: s.auth_file = optarg; break;
		case O_NO_AUTH: s.no_auth = 1; break;
		case O_BATCH_EVENTS: s.batch_events = number_arg(usage, "--batch-events", optarg, 1); break;
		case O_BATCH_BYTES: s.batch_bytes = number_arg(usage, "--batch-bytes", optarg, 1); break;
		case O_MAX_EVENT: s.max_event_bytes = number_arg(usage, "--max-event-bytes", optarg, 1); break;
		case O_TIMEOUT: s.timeout_ms = number_arg(usage, "--timeout-ms", optarg, 1); break;
		case O_GZIP: s.gzip = 1; break;
		case O_NO_GZIP: s.no_gzip = 1; break;
		case O_HEADER:
			if (!strchr(optarg, ':') || strchr(optarg, '\n') || strchr(optarg, '\r') ||
			    optarg[0] == ':')
				usage_error(usage, "--header wants 'Name: value', not '%s'", optarg);
			if (strncasecmp(optarg, "authorization:", 14) == 0)
				die(EXIT_CONFIG, "an Authorization header would store a secret in the "
				    "journal; use --auth-env or --auth-file");
			json_array_append_new(s.headers, json_string(optarg));
			break;
		case O_NO_HEADERS: s.no_headers = 1; break;
		case O_CACERT: s.cacert = optarg; break;
		case O_INSECURE: s.insecure = 1; break;
		case O_MAX_REJ: s.max_rejections = number_arg(usage, "--max-rejections", optarg, 1); break;
		case O_NO_BACKFILL: s.no_backfill = 1; break;
		case O_JSON: as_json = 1; break;
		case O_ENABLED: only_enabled = 1; break;
		case O_NAMES: names_only = 1; break;
		case O_KIND:
			if (strcmp(optarg, "events") != 0 && strcmp(optarg, "snapshot") != 0)
				usage_error(usage, "--kind is events or snapshot, not '%s'", optarg);
			kind = optarg;
			break;
		case O_S3_REGION: s.s3_region = optarg; break;
		case O_S3_ACCESS: s.s3_access_env = optarg; break;
		case O_S3_SECRET: s.s3_secret_env = optarg; break;
		case O_MIN_INTERVAL:
			if ((s.min_interval_ms = parse_duration(optarg)) < 0)
				usage_error(usage, "--min-interval wants a duration such as 10m, not '%s'",
				    optarg);
			break;
		case O_KEEP: s.keep = number_arg(usage, "--keep", optarg, 0); break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind >= argc)
		usage_error(usage, "no command given (add, set, list, show, rm, enable, disable)");
	cmd = argv[optind];
	args = argv + optind + 1;
	nargs = argc - optind - 1;
	s.adding = strcmp(cmd, "add") == 0;
	check_settings(&s);

	if (strcmp(cmd, "add") == 0) {
		sqlite3_stmt *st;
		int rc;

		need_args(nargs, 2, "add takes NAME URL");
		if (!target_name_valid(args[0]))
			usage_error(usage, "'%s' is not a valid target name ([a-z0-9_-], 1-64 "
			    "characters)", args[0]);
		check_url(args[1]);
		db = open_journal(db_flag, DB_CREATE);
		db_exec(db, "BEGIN IMMEDIATE");
		st = db_prepare(db, "INSERT INTO targets(name, url, created_at, cursor_seq)"
		    " VALUES (?, ?, ?, CASE WHEN ? THEN (SELECT coalesce(max(seq), 0) FROM events)"
		    " ELSE 0 END)");
		sqlite3_bind_text(st, 1, args[0], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, args[1], -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, now_ms());
		sqlite3_bind_int(st, 4, s.no_backfill);
		rc = sqlite3_step(st);
		if ((rc & 0xff) == SQLITE_CONSTRAINT)
			die(EXIT_CONFIG, "a target named '%s' exists already (sluice target set %s ...)",
			    args[0], args[0]);
		if (rc != SQLITE_DONE)
			db_die(db, rc, "cannot add target");
		sqlite3_finalize(st);
		apply_settings(db, args[0], NULL, &s);
		db_exec(db, "COMMIT");
	} else if (strcmp(cmd, "set") == 0) {
		if (nargs != 1 && nargs != 2)
			usage_error(usage, "set takes NAME [URL]");
		if (s.no_backfill)
			usage_error(usage, "--no-backfill only applies to add");
		if (nargs == 2)
			check_url(args[1]);
		db = open_journal(db_flag, DB_MUST_EXIST);
		db_exec(db, "BEGIN IMMEDIATE");
		target_load_or_die(db, args[0], &t);
		/* A target's kind never changes: events and snapshots are different ledgers. */
		if (s.format && (strcmp(s.format, "snapshot") == 0) != TARGET_IS_SNAPSHOT(&t))
			die(EXIT_CONFIG, "%s is %s target; its format cannot become %s (add a new target)",
			    t.name, TARGET_IS_SNAPSHOT(&t) ? "a snapshot" : "an event", s.format);
		if (!TARGET_IS_SNAPSHOT(&t) && (s.s3_region || s.s3_access_env || s.min_interval_ms >= 0 ||
		    s.keep >= 0))
			die(EXIT_CONFIG, "--s3-*, --min-interval and --keep are for snapshot targets");
		target_free(&t);
		apply_settings(db, args[0], nargs == 2 ? args[1] : NULL, &s);
		db_exec(db, "COMMIT");
	} else if (strcmp(cmd, "list") == 0) {
		char sql[1024];
		sqlite3_stmt *st;

		need_args(nargs, 0, "list takes no arguments");
		db = open_journal(db_flag, DB_MUST_EXIST);
		snprintf(sql, sizeof sql, "SELECT %s FROM targets WHERE (enabled OR NOT ?1) AND (?2 IS NULL"
		    " OR (?2 = 'snapshot') = (format = 'snapshot')) ORDER BY name", TARGET_COLUMNS);
		st = db_prepare(db, sql);
		sqlite3_bind_int(st, 1, only_enabled);
		db_bind_text(st, 2, kind);
		while ((c = sqlite3_step(st)) == SQLITE_ROW) {
			target_from_row(st, &t);
			if (as_json)
				print_json_target(&t);
			else if (names_only)
				printf("%s\n", t.name);
			else
				printf("%-20s %-8s %-10s %s%s\n", t.name, t.enabled ? "enabled" : "disabled",
				    t.format, t.url, t.insecure ? "  (TLS NOT VERIFIED)" : "");
			target_free(&t);
		}
		if (c != SQLITE_DONE)
			db_die(db, c, "cannot list targets");
	} else if (strcmp(cmd, "show") == 0) {
		need_args(nargs, 1, "show takes NAME");
		db = open_journal(db_flag, DB_MUST_EXIST);
		target_load_or_die(db, args[0], &t);
		if (as_json)
			print_json_target(&t);
		else
			print_human_target(&t);
		target_free(&t);
	} else if (strcmp(cmd, "rm") == 0) {
		sqlite3_stmt *st;

		need_args(nargs, 1, "rm takes NAME");
		db = open_journal(db_flag, DB_MUST_EXIST);
		db_exec(db, "BEGIN IMMEDIATE");
		target_load_or_die(db, args[0], &t);
		warnmsg("removed target %s and its %d ledger rows; no event was touched", t.name,
		    db_exec_id(db, "DELETE FROM deliveries WHERE target_id = ?", t.id,
		    "cannot remove target"));
		/* Events imported for it are not lost with it: they wait for an
		 * unknown target again (sluice import --assign). */
		st = db_prepare(db, "UPDATE events SET route = '?' WHERE route = ?");
		sqlite3_bind_text(st, 1, t.name, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			db_die(db, sqlite3_errcode(db), "cannot remove target");
		if (sqlite3_changes(db) > 0)
			warnmsg("%d events meant for %s only now wait for an unknown target "
			    "(sluice import --assign NAME)", sqlite3_changes(db), t.name);
		sqlite3_finalize(st);
		db_exec_id(db, "DELETE FROM snapshots WHERE target_id = ?", t.id, "cannot remove target");
		db_exec_id(db, "DELETE FROM runs WHERE target_id = ?", t.id, "cannot remove target");
		db_exec_id(db, "DELETE FROM targets WHERE id = ?", t.id, "cannot remove target");
		db_exec(db, "COMMIT");
		target_free(&t);
	} else if (strcmp(cmd, "enable") == 0 || strcmp(cmd, "disable") == 0) {
		sqlite3_stmt *st;

		need_args(nargs, 1, "enable and disable take NAME");
		db = open_journal(db_flag, DB_MUST_EXIST);
		target_load_or_die(db, args[0], &t);
		st = db_prepare(db, "UPDATE targets SET enabled = ? WHERE id = ?");
		sqlite3_bind_int(st, 1, strcmp(cmd, "enable") == 0);
		sqlite3_bind_int64(st, 2, t.id);
		if (sqlite3_step(st) != SQLITE_DONE)
			db_die(db, sqlite3_errcode(db), "cannot change target");
		sqlite3_finalize(st);
		target_free(&t);
	} else {
		usage_error(usage, "unknown command '%s'", cmd);
	}
	json_decref(s.headers);
	db_close(db);
	return finish_stdout();
}
