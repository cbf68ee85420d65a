/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  Subject validation and the EventEnvelope JSON of one event.
 *
 * Everything that can refuse an event runs here, at the call: the subject's
 * syntax, the attributes' shape, the envelope's size.  The envelope is built
 * complete except for its timestamp, which is a fixed-width placeholder
 * filled in at pre-commit, so the COMMIT path only copies bytes and never
 * allocates.
 *
 * This is the server's side: errors, the event id, the jsonb attributes.
 * The parsing and the JSON text themselves are plain C in subject.c and
 * envelope_json.c (built without a server by test/fuzz).
 *
 * Encodings: the wire is UTF-8 (subject and body), whatever the database's
 * encoding.  The subject, the publisher setting and the attributes' text are
 * converted to UTF-8 here, at the call, and the buffered event holds the
 * UTF-8 form.  A SQL_ASCII database has no conversion (its text is whatever
 * bytes it was given), so there they must already be valid UTF-8.  What goes
 * back to SQL (pending(), the durable outbox) is converted back to the
 * database's encoding; the durable worker converts the outbox's text to
 * UTF-8 again when it publishes.
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
#include "mb/pg_wchar.h"
#include "port.h"
#include "utils/memutils.h"
#include "utils/jsonb.h"

#include "state_hub_events.h"

/*
 * Random bytes for UUIDs, drawn from pg_strong_random in blocks: one call per
 * 256 ids instead of one per id (libuuid's uuid_generate_random makes several
 * system calls per id).  Backend-local.
 */
static uint8 rand_pool[4096];
static int	rand_pos = sizeof(rand_pool);

/* Scratch buffer for printing attributes, reused across calls. */
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
 * s (len bytes, in the database's encoding) as UTF-8, for the wire: s
 * itself when no conversion is needed, else a palloc'd copy.  what names
 * the value in the error.  A SQL_ASCII database converts nothing, so there
 * the bytes must already be UTF-8: otherwise 22021 at the call.  Other
 * encodings convert (a character without a Unicode equivalent is 22P05,
 * raised by the conversion).
 */
char *
she_to_wire(const char *s, int len, const char *what)
{
	int			enc = GetDatabaseEncoding();

	if (enc == PG_UTF8)
		return unconstify(char *, s);
	if (enc == PG_SQL_ASCII)
	{
		int			ok = pg_encoding_verifymbstr(PG_UTF8, s, len);

		if (ok < len)
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("cannot publish an event whose %s is not valid UTF-8", what),
					 errdetail("Byte 0x%02x at position %d does not continue a UTF-8 character.",
							   (unsigned char) s[ok], ok + 1),
					 errhint("Events are sent as UTF-8; the database's encoding is SQL_ASCII, which PostgreSQL cannot convert from.")));
		return unconstify(char *, s);
	}
	return pg_server_to_any(s, len, PG_UTF8);
}

/*
 * The UTF-8 text s (len bytes) in the database's encoding, for SQL: s itself
 * when no conversion is needed (UTF8 and SQL_ASCII databases), else a
 * palloc'd copy.  Text made by she_to_wire always converts back.
 */
char *
she_from_wire(const char *s, int len)
{
	int			enc = GetDatabaseEncoding();

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return unconstify(char *, s);
	return pg_any_to_server(s, len, PG_UTF8);
}

/*
 * The durable worker: an outbox text (subject or envelope, in the database's
 * encoding) as UTF-8 for the wire.  In a SQL_ASCII database the bytes go as
 * they are (publish() accepted only UTF-8 there; an older row is not refused
 * here, where an ERROR would stop the worker on it).
 */
char *
she_outbox_text_to_wire(char *s)
{
	int			enc = GetDatabaseEncoding();

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return s;
	return pg_server_to_any(s, strlen(s), PG_UTF8);
}

/*
 * The 1-based character position of byte offset pos in the UTF-8 text s.
 */
