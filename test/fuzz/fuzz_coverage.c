/*-------------------------------------------------------------------------
 *
 * fuzz_coverage.c
 *	  libFuzzer harness for she_subject_covered and
 *	  she_subject_patterns_problem (src/subject.c): does
 *	  state_hub_events.stream_subjects cover a subject?
 *
 * Input: the patterns, a NUL, the subject.  Properties:
 *	- any input: no crash, no read past either string (ASan);
 *	- the pattern check accepts exactly what a reference accepts (split into
 *	  patterns and tokens first: at least one pattern, no empty token, no
 *	  byte outside '!'..'~', no token after one holding '>');
 *	- for a valid subject and valid patterns, coverage agrees with a simple
 *	  reference matcher over token arrays: "*" matches one token, ">" one or
 *	  more, anything else itself;
 *	- coverage by a list is coverage by one of its patterns.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_coverage.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>

#include "fuzz_common.h"

#include "subject.h"

#define MAXTOK 1100

/* A string split at one separator byte: pointers into a private copy. */
typedef struct Split
{
	char	   *copy;
	char	   *part[MAXTOK];
	int			n;
} Split;

static void
split(Split *sp, const char *s, char sep)
{
	char	   *p;

	sp->copy = strdup(s);
	if (sp->copy == NULL)
		abort();
	sp->n = 0;
	p = sp->copy;
	for (;;)
	{
		char	   *q = strchr(p, sep);

		if (sp->n == MAXTOK)
			abort();			/* inputs are at most 1024 bytes */
		sp->part[sp->n++] = p;
		if (q == NULL)
			break;
		*q = '\0';
		p = q + 1;
	}
}

/* Does one pattern's token list match the subject's? */
static bool
ref_match(Split *pat, Split *subj)
{
	int			i;

	for (i = 0; i < pat->n; i++)
	{
		if (strcmp(pat->part[i], ">") == 0)
			return subj->n > i;
		if (i >= subj->n)
			return false;
		if (strcmp(pat->part[i], "*") != 0 && strcmp(pat->part[i], subj->part[i]) != 0)
			return false;
	}
	return pat->n == subj->n;
}

/* Would the setting accept these patterns? */
static bool
ref_patterns_valid(const char *patterns)
{
	Split		pats;
	bool		ok = (patterns[0] != '\0');
	int			i;
	const unsigned char *b;

	for (b = (const unsigned char *) patterns; *b; b++)
		if (*b <= ' ' || *b >= 0x7f)
			ok = false;
	split(&pats, patterns, ',');
	for (i = 0; ok && i < pats.n; i++)
	{
		Split		toks;
		int			t;

		split(&toks, pats.part[i], '.');
		for (t = 0; t < toks.n; t++)
		{
			if (toks.part[t][0] == '\0')
				ok = false;
			if (strchr(toks.part[t], '>') != NULL && t != toks.n - 1)
				ok = false;
		}
		free(toks.copy);
	}
	free(pats.copy);
	return ok;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *f[2];
	const char *patterns;
	const char *subject;
	bool		covered;
	bool		valid;
	size_t		pos;

	if (size > 1024)
		return 0;
	split_fields(data, size, f, 2);
	patterns = f[0];
	subject = f[1];

	covered = she_subject_covered(subject, patterns);
	valid = (she_subject_patterns_problem(patterns) == SHE_SUBJECT_OK);
	CHECK(valid == ref_patterns_valid(patterns), "patterns \"%s\": valid %d", patterns, valid);

	if (valid && she_subject_problem(subject, 255, &pos) == SHE_SUBJECT_OK)
	{
		Split		pats;
		Split		subj;
		bool		want = false;
		int			i;

		split(&pats, patterns, ',');
		split(&subj, subject, '.');
		for (i = 0; i < pats.n; i++)
		{
			Split		toks;
			bool		one;

			split(&toks, pats.part[i], '.');
			one = ref_match(&toks, &subj);
			CHECK(one == she_subject_covered(subject, pats.part[i]),
				  "subject \"%s\", pattern \"%s\": covered %d, reference %d",
				  subject, pats.part[i], !one, one);
			want = want || one;
			free(toks.copy);
		}
		CHECK(covered == want, "subject \"%s\", patterns \"%s\": covered %d, reference %d",
			  subject, patterns, covered, want);
		free(pats.copy);
		free(subj.copy);
	}
	free_fields(f, 2);
	return 0;
}
