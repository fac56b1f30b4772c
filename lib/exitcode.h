/*
 * exitcode.h - the one table of exit statuses every sluice program uses.
 *
 * The values are sysexits(3)'s, so shell callers can rely on them and a
 * test (t/01-docs.bats) checks that each one is documented in every man page.
 */
#ifndef SLUICE_EXITCODE_H
#define SLUICE_EXITCODE_H

enum exit_status {
	EXIT_OK = 0,          /* all done */
	EXIT_PROBLEM = 1,     /* sluice status --check found a problem */
	EXIT_USAGE = 64,      /* bad command line */
	EXIT_DATAERR = 65,    /* bad input lines: quarantined or skipped, rest processed */
	EXIT_NOINPUT = 66,    /* journal missing for a program that only reads it */
	EXIT_UNAVAILABLE = 69,/* unknown target */
	EXIT_SOFTWARE = 70,   /* internal error */
	EXIT_CANTCREAT = 73,  /* cannot create the journal */
	EXIT_IOERR = 74,      /* I/O error, disk full; the open batch is rolled back */
	EXIT_TEMPFAIL = 75,   /* transient: retry later (backoff, busy journal, lock held) */
	EXIT_CONFIG = 78      /* configuration error: bad target, journal too new */
};

#endif
