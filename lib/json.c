/* json.c - see json.h */
#include "json.h"
#include "clock.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

json_t *
json_get_path(json_t *obj, const char *dotted)
{
	const char *p = dotted;

	while (obj && json_is_object(obj)) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);

		obj = json_object_getn(obj, p, n);
		if (!dot)
			return obj;
		p = dot + 1;
	}
	return NULL;
}

char *
json_canonical(const json_t *value)
{
	char *s = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);

	if (!s)
		die(EXIT_SOFTWARE, "out of memory");
	return s;
}

int
json_write(FILE *f, const json_t *value)
{
	return json_dumpf(value, f, JSON_COMPACT | JSON_ENCODE_ANY);
}

json_t *
json_text_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *
json_time_or_null(int64_t ms)
{
	char buf[32];

	return ms ? json_string(format_time(ms, buf)) : json_null();
}

const char *
json_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

int64_t
json_int(const json_t *obj, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(obj, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* --- the span scanner --- */

struct scan {
	const char *p, *end;
	const char *why;
};

static void
skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int
scan_string(struct scan *s)
{
	s->p++; /* the opening quote */
	while (s->p < s->end) {
		unsigned char c = (unsigned char)*s->p++;

		if (c == '"')
			return 0;
		if (c < 0x20) {
			s->why = "control character in string";
			return -1;
		}
		if (c == '\\') {
			if (s->p >= s->end)
				break;
			s->p++;
		}
	}
	s->why = "unterminated string";
	return -1;
}

static int
digits(struct scan *s)
{
	const char *start = s->p;

	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
	return s->p > start;
}

/* true, false, null, or a number as JSON spells it. */
static int
scan_literal(struct scan *s)
{
	static const char *const words[] = { "true", "false", "null" };
	size_t left = (size_t)(s->end - s->p);

	for (int i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);

		if (left >= n && memcmp(s->p, words[i], n) == 0) {
			s->p += n;
			return 0;
		}
	}
	if (s->p < s->end && *s->p == '-')
		s->p++;
	if (s->p < s->end && *s->p == '0')
		s->p++;
	else if (!digits(s))
		goto bad;
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (!digits(s))
			goto bad;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (!digits(s))
			goto bad;
	}
	return 0;
bad:
	s->why = "invalid literal or number";
	return -1;
}

/* "name" : -- leaves s->p at the value. */
static int
scan_member_name(struct scan *s)
{
	if (s->p >= s->end || *s->p != '"') {
		s->why = "expected a member name";
		return -1;
	}
	if (scan_string(s) != 0)
		return -1;
	skip_ws(s);
	if (s->p >= s->end || *s->p != ':') {
		s->why = "expected ':'";
		return -1;
	}
	s->p++;
	skip_ws(s);
	return 0;
}

static int
scan_value(struct scan *s)
{
	/* As deep as jansson goes (2048), so what one accepts the other does. */
	char stack[2048];
	int depth = 0;

	skip_ws(s);
	for (;;) {
		if (s->p >= s->end) {
			s->why = "unexpected end of record";
			return -1;
		}
		switch (*s->p) {
		case '"':
			if (scan_string(s) != 0)
				return -1;
			break;
		case '{':
		case '[':
			if (depth == (int)sizeof stack) {
				s->why = "nested too deeply";
				return -1;
			}
			stack[depth++] = *s->p == '{' ? '}' : ']';
			s->p++;
			skip_ws(s);
			if (s->p < s->end && *s->p == stack[depth - 1]) {
				s->p++;
				depth--;
				break;
			}
			if (stack[depth - 1] == '}' && scan_member_name(s) != 0)
				return -1;
			continue;
		case '}':
		case ']':
		case ',':
		case ':':
			s->why = "unexpected punctuation";
			return -1;
		default:
			if (scan_literal(s) != 0)
				return -1;
		}
		/* After a value: close containers, or go on to the next element. */
		for (;;) {
			skip_ws(s);
			if (depth == 0)
				return 0;
			if (s->p >= s->end) {
				s->why = "unexpected end of record";
				return -1;
			}
			if (*s->p == stack[depth - 1]) {
				s->p++;
				depth--;
				continue;
			}
			if (*s->p != ',') {
				s->why = "expected ',' or a closing bracket";
				return -1;
			}
			s->p++;
			skip_ws(s);
			if (stack[depth - 1] == '}' && scan_member_name(s) != 0)
				return -1;
			break;
		}
	}
}

