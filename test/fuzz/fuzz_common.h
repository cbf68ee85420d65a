/*-------------------------------------------------------------------------
 *
 * fuzz_common.h
 *	  What the libFuzzer harnesses share: a property check that stops the
 *	  run (libFuzzer saves the input), and the input as C strings.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_common.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_FUZZ_COMMON_H
#define SHE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A property that must hold: report it and abort (the input is kept). */
#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "property failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			abort(); \
		} \
	} while (0)

/*
 * Split the input at NUL bytes into at most n malloc'd, NUL-terminated
 * strings (missing ones are empty): the fields a harness needs, as the
 * server would pass them (text never holds a NUL).  Free with free_fields.
 */
static inline void
split_fields(const uint8_t *data, size_t size, char **out, int n)
{
	size_t		start = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		size_t		end = start;

		while (end < size && data[end] != 0)
			end++;
		out[i] = malloc(end - start + 1);
		if (out[i] == NULL)
			abort();
		if (end > start)
			memcpy(out[i], data + start, end - start);
		out[i][end - start] = '\0';
		start = (end < size) ? end + 1 : size;
	}
}

static inline void
free_fields(char **f, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		free(f[i]);
}

#endif							/* SHE_FUZZ_COMMON_H */
