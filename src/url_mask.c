/*-------------------------------------------------------------------------
 *
 * url_mask.c
 *	  Hide the user information of NATS server URLs before printing them.
 *
 * state_hub_events.nats_url is a comma-separated list of URLs, each of
 * which nats.c (3.4, url.c) reads as [scheme "://"] [userinfo "@"] host
 * [":" port]: the scheme ends at the first "://", and the user information
 * (a token, or user ":" password) ends at the LAST '@', so a password may
 * itself contain '@' and ':'.  Every URL the extension prints (WARNINGs,
 * stats().last_error, backlog().last_error, ping(), the server log) goes
 * through she_mask_url first.
 *
 * Plain C: no PostgreSQL headers, no allocation.  test/fuzz builds it alone.
 *
 * IDENTIFICATION
 *	  src/url_mask.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <string.h>

#include "url_mask.h"

/*
 * Output cursor: out has room for outlen - 1 bytes and the NUL.
 */
typedef struct MaskOut
{
	char	   *out;
	size_t		outlen;
	size_t		o;
} MaskOut;

/*
 * Append n bytes, silently cut at the end of the buffer.
 */
static void
put(MaskOut *m, const char *s, size_t n)
{
	size_t		room = m->outlen - 1 - m->o;

	if (n > room)
		n = room;
	memcpy(m->out + m->o, s, n);
	m->o += n;
}

/*
 * How many leading bytes of a URL [seg, at) may be shown before the masked
 * user information: optional blanks, a scheme made only of letters, digits,
 * '+', '-' and '.', and "://".  Zero when the URL does not start that way,
 * so that everything up to the '@' is hidden: with no plain scheme there,
 * nats.c may take any of those bytes for user information (or, with a
 * "://" after the '@', for a scheme that holds the password).
 */
static size_t
shown_prefix(const char *seg, const char *at)
{
	const char *q = seg;
	const char *scheme;

	while (q < at && (*q == ' ' || *q == '\t' || *q == '\n' ||
					  *q == '\r' || *q == '\f' || *q == '\v'))
		q++;
	scheme = q;
	while (q < at && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
					  (*q >= '0' && *q <= '9') ||
					  *q == '+' || *q == '-' || *q == '.'))
		q++;
	if (q == scheme || at - q < 3 || memcmp(q, "://", 3) != 0)
		return 0;
	return (size_t) (q + 3 - seg);
}

/*
 * Copy url, a comma-separated list of NATS server URLs, to out (outlen
 * bytes, always NUL-terminated, cut if too long) with the user information
 * of every URL that has any replaced by three asterisks, so that
 * nats://u:p@w@h:4222,h2 prints as nats://...@h:4222,h2 with "***" for the
 * dots.  Nothing before a URL's last '@' is copied except a plain scheme;
 * URLs without '@' are copied unchanged.
 */
void
she_mask_url(const char *url, char *out, size_t outlen)
{
	MaskOut		m = {out, outlen, 0};
	const char *p = url;

	if (outlen == 0)
		return;
	for (;;)
	{
		const char *end = strchr(p, ',');
		const char *at = NULL;
		const char *q;

		if (end == NULL)
			end = p + strlen(p);
		for (q = p; q < end; q++)
			if (*q == '@')
				at = q;

		if (at == NULL)
			put(&m, p, end - p);
		else
		{
			put(&m, p, shown_prefix(p, at));
			put(&m, "***", 3);
			put(&m, at, end - at);
		}
		if (*end == '\0')
			break;
		put(&m, ",", 1);
		p = end + 1;
	}
	out[m.o] = '\0';
}