/* The top level of an object (keys) or an array (no keys), as raw spans. */
static int
split(const char *text, size_t len, struct json_member *out, int max, const char **why,
    int object)
{
	struct scan s = { text, text + len, NULL };
	char open = object ? '{' : '[', close = object ? '}' : ']';
	int n = 0;

	skip_ws(&s);
	if (s.p >= s.end || *s.p != open) {
		*why = object ? "not a JSON object" : "not a JSON array";
		return -1;
	}
	s.p++;
	skip_ws(&s);
	if (s.p < s.end && *s.p == close) {
		s.p++;
		goto tail;
	}
	for (;;) {
		const char *key = NULL, *value;
		size_t keylen = 0;

		skip_ws(&s);
		if (object) {
			if (s.p >= s.end || *s.p != '"') {
				*why = "expected a member name";
				return -1;
			}
			key = s.p + 1;
			if (scan_string(&s) != 0) {
				*why = s.why;
				return -1;
			}
			keylen = (size_t)(s.p - 1 - key);
			skip_ws(&s);
			if (s.p >= s.end || *s.p != ':') {
				*why = "expected ':'";
				return -1;
			}
			s.p++;
			skip_ws(&s);
		}
		value = s.p;
		if (scan_value(&s) != 0) {
			*why = s.why;
			return -1;
		}
		if (n < max) {
			const char *vend = s.p;

			while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t' ||
			    vend[-1] == '\n' || vend[-1] == '\r'))
				vend--;
			out[n].key = key;
			out[n].keylen = keylen;
			out[n].value = value;
			out[n].valuelen = (size_t)(vend - value);
		}
		n++;
		skip_ws(&s);
		if (s.p < s.end && *s.p == ',') {
			s.p++;
			continue;
		}
		if (s.p < s.end && *s.p == close) {
			s.p++;
			break;
		}
		*why = object ? "expected ',' or '}'" : "expected ',' or ']'";
		return -1;
	}
tail:
	skip_ws(&s);
	if (s.p != s.end) {
		*why = object ? "trailing characters after the object" :
		    "trailing characters after the array";
		return -1;
	}
	return n;
}

int
json_members(const char *text, size_t len, struct json_member *out, int max, const char **why)
{
	return split(text, len, out, max, why, 1);
}

int
json_elements(const char *text, size_t len, struct json_member *out, int max, const char **why)
{
	return split(text, len, out, max, why, 0);
}

const struct json_member *
json_member_find(const struct json_member *m, int n, const char *key)
{
	size_t klen = strlen(key);

	for (int i = 0; i < n; i++)
		if (m[i].keylen == klen && memcmp(m[i].key, key, klen) == 0)
			return &m[i];
	return NULL;
}

int64_t
json_member_int(const struct json_member *m, int *ok)
{
	char buf[32];
	char *end;
	long long v;

	*ok = 0;
	if (!m || m->valuelen == 0 || m->valuelen >= sizeof buf)
		return -1;
	memcpy(buf, m->value, m->valuelen);
	buf[m->valuelen] = '\0';
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno || *end != '\0' || end == buf)
		return -1;
	*ok = 1;
	return v;
}

int
json_member_str(const struct json_member *m, char *buf, size_t size)
{
	json_t *v;
	json_error_t err;

	if (!m || m->valuelen < 2 || m->value[0] != '"')
		return -1;
	if (!memchr(m->value, '\\', m->valuelen)) {
		/* No escapes: the bytes between the quotes are the string. */
		if (m->valuelen - 2 >= size)
			return -1;
		memcpy(buf, m->value + 1, m->valuelen - 2);
		buf[m->valuelen - 2] = '\0';
		return 0;
	}
	v = json_loadb(m->value, m->valuelen, JSON_DECODE_ANY, &err);
	if (!json_is_string(v) || json_string_length(v) >= size ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		json_decref(v);
		return -1;
	}
	memcpy(buf, json_string_value(v), json_string_length(v) + 1);
	json_decref(v);
	return 0;
}
