/*-------------------------------------------------------------------------
 *
 * ascii_text.h
 *	  Outcome and error texts as plain ASCII, for messages raised after a
 *	  commit record and for values SQL reads back.
 *
 * Plain C, no PostgreSQL headers.
 *
 * IDENTIFICATION
 *	  src/ascii_text.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_ASCII_TEXT_H
#define SHE_ASCII_TEXT_H

#include <stddef.h>

extern void she_ascii_text(char *out, size_t outlen, const char *in);

#endif							/* SHE_ASCII_TEXT_H */
