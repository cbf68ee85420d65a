/*-------------------------------------------------------------------------
 *
 * subject.h
 *	  NATS subject syntax and stream-subject pattern coverage, in plain C.
 *
 * Nothing here includes PostgreSQL headers, allocates or reports errors:
 * the functions return what is wrong and the caller words the error.  The
 * fuzz harnesses in test/fuzz build this file without a server.
 *
 * IDENTIFICATION
 *	  src/subject.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_SUBJECT_H
#define SHE_SUBJECT_H

#include <stdbool.h>
#include <stddef.h>

/* What is wrong with a subject or a list of subject patterns. */
typedef enum SheSubjectProblem
{
	SHE_SUBJECT_OK = 0,
	SHE_SUBJECT_EMPTY,			/* no bytes (a pattern list: no pattern) */
	SHE_SUBJECT_TOO_LONG,		/* more than the caller's maximum */
	SHE_SUBJECT_EMPTY_TOKEN,	/* "", a leading, trailing or doubled '.' */
	SHE_SUBJECT_BAD_BYTE,		/* whitespace or a control character */
	SHE_SUBJECT_WILDCARD,		/* '*' or '>' in a literal subject */
	SHE_SUBJECT_GT_NOT_LAST,	/* a pattern continues after a '>' */
	SHE_SUBJECT_RESERVED		/* NATS's own: "$..." or "_INBOX." first token */
} SheSubjectProblem;

extern bool she_subject_reserved(const char *subject);
extern SheSubjectProblem she_subject_problem(const char *subject, size_t maxlen,
											 size_t *pos);
extern SheSubjectProblem she_subject_patterns_problem(const char *patterns);
extern bool she_subject_covered(const char *subject, const char *patterns);

#endif							/* SHE_SUBJECT_H */
