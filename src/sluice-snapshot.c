/*
 * sluice-snapshot - a consistent copy of the whole journal in object storage.
 *
 *   sluice snapshot push NAME       (what a drain runs for a snapshot target)
 *   sluice snapshot list NAME
 *   sluice snapshot restore NAME [--to PATH] [--key KEY] [--force]
 *
 * push: when the journal changed since the last good snapshot and the
 * target's --min-interval has passed, copy the journal with VACUUM INTO (a
 * consistent copy while appends go on), gzip it if asked, PUT it as
 * <prefix>/<journal>-<UTC time>-<seq>.db[.gz], then PUT the manifest
 * <prefix>/<journal>.latest.json. Only when both succeeded is the snapshot
 * recorded. Nothing changed: no request at all. A failure is classified like
 * a delivery's and backs off the target (exit 75); nothing waits on it.
 * S3 requests are signed by libcurl (CURLOPT_AWS_SIGV4) with keys from the
 * environment variables the target names; a plain HTTP PUT endpoint works too.
 *
 * restore: fetch the latest (or --key) snapshot, check its sha256 against the
 * manifest and run PRAGMA integrity_check, then move it to a new path; an
 * existing file is never replaced without --force. With --url (and the --s3
 * options) it needs no journal: the journal may be what was lost.
 */
#include "backoff.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "exitcode.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "target.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static const char usage[] =
"usage: sluice snapshot [-d PATH] push [--force] [-q] NAME\n"
"       sluice snapshot [-d PATH] list [--json] NAME\n"
"       sluice snapshot [-d PATH] restore [--to PATH] [--key KEY] [--force] NAME\n"
"       sluice snapshot list|restore --url URL [--s3-region R --s3-access-env VAR\n"
"                       --s3-secret-env VAR] [--journal-name N] ...\n"
"\n"
"Copy the whole journal to object storage; list and restore the copies.\n"
"\n"
"  -d, --db PATH            the journal\n"
"      --force              push: upload even if nothing changed or it is too soon;\n"
"                           restore: replace an existing file at --to\n"
"      --json               list: one JSON record per snapshot\n"
"  -q, --quiet              push: no line on stderr for a snapshot taken\n"
"  -v, --verbose            one line per request on stderr (credentials are never printed)\n"
"      --to PATH            restore: where to write (default: the journal's path)\n"
"      --key KEY            restore: this snapshot, not the latest\n"
"      --url URL            list, restore: the target's URL, when there is no journal\n"
"      --s3-region R        with --url: sign for S3 in region R\n"
"      --s3-access-env VAR  with --url: the access key id comes from $VAR\n"
"      --s3-secret-env VAR  with --url: the secret access key comes from $VAR\n"
"      --journal-name N     the journal's name in the keys (default: the journal's file\n"
"                           name without .db)\n"
"      --token-env VAR      with --url: a bearer token from $VAR (plain HTTP stores)\n"
"      --cacert FILE        with --url: verify TLS against FILE\n"
"      --insecure           with --url: do not verify TLS\n"
"  -h, --help               this help\n"
"  -V, --version            print the version\n"
"\n"
"Exit: 0, 64 usage, 65 a download failed its sha256 or integrity check,\n"
"66 no journal, 69 unknown target, 70 internal error, 73 cannot write the\n"
"restored file, 74 I/O error, 75 push failed (the target backs off) or journal\n"
"busy, 78 bad target settings (missing key variables, not a snapshot target).\n";

/* Where the objects are and how to reach them. */
struct store {
	char *prefix;            /* the URL without a trailing slash */
	const char *journal;     /* the journal's name in the keys */
	char *sigv4;             /* "aws:amz:REGION:s3", or NULL for plain HTTP */
	char *userpwd;           /* access:secret; wiped after use */
	char *token;             /* a bearer token, for plain HTTP */
	const char **headers;    /* the target's fixed headers */
	size_t nheaders;
	long timeout_ms;
	const char *cacert;
	int insecure;
};

struct response {
	long status;
	CURLcode code;
	char error[CURL_ERROR_SIZE];
	char etag[256];
	int64_t retry_after_ms;
	char *body;              /* small bodies only (the manifest) */
	size_t len;
	FILE *sink;              /* or the body goes here */
};

static CURL *curl;
static int quiet;

/* --- hashing and files --- */

static int
sha256_file(const char *path, char hex[65])
{
	gnutls_hash_hd_t h;
	unsigned char buf[65536], digest[32];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
		if (f)
			fclose(f);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		gnutls_hash(h, buf, n);
	gnutls_hash_deinit(h, digest);
	fclose(f);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	return 0;
}

