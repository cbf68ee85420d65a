/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  Subject validation and the EventEnvelope JSON of one event.
 *
 * Everything that can refuse an event runs here, at the call: the subject's
 * syntax, whether the stream's subjects cover it, the attributes' shape, the
 * envelope's size.  The envelope is built complete except for its timestamp,
 * which is a fixed-width placeholder filled in at pre-commit, so the COMMIT
 * path only copies bytes and never allocates.
 *
 * IDENTIFICATION
 *	  src/envelope.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>
#include <uuid/uuid.h>

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "port.h"
#include "utils/memutils.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "state_hub_events.h"

#define TIMESTAMP_PLACEHOLDER "0000-00-00T00:00:00.000000Z"

/*
 * Random bytes for UUIDs, drawn from pg_strong_random in blocks: one call per
 * 256 ids instead of one per id (libuuid's uuid_generate_random makes several
 * system calls per id).  Backend-local.
 */
static uint8 rand_pool[4096];
static int	rand_pos = sizeof(rand_pool);

/* Scratch buffer for building envelopes, reused across calls. */
static StringInfo scratch = NULL;

/*
 * A random (version 4) UUID in canonical lowercase text form.
 */
static void
make_uuid_v4(char *out)
{
	uuid_t		u;

	if (rand_pos + 16 > (int) sizeof(rand_pool))
	{
		if (!pg_strong_random(rand_pool, sizeof(rand_pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values for an event id")));
		rand_pos = 0;
	}
	memcpy(u, rand_pool + rand_pos, 16);
	rand_pos += 16;
	u[6] = (u[6] & 0x0f) | 0x40;	/* version 4 */
	u[8] = (u[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	uuid_unparse_lower(u, out);
}

/*
 * Refuse a subject NATS would not deliver as one literal subject.
 *
 * Raises 22004 for NULL (handled by the caller) and 22023 for everything
 * else, naming the problem.
 */
void
she_check_subject(const char *subject)
{
	const char *p;
	int			toklen = 0;
	size_t		len = strlen(subject);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish an event with an empty subject")));
	if (len > SHE_MAX_SUBJECT_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish an event with a subject of %zu bytes", len),
				 errdetail("Subjects are limited to %d bytes.", SHE_MAX_SUBJECT_LEN)));

	for (p = subject;; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '.' || c == '\0')
		{
			if (toklen == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("cannot publish to subject \"%s\": it has an empty token", subject),
						 errdetail("Subjects are dot-separated tokens such as \"org.statehub.repo.registered\".")));
			if (c == '\0')
				break;
			toklen = 0;
			continue;
		}
		if (c <= ' ' || c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish to a subject containing whitespace or control characters"),
					 errdetail("Offending byte 0x%02x at position %d.", c, (int) (p - subject) + 1)));
		if (c == '*' || c == '>')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish to subject \"%s\": it contains the wildcard \"%c\"", subject, c),
					 errdetail("Events are published to literal subjects; wildcards only belong in subscriptions.")));
		toklen++;
	}
}

/*
 * Does one pattern (tokens, "*" and a final ">") match the subject?
 * pattern is not NUL-terminated: patlen bytes.
 */
static bool
pattern_matches(const char *pat, int patlen, const char *subject)
{
	const char *pend = pat + patlen;
	const char *s = subject;

	while (pat < pend)
	{
		const char *ptok_end = memchr(pat, '.', pend - pat);
		const char *stok_end = strchr(s, '.');
		int			plen;
		int			slen;

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

/*
 * Format a PostgreSQL timestamp as RFC 3339 UTC with microseconds and "Z".
 * Plain C: safe after the commit record.  buf holds SHE_TIMESTAMP_LEN + 1.
 */
void
she_format_timestamp(TimestampTz ts, char *buf)
{
	int64		unix_us = ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	time_t		secs = (time_t) (unix_us / USECS_PER_SEC);
	int			usec = (int) (unix_us % USECS_PER_SEC);
	struct tm	tm;

	if (usec < 0)
	{
		usec += USECS_PER_SEC;
		secs--;
	}
	gmtime_r(&secs, &tm);
	snprintf(buf, SHE_TIMESTAMP_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, usec);
}

/*
 * Build one event's envelope; the result is allocated in target, at its
 * exact size.  The subject is not stored (the caller interns it).
 *
 * The subject must already have passed she_check_subject and the coverage
 * check.  attributes may be NULL (meaning {}); anything but an object is
 * refused.  The envelope is refused if it would exceed max_bytes.
 */
void
she_build_event(SheEvent *ev, const char *subject, Jsonb *attributes, int max_bytes,
				MemoryContext target)
{
	StringInfo	buf;

	if (attributes != NULL && (!JB_ROOT_IS_OBJECT(attributes) || JB_ROOT_IS_SCALAR(attributes)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish an event whose attributes are not a JSON object"),
				 errdetail("Attributes must be a jsonb object such as '{\"repo_id\": 1}', not %s.",
						   JB_ROOT_IS_SCALAR(attributes) ? "a scalar" : "an array")));

	if (scratch == NULL || scratch->maxlen > 4 * 1024 * 1024)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (scratch != NULL)
		{
			pfree(scratch->data);
			pfree(scratch);
		}
		scratch = makeStringInfo();
		MemoryContextSwitchTo(old);
	}
	buf = scratch;
	resetStringInfo(buf);

	make_uuid_v4(ev->id);
	appendStringInfoString(buf, "{\"id\":\"");
	appendBinaryStringInfo(buf, ev->id, SHE_UUID_LEN);
	appendStringInfoString(buf, "\",\"type\":");
	escape_json(buf, subject);
	appendStringInfoString(buf, ",\"version\":\"1.0\",\"timestamp\":\"");
	ev->ts_offset = buf->len;
	appendStringInfoString(buf, TIMESTAMP_PLACEHOLDER);
	appendStringInfoString(buf, "\",\"publisher\":");
	escape_json(buf, she_publisher);
	appendStringInfoString(buf, ",\"attributes\":");
	ev->attrs_offset = buf->len;
	if (attributes == NULL)
		appendStringInfoString(buf, "{}");
	else
		(void) JsonbToCString(buf, &attributes->root, VARSIZE(attributes));
	ev->attrs_len = buf->len - ev->attrs_offset;
	appendStringInfoChar(buf, '}');

	if (buf->len > max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish an event of %d bytes to subject \"%s\"", buf->len, subject),
				 errdetail("The envelope is limited to %d bytes by state_hub_events.max_event_bytes and the server's max payload.",
						   max_bytes)));

	ev->envelope = MemoryContextAlloc(target, buf->len + 1);
	memcpy(ev->envelope, buf->data, buf->len + 1);
	ev->envelope_len = buf->len;
}
