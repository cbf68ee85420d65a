/*-------------------------------------------------------------------------
 *
 * emit_json.h
 *	  emit()'s fast path: a row's attributes as JSON text, rendered straight
 *	  from the tuple, byte for byte what to_jsonb(row) prints.
 *
 * A plan is made once per trigger and table shape; it exists only when
 * every live column's type has a rendering known to be exact, otherwise
 * emit() keeps to_jsonb.
 *
 * IDENTIFICATION
 *	  src/emit_json.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_EMIT_JSON_H
#define SHE_EMIT_JSON_H

#include "access/htup.h"
#include "access/tupdesc.h"

typedef struct SheRowJson SheRowJson;

extern SheRowJson *she_row_json_plan(TupleDesc tupdesc, int ncolumns,
									 char *const *columns,
									 char *const *attributes,
									 MemoryContext cxt);
extern bool she_row_json_matches(const SheRowJson *plan, TupleDesc tupdesc);
extern const char *she_row_json(SheRowJson *plan, HeapTuple tuple, int *len);

#endif							/* SHE_EMIT_JSON_H */
