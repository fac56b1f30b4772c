/* execpath.c - see execpath.h */
#include "execpath.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *
exec_dir(void)
{
	static char dir[PATH_MAX + 32];
	const char *env = getenv("SLUICE_EXEC_PATH");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env)
		return env;
	if (dir[0])
		return dir;
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		die(EXIT_SOFTWARE, "cannot find where sluice is installed: %s", strerror(errno));
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	snprintf(dir, sizeof dir, "%s/../libexec/sluice", self);
	if (access(dir, X_OK) != 0)
		snprintf(dir, sizeof dir, "%s", self);
	return dir;
}

char *
exec_program(const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", exec_dir(), name);
	return buf;
}
