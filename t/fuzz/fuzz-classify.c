/*
 * fuzz-classify - classify's record parsing and classification.
 *
 * Entry point: classify_line() (glue-classify.c), which is what classify's
 * main loop does with each input line: the span scanner (lib/json.c) over the
 * response record, jansson on the members it decodes, and the table of
 * classify(1). The input is split into lines as the NDJSON reader would.
 * Checked: no memory error or undefined behaviour (ASan, UBSan), and every
 * outcome printed is a well-formed outcome record (check.h); a line that is
 * rejected prints nothing.
 */
#include "check.h"
#include "glue.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *out;
		size_t outlen;
		int ok;

		if (len > 0 && p[len - 1] == '\r')
			len--;
		ok = classify_line(p, len, &out, &outlen);
		if (!ok && outlen != 0)
			fuzz_fail("a rejected line has outcomes", p, len);
		check_outcomes(out, outlen);
		p = nl ? nl + 1 : end;
	}
	return 0;
}
