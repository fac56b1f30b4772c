/*
 * sluice - the front command: `sluice VERB ARGS...` runs the program for VERB.
 *
 * Like git, the work is done by separate programs: `sluice status` runs
 * sluice-status, `sluice drain` runs drain, `sluice post-batch` runs the
 * plumbing stage itself. They are looked for in $SLUICE_EXEC_PATH, else in
 * ../libexec/sluice next to this program (installed), else next to it (the
 * repository's bin/). The directory found is exported as SLUICE_EXEC_PATH so
 * the programs find each other the same way.
 */
#include "execpath.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
"usage: sluice [-d PATH] VERB [ARGS...]\n"
"\n"
"Keep events in a local journal and deliver them to HTTP receivers.\n"
"\n"
"Porcelain:\n"
"  emit          append events from stdin, then deliver what is due (bounded time)\n"
"  drain         deliver due events to every enabled target\n"
"  status        what is delivered, pending, failing, and why\n"
"  target        add, list, show, rm, enable, disable receivers\n"
"  retry         clear a target's backoff and drain now; re-queue failed events\n"
"  quarantine    list, show and export input lines that could not be journaled\n"
"  gc            archive and remove payloads delivered everywhere (explicit only)\n"
"  vacuum        reclaim disk space after gc\n"
"  import        migrate events from legacy offline-queue databases\n"
"  snapshot      push, list and restore copies of the journal in object storage\n"
"  config        print every setting, its value and where it came from\n"
"\n"
"Plumbing (the drain's stages, NDJSON on stdin and stdout):\n"
"  journal-append  select-undelivered  post-batch  classify  record-results\n"
"\n"
"  -d, --db PATH   the journal, passed on to VERB as --db PATH\n"
"  -h, --help      this help; `sluice VERB --help` for a verb's\n"
"  -V, --version   print the version\n";

static const char *const verbs[] = {
	"emit", "drain", "status", "target", "retry", "quarantine", "gc", "vacuum", "import", "snapshot",
	"config",
	"journal-append", "select-undelivered", "post-batch", "classify", "record-results", NULL
};

int
main(int argc, char **argv)
{
	char prog[PATH_MAX + 96];
	const char *db = NULL, *verb;
	const char *path;
	char **args;
	int i = 1, n = 0, known = 0;

	log_init(argv[0]);
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			print_help(usage);
		if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0)
			print_version();
		if ((strcmp(argv[i], "-d") == 0 || strcmp(argv[i], "--db") == 0) && i + 1 < argc) {
			db = argv[i + 1];
			i += 2;
		} else if (strncmp(argv[i], "--db=", 5) == 0) {
			db = argv[i] + 5;
			i++;
		} else if (strcmp(argv[i], "-d") == 0 || strcmp(argv[i], "--db") == 0) {
			usage_error(usage, "%s needs a journal path", argv[i]);
		} else {
			usage_error(usage, "unknown option '%s'", argv[i]);
		}
	}
	if (i >= argc)
		usage_error(usage, "no verb given");
	verb = argv[i++];
	if (strcmp(verb, "help") == 0)
		print_help(usage);
	for (const char *const *v = verbs; *v; v++)
		known |= strcmp(*v, verb) == 0;
	if (!known || strchr(verb, '/'))
		usage_error(usage, "'%s' is not a sluice verb", verb);

	path = exec_dir();
	if (setenv("SLUICE_EXEC_PATH", path, 1) != 0)
		die(EXIT_SOFTWARE, "setenv: %s", strerror(errno));
	/* Porcelain is sluice-VERB; plumbing and the driver go by their own names. */
	snprintf(prog, sizeof prog, "%s/sluice-%s", path, verb);
	if (access(prog, X_OK) != 0)
		snprintf(prog, sizeof prog, "%s/%s", path, verb);
	if (access(prog, X_OK) != 0)
		die(EXIT_SOFTWARE, "'%s' is a sluice verb but its program is not installed in %s",
		    verb, path);

	args = calloc((size_t)argc + 3, sizeof *args);
	if (!args)
		die(EXIT_SOFTWARE, "out of memory");
	args[n++] = prog;
	if (db) {
		args[n++] = (char *)"--db";
		args[n++] = (char *)db;
	}
	while (i < argc)
		args[n++] = argv[i++];
	execv(prog, args);
	die(EXIT_SOFTWARE, "cannot run %s: %s", prog, strerror(errno));
}
