/*-------------------------------------------------------------------------
 *
 * subject.c
 *	  NATS subject syntax and stream-subject pattern coverage, in plain C.
 *
 * A subject is published as one literal subject: dot-separated, non-empty
 * tokens without whitespace, control characters or wildcards.  Subjects are
 * UTF-8 (the wire's encoding: envelope.c converts them first), and Unicode
 * whitespace and control characters are refused as well as ASCII ones.
 * Subjects NATS keeps for itself ("$JS.API.>", "_INBOX.>", "_R_.>", ...) are refused
 * whatever the stream's subjects cover: a message there is a request the
 * server acts on with the publisher's credentials (a purge of the
 * stream), not an event.  The stream's
 * subjects (state_hub_events.stream_subjects) are comma-separated patterns
 * in which a "*" token matches one token and a final ">" token one or more.
 *
 * These functions only read their arguments: no PostgreSQL headers, no
 * allocation, no error reporting.  envelope.c, emit.c, buffer.c and guc.c
 * turn the problems into errors; test/fuzz builds this file alone.
 *
 * IDENTIFICATION
 *	  src/subject.c
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "subject.h"

/*
 * Is the code point whitespace or a control character?  Beyond ASCII:
 * the C1 controls (Cc, U+0080..U+009F, NEL among them), the space
 * separators (Zs) and the line and paragraph separators (Zl, Zp), as in
 * Unicode 15, plus U+180E (a space separator until Unicode 6.3).
 */
