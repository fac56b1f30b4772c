/*
 * log.h - diagnostics on stderr, always prefixed with the program's name.
 *
 *   journal-append: <stdin>:17: invalid JSON: '}' expected
 *   post-batch: fatal: cannot read token file /x: No such file or directory
 *
 * stdout is for data only; nothing here ever writes to it.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#define SLUICE_VERSION "0.1.0"

extern const char *progname;
extern int log_verbose;

/* Sets progname from argv[0] (its basename) and ignores SIGXFSZ and SIGPIPE
 * so that a full file or a closed reader surfaces as an error we report. */
void log_init(const char *argv0);

void warnmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void debugmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "prog: <source>:<line>: message" */
void linemsg(const char *source, unsigned long line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Allocations that cannot fail: running out of memory is fatal (70). */
void *xmalloc(size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);           /* NULL stays NULL */
char *xmemdup(const void *p, size_t n); /* n bytes, then a NUL */

/* Flushes and closes stdout; a failed write is an error of its own (74). */
int finish_stdout(void);

/* Prints the usage text (on stdout for --help, on stderr + exit 64 otherwise). */
_Noreturn void print_help(const char *text);
_Noreturn void print_version(void);
_Noreturn void usage_error(const char *text, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* After getopt returned '?': names the word it did not take; exits 64. */
_Noreturn void option_error(const char *text, char **argv);
/* A whole number >= min given for option `name`, or a usage error. */
long long number_arg(const char *text, const char *name, const char *arg, long long min);

#endif
