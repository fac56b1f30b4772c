/*
 * config.h - the one settings authority.
 *
 * Every setting is resolved the same way, by every program:
 *   command-line flag  >  environment ($SLUICE_...)  >  config file  >  default.
 * The config file is $SLUICE_CONFIG, else $XDG_CONFIG_HOME/sluice/config
 * (~/.config/sluice/config); lines are "key = value", '#' starts a comment.
 * `sluice config` prints each setting, its value and where it came from.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

struct setting {
	const char *name;       /* "db" */
	const char *env;        /* "SLUICE_DB" */
	const char *help;       /* one line for `sluice config` */
	const char *value;      /* resolved value, NULL when unset */
	char source[4200];      /* "flag", "env SLUICE_DB", "file /x:3", "default" */
	const char *shadowed;   /* a lower-priority source's different value */
	char shadowed_source[4200];
};

/* Resolves one setting. flag is the command line's value or NULL.
 * Exits 78 on an unreadable or malformed config file. */
const char *setting_get(const char *name, const char *flag, struct setting *out);
/* Shortcut for the journal path: --db, $SLUICE_DB, config, default. */
const char *journal_path(const char *flag);
/* Names of all settings, NULL-terminated, in display order. */
const char *const *setting_names(void);

#endif