static bool
unicode_space_or_control(unsigned int cp)
{
	return (cp >= 0x80 && cp <= 0xa0) || cp == 0x1680 || cp == 0x180e ||
		(cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
		cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/*
 * The code point of the UTF-8 sequence at p, whose lead byte is 0x80 or
 * above, or 0 when the sequence is not well-formed (the caller checked the
 * encoding; the fuzz harnesses feed anything).
 */
static unsigned int
utf8_code_point(const unsigned char *p)
{
	int			n;
	unsigned int cp;
	int			i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07;
	else
		return 0;
	for (i = 1; i < n; i++)
	{
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	return cp;
}

/*
 * Is the subject's first token exactly the given one (followed by a '.')?
 */
static bool
first_token_is(const char *subject, const char *token)
{
	size_t		len = strlen(token);

	return strncmp(subject, token, len) == 0 && subject[len] == '.';
}

/*
 * Is the subject in a namespace NATS keeps for itself?  A first token that
 * starts with '$' ($JS.API, $JS.ACK, $KV, $SYS, ...: requests to the
 * server, which act with the publisher's credentials), or one of the reply
 * namespaces: "_INBOX" (replies to other clients' requests), "_R_" (the
 * server's replies to requests made through a service import, mapped back
 * to the importing account's inbox) and "_GR_" (replies routed back
 * through a gateway to the requester's cluster).  Subjects are
 * case-sensitive: "_inbox.x" is an ordinary subject.
 */
bool
she_subject_reserved(const char *subject)
{
	return subject[0] == '$' ||
		first_token_is(subject, "_INBOX") ||
		first_token_is(subject, "_R_") ||
		first_token_is(subject, "_GR_");
}

/*
 * What is wrong with a subject to publish to, or SHE_SUBJECT_OK.
 *
 * Checked in this order: empty, longer than maxlen bytes, then the bytes
 * from left to right (the first empty token, whitespace or control byte, or
 * wildcard wins), then the namespaces NATS reserves (SHE_SUBJECT_RESERVED,
 * *pos 0).  For the three byte problems, *pos is set to the 0-based offset
 * of the offending byte (the '.' or the terminating NUL that ends an empty
 * token; the lead byte of a refused multi-byte character).  Other bytes
 * 0x80 and above are accepted (UTF-8).
 */
SheSubjectProblem
she_subject_problem(const char *subject, size_t maxlen, size_t *pos)
{
	const char *p;
	size_t		toklen = 0;
	size_t		len = strlen(subject);

	if (len == 0)
		return SHE_SUBJECT_EMPTY;
	if (len > maxlen)
		return SHE_SUBJECT_TOO_LONG;

	for (p = subject;; p++)
	{
		unsigned char c = (unsigned char) *p;

		*pos = (size_t) (p - subject);
		if (c == '.' || c == '\0')
		{
			if (toklen == 0)
				return SHE_SUBJECT_EMPTY_TOKEN;
			if (c == '\0')
				break;
			toklen = 0;
			continue;
		}
		if (c <= ' ' || c == 0x7f)
			return SHE_SUBJECT_BAD_BYTE;
		if (c >= 0x80 && unicode_space_or_control(utf8_code_point((const unsigned char *) p)))
			return SHE_SUBJECT_BAD_BYTE;
		if (c == '*' || c == '>')
			return SHE_SUBJECT_WILDCARD;
		toklen++;
	}
	*pos = 0;
	if (she_subject_reserved(subject))
		return SHE_SUBJECT_RESERVED;
	return SHE_SUBJECT_OK;
}

/*
 * What is wrong with a comma-separated list of subject patterns, or
 * SHE_SUBJECT_OK: at least one pattern, no empty token, nothing after a
 * token holding '>', no whitespace or control byte.  Bytes 0x80 and above
 * count as control bytes here (the setting has always refused them).
 */
SheSubjectProblem
she_subject_patterns_problem(const char *patterns)
{
	const char *p = patterns;
	size_t		toklen = 0;
	bool		seen_gt = false;

	if (p == NULL || *p == '\0')
		return SHE_SUBJECT_EMPTY;
	for (;; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '.' || c == ',' || c == '\0')
		{
			if (toklen == 0)
				return SHE_SUBJECT_EMPTY_TOKEN;
			if (seen_gt && c == '.')
				return SHE_SUBJECT_GT_NOT_LAST;
			toklen = 0;
			if (c == ',')
				seen_gt = false;
			if (c == '\0')
				break;
			continue;
		}
		if (c <= ' ' || c >= 0x7f)
			return SHE_SUBJECT_BAD_BYTE;
		if (c == '>')
			seen_gt = true;
		toklen++;
	}
	return SHE_SUBJECT_OK;
}

/*
 * Does one pattern (tokens, "*" and a final ">") match the subject?
 * pattern is not NUL-terminated: patlen bytes.
 */
static bool
pattern_matches(const char *pat, size_t patlen, const char *subject)
{
	const char *pend = pat + patlen;
	const char *s = subject;

	while (pat < pend)
	{
		const char *ptok_end = memchr(pat, '.', pend - pat);
		const char *stok_end = strchr(s, '.');
		size_t		plen;
		size_t		slen;

		if (ptok_end == NULL)
			ptok_end = pend;
		if (stok_end == NULL)
			stok_end = s + strlen(s);
		plen = ptok_end - pat;
		slen = stok_end - s;

		if (*s == '\0')
			return false;		/* subject ran out of tokens */
		if (plen == 1 && *pat == '>')
			return true;		/* matches one or more remaining tokens */
		if (!(plen == 1 && *pat == '*') &&
			(plen != slen || memcmp(pat, s, plen) != 0))
			return false;

		pat = (ptok_end < pend) ? ptok_end + 1 : pend;
		s = (*stok_end == '.') ? stok_end + 1 : stok_end;
		if (pat == pend && *stok_end == '.')
			return false;		/* subject has more tokens */
	}
	return *s == '\0';
}

/*
 * Is the subject covered by one of the comma-separated patterns?
 *
 * The subject should have passed she_subject_problem and the patterns
 * she_subject_patterns_problem; anything else is answered without reading
 * past either string.
 */
bool
she_subject_covered(const char *subject, const char *patterns)
{
	const char *p = patterns;

	while (*p)
	{
		const char *end = strchr(p, ',');

		if (end == NULL)
			end = p + strlen(p);
		if (pattern_matches(p, end - p, subject))
			return true;
		p = (*end == ',') ? end + 1 : end;
	}
	return false;
}