static void
sha256_buf(const char *p, size_t n, char hex[65])
{
	unsigned char digest[32];

	gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n, digest);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/* Temporary files to remove if a signal stops us (a drain's timeout does). */
static char *temps[3];
static int handlers;

static void
remove_temps(void)
{
	for (int i = 0; i < 3; i++)
		if (temps[i])
			unlink(temps[i]);
}

static void
on_signal(int sig)
{
	remove_temps();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A new, empty 0600 file next to `near` (same file system), removed on
 * every exit, by die() too, and on SIGTERM, SIGINT or SIGHUP. */
static char *
temp_path(const char *near, const char *what)
{
	char *dir = strdup(near), *slash, *path;
	int fd;

	if (!dir)
		die(EXIT_SOFTWARE, "out of memory");
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	path = malloc(strlen(dir) + strlen(what) + 32);
	if (!path)
		die(EXIT_SOFTWARE, "out of memory");
	sprintf(path, "%s/.sluice-%s-XXXXXX", slash ? dir : ".", what);
	free(dir);
	fd = mkstemp(path);
	if (fd < 0)
		die(EXIT_IOERR, "cannot create a temporary file next to %s: %s", near, strerror(errno));
	close(fd);
	for (int i = 0; i < 3; i++)
		if (!temps[i]) {
			temps[i] = path;
			break;
		}
	if (!handlers) {
		atexit(remove_temps);
		signal(SIGTERM, on_signal);
		signal(SIGINT, on_signal);
		signal(SIGHUP, on_signal);
		handlers = 1;
	}
	return path;
}

static void
temp_done(char *path)
{
	if (!path)
		return;
	for (int i = 0; i < 3; i++)
		if (temps[i] == path)
			temps[i] = NULL;
	unlink(path);
	free(path);
}

static int
gzip_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	gzFile out = gzopen(to, "wb");
	char buf[65536];
	size_t n;
	int ok = in && out;

	while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
		ok = gzwrite(out, buf, (unsigned)n) == (int)n;
	if (in)
		fclose(in);
	if (out && gzclose(out) != Z_OK)
		ok = 0;
	return ok ? 0 : -1;
}

