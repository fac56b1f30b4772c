/*
 * sluice-config - print every setting, its value and where it came from.
 *
 * Settings are resolved by every program the same way (lib/config.c):
 * flag > environment > config file > default. This program shows the result,
 * and says when two sources disagree (say $SLUICE_DB and the config file name
 * different journals), because that is where surprises come from.
 */
#include "config.h"
#include "exitcode.h"
#include "json.h"
#include "log.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
"usage: sluice config [-d PATH] [--json | --get NAME]\n"
"\n"
"Print every setting, its value and its source (flag, env, file, default).\n"
"\n"
"  -d, --db PATH   the journal, as a flag would give it to any program\n"
"      --json      one JSON object: {\"NAME\":{\"value\":...,\"source\":...},...}\n"
"      --get NAME  print only NAME's value (empty line when unset)\n"
"  -h, --help      this help\n"
"  -V, --version   print the version\n"
"\n"
"Settings: db, producer, sync, busy_timeout, retain, discard_types,\n"
"drain_timeout, config. Exit: 0, or 64 for an unknown setting, 78 for a bad\n"
"config file.\n";

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "get", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db = NULL, *get = NULL;
	int c, as_json = 0;
	json_t *doc;

	log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "d:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': db = optarg; break;
		case 'j': as_json = 1; break;
		case 'g': get = optarg; break;
		case 'h': print_help(usage);
		case 'V': print_version();
		default: option_error(usage, argv);
		}
	}
	if (optind < argc)
		usage_error(usage, "unexpected argument '%s'", argv[optind]);
	if (get) {
		struct setting s;
		int found = 0;

		for (const char *const *n = setting_names(); *n; n++)
			found |= strcmp(*n, get) == 0;
		if (!found)
			usage_error(usage, "unknown setting '%s'", get);
		setting_get(get, strcmp(get, "db") == 0 ? db : NULL, &s);
		printf("%s\n", s.value ? s.value : "");
		return finish_stdout();
	}
	doc = json_object();
	for (const char *const *n = setting_names(); *n; n++) {
		struct setting s;
		const char *flag = strcmp(*n, "db") == 0 ? db : NULL;

		setting_get(*n, flag, &s);
		if (as_json) {
			json_t *one = json_pack("{s:s?, s:s, s:s}", "value", s.value, "source",
			    s.source, "env", s.env);

			if (s.shadowed)
				json_object_set_new(one, "overrides", json_pack("{s:s, s:s}",
				    "value", s.shadowed, "source", s.shadowed_source));
			json_object_set_new(doc, *n, one);
			continue;
		}
		printf("%-14s = %-40s (%s)\n", s.name, s.value ? s.value : "(unset)", s.source);
		if (s.shadowed)
			printf("%-14s   note: overrides %s from %s\n", "", s.shadowed,
			    s.shadowed_source);
	}
	if (as_json) {
		json_write(stdout, doc);
		putchar('\n');
	}
	json_decref(doc);
	return finish_stdout();
}
