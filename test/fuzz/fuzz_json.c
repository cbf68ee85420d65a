/*-------------------------------------------------------------------------
 *
 * fuzz_json.c
 *	  libFuzzer harness for the envelope's JSON text (src/envelope_json.c):
 *	  string escaping and the assembly of one envelope.
 *
 * Input: type (the subject), a NUL, publisher, a NUL, an attribute value;
 * any bytes (PostgreSQL would have checked their encoding; here they are
 * bytes).  A small strict JSON parser written here reads the results back.
 * Properties:
 *	- she_json_string writes exactly she_json_string_len bytes, which parse
 *	  as one JSON string (no raw control byte, only JSON's escapes) that
 *	  decodes to the input bytes;
 *	- the envelope is exactly layout.len bytes and NUL-terminated, parses
 *	  as one JSON object whose keys are id, type, version, timestamp,
 *	  publisher, attributes in that order; type and publisher decode to the
 *	  input; the timestamp placeholder and the attributes sit at the offsets
 *	  the layout gives.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_json.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>

#include "fuzz_common.h"

#include "envelope_json.h"

/* A parse position; end is one past the last byte. */
typedef struct Parser
{
	const char *p;
	const char *end;
} Parser;

static void
skip_ws(Parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
							   *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Parse a JSON string at ps->p; decode it into out (when not NULL, room for
 * as many bytes as the text) and set *outlen.  Escapes \u0000..\u00ff
 * decode to one byte (all the escaper writes); others to one '?'.  Returns
 * false when it is not a string.
 */
static bool
parse_string(Parser *ps, char *out, size_t *outlen)
{
	size_t		n = 0;

	if (ps->p >= ps->end || *ps->p != '"')
		return false;
	ps->p++;
	while (ps->p < ps->end)
	{
		unsigned char c = (unsigned char) *ps->p++;
		char		d = (char) c;

		if (c == '"')
		{
			if (outlen)
				*outlen = n;
			return true;
		}
		if (c < 0x20)
			return false;		/* raw control characters are not JSON */
		if (c == '\\')
		{
			int			v = 0;
			int			k;

			if (ps->p >= ps->end)
				return false;
			switch (*ps->p++)
			{
				case '"':
					d = '"';
					break;
				case '\\':
					d = '\\';
					break;
				case '/':
					d = '/';
					break;
				case 'b':
					d = '\b';
					break;
				case 'f':
					d = '\f';
					break;
				case 'n':
					d = '\n';
					break;
				case 'r':
					d = '\r';
					break;
				case 't':
					d = '\t';
					break;
				case 'u':
					if (ps->end - ps->p < 4)
						return false;
					for (k = 0; k < 4; k++)
					{
						int			h = hexval(ps->p[k]);

						if (h < 0)
							return false;
						v = v * 16 + h;
					}
					ps->p += 4;
					d = (v <= 0xff) ? (char) v : '?';
					break;
				default:
					return false;
			}
		}
		if (out)
			out[n] = d;
		n++;
	}
	return false;
}

static bool parse_value(Parser *ps, int depth);

/*
 * Parse an object; when keys is not NULL, store up to nkeys decoded keys
 * (cut at 63 bytes) and set *nfound.
 */
static bool
parse_object(Parser *ps, int depth, char (*keys)[64], int nkeys, int *nfound)
{
	int			found = 0;

	if (depth > 64 || ps->p >= ps->end || *ps->p != '{')
		return false;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}')
	{
		ps->p++;
		if (nfound)
			*nfound = 0;
		return true;
	}
	for (;;)
	{
		Parser		keyps;
		size_t		klen;

		skip_ws(ps);
		keyps = *ps;
		if (!parse_string(ps, NULL, &klen))
			return false;
		if (keys && found < nkeys)
		{
			char	   *tmp = malloc(klen + 1);

			if (tmp == NULL)
				abort();
			(void) parse_string(&keyps, tmp, &klen);
			if (klen > 63)
				klen = 63;
			memcpy(keys[found], tmp, klen);
			keys[found][klen] = '\0';
			free(tmp);
		}
		found++;
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != ':')
			return false;
		ps->p++;
		skip_ws(ps);
		if (!parse_value(ps, depth + 1))
			return false;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',')
		{
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == '}')
		{
			ps->p++;
			if (nfound)
				*nfound = found;
			return true;
		}
		return false;
	}
}

/* An array, after its '['. */
static bool
parse_array_rest(Parser *ps, int depth)
{
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == ']')
	{
		ps->p++;
		return true;
	}
	for (;;)
	{
		skip_ws(ps);
		if (!parse_value(ps, depth + 1))
			return false;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',')
		{
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == ']')
		{
			ps->p++;
			return true;
		}
		return false;
	}
}