static int
gunzip_file(const char *from, const char *to)
{
	gzFile in = gzopen(from, "rb");
	FILE *out = fopen(to, "wb");
	char buf[65536];
	int n, ok = in && out;

	while (ok && (n = gzread(in, buf, sizeof buf)) > 0)
		ok = fwrite(buf, 1, (size_t)n, out) == (size_t)n;
	if (ok && n < 0)
		ok = 0;
	if (in)
		gzclose(in);
	if (out && fclose(out) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

/* --- HTTP, one handle for every request --- */

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct response *r = arg;
	size_t len = size * n;

	if (len > 5 && strncasecmp(p, "etag:", 5) == 0) {
		size_t start = 5, end = len;

		while (start < end && (p[start] == ' ' || p[start] == '\t'))
			start++;
		while (end > start && (p[end - 1] == '\r' || p[end - 1] == '\n' || p[end - 1] == ' '))
			end--;
		snprintf(r->etag, sizeof r->etag, "%.*s", (int)(end - start), p + start);
	}
	return len;
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct response *r = arg;
	size_t len = size * n;

	if (r->sink)
		return fwrite(p, 1, len, r->sink) == len ? len : 0;
	if (r->len + len > (16u << 20))
		return 0; /* bodies we keep are error messages and manifests: 16 MiB is wrong */
	r->body = realloc(r->body, r->len + len + 1);
	if (!r->body)
		die(EXIT_SOFTWARE, "out of memory");
	memcpy(r->body + r->len, p, len);
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

struct upload {
	const char *data;
	size_t len, off;
};

static size_t
on_read(char *p, size_t size, size_t n, void *arg)
{
	struct upload *u = arg;
	size_t len = size * n;

	if (len > u->len - u->off)
		len = u->len - u->off;
	memcpy(p, u->data + u->off, len);
	u->off += len;
	return len;
}

/* One request. A PUT sends a file (its sha256 given) or a buffer. */
static void
request(const struct store *s, const char *method, const char *key, FILE *file, int64_t size,
    const char *file_sha256, const char *buf, size_t buflen, const char *content_type,
    struct response *r)
{
	char url[8192], line[20100], hash[65], *escaped;
	struct curl_slist *headers = NULL;
	struct upload up = { buf, buflen, 0 };
	curl_off_t retry = 0;
	int put = strcmp(method, "PUT") == 0;

	r->status = 0;
	r->etag[0] = '\0';
	r->error[0] = '\0';
	r->retry_after_ms = -1;
	r->len = 0;
	/* A key is one path segment: the journal's file name may hold spaces
	 * or '%', which go into the URL escaped. */
	escaped = curl_easy_escape(curl, key, 0);
	if (!escaped)
		die(EXIT_SOFTWARE, "out of memory");
	snprintf(url, sizeof url, "%s/%s", s->prefix, escaped);
	curl_free(escaped);
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, s->timeout_ms < 10000 ? s->timeout_ms : 10000L);
	/* A journal can be big: give up on a stalled transfer, not a slow one. */
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, s->timeout_ms / 1000 > 0 ? s->timeout_ms / 1000 : 1L);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, r->error);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	/* Bodies over 1 MiB go with "Expect: 100-continue"; a server that never
	 * answers it must not cost a second per upload. */
	curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 100L);
	for (size_t i = 0; i < s->nheaders; i++)
		headers = curl_slist_append(headers, s->headers[i]);
	if (s->cacert)
		curl_easy_setopt(curl, CURLOPT_CAINFO, s->cacert);
	if (s->insecure) {
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (put) {
		curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
		if (file) {
			curl_easy_setopt(curl, CURLOPT_READDATA, file);
			curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
		} else {
			curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(curl, CURLOPT_READDATA, &up);
			curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)buflen);
		}
		snprintf(line, sizeof line, "Content-Type: %s", content_type);
		headers = curl_slist_append(headers, line);
	} else if (strcmp(method, "DELETE") == 0) {
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
	}
	if (s->sigv4) {
		/* libcurl signs the request; S3 also wants the body's hash in a header,
		 * which libcurl then signs with the rest. */
		if (put && file)
			snprintf(hash, sizeof hash, "%s", file_sha256);
		else
			sha256_buf(put ? buf : "", put ? buflen : 0, hash);
		snprintf(line, sizeof line, "x-amz-content-sha256: %s", hash);
		headers = curl_slist_append(headers, line);
		curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, s->sigv4);
		curl_easy_setopt(curl, CURLOPT_USERPWD, s->userpwd);
	} else if (s->token) {
		snprintf(line, sizeof line, "Authorization: Bearer %s", s->token);
		headers = curl_slist_append(headers, line);
		memset(line, 0, sizeof line);
	}
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	r->code = curl_easy_perform(curl);
	curl_slist_free_all(headers);
	if (r->code == CURLE_OK) {
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
		if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry) == CURLE_OK && retry > 0)
			r->retry_after_ms = (int64_t)retry * 1000;
	} else if (!r->error[0]) {
		snprintf(r->error, sizeof r->error, "%s", curl_easy_strerror(r->code));
	}
	debugmsg("%s %s: %s%ld", method, url, r->code == CURLE_OK ? "HTTP " : r->error,
	    r->code == CURLE_OK ? r->status : 0L);
}

/* A failed request: its category, as any delivery failure is named. */
static const char *
failure_category(const struct response *r)
{
	const char *c;

	if (r->code != CURLE_OK)
		return transport_category(transport_kind(r->code));
	c = http_batch_category(r->status);
	return c ? c : "client_error";
}

static int
ok(const struct response *r)
{
	return r->code == CURLE_OK && r->status >= 200 && r->status < 300;
}

static char *
env_or_die(const char *var, const char *what)
{
	const char *v = getenv(var);

	if (!v || !*v)
		die(EXIT_CONFIG, "the %s variable $%s is not set", what, var);
	return strdup(v);
}

static void
store_init(struct store *s, const char *url, const char *region, const char *access_env,
    const char *secret_env)
{
	size_t n = strlen(url);

	s->prefix = strdup(url);
	if (!s->prefix)
		die(EXIT_SOFTWARE, "out of memory");
	while (n > 0 && s->prefix[n - 1] == '/')
		s->prefix[--n] = '\0';
	if (access_env) {
		char *a = env_or_die(access_env, "S3 access key"), *k = env_or_die(secret_env, "S3 secret key");

		if (!region)
			region = "us-east-1";
		s->userpwd = malloc(strlen(a) + strlen(k) + 2);
		s->sigv4 = malloc(strlen(region) + 16);
		if (!s->userpwd || !s->sigv4)
			die(EXIT_SOFTWARE, "out of memory");
		sprintf(s->userpwd, "%s:%s", a, k);
		sprintf(s->sigv4, "aws:amz:%s:s3", region);
		memset(k, 0, strlen(k));
		free(a);
		free(k);
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init()))
		die(EXIT_SOFTWARE, "cannot initialize libcurl");
}