static int
char_position(const char *s, size_t pos)
{
	int			n = 1;
	size_t		i;

	for (i = 0; i < pos; i++)
		if (((unsigned char) s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

/*
 * Refuse a subject NATS would not deliver as one literal subject, and return
 * it as UTF-8 (the wire's form, see she_to_wire; the subject itself when
 * the database is UTF8).
 *
 * The checks run on the UTF-8 form: its length in bytes is what NATS sees,
 * and Unicode whitespace and control characters are refused there.  The
 * messages quote the subject as given.  22021 for text that is not UTF-8
 * (SQL_ASCII), 22004 for NULL (handled by the caller) and 22023 for
 * everything else, naming the problem (subject.c finds it).
 */
const char *
she_check_subject(const char *subject)
{
	size_t		pos = 0;
	const char *wire = she_to_wire(subject, strlen(subject), "subject");

	switch (she_subject_problem(wire, SHE_MAX_SUBJECT_LEN, &pos))
	{
		case SHE_SUBJECT_OK:
			break;
		case SHE_SUBJECT_EMPTY:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish an event with an empty subject")));
			break;
		case SHE_SUBJECT_TOO_LONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish an event with a subject of %zu bytes", strlen(wire)),
					 errdetail("Subjects are limited to %d bytes (in UTF-8).", SHE_MAX_SUBJECT_LEN)));
			break;
		case SHE_SUBJECT_EMPTY_TOKEN:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish to subject \"%s\": it has an empty token", subject),
					 errdetail("Subjects are dot-separated tokens such as \"org.statehub.repo.registered\".")));
			break;
		case SHE_SUBJECT_BAD_BYTE:
			if ((unsigned char) wire[pos] < 0x80)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("cannot publish to a subject containing whitespace or control characters"),
						 errdetail("Offending byte 0x%02x at position %d.",
								   (unsigned char) wire[pos], char_position(wire, pos))));
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish to a subject containing whitespace or control characters"),
					 errdetail("Offending character U+%04X at position %d.",
							   (unsigned int) utf8_to_unicode((const unsigned char *) wire + pos),
							   char_position(wire, pos))));
			break;
		case SHE_SUBJECT_WILDCARD:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish to subject \"%s\": it contains the wildcard \"%c\"", subject, wire[pos]),
					 errdetail("Events are published to literal subjects; wildcards only belong in subscriptions.")));
			break;
		case SHE_SUBJECT_RESERVED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot publish to subject \"%s\": NATS reserves it", subject),
					 errdetail("Subjects whose first token starts with \"$\" ($JS.API, $JS.ACK, $KV, $SYS, ...) or is \"_INBOX\", \"_R_\" or \"_GR_\" are requests to the server or replies to other clients, not events."),
					 errhint("Event types are subjects such as \"org.statehub.repo.registered\".")));
			break;
		case SHE_SUBJECT_GT_NOT_LAST:
			elog(ERROR, "unexpected subject problem for \"%s\"", subject);
			break;
	}
	return wire;
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
 * The subject is the UTF-8 form she_check_subject returned, after the
 * coverage check.  attributes may be NULL (meaning {}); anything but an
 * object is refused.  The jsonb is printed into a scratch buffer and the
 * envelope built from that text (she_build_event_json).
 */
void
she_build_event(SheEvent *ev, const char *subject, Jsonb *attributes, int max_bytes,
				MemoryContext target)
{
	if (attributes != NULL && (!JB_ROOT_IS_OBJECT(attributes) || JB_ROOT_IS_SCALAR(attributes)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish an event whose attributes are not a JSON object"),
				 errdetail("Attributes must be a jsonb object such as '{\"repo_id\": 1}', not %s.",
						   JB_ROOT_IS_SCALAR(attributes) ? "a scalar" : "an array")));

	if (attributes == NULL)
	{
		she_build_event_json(ev, subject, "{}", 2, max_bytes, target);
		return;
	}
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
	resetStringInfo(scratch);
	(void) JsonbToCString(scratch, &attributes->root, VARSIZE(attributes));
	she_build_event_json(ev, subject, scratch->data, scratch->len, max_bytes, target);
}

/*
 * Build one event's envelope from its attributes' JSON text: attrs is the
 * text of a JSON object, attrs_len bytes in the database's encoding,
 * exactly as jsonb prints it (the caller's promise).  The publisher setting
 * and the attributes are converted to UTF-8 (see she_to_wire); the
 * envelope is refused if its UTF-8 form would exceed max_bytes.  The JSON
 * text is laid out and written by envelope_json.c.
 */
void
she_build_event_json(SheEvent *ev, const char *subject, const char *attrs,
					 int attrs_len, int max_bytes, MemoryContext target)
{
	SheEnvelopeParts parts;
	SheEnvelopeLayout layout;

	make_uuid_v4(ev->id);
	parts.id = ev->id;
	parts.type = subject;
	parts.publisher = she_to_wire(she_publisher, strlen(she_publisher), "publisher (state_hub_events.publisher)");
	parts.attributes = she_to_wire(attrs, attrs_len, "attributes");
	parts.attributes_len = (parts.attributes == attrs) ?
		(size_t) attrs_len : strlen(parts.attributes);

	she_envelope_layout(&parts, &layout);
	if (layout.len > (size_t) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish an event of %zu bytes to subject \"%s\"", layout.len,
						she_from_wire(subject, strlen(subject))),
				 errdetail("The envelope is limited to %d bytes by state_hub_events.max_event_bytes and the server's max payload.",
						   max_bytes)));

	ev->envelope = MemoryContextAlloc(target, layout.len + 1);
	she_envelope_write(&parts, ev->envelope);
	ev->envelope_len = (int) layout.len;
	ev->ts_offset = (int) layout.ts_offset;
	ev->attrs_offset = (int) layout.attrs_offset;
	ev->attrs_len = (int) layout.attrs_len;
}
