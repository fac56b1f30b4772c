/*
 * glue-classify.c - classify's record handling, for the fuzz harnesses.
 *
 * Compiled with -Dmain=classify_main, so that src/classify.c can be included
 * whole and its static functions reached from here: classify_line() is what
 * classify's main loop does with one input line.
 */
#include "../../src/classify.c"

#include "glue.h"

static struct classifier fuzz_classifier;

int
classify_line(const char *data, size_t len, const char **out, size_t *outlen)
{
	struct line line = { .data = data, .len = len, .lineno = 1 };
	int ok;

	fuzz_classifier.out.len = 0;
	ok = take_line(&fuzz_classifier, &line);
	*out = fuzz_classifier.out.data;
	*outlen = fuzz_classifier.out.len;
	return ok;
}