static void
store_free(struct store *s)
{
	if (s->userpwd)
		memset(s->userpwd, 0, strlen(s->userpwd));
	if (s->token)
		memset(s->token, 0, strlen(s->token));
	free(s->prefix);
	free(s->sigv4);
	free(s->userpwd);
	free(s->token);
	if (curl) {
		curl_easy_cleanup(curl);
		curl_global_cleanup();
	}
}

/* The journal's name in object keys: its file name without .db. */
static char *
journal_name(const char *path)
{
	const char *base = strrchr(path, '/');
	char *name = strdup(base ? base + 1 : path);
	size_t n;

	if (!name)
		die(EXIT_SOFTWARE, "out of memory");
	n = strlen(name);
	if (n > 3 && strcmp(name + n - 3, ".db") == 0)
		name[n - 3] = '\0';
	return name;
}

/* What the journal looks like, cheaply: when this is unchanged since the last
 * snapshot, there is nothing new to copy. It covers appends, the quarantine,
 * discards and every delivery target's progress (cursor, last success); a gc
 * or a rejection alone shows in the next snapshot taken for another reason. */
static char *
fingerprint(sqlite3 *db)
{
	sqlite3_stmt *s = db_prepare(db,
	    "SELECT coalesce((SELECT max(seq) FROM events), 0) || '/' ||"
	    " coalesce((SELECT max(id) FROM quarantine), 0) || '/' ||"
	    " (SELECT count(*) FROM quarantine) || '/' ||"
	    " coalesce((SELECT sum(count) FROM discards), 0) || '/' ||"
	    " coalesce((SELECT group_concat(id || ':' || cursor_seq || ':' || enabled || ':' ||"
	    "   coalesce(last_success_at, 0), ',') FROM targets WHERE format <> 'snapshot'), '')");
	char *f = NULL;

	if (sqlite3_step(s) == SQLITE_ROW)
		f = db_column_strdup(s, 0);
	sqlite3_finalize(s);
	if (!f)
		db_die(db, sqlite3_errcode(db), "cannot read the journal");
	return f;
}

#define MANIFEST_MAX 1000   /* snapshots listed in the manifest, newest first */

/* The manifest: the latest snapshot's facts, then the snapshots kept (the
 * newest MANIFEST_MAX). `latest` is the one being uploaded, not yet recorded. */
static char *
manifest(sqlite3 *db, const struct target *t, const char *journal, json_t *latest)
{
	sqlite3_stmt *s = db_prepare(db, "SELECT key, seq, bytes, sha256, created_at, gzip FROM"
	    " snapshots WHERE target_id = ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ?");
	json_t *doc = json_object(), *all = json_array();
	int64_t limit = t->keep_snapshots ? t->keep_snapshots : MANIFEST_MAX;
	char when[32], *text;

	json_object_set_new(doc, "journal", json_string(journal));
	json_object_update(doc, latest);
	json_array_append(all, latest);
	sqlite3_bind_int64(s, 1, t->id);
	sqlite3_bind_int64(s, 2, limit - 1);
	while (sqlite3_step(s) == SQLITE_ROW)
		json_array_append_new(all, json_pack("{s:s, s:I, s:I, s:s, s:s, s:b}",
		    "key", sqlite3_column_text(s, 0), "seq", (json_int_t)sqlite3_column_int64(s, 1),
		    "size", (json_int_t)sqlite3_column_int64(s, 2), "sha256", sqlite3_column_text(s, 3),
		    "created_at", format_time(sqlite3_column_int64(s, 4), when),
		    "gzip", sqlite3_column_int(s, 5)));
	sqlite3_finalize(s);
	json_object_set_new(doc, "snapshots", all);
	text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return text;
}

