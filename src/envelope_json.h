/*-------------------------------------------------------------------------
 *
 * envelope_json.h
 *	  The EventEnvelope's JSON text: string escaping and assembly, in plain C.
 *
 * No PostgreSQL headers, no allocation: the caller sizes the buffer with
 * she_envelope_layout, then she_envelope_write fills it.  The attributes
 * arrive as JSON text already (envelope.c prints the jsonb).  test/fuzz
 * builds this file without a server.
 *
 * IDENTIFICATION
 *	  src/envelope_json.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_ENVELOPE_JSON_H
#define SHE_ENVELOPE_JSON_H

#include <stddef.h>

/* Stands for the commit timestamp until pre-commit writes it in place. */
#define SHE_TIMESTAMP_PLACEHOLDER "0000-00-00T00:00:00.000000Z"

/* What goes into one envelope; every string NUL-terminated but attributes. */
typedef struct SheEnvelopeParts
{
	const char *id;				/* canonical UUID text */
	const char *type;			/* the subject */
	const char *publisher;
	const char *attributes;		/* a JSON object's text, attributes_len bytes */
	size_t		attributes_len;
} SheEnvelopeParts;

/* Where things sit in the envelope text. */
typedef struct SheEnvelopeLayout
{
	size_t		len;			/* bytes, without the terminating NUL */
	size_t		ts_offset;		/* the timestamp placeholder */
	size_t		attrs_offset;	/* the attributes object */
	size_t		attrs_len;
} SheEnvelopeLayout;

extern size_t she_json_string_len(const char *s);
extern size_t she_json_string_len_n(const char *s, size_t len);
extern char *she_json_string(char *dst, const char *s);
extern char *she_json_string_n(char *dst, const char *s, size_t len);
extern void she_envelope_layout(const SheEnvelopeParts *parts,
								SheEnvelopeLayout *layout);
extern void she_envelope_write(const SheEnvelopeParts *parts, char *dst);

#endif							/* SHE_ENVELOPE_JSON_H */
