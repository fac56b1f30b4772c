/* log.c - see log.h */
#include "log.h"
#include "exitcode.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

const char *progname = "sluice";
int log_verbose;

void
log_init(const char *argv0)
{
	const char *slash = argv0 ? strrchr(argv0, '/') : NULL;
	const char *verbose = getenv("SLUICE_VERBOSE");

	if (argv0)
		progname = slash ? slash + 1 : argv0;

	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* Our usage_error says what is wrong, once; getopt's own line would repeat it. */
	opterr = 0;
	if (verbose && *verbose == '1')
		log_verbose = 1;
}

static void
vmsg(const char *prefix, const char *fmt, va_list ap)
{
	char buf[2048];

	vsnprintf(buf, sizeof buf, fmt, ap);
	/* One line per diagnostic: a message never spans lines. */
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fprintf(stderr, "%s: %s%s\n", progname, prefix, buf);
}

void
warnmsg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
}

void
debugmsg(const char *fmt, ...)
{
	va_list ap;

	if (!log_verbose)
		return;
	va_start(ap, fmt);
	vmsg("debug: ", fmt, ap);
	va_end(ap);
}

void
die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("fatal: ", fmt, ap);
	va_end(ap);
	exit(status);
}

void
linemsg(const char *source, unsigned long line, const char *fmt, ...)
{
	char prefix[512];
	va_list ap;

	snprintf(prefix, sizeof prefix, "%s:%lu: ", source, line);
	va_start(ap, fmt);
	vmsg(prefix, fmt, ap);
	va_end(ap);
}

int
finish_stdout(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		warnmsg("cannot write standard output: %s", strerror(errno));
		return EXIT_IOERR;
	}
	return EXIT_OK;
}

void
print_help(const char *text)
{
	fputs(text, stdout);
	exit(finish_stdout());
}

void
print_version(void)
{
	printf("%s %s\n", progname, SLUICE_VERSION);
	exit(finish_stdout());
}

void
option_error(const char *text, char **argv)
{
	/* getopt has just stepped over the word it did not take. */
	usage_error(text, "unknown option, or one missing its value: %s",
	    optind > 0 ? argv[optind - 1] : "?");
}

long long
number_arg(const char *text, const char *name, const char *arg, long long min)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(arg, &end, 10);
	if (errno || *end || end == arg || v < min)
		usage_error(text, "%s wants a whole number >= %lld, not '%s'", name, min, arg);
	return v;
}

void
usage_error(const char *text, const char *fmt, ...)
{
	va_list ap;
	const char *nl;

	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
	/* The first line of the help text is the synopsis. */
	nl = strchr(text, '\n');
	fprintf(stderr, "%.*s\n", nl ? (int)(nl - text) : (int)strlen(text), text);
	/* sluice-status is run as `sluice status`: say it the way people type it. */
	if (strncmp(progname, "sluice-", 7) == 0)
		fprintf(stderr, "Try 'sluice %s --help' for more information.\n", progname + 7);
	else
		fprintf(stderr, "Try '%s --help' for more information.\n", progname);
	exit(EXIT_USAGE);
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die(EXIT_SOFTWARE, "out of memory");
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die(EXIT_SOFTWARE, "out of memory");
	return p;
}

char *
xstrdup(const char *s)
{
	return s ? xmemdup(s, strlen(s)) : NULL;
}

char *
xmemdup(const void *p, size_t n)
{
	char *d = xmalloc(n + 1);

	if (n)
		memcpy(d, p, n);
	d[n] = '\0';
	return d;
}