/* --keep: remove what is beyond the newest N, after a good upload. */
static void
apply_retention(sqlite3 *db, const struct target *t, struct store *st, int64_t now)
{
	sqlite3_stmt *old = db_prepare(db, "SELECT id, key FROM snapshots WHERE target_id = ?"
	    " AND deleted_at IS NULL ORDER BY id DESC LIMIT -1 OFFSET ?");
	sqlite3_stmt *gone = db_prepare(db, "UPDATE snapshots SET deleted_at = ? WHERE id = ?");
	struct response r = { 0 };
	int64_t ids[256];
	char *keys[256];
	int n = 0;

	/* Collect first: no statement stays open across the network. */
	sqlite3_bind_int64(old, 1, t->id);
	sqlite3_bind_int64(old, 2, t->keep_snapshots);
	while (n < 256 && sqlite3_step(old) == SQLITE_ROW) {
		ids[n] = sqlite3_column_int64(old, 0);
		keys[n++] = db_column_strdup(old, 1);
	}
	sqlite3_finalize(old);
	for (int i = 0; i < n; i++) {
		request(st, "DELETE", keys[i], NULL, 0, NULL, NULL, 0, NULL, &r);
		if (ok(&r) || (r.code == CURLE_OK && r.status == 404)) {
			sqlite3_bind_int64(gone, 1, now);
			sqlite3_bind_int64(gone, 2, ids[i]);
			if (sqlite3_step(gone) != SQLITE_DONE)
				db_die(db, sqlite3_errcode(db), "cannot record a removal");
			sqlite3_reset(gone);
		} else {
			warnmsg("%s: cannot remove old snapshot %s (%s); trying again next time", t->name,
			    keys[i], failure_category(&r));
		}
		free(keys[i]);
	}
	sqlite3_finalize(gone);
	free(r.body);
}

static void
store_for_target(struct store *st, const struct target *t, json_t **headers_json)
{
	json_t *h;
	size_t i;

	store_init(st, t->url, t->s3_region, t->s3_access_env, t->s3_secret_env);
	st->timeout_ms = (long)t->timeout_ms;
	st->cacert = t->cacert;
	st->insecure = t->insecure;
	if (!st->sigv4)
		st->token = target_token(t);
	*headers_json = json_loads(t->headers ? t->headers : "[]", 0, NULL);
	st->headers = calloc(json_array_size(*headers_json) + 1, sizeof *st->headers);
	if (!st->headers)
		die(EXIT_SOFTWARE, "out of memory");
	json_array_foreach(*headers_json, i, h)
		if (json_is_string(h))
			st->headers[st->nheaders++] = json_string_value(h);
}

