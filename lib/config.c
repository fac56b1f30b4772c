/* config.c - see config.h */
#include "config.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct known {
	const char *name, *env, *help;
};

static const struct known known[] = {
	{ "db", "SLUICE_DB", "the journal (SQLite file)" },
	{ "producer", "SLUICE_PRODUCER", "producer name stored with appended events" },
	{ "sync", "SLUICE_SYNC", "journal durability: full (fsync every commit) or normal" },
	{ "busy_timeout", "SLUICE_BUSY_TIMEOUT", "how long to wait for a locked journal" },
	{ "retain", "SLUICE_RETAIN", "gc retention: forever or a duration such as 30d" },
	{ "discard_types", "SLUICE_DISCARD_TYPES", "event_type globs not journaled (comma-separated)" },
	{ "drain_timeout", "SLUICE_DRAIN_TIMEOUT", "how long `sluice emit` may spend delivering" },
	{ "config", "SLUICE_CONFIG", "this file" },
	{ NULL, NULL, NULL }
};

static const char *const names[] = {
	"db", "producer", "sync", "busy_timeout", "retain", "discard_types",
	"drain_timeout", "config", NULL
};

/* The config file, read once. */
struct entry {
	char *key, *value;
	unsigned line;
};
static struct entry *entries;
static size_t nentries;
static int loaded;
static char file_path[4096];
static const char *file_source; /* "env SLUICE_CONFIG" or "default" */

const char *const *
setting_names(void)
{
	return names;
}

static const struct known *
find_known(const char *name)
{
	for (const struct known *k = known; k->name; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static void
load_file(void)
{
	const char *env = getenv("SLUICE_CONFIG");
	FILE *f;
	char line[4096];
	unsigned lineno = 0;

	loaded = 1;
	if (env && *env) {
		snprintf(file_path, sizeof file_path, "%s", env);
		file_source = "env SLUICE_CONFIG";
	} else {
		const char *xdg = getenv("XDG_CONFIG_HOME");
		const char *home = getenv("HOME");

		if (xdg && *xdg == '/')
			snprintf(file_path, sizeof file_path, "%s/sluice/config", xdg);
		else
			snprintf(file_path, sizeof file_path, "%s/.config/sluice/config",
			    home && *home ? home : ".");
		file_source = "default";
	}
	f = fopen(file_path, "r");
	if (!f) {
		/* A missing default file is normal; a named one that is missing is not. */
		if (errno == ENOENT && !(env && *env))
			return;
		die(EXIT_CONFIG, "cannot read config file %s: %s", file_path, strerror(errno));
	}
	while (fgets(line, sizeof line, f)) {
		char *p = trim(line), *eq, *key, *value;
		struct entry *grown;

		lineno++;
		if (*p == '\0' || *p == '#')
			continue;
		eq = strchr(p, '=');
		if (!eq)
			die(EXIT_CONFIG, "%s:%u: expected 'key = value'", file_path, lineno);
		*eq = '\0';
		key = trim(p);
		value = trim(eq + 1);
		if (!find_known(key))
			die(EXIT_CONFIG, "%s:%u: unknown setting '%s'", file_path, lineno, key);
		if (strcmp(key, "config") == 0)
			die(EXIT_CONFIG, "%s:%u: 'config' cannot be set in the config file",
			    file_path, lineno);
		grown = realloc(entries, (nentries + 1) * sizeof *entries);
		if (!grown)
			die(EXIT_SOFTWARE, "out of memory");
		entries = grown;
		entries[nentries].key = strdup(key);
		entries[nentries].value = strdup(value);
		entries[nentries].line = lineno;
		if (!entries[nentries].key || !entries[nentries].value)
			die(EXIT_SOFTWARE, "out of memory");
		nentries++;
	}
	fclose(f);
}

static const struct entry *
file_value(const char *name)
{
	const struct entry *found = NULL;

	if (!loaded)
		load_file();
	for (size_t i = 0; i < nentries; i++)
		if (strcmp(entries[i].key, name) == 0)
			found = &entries[i]; /* the last one wins, as in a shell */
	return found;
}

static const char *
default_value(const char *name)
{
	static char db[4096];

	if (strcmp(name, "db") == 0) {
		const char *xdg = getenv("XDG_STATE_HOME");
		const char *home = getenv("HOME");

		if (xdg && *xdg == '/')
			snprintf(db, sizeof db, "%s/sluice/journal.db", xdg);
		else
			snprintf(db, sizeof db, "%s/.local/state/sluice/journal.db",
			    home && *home ? home : ".");
		return db;
	}
	if (strcmp(name, "sync") == 0)
		return "full";
	if (strcmp(name, "busy_timeout") == 0)
		return "5s";
	if (strcmp(name, "retain") == 0)
		return "forever";
	if (strcmp(name, "drain_timeout") == 0)
		return "2s";
	if (strcmp(name, "config") == 0) {
		if (!loaded)
			load_file();
		return file_path;
	}
	return NULL;
}

const char *
setting_get(const char *name, const char *flag, struct setting *out)
{
	static struct setting scratch;
	const struct known *k = find_known(name);
	const char *env;
	const struct entry *fv;
	struct setting *s = out ? out : &scratch;

	if (!k)
		die(EXIT_SOFTWARE, "unknown setting %s", name);
	memset(s, 0, sizeof *s);
	s->name = k->name;
	s->env = k->env;
	s->help = k->help;
	env = getenv(k->env);
	if (env && !*env)
		env = NULL;
	fv = strcmp(name, "config") == 0 ? NULL : file_value(name);

	if (flag) {
		s->value = flag;
		snprintf(s->source, sizeof s->source, "flag");
	} else if (env) {
		s->value = env;
		snprintf(s->source, sizeof s->source, "env %s", k->env);
	} else if (fv) {
		s->value = fv->value;
		snprintf(s->source, sizeof s->source, "file %s:%u", file_path, fv->line);
	} else {
		s->value = default_value(name);
		snprintf(s->source, sizeof s->source, "default");
		if (strcmp(name, "config") == 0 && file_source)
			snprintf(s->source, sizeof s->source, "%s", file_source);
	}
	/* Say when a source lower down names something else: the classic
	 * surprise is $SLUICE_DB and the config file naming different journals. */
	if ((flag || env) && fv && strcmp(fv->value, s->value) != 0) {
		s->shadowed = fv->value;
		snprintf(s->shadowed_source, sizeof s->shadowed_source, "file %s:%u",
		    file_path, fv->line);
	} else if (flag && env && strcmp(env, flag) != 0) {
		s->shadowed = env;
		snprintf(s->shadowed_source, sizeof s->shadowed_source, "env %s", k->env);
	}
	return s->value;
}

const char *
journal_path(const char *flag)
{
	return setting_get("db", flag, NULL);
}
