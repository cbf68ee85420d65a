/*-------------------------------------------------------------------------
 *
 * ascii_text.c
 *	  Outcome and error texts as plain ASCII.
 *
 * A text that names a subject or quotes a server's error may hold any
 * bytes: UTF-8 from the wire (subjects are UTF-8 there in every database
 * encoding), or a multi-byte character cut by a fixed-size buffer.  Such a
 * text must not reach (a) a WARNING raised after the commit record, which
 * PostgreSQL converts to the client's encoding: a character the client's
 * encoding lacks makes that conversion ERROR, and an ERROR after the commit
 * record is a PANIC; nor (b) a text value SQL reads back (stats(),
 * backlog(), the dead-letter table), which must be valid in the database's
 * encoding.  So every byte outside printable ASCII is written as \xNN:
 * valid in every server and client encoding, and it never splits.
 *
 * IDENTIFICATION
 *	  src/ascii_text.c
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "ascii_text.h"

/*
 * Copy in to out (outlen bytes, NUL-terminated), each byte outside 0x20 ..
 * 0x7e written as "\xNN"; cut at a whole character or escape.  in and out
 * may not overlap.
 */
void
she_ascii_text(char *out, size_t outlen, const char *in)
{
	static const char hex[] = "0123456789abcdef";
	size_t		o = 0;

	if (outlen == 0)
		return;
	for (; *in != '\0'; in++)
	{
		unsigned char c = (unsigned char) *in;

		if (c >= 0x20 && c < 0x7f)
		{
			if (o + 1 >= outlen)
				break;
			out[o++] = (char) c;
		}
		else
		{
			if (o + 4 >= outlen)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
	}
	out[o] = '\0';
}
