/*
 * sluice-emit - append events, then try to deliver what is due; never block
 * the writer for long.
 *
 *   producer | sluice emit [journal-append options] [--drain-timeout 2s]
 *
 * Runs journal-append on standard input, then a drain of the enabled targets,
 * stopped after --drain-timeout (a stopped drain costs at most a resend). The
 * exit status is journal-append's alone: the events are safe in the journal
 * whatever the receivers do. A failing target adds one line on stderr:
 *
 *   sluice: prod is failing since 12:03 UTC (auth_expired); run 'sluice retry prod'
 *
 * No request is made beyond delivering what is due: no health probes, and
 * none at all when nothing is due.
 */
#include "clock.h"
#include "config.h"
#include "db.h"
#include "execpath.h"
#include "exitcode.h"
#include "log.h"
#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
"usage: sluice emit [-d PATH] [--drain-timeout DURATION] [--no-drain]\n"
"                   [journal-append options] < events.ndjson\n"
"\n"
"Append events to the journal, then deliver what is due, within a time limit.\n"
"\n"
"  -d, --db PATH             the journal\n"
"      --drain-timeout DUR   stop delivering after DUR (default 2s; setting drain_timeout)\n"
"      --no-drain            only append\n"
"  -h, --help                this help\n"
"  -V, --version             print the version\n"
"Every other option goes to journal-append (--report, --require, --source, ...).\n"
"\n"
"Exit: journal-append's status (0 appended, 64 usage, 65 some lines quarantined,\n"
"70, 73, 74, 75, 78); delivery problems are warnings, never the exit status.\n";

static pid_t
spawn(char **args, int quiet_stdout)
{
	pid_t pid = fork();

	if (pid < 0)
		die(EXIT_SOFTWARE, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (quiet_stdout) {
			int fd = open("/dev/null", O_WRONLY);

			if (fd >= 0) {
				dup2(fd, STDIN_FILENO);
				dup2(fd, STDOUT_FILENO);
				close(fd);
			}
			/* Its own process group, so the timeout can stop all of it. */
			setpgid(0, 0);
		}
		execv(args[0], args);
		fprintf(stderr, "%s: cannot run %s: %s\n", progname, args[0], strerror(errno));
		_exit(EXIT_SOFTWARE);
	}
	if (quiet_stdout)
		setpgid(pid, pid);
	return pid;
}

static int
exit_status_of(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	return 128 + WTERMSIG(wstatus);
}

/* Waits for the drain at most `ms`; then stops its whole process group. */
static void
wait_bounded(pid_t pid, int64_t ms)
{
	int64_t deadline = mono_ms() + ms;
	int wstatus;

	for (;;) {
		pid_t r = waitpid(pid, &wstatus, WNOHANG);
		struct timespec nap = { 0, 5 * 1000 * 1000 };

		if (r == pid || (r < 0 && errno != EINTR))
			return;
		if (mono_ms() >= deadline)
			break;
		nanosleep(&nap, NULL);
	}
	kill(-pid, SIGTERM);
	deadline = mono_ms() + 1000;
	while (waitpid(pid, &wstatus, WNOHANG) == 0) {
		struct timespec nap = { 0, 5 * 1000 * 1000 };

		if (mono_ms() >= deadline) {
			kill(-pid, SIGKILL);
			waitpid(pid, &wstatus, 0);
			break;
		}
		nanosleep(&nap, NULL);
	}
	debugmsg("the drain was stopped after %lld ms; the rest is delivered later", (long long)ms);
}

/* Runs in a child: whatever goes wrong reading the journal here must not
 * change emit's exit status, which is the append's. */
static void
warn_failing(const char *path)
{
	sqlite3 *db = db_open(path, DB_MUST_EXIST, NULL, NULL);
	char sql[1024];
	sqlite3_stmt *s;
	struct target t;

	snprintf(sql, sizeof sql, "SELECT %s FROM targets WHERE enabled AND consecutive_failures > 0"
	    " ORDER BY name", TARGET_COLUMNS);
	s = db_prepare(db, sql);
	while (sqlite3_step(s) == SQLITE_ROW) {
		char when[32];

		target_from_row(s, &t);
		format_time(t.failing_since, when);
		/* 2026-11-22T12:03:00.000Z -> 12:03 (UTC), as a person reads it */
		when[16] = '\0';
		fprintf(stderr, "sluice: %s is failing since %s UTC (%s); run 'sluice retry %s'\n",
		    t.name, when + 11, t.last_category ? t.last_category : "?", t.name);
		target_free(&t);
	}
	sqlite3_finalize(s);
	db_close(db);
}

int
main(int argc, char **argv)
{
	const char *db_flag = NULL, *timeout_flag = NULL, *path;
	char append[PATH_MAX], drain[PATH_MAX];
	char **args = calloc((size_t)argc + 4, sizeof *args);
	int n = 0, no_drain = 0, wstatus, status;
	int64_t timeout;
	pid_t pid;

	log_init(argv[0]);
	if (!args)
		die(EXIT_SOFTWARE, "out of memory");
	args[n++] = exec_program("journal-append", append, sizeof append);
	args[n++] = (char *)"--quiet";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			print_help(usage);
		if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0)
			print_version();
		if (strcmp(a, "--no-drain") == 0) {
			no_drain = 1;
		} else if (strcmp(a, "--drain-timeout") == 0 && i + 1 < argc) {
			timeout_flag = argv[++i];
		} else if (strncmp(a, "--drain-timeout=", 16) == 0) {
			timeout_flag = a + 16;
		} else if ((strcmp(a, "-d") == 0 || strcmp(a, "--db") == 0) && i + 1 < argc) {
			db_flag = argv[++i];
		} else if (strncmp(a, "--db=", 5) == 0) {
			db_flag = a + 5;
		} else {
			args[n++] = argv[i];
		}
	}
	timeout = parse_duration(setting_get("drain_timeout", timeout_flag, NULL));
	if (timeout < 0)
		usage_error(usage, "--drain-timeout wants a duration such as 2s or 500ms");
	path = journal_path(db_flag);
	args[n++] = (char *)"--db";
	args[n++] = (char *)path;

	fflush(stdout);
	pid = spawn(args, 0);
	if (waitpid(pid, &wstatus, 0) < 0)
		die(EXIT_SOFTWARE, "waitpid: %s", strerror(errno));
	status = exit_status_of(wstatus);
	free(args);
	/* Nothing was journaled if the journal could not be opened or written. */
	if (no_drain || (status != EXIT_OK && status != EXIT_DATAERR))
		return status;

	{
		char *dargs[] = { exec_program("drain", drain, sizeof drain), (char *)"--db",
		    (char *)path, (char *)"--quiet", NULL };

		pid = spawn(dargs, 1);
		wait_bounded(pid, timeout);
	}
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		warn_failing(path);
		_exit(0);
	}
	if (pid > 0)
		waitpid(pid, &wstatus, 0);
	return status;
}
