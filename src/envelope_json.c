/*-------------------------------------------------------------------------
 *
 * envelope_json.c
 *	  The EventEnvelope's JSON text: string escaping and assembly, in plain C.
 *
 * One envelope is
 *
 *	{"id":"<uuid>","type":<subject>,"version":"1.0",
 *	 "timestamp":"<placeholder>","publisher":<publisher>,"attributes":{...}}
 *
 * on one line, the strings escaped exactly as PostgreSQL's escape_json()
 * escapes them (so the text is what the extension has always sent).  The
 * caller asks for the layout first, allocates len + 1 bytes, then writes:
 * the commit path only ever copies bytes.
 *
 * Plain C: no PostgreSQL headers, no allocation.  test/fuzz builds it alone.
 *
 * IDENTIFICATION
 *	  src/envelope_json.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <string.h>

#include "envelope_json.h"

static const char hexdigits[] = "0123456789abcdef";

/*
 * The escape of one byte (without the backslash), or NULL when the byte
 * stands for itself; *n is set to the escape's length.  Control characters
 * without a short form become u00XX.
 */
static const char *
escape_of(unsigned char c, size_t *n)
{
	*n = 1;
	switch (c)
	{
		case '"':
			return "\"";
		case '\\':
			return "\\";
		case '\b':
			return "b";
		case '\f':
			return "f";
		case '\n':
			return "n";
		case '\r':
			return "r";
		case '\t':
			return "t";
		default:
			break;
	}
	*n = 5;
	return (c < ' ') ? "u00" : NULL;
}

/* Eight bytes at a time: every byte of a word set to b. */
#define BYTES(b)	((uint64_t) 0x0101010101010101ULL * (b))

/*
 * Nonzero when one of the eight bytes of w needs an escape (a control
 * character, '"' or '\\').  Exact: a byte borrows from the next only when
 * it matched itself.
 */
static inline uint64_t
word_needs_escape(uint64_t w)
{
	uint64_t	q = w ^ BYTES('"');
	uint64_t	b = w ^ BYTES('\\');

	return ((w - BYTES(' ')) | (q - BYTES(1)) | (b - BYTES(1))) & ~w & BYTES(0x80);
}

/*
 * How many bytes from s (at most len) stand for themselves.
 */
static size_t
clean_run(const unsigned char *s, size_t len)
{
	size_t		i = 0;
	uint64_t	w;

	for (; i + 8 <= len; i += 8)
	{
		memcpy(&w, s + i, 8);
		if (word_needs_escape(w))
			break;
	}
	for (; i < len; i++)
		if (s[i] < ' ' || s[i] == '"' || s[i] == '\\')
			break;
	return i;
}

/*
 * Bytes she_json_string_n writes for the len bytes at s: the quotes and the
 * escaped bytes.
 */
size_t
she_json_string_len_n(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		n = 2 + len;
	size_t		i = 0;

	while (i < len)
	{
		size_t		elen;

		i += clean_run(p + i, len - i);
		if (i == len)
			break;
		(void) escape_of(p[i++], &elen);
		n += elen;
	}
	return n;
}

/*
 * Bytes she_json_string writes for s: the quotes and the escaped bytes.
 */
size_t
she_json_string_len(const char *s)
{
	return she_json_string_len_n(s, strlen(s));
}

/*
 * Write the len bytes at s as a JSON string (quoted and escaped, as
 * escape_json does) at dst, without a NUL; returns the byte after it.  dst
 * must have room for she_json_string_len_n(s, len) bytes.  Bytes from 0x7f
 * up are copied as they are; s should hold no NUL (escape_json would stop
 * there).
 */
char *
she_json_string_n(char *dst, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	*dst++ = '"';
	while (i < len)
	{
		size_t		run = clean_run(p + i, len - i);
		size_t		elen;
		const char *e;

		memcpy(dst, p + i, run);
		dst += run;
		i += run;
		if (i == len)
			break;
		e = escape_of(p[i], &elen);
		*dst++ = '\\';
		if (elen == 1)
			*dst++ = *e;
		else
		{
			memcpy(dst, e, 3);
			dst[3] = hexdigits[p[i] >> 4];
			dst[4] = hexdigits[p[i] & 0x0f];
			dst += 5;
		}
		i++;
	}
	*dst++ = '"';
	return dst;
}

/*
 * Write s as a JSON string (quoted and escaped, as escape_json does) at
 * dst, without a NUL; returns the byte after it.  dst must have room for
 * she_json_string_len(s) bytes.  Bytes from 0x7f up are copied as they are.
 */
char *
she_json_string(char *dst, const char *s)
{
	return she_json_string_n(dst, s, strlen(s));
}

/* The fixed pieces, in order, around the variable ones. */
#define PART_ID		"{\"id\":\""
#define PART_TYPE	"\",\"type\":"
#define PART_TS		",\"version\":\"1.0\",\"timestamp\":\""
#define PART_PUB	"\",\"publisher\":"
#define PART_ATTRS	",\"attributes\":"
#define PART_END	"}"
#define LIT(s)		(sizeof(s) - 1)

/*
 * Compute where everything goes in the envelope of parts.
 */
void
she_envelope_layout(const SheEnvelopeParts *parts, SheEnvelopeLayout *layout)
{
	size_t		n;

	n = LIT(PART_ID) + strlen(parts->id) + LIT(PART_TYPE) +
		she_json_string_len(parts->type) + LIT(PART_TS);
	layout->ts_offset = n;
	n += LIT(SHE_TIMESTAMP_PLACEHOLDER) + LIT(PART_PUB) +
		she_json_string_len(parts->publisher) + LIT(PART_ATTRS);
	layout->attrs_offset = n;
	layout->attrs_len = parts->attributes_len;
	n += parts->attributes_len + LIT(PART_END);
	layout->len = n;
}

/*
 * Write the envelope of parts at dst, NUL-terminated: dst must have room
 * for she_envelope_layout's len + 1 bytes.
 */
void
she_envelope_write(const SheEnvelopeParts *parts, char *dst)
{
	size_t		idlen = strlen(parts->id);

#define PUT(s, n) (memcpy(dst, (s), (n)), dst += (n))
	PUT(PART_ID, LIT(PART_ID));
	PUT(parts->id, idlen);
	PUT(PART_TYPE, LIT(PART_TYPE));
	dst = she_json_string(dst, parts->type);
	PUT(PART_TS, LIT(PART_TS));
	PUT(SHE_TIMESTAMP_PLACEHOLDER, LIT(SHE_TIMESTAMP_PLACEHOLDER));
	PUT(PART_PUB, LIT(PART_PUB));
	dst = she_json_string(dst, parts->publisher);
	PUT(PART_ATTRS, LIT(PART_ATTRS));
	PUT(parts->attributes, parts->attributes_len);
	PUT(PART_END, LIT(PART_END));
#undef PUT
	*dst = '\0';
}