/* true, false, null or a number (leniently: digits, sign, '.', exponent). */
static bool
parse_scalar(Parser *ps)
{
	static const char *const lits[] = {"true", "false", "null"};
	const char *start = ps->p;
	int			k;

	for (k = 0; k < 3; k++)
	{
		size_t		l = strlen(lits[k]);

		if ((size_t) (ps->end - ps->p) >= l && memcmp(ps->p, lits[k], l) == 0)
		{
			ps->p += l;
			return true;
		}
	}
	if (ps->p < ps->end && *ps->p == '-')
		ps->p++;
	while (ps->p < ps->end && ((*ps->p >= '0' && *ps->p <= '9') || *ps->p == '.' ||
							   *ps->p == 'e' || *ps->p == 'E' || *ps->p == '+' ||
							   *ps->p == '-'))
		ps->p++;
	return ps->p > start && ps->p[-1] >= '0' && ps->p[-1] <= '9';
}

/* Any JSON value (nesting bounded). */
static bool
parse_value(Parser *ps, int depth)
{
	if (depth > 64 || ps->p >= ps->end)
		return false;
	if (*ps->p == '"')
		return parse_string(ps, NULL, NULL);
	if (*ps->p == '{')
		return parse_object(ps, depth, NULL, 0, NULL);
	if (*ps->p == '[')
	{
		ps->p++;
		return parse_array_rest(ps, depth);
	}
	return parse_scalar(ps);
}

/* s written as a JSON string parses back to s. */
static void
check_string(const char *s)
{
	size_t		want = she_json_string_len(s);
	char	   *buf = malloc(want + 1);
	char	   *dec = malloc(want + 1);
	char	   *end;
	Parser		ps;
	size_t		declen = 0;

	if (buf == NULL || dec == NULL)
		abort();
	end = she_json_string(buf, s);
	CHECK((size_t) (end - buf) == want, "wrote %zu bytes, length said %zu",
		  (size_t) (end - buf), want);
	ps.p = buf;
	ps.end = end;
	CHECK(parse_string(&ps, dec, &declen) && ps.p == end,
		  "not one JSON string: %.*s", (int) want, buf);
	CHECK(declen == strlen(s) && memcmp(dec, s, declen) == 0,
		  "does not round-trip: \"%s\" -> %.*s", s, (int) want, buf);
	free(buf);
	free(dec);
}

/* The string value that starts at p (within env) decodes to s. */
static bool
decodes_to(const char *p, const char *end, const char *s)
{
	Parser		ps = {p, end};
	char	   *dec = malloc(end - p + 1);
	size_t		declen = 0;
	bool		ok;

	if (dec == NULL)
		abort();
	ok = parse_string(&ps, dec, &declen) && declen == strlen(s) &&
		memcmp(dec, s, declen) == 0;
	free(dec);
	return ok;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const want_keys[] = {"id", "type", "version", "timestamp",
	"publisher", "attributes"};
	char	   *f[3];
	char	   *attrs;
	char	   *env;
	char	   *p;
	char		keys[8][64];
	int			nkeys = 0;
	int			k;
	SheEnvelopeParts parts;
	SheEnvelopeLayout layout;
	Parser		ps;

	if (size > 8192)
		return 0;
	split_fields(data, size, f, 3);
	check_string(f[0]);
	check_string(f[1]);
	check_string(f[2]);

	/* attributes as envelope.c passes them: one object's text */
	attrs = malloc(she_json_string_len(f[2]) + 8);
	if (attrs == NULL)
		abort();
	memcpy(attrs, "{\"k\": ", 6);
	p = she_json_string(attrs + 6, f[2]);
	*p++ = '}';

	parts.id = "0b9e6f3c-2d1a-4c5e-8f7a-6b5c4d3e2f1a";
	parts.type = f[0];
	parts.publisher = f[1];
	parts.attributes = attrs;
	parts.attributes_len = p - attrs;
	she_envelope_layout(&parts, &layout);
	env = malloc(layout.len + 1);
	if (env == NULL)
		abort();
	she_envelope_write(&parts, env);
	CHECK(strlen(env) == layout.len, "envelope is %zu bytes, layout said %zu",
		  strlen(env), layout.len);
	CHECK(memcmp(env + layout.ts_offset, SHE_TIMESTAMP_PLACEHOLDER,
				 strlen(SHE_TIMESTAMP_PLACEHOLDER)) == 0, "placeholder not at ts_offset");
	CHECK(layout.attrs_len == parts.attributes_len &&
		  memcmp(env + layout.attrs_offset, attrs, layout.attrs_len) == 0,
		  "attributes not at attrs_offset");

	ps.p = env;
	ps.end = env + layout.len;
	CHECK(parse_object(&ps, 0, keys, 8, &nkeys) && ps.p == ps.end,
		  "envelope is not one JSON object: %s", env);
	CHECK(nkeys == 6, "envelope has %d keys: %s", nkeys, env);
	for (k = 0; k < 6; k++)
		CHECK(strcmp(keys[k], want_keys[k]) == 0, "key %d is \"%s\": %s", k, keys[k], env);

	/* type and publisher decode to the input */
	CHECK(decodes_to(strstr(env, "\"type\":") + 7, env + layout.len, f[0]),
		  "type does not decode to the subject: %s", env);
	CHECK(decodes_to(env + layout.ts_offset + strlen(SHE_TIMESTAMP_PLACEHOLDER) +
					 strlen("\",\"publisher\":"), env + layout.len, f[1]),
		  "publisher does not decode to the input: %s", env);

	free(env);
	free(attrs);
	free_fields(f, 3);
	return 0;
}
