/*
 * json.h - JSON helpers over jansson, and a span scanner for records.
 *
 * Producers' events are parsed strictly (jansson) once, when appended. After
 * that an event is opaque bytes: the stages find the members of their own
 * records with json_members(), which checks structure and returns each
 * member's raw bytes without decoding or re-encoding the event inside.
 * jansson has no way to hand back a value's original bytes, which is why
 * this scanner exists; it decodes nothing, so it is not a second parser.
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* jansson's strict settings, used for everything read from outside. */
#define JSON_STRICT_FLAGS (JSON_REJECT_DUPLICATES)

/* obj["a"]["b"] for "a.b"; NULL when any step is missing or not an object. */
json_t *json_get_path(json_t *obj, const char *dotted);
/* Compact, keys sorted: two payloads are the same when these are equal.
 * Returns a malloc'd string. */
char *json_canonical(const json_t *value);
/* Writes value compactly (keys in insertion order) to f. */
int json_write(FILE *f, const json_t *value);
/* A string, or null for NULL. */
json_t *json_text_or_null(const char *s);
/* A time (format_time), or null for 0 (never). */
json_t *json_time_or_null(int64_t ms);
/* String member or NULL. */
const char *json_str(const json_t *obj, const char *key);
/* Integer member, dflt when missing or not an integer. */
int64_t json_int(const json_t *obj, const char *key, int64_t dflt);

struct json_member {
	const char *key;   /* raw bytes between the quotes, escapes not decoded */
	size_t keylen;
	const char *value; /* raw bytes of the value */
	size_t valuelen;
};

/* Splits the top level of a JSON object into members. Returns the number of
 * members (at most max are stored), or -1 when text is not one well-formed
 * object; *why then says what is wrong. */
int json_members(const char *text, size_t len, struct json_member *out, int max,
    const char **why);
/* Splits a JSON array into its elements' raw bytes, like json_members().
 * Each element's bytes are in out[i].value/valuelen; key is NULL. */
int json_elements(const char *text, size_t len, struct json_member *out, int max,
    const char **why);
/* The member named key, or NULL. */
const struct json_member *json_member_find(const struct json_member *m, int n,
    const char *key);
/* A member's value as an integer; -1 and *ok = 0 when it is not one. */
int64_t json_member_int(const struct json_member *m, int *ok);
/* A member's value as a string copied to buf (NUL-terminated); 0 on success,
 * -1 when it is not a string or does not fit. */
int json_member_str(const struct json_member *m, char *buf, size_t size);

#endif