static int
push(sqlite3 *db, const char *path, const char *name, const char *jname, int force)
{
	struct target t;
	struct store st = { 0 };
	struct response r = { 0 };
	char *fp, *journal = NULL, *copy = NULL, *upload = NULL, *text = NULL, key[512], sha[65];
	char when[32], mkey[512];
	int64_t now = now_ms(), seq, bytes, last_at = 0, next;
	json_t *headers = NULL, *latest;
	sqlite3_stmt *s;
	sqlite3 *c;
	struct stat sb;
	FILE *f;
	int status = EXIT_OK, same = 0;

	target_load_or_die(db, name, &t);
	if (!TARGET_IS_SNAPSHOT(&t))
		die(EXIT_CONFIG, "%s is not a snapshot target (format %s)", t.name, t.format);
	if (!t.enabled) {
		if (!quiet)
			warnmsg("%s is disabled; no snapshot", t.name);
		target_free(&t);
		return EXIT_OK;
	}
	if (t.next_attempt_at > now && !force) {
		if (!quiet)
			warnmsg("%s is backing off until %s (%s)", t.name,
			    format_time(t.next_attempt_at, when), t.last_category ? t.last_category : "?");
		target_free(&t);
		return EXIT_TEMPFAIL;
	}
	fp = fingerprint(db);
	s = db_prepare(db, "SELECT fingerprint, created_at FROM snapshots WHERE target_id = ?"
	    " AND deleted_at IS NULL ORDER BY id DESC LIMIT 1");
	sqlite3_bind_int64(s, 1, t.id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		same = strcmp((const char *)sqlite3_column_text(s, 0), fp) == 0;
		last_at = sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	if (!force && same) {
		debugmsg("%s: the journal has not changed since the last snapshot", t.name);
		goto out;
	}
	if (!force && last_at && now - last_at < t.min_interval_ms) {
		debugmsg("%s: the last snapshot is younger than --min-interval", t.name);
		goto out;
	}

	/* A consistent copy while appends go on, into a file that was 0600 and
	 * empty from the start (VACUUM INTO accepts an empty file). */
	copy = temp_path(path, "snapshot");
	s = db_prepare(db, "VACUUM INTO ?");
	sqlite3_bind_text(s, 1, copy, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		db_die(db, sqlite3_errcode(db), "cannot copy the journal");
	sqlite3_finalize(s);
	if (sqlite3_open_v2(copy, &c, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		die(EXIT_IOERR, "cannot open the copy %s", copy);
	seq = db_int(c, "SELECT coalesce(max(seq), 0) FROM events", 0);
	sqlite3_close(c);
	upload = copy;
	if (t.gzip) {
		upload = temp_path(path, "snapshot-gz");
		if (gzip_file(copy, upload) != 0)
			die(EXIT_IOERR, "cannot gzip the copy of the journal");
	}
	if (stat(upload, &sb) != 0 || sha256_file(upload, sha) != 0)
		die(EXIT_IOERR, "cannot read the copy %s: %s", upload, strerror(errno));
	bytes = sb.st_size;

	journal = journal_name(jname ? jname : path);
	{
		/* Milliseconds in the key: two snapshots never share one. */
		time_t secs = (time_t)(now / 1000);
		struct tm tm;
		char stamp[32];

		gmtime_r(&secs, &tm);
		strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
		snprintf(key, sizeof key, "%s-%s.%03dZ-%" PRId64 ".db%s", journal, stamp,
		    (int)(now % 1000), seq, t.gzip ? ".gz" : "");
	}
	store_for_target(&st, &t, &headers);
	st.journal = journal;
	latest = json_pack("{s:s, s:I, s:I, s:s, s:s, s:b}", "key", key, "seq", (json_int_t)seq,
	    "size", (json_int_t)bytes, "sha256", sha, "created_at", format_time(now, when),
	    "gzip", t.gzip);
	text = manifest(db, &t, journal, latest);
	json_decref(latest);

	/* The object, then the manifest; no transaction is open meanwhile, so
	 * nothing here ever holds up a writer. */
	f = fopen(upload, "rb");
	if (!f)
		die(EXIT_IOERR, "cannot read %s: %s", upload, strerror(errno));
	request(&st, "PUT", key, f, bytes, sha, NULL, 0,
	    t.gzip ? "application/gzip" : "application/vnd.sqlite3", &r);
	fclose(f);
	if (ok(&r)) {
		char etag[256];

		snprintf(etag, sizeof etag, "%s", r.etag);
		snprintf(mkey, sizeof mkey, "%s.latest.json", journal);
		request(&st, "PUT", mkey, NULL, 0, NULL, text, strlen(text), "application/json", &r);
		if (ok(&r)) {
			/* Both landed: only now is it recorded. */
			db_exec(db, "BEGIN IMMEDIATE");
			s = db_prepare(db, "INSERT INTO snapshots(target_id, key, seq, bytes, sha256, etag,"
			    " fingerprint, gzip, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
			sqlite3_bind_int64(s, 1, t.id);
			sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 3, seq);
			sqlite3_bind_int64(s, 4, bytes);
			sqlite3_bind_text(s, 5, sha, -1, SQLITE_STATIC);
			db_bind_text(s, 6, etag[0] ? etag : NULL);
			sqlite3_bind_text(s, 7, fp, -1, SQLITE_STATIC);
			sqlite3_bind_int(s, 8, t.gzip);
			sqlite3_bind_int64(s, 9, now);
			if (sqlite3_step(s) != SQLITE_DONE)
				db_die(db, sqlite3_errcode(db), "cannot record the snapshot");
			sqlite3_finalize(s);
			target_record_success(db, t.id, now);
			db_exec(db, "COMMIT");
			if (!quiet)
				warnmsg("%s: snapshot %s (%" PRId64 " bytes, seq %" PRId64 ")", t.name, key,
				    bytes, seq);
			if (t.keep_snapshots > 0)
				apply_retention(db, &t, &st, now);
			goto out;
		}
	}
	{
		const char *cat = failure_category(&r);
		char error[CURL_ERROR_SIZE + 64];

		if (r.code != CURLE_OK)
			snprintf(error, sizeof error, "%s", r.error);
		else
			snprintf(error, sizeof error, "HTTP %ld", r.status);
		next = target_record_failure(db, t.id, t.consecutive_failures, now, cat, error,
		    r.code == CURLE_OK ? r.status : 0, r.retry_after_ms);
		warnmsg("%s: snapshot failed (%s: %s); backing off until %s", t.name, cat, error,
		    format_time(next, when));
		status = EXIT_TEMPFAIL;
	}
out:
	if (upload != copy)
		temp_done(upload);
	temp_done(copy);
	store_free(&st);
	free(st.headers);
	json_decref(headers);
	free(journal);
	free(text);
	free(r.body);
	free(fp);
	target_free(&t);
	return status;
}

/* A fetch that failed: 66 when there is nothing there, else 75 (try later). */
static int
fetch_status(const struct response *r)
{
	return r->code == CURLE_OK && r->status == 404 ? EXIT_NOINPUT : EXIT_TEMPFAIL;
}

/* Fetches and parses the manifest, or dies. */
static json_t *
get_manifest(struct store *st)
{
	struct response r = { 0 };
	char mkey[512];
	json_t *m;

	snprintf(mkey, sizeof mkey, "%s.latest.json", st->journal);
	request(st, "GET", mkey, NULL, 0, NULL, NULL, 0, NULL, &r);
	if (!ok(&r))
		die(fetch_status(&r), "cannot get the manifest %s: %s", mkey, r.code != CURLE_OK ? r.error :
		    r.status == 404 ? "there is none (no snapshot yet?)" : failure_category(&r));
	m = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
	free(r.body);
	if (!json_is_object(m) || !json_is_array(json_object_get(m, "snapshots")))
		die(EXIT_DATAERR, "the manifest %s is not a sluice manifest", mkey);
	return m;
}

static int
list(struct store *st, int as_json)
{
	json_t *m = get_manifest(st), *one;
	size_t i;

	json_array_foreach(json_object_get(m, "snapshots"), i, one) {
		if (as_json) {
			json_write(stdout, one);
			putchar('\n');
		} else {
			printf("%s\t%" JSON_INTEGER_FORMAT "\t%" JSON_INTEGER_FORMAT "\t%s\n",
			    json_str(one, "key"), json_integer_value(json_object_get(one, "seq")),
			    json_integer_value(json_object_get(one, "size")), json_str(one, "created_at"));
		}
	}
	json_decref(m);
	return EXIT_OK;
}

static int
restore(struct store *st, const char *key, const char *to, int force)
{
	json_t *m = get_manifest(st), *one, *chosen = NULL;
	struct response r = { 0 };
	char *download, *plain, sha[65];
	size_t i;
	sqlite3 *c;
	char *check = NULL;
	FILE *f;

	json_array_foreach(json_object_get(m, "snapshots"), i, one)
		if (!chosen && (!key || strcmp(json_str(one, "key"), key) == 0))
			chosen = one;
	if (!chosen)
		die(EXIT_DATAERR, "the manifest lists no snapshot %s", key ? key : "at all");
	if (access(to, F_OK) == 0 && !force)
		die(EXIT_CANTCREAT, "%s exists; restoring never replaces a file without --force", to);
	if (make_private_dirs(to) != 0)
		die(EXIT_CANTCREAT, "cannot create the directory for %s: %s", to, strerror(errno));

	download = temp_path(to, "restore");
	f = fopen(download, "wb");
	if (!f)
		die(EXIT_CANTCREAT, "cannot write %s: %s", download, strerror(errno));
	r.sink = f;
	request(st, "GET", json_str(chosen, "key"), NULL, 0, NULL, NULL, 0, NULL, &r);
	if (fclose(f) != 0 || !ok(&r)) {
		die(fetch_status(&r), "cannot get %s: %s", json_str(chosen, "key"), r.code != CURLE_OK ? r.error :
		    failure_category(&r));
	}
	if (sha256_file(download, sha) != 0 || strcmp(sha, json_str(chosen, "sha256")) != 0) {
		die(EXIT_DATAERR, "%s: sha256 %s does not match the manifest's %s; nothing written",
		    json_str(chosen, "key"), sha, json_str(chosen, "sha256"));
	}
	plain = download;
	if (json_is_true(json_object_get(chosen, "gzip"))) {
		plain = temp_path(to, "restore-db");
		if (gunzip_file(download, plain) != 0)
			die(EXIT_DATAERR, "%s: cannot gunzip; nothing written", json_str(chosen, "key"));
		temp_done(download);
	}
	if (sqlite3_open_v2(plain, &c, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		sqlite3_stmt *s;

		if (sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK) {
			if (sqlite3_step(s) == SQLITE_ROW)
				check = db_column_strdup(s, 0);
			sqlite3_finalize(s);
		}
	}
	sqlite3_close(c);
	if (!check || strcmp(check, "ok") != 0) {
		die(EXIT_DATAERR, "%s: integrity_check says %s; nothing written",
		    json_str(chosen, "key"), check ? check : "it is not a database");
	}
	free(check);
	chmod(plain, 0600);
	{
		/* An old journal's write-ahead log would be replayed onto the restored
		 * file: it goes with the file it belonged to. */
		char side[PATH_MAX + 8];

		snprintf(side, sizeof side, "%s-wal", to);
		unlink(side);
		snprintf(side, sizeof side, "%s-shm", to);
		unlink(side);
	}
	if (rename(plain, to) != 0)
		die(EXIT_CANTCREAT, "cannot move the restored journal to %s: %s", to, strerror(errno));
	warnmsg("restored %s (seq %" JSON_INTEGER_FORMAT ", sha256 ok, integrity ok) to %s",
	    json_str(chosen, "key"), json_integer_value(json_object_get(chosen, "seq")), to);
	printf("%s\n", to);
	for (int k = 0; k < 3; k++)
		if (temps[k] == plain)
			temps[k] = NULL;
	free(plain);
	json_decref(m);
	return EXIT_OK;
}

int
main(int argc, char **argv)
{
	enum { O_FORCE = 256, O_JSON, O_TO, O_KEY, O_URL, O_REGION, O_ACCESS, O_SECRET, O_NAME,
		O_TOKEN, O_CACERT, O_INSECURE };
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "force", no_argument, NULL, O_FORCE },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "to", required_argument, NULL, O_TO },
		{ "key", required_argument, NULL, O_KEY },
		{ "url", required_argument, NULL, O_URL },
		{ "s3-region", required_argument, NULL, O_REGION },
		{ "s3-access-env", required_argument, NULL, O_ACCESS },
		{ "s3-secret-env", required_argument, NULL, O_SECRET },
		{ "journal-name", required_argument, NULL, O_NAME },
		{ "token-env", required_argument, NULL, O_TOKEN },
		{ "cacert", required_argument, NULL, O_CACERT },
		{ "insecure", no_argument, NULL, O_INSECURE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db_flag = NULL, *to = NULL, *key = NULL, *url = NULL, *region = NULL;
	const char *access = NULL, *secret = NULL, *jname = NULL, *cmd, *path;
	const char *token_env = NULL, *cacert = NULL;
	int c, force = 0, as_json = 0, status, insecure = 0;
	struct store st = { 0 };
	struct target t;
	sqlite3 *db = NULL;
	char *journal = NULL;
	json_t *headers = NULL;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db_flag = optarg; break;
		case 'q': quiet = 1; break;
		case 'v': log_verbose = 1; break;
		case O_FORCE: force = 1; break;
		case O_JSON: as_json = 1; break;
		case O_TO: to = optarg; break;
		case O_KEY: key = optarg; break;
		case O_URL: url = optarg; break;
		case O_REGION: region = optarg; break;
		case O_ACCESS: access = optarg; break;
		case O_SECRET: secret = optarg; break;
		case O_NAME: jname = optarg; break;
		case O_TOKEN: token_env = optarg; break;
		case O_CACERT: cacert = optarg; break;
		case O_INSECURE: insecure = 1; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind >= argc)
		usage_error(usage, "no command given (push, list, restore)");
	cmd = argv[optind++];
	if (strcmp(cmd, "push") != 0 && strcmp(cmd, "list") != 0 && strcmp(cmd, "restore") != 0)
		usage_error(usage, "unknown command '%s' (push, list, restore)", cmd);
	if (url ? optind != argc : optind + 1 != argc)
		usage_error(usage, url ? "with --url, give no target name" : "give one target NAME");
	if (!!access != !!secret)
		usage_error(usage, "give both --s3-access-env and --s3-secret-env");
	path = journal_path(db_flag);

	if (strcmp(cmd, "push") == 0) {
		if (url)
			usage_error(usage, "push works from the journal's target, not --url");
		db = db_open(path, DB_MUST_EXIST, NULL, NULL);
		status = push(db, path, argv[optind], jname, force);
		db_close(db);
		c = finish_stdout();
		return c != EXIT_OK ? c : status;
	}
	if (!url && (token_env || cacert || insecure))
		usage_error(usage, "--token-env, --cacert and --insecure go with --url");
	if (url) {
		store_init(&st, url, region, access, secret);
		journal = journal_name(path);
		st.journal = jname ? jname : journal;
		st.timeout_ms = 30000;
		st.cacert = cacert;
		st.insecure = insecure;
		if (token_env)
			st.token = env_or_die(token_env, "token");
	} else {
		db = db_open(path, DB_MUST_EXIST, NULL, NULL);
		target_load_or_die(db, argv[optind], &t);
		if (!TARGET_IS_SNAPSHOT(&t))
			die(EXIT_CONFIG, "%s is not a snapshot target", t.name);
		store_for_target(&st, &t, &headers);
		journal = journal_name(path);
		st.journal = jname ? jname : journal;
		target_free(&t);
		db_close(db);
	}
	if (strcmp(cmd, "list") == 0)
		status = list(&st, as_json);
	else
		status = restore(&st, key, to ? to : path, force);
	store_free(&st);
	free(st.headers);
	json_decref(headers);
	free(journal);
	c = finish_stdout();
	return c != EXIT_OK ? c : status;
}
