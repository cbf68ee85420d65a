/*-------------------------------------------------------------------------
 *
 * fuzz_subject.c
 *	  libFuzzer harness for she_subject_problem (src/subject.c): the subject
 *	  check publish() and emit() run at the call.
 *
 * Input: the subject (up to the first NUL).  Properties:
 *	- the verdict equals a reference written differently (byte by byte,
 *	  looking at the previous byte instead of counting token lengths): the
 *	  same first problem at the same position, or none;
 *	- so an accepted subject is non-empty, at most the limit, and has no
 *	  whitespace, control byte, '*', '>' or empty token (nor Unicode
 *	  whitespace or control characters, given as UTF-8), and is not in a
 *	  namespace NATS reserves ("$...", "_INBOX.>", "_R_.>" or "_GR_.>");
 *	- an accepted subject is covered by ">" and (without a ',') by itself as
 *	  a pattern, and not by a pattern with one more token.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_subject.c
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include "subject.h"

/*
 * Does a refused non-ASCII character (Unicode whitespace or control, as
 * UTF-8 bytes) start at s?  Listed as byte sequences, not decoded.
 */
static int
refused_utf8_at(const unsigned char *s)
{
	static const char *const seqs[] = {
		"\xe1\x9a\x80", "\xe1\xa0\x8e", "\xe2\x80\xa8", "\xe2\x80\xa9",
		"\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"
	};
	size_t		k;

	if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0xa0)
		return 1;				/* U+0080..U+00A0 */
	if (s[0] == 0xe2 && s[1] == 0x80 && s[2] >= 0x80 && s[2] <= 0x8a)
		return 1;				/* U+2000..U+200A */
	for (k = 0; k < sizeof(seqs) / sizeof(seqs[0]); k++)
		if (strncmp((const char *) s, seqs[k], 3) == 0)
			return 1;
	return 0;
}

/*
 * The first problem in s (scanning s[0..len], the NUL included), as the
 * reference sees it; *pos its offset.
 */
static SheSubjectProblem
reference(const char *s, size_t maxlen, size_t *pos)
{
	size_t		len = strlen(s);
	size_t		i;

	if (len == 0)
		return SHE_SUBJECT_EMPTY;
	if (len > maxlen)
		return SHE_SUBJECT_TOO_LONG;
	for (i = 0; i <= len; i++)
	{
		unsigned char c = (unsigned char) s[i];
		int			token_starts = (i == 0 || s[i - 1] == '.');

		*pos = i;
		if ((c == '.' || c == '\0') && token_starts)
			return SHE_SUBJECT_EMPTY_TOKEN;
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x7f ||
			(c >= 1 && c < 0x20) || refused_utf8_at((const unsigned char *) s + i))
			return SHE_SUBJECT_BAD_BYTE;
		if (c == '*' || c == '>')
			return SHE_SUBJECT_WILDCARD;
	}
	*pos = 0;
	if (s[0] == '$' || strncmp(s, "_INBOX.", 7) == 0 ||
		strncmp(s, "_R_.", 4) == 0 || strncmp(s, "_GR_.", 5) == 0)
		return SHE_SUBJECT_RESERVED;
	return SHE_SUBJECT_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *f[1];
	size_t		limits[2] = {255, size > 0 ? data[0] % 16 : 0};
	int			k;

	split_fields(data, size, f, 1);
	for (k = 0; k < 2; k++)
	{
		size_t		pos = (size_t) -1;
		size_t		rpos = (size_t) -2;
		SheSubjectProblem got = she_subject_problem(f[0], limits[k], &pos);
		SheSubjectProblem want = reference(f[0], limits[k], &rpos);

		CHECK(got == want, "subject \"%s\" (limit %zu): problem %d, reference %d",
			  f[0], limits[k], (int) got, (int) want);
		if (got == SHE_SUBJECT_EMPTY_TOKEN || got == SHE_SUBJECT_BAD_BYTE ||
			got == SHE_SUBJECT_WILDCARD)
			CHECK(pos == rpos, "subject \"%s\": problem at %zu, reference at %zu",
				  f[0], pos, rpos);
		if (got == SHE_SUBJECT_OK)
		{
			size_t		len = strlen(f[0]);
			char	   *longer = malloc(len + 3);

			CHECK(len > 0 && len <= limits[k], "accepted length %zu", len);
			CHECK(strpbrk(f[0], " \t\r\n*>") == NULL, "accepted \"%s\"", f[0]);
			CHECK(f[0][0] != '$' && strncmp(f[0], "_INBOX.", 7) != 0 &&
				  strncmp(f[0], "_R_.", 4) != 0 && strncmp(f[0], "_GR_.", 5) != 0,
				  "accepted the reserved \"%s\"", f[0]);
			CHECK(f[0][0] != '.' && f[0][len - 1] != '.' && strstr(f[0], "..") == NULL,
				  "accepted an empty token in \"%s\"", f[0]);
			CHECK(she_subject_covered(f[0], ">"), "\"%s\" not covered by >", f[0]);
			/* (a ',' would make it two patterns) */
			CHECK(strchr(f[0], ',') != NULL || she_subject_covered(f[0], f[0]),
				  "\"%s\" not covered by itself", f[0]);
			memcpy(longer, f[0], len);
			memcpy(longer + len, ".x", 3);
			CHECK(!she_subject_covered(f[0], longer), "\"%s\" covered by \"%s\"", f[0], longer);
			free(longer);
		}
	}
	free_fields(f, 1);
	return 0;
}
