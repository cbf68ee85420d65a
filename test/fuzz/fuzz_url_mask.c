/*-------------------------------------------------------------------------
 *
 * fuzz_url_mask.c
 *	  libFuzzer harness for she_mask_url (src/url_mask.c): no part of a NATS
 *	  URL's user information is ever printed.
 *
 * Input: state_hub_events.nats_url (up to the first NUL), any bytes.
 * A reference finds each URL's user information the way nats.c 3.4 does
 * (the list split at ',', each URL trimmed of blanks, the scheme ending at
 * the first "://", the user information at the last '@' after it).
 * Properties:
 *	- the user information never reaches the output: the input with every
 *	  user-information byte replaced by a marker byte masks to the very same
 *	  text as the input itself, and that text holds no marker byte (so the
 *	  output does not depend on the secret at all, and none of it shows);
 *	- a URL without '@' is copied unchanged, one with '@' keeps what follows
 *	  its last '@' and shows "***@"; the output has as many URLs as the input;
 *	- the output is NUL-terminated within every buffer size, and a short
 *	  buffer holds a prefix of the full output.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_url_mask.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>

#include "fuzz_common.h"

#include "url_mask.h"

#define MARK '\x01'

static bool
blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/*
 * Overwrite, in s, the user information of every URL with MARK, as nats.c
 * would find it.
 */
static void
mark_userinfo(char *s)
{
	char	   *seg = s;

	for (;;)
	{
		char	   *end = strchr(seg, ',');
		char	   *ts = seg;
		char	   *te;
		char	   *start;
		char	   *at = NULL;
		char	   *q;

		if (end == NULL)
			end = seg + strlen(seg);
		te = end;
		while (ts < te && blank(*ts))
			ts++;
		while (te > ts && blank(te[-1]))
			te--;
		start = ts;
		for (q = ts; q + 3 <= te; q++)
			if (memcmp(q, "://", 3) == 0)
			{
				start = q + 3;
				break;
			}
		for (q = start; q < te; q++)
			if (*q == '@')
				at = q;
		if (at != NULL)
			memset(start, MARK, at - start);
		if (*end == '\0')
			break;
		seg = end + 1;
	}
}

/* The next URL of a list: its bytes [*p, returned end). */
static const char *
next_url(const char *p)
{
	const char *e = strchr(p, ',');

	return e ? e : p + strlen(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *f[1];
	char	   *url;
	char	   *marked;
	char	   *out;
	char	   *out_marked;
	char	   *out_short;
	size_t		len;
	size_t		big;
	size_t		small;
	size_t		i;
	const char *p;
	const char *o;

	if (size > 4096)
		return 0;
	split_fields(data, size, f, 1);
	url = f[0];
	len = strlen(url);
	for (i = 0; i < len; i++)
		if (url[i] == MARK)
			url[i] = '\x02';	/* the marker is ours alone */

	big = 4 * len + 16;			/* room for "***" before every '@' */
	out = malloc(big);
	out_marked = malloc(big);
	marked = strdup(url);
	if (out == NULL || out_marked == NULL || marked == NULL)
		abort();
	mark_userinfo(marked);

	she_mask_url(url, out, big);
	she_mask_url(marked, out_marked, big);
	CHECK(strlen(out) < big, "output not terminated");
	CHECK(strchr(out_marked, MARK) == NULL, "user information shown: \"%s\" -> \"%s\"", url, out);
	CHECK(strcmp(out, out_marked) == 0, "the output depends on the user information: \"%s\" -> \"%s\"",
		  url, out);

	/* URL by URL */
	p = url;
	o = out;
	for (;;)
	{
		const char *pe = next_url(p);
		const char *oe = next_url(o);
		const char *at = NULL;
		const char *q;

		for (q = p; q < pe; q++)
			if (*q == '@')
				at = q;
		if (at == NULL)
			CHECK(pe - p == oe - o && memcmp(p, o, pe - p) == 0,
				  "a URL without '@' changed: \"%s\" -> \"%s\"", url, out);
		else
		{
			size_t		tail = pe - at;

			CHECK((size_t) (oe - o) >= tail + 3 &&
				  memcmp(oe - tail - 3, "***", 3) == 0 &&
				  memcmp(oe - tail, at, tail) == 0,
				  "a URL with '@' lost its host or mask: \"%s\" -> \"%s\"", url, out);
		}
		CHECK((*pe == '\0') == (*oe == '\0'), "URL count differs: \"%s\" -> \"%s\"", url, out);
		if (*pe == '\0')
			break;
		p = pe + 1;
		o = oe + 1;
	}

	/* every short buffer: terminated, a prefix */
	small = (size > 0) ? (data[size - 1] % (len + 8)) + 1 : 1;
	out_short = malloc(small);
	if (out_short == NULL)
		abort();
	memset(out_short, 'Z', small);
	she_mask_url(url, out_short, small);
	CHECK(memchr(out_short, '\0', small) != NULL, "short output not terminated");
	CHECK(strncmp(out, out_short, strlen(out_short)) == 0 && strlen(out_short) == (strlen(out) < small ? strlen(out) : small - 1),
		  "short output is not the prefix: \"%s\" vs \"%s\"", out_short, out);
	she_mask_url(url, out_short, 0);	/* writes nothing */

	free(out_short);
	free(marked);
	free(out);
	free(out_marked);
	free_fields(f, 1);
	return 0;
}
