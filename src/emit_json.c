/*-------------------------------------------------------------------------
 *
 * emit_json.c
 *	  emit()'s fast path: a row's attributes as JSON text, rendered straight
 *	  from the tuple, byte for byte what to_jsonb(row)::text prints (and,
 *	  for column specs, what the object emit() builds from it prints).
 *
 * to_jsonb(row) makes a jsonb object of the live columns; printing it
 * gives the keys sorted as jsonb sorts them (shorter first, then bytewise;
 * of equal keys the last pushed wins), "{", "}", ", " and ": " between
 * them, strings escaped by escape_json.  Each column's value is what
 * to_jsonb makes of its type, domains looked through:
 *
 *	  int2, int4, int8		a number: the integer in decimal
 *	  numeric				a number as numeric_out prints it; NaN and the
 *							infinities become strings ("NaN", "Infinity")
 *	  bool					true / false
 *	  text, varchar, bpchar the bytes as a string (bpchar keeps its padding)
 *	  name, uuid			their output function's text as a string
 *	  date, timestamp,		JsonEncodeDateTime's text as a string (the very
 *	  timestamptz			function to_jsonb calls)
 *	  jsonb					the value itself, printed by JsonbToCString
 *	  NULL					null
 *
 * Any other type anywhere in the row (even in a column the specs do not
 * name: to_jsonb converts the whole row, and may refuse it) means no plan,
 * and emit() keeps to_jsonb.  So does a row whose variable-length values
 * pass SIZE_LIMIT bytes, so that the limits of jsonb (and their errors)
 * apply exactly as before; such a row is larger than any event anyway.
 *
 * IDENTIFICATION
 *	  src/emit_json.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "envelope_json.h"
#include "emit_json.h"

/* Rows with more variable-length bytes than this keep to_jsonb. */
#define SIZE_LIMIT	(64 * 1024 * 1024)

/* How one value is written. */
typedef enum RowJsonKind
{
	RJ_NONE,					/* no exact rendering: no plan */
	RJ_MISSING,					/* a column the specs name but the table lacks */
	RJ_INT2,
	RJ_INT4,
	RJ_INT8,
	RJ_NUMERIC,
	RJ_BOOL,
	RJ_TEXT,
	RJ_NAME,
	RJ_UUID,
	RJ_DATETIME,
	RJ_JSONB
} RowJsonKind;

/* One key of the object, in output order. */
typedef struct RowJsonField
{
	const char *key;			/* raw (unescaped) key */
	int			keylen;
	int			order;			/* position among the specs: the last wins */
	int			attno;			/* 0-based column, -1 when missing */
	RowJsonKind kind;
	Oid			typid;			/* base type, for RJ_DATETIME */
	char	   *prefix;			/* "\"key\": " escaped, NUL-terminated */
} RowJsonField;

struct SheRowJson
{
	TupleDesc	tupdesc;		/* the descriptor the plan was made for */
	int			natts;
	Oid		   *atttypids;		/* its columns' types, InvalidOid if dropped */
	NameData   *attnames;		/* and names */
	int			nfields;
	RowJsonField *fields;
	Datum	   *values;
	bool	   *isnull;
};

/* The output buffer, reused across rows. */
static StringInfo out = NULL;

/*
 * The rendering of a base type, or RJ_NONE.
 */
static RowJsonKind
kind_of(Oid typid)
{
	switch (typid)
	{
		case INT2OID:
			return RJ_INT2;
		case INT4OID:
			return RJ_INT4;
		case INT8OID:
			return RJ_INT8;
		case NUMERICOID:
			return RJ_NUMERIC;
		case BOOLOID:
			return RJ_BOOL;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			return RJ_TEXT;
		case NAMEOID:
			return RJ_NAME;
		case UUIDOID:
			return RJ_UUID;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return RJ_DATETIME;
		case JSONBOID:
			return RJ_JSONB;
		default:
			return RJ_NONE;
	}
}

/*
 * qsort comparator: jsonb's key order (length, then bytes), and of equal
 * keys the later spec first, so that it is the one kept.
 */
static int
field_cmp(const void *a, const void *b)
{
	const RowJsonField *fa = a;
	const RowJsonField *fb = b;
	int			r;

	if (fa->keylen != fb->keylen)
		return (fa->keylen > fb->keylen) ? 1 : -1;
	r = memcmp(fa->key, fb->key, fa->keylen);
	if (r != 0)
		return r;
	return (fa->order > fb->order) ? -1 : 1;
}

/*
 * The live column named name, 0-based, or -1.
 */
static int
find_column(TupleDesc tupdesc, const char *name)
{
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i;
	}
	return -1;
}

/*
 * Sort the fields, drop the duplicate keys, and write each key's prefix.
 */
static void
finish_fields(SheRowJson *plan)
{
	int			i;
	int			n = 0;

	if (plan->nfields > 1)
		qsort(plan->fields, plan->nfields, sizeof(RowJsonField), field_cmp);
	for (i = 0; i < plan->nfields; i++)
	{
		RowJsonField *f = &plan->fields[i];

		if (n > 0 && plan->fields[n - 1].keylen == f->keylen &&
			memcmp(plan->fields[n - 1].key, f->key, f->keylen) == 0)
			continue;
		f->prefix = palloc(she_json_string_len_n(f->key, f->keylen) + 3);
		memcpy(she_json_string_n(f->prefix, f->key, f->keylen), ": ", 3);
		plan->fields[n++] = *f;
	}
	plan->nfields = n;
}

/*
 * A plan for rendering rows of tupdesc: all live columns (ncolumns 0) or the
 * column specs (columns[i] read as attributes[i]).  NULL when some live
 * column's type has no exact rendering.  Allocated in cxt.
 */
SheRowJson *
she_row_json_plan(TupleDesc tupdesc, int ncolumns, char *const *columns,
				  char *const *attributes, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	SheRowJson *plan = palloc0(sizeof(SheRowJson));
	RowJsonKind *kinds = palloc(sizeof(RowJsonKind) * Max(tupdesc->natts, 1));
	Oid		   *types = palloc(sizeof(Oid) * Max(tupdesc->natts, 1));
	int			i;

	plan->tupdesc = tupdesc;
	plan->natts = tupdesc->natts;
	plan->atttypids = palloc(sizeof(Oid) * Max(tupdesc->natts, 1));
	plan->attnames = palloc(sizeof(NameData) * Max(tupdesc->natts, 1));
	plan->fields = palloc(sizeof(RowJsonField) * Max(Max(tupdesc->natts, ncolumns), 1));
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		plan->atttypids[i] = att->attisdropped ? InvalidOid : att->atttypid;
		plan->attnames[i] = att->attname;
		if (att->attisdropped)
			continue;
		types[i] = getBaseType(att->atttypid);
		kinds[i] = kind_of(types[i]);
		if (kinds[i] == RJ_NONE)
		{
			MemoryContextSwitchTo(old);
			return NULL;
		}
		if (ncolumns == 0)
		{
			RowJsonField *f = &plan->fields[plan->nfields];

			f->key = NameStr(att->attname);
			f->order = plan->nfields++;
			f->attno = i;
		}
	}
	for (i = 0; i < ncolumns; i++)
	{
		RowJsonField *f = &plan->fields[plan->nfields];

		f->key = attributes[i];
		f->order = plan->nfields++;
		f->attno = find_column(tupdesc, columns[i]);
	}
	for (i = 0; i < plan->nfields; i++)
	{
		RowJsonField *f = &plan->fields[i];

		f->keylen = strlen(f->key);
		f->kind = (f->attno < 0) ? RJ_MISSING : kinds[f->attno];
		f->typid = (f->attno < 0) ? InvalidOid : types[f->attno];
	}
	finish_fields(plan);
	plan->values = palloc(sizeof(Datum) * Max(tupdesc->natts, 1));
	plan->isnull = palloc(sizeof(bool) * Max(tupdesc->natts, 1));
	MemoryContextSwitchTo(old);
	return plan;
}

/*
 * Whether plan was made for tupdesc: the same descriptor, with the same
 * columns (names, types, dropped ones).  A table's columns cannot change
 * while a query (and so emit()'s cache) uses it; this is a second guard.
 */
bool
she_row_json_matches(const SheRowJson *plan, TupleDesc tupdesc)
{
	int			i;

	if (plan->tupdesc != tupdesc || plan->natts != tupdesc->natts)
		return false;
	for (i = 0; i < plan->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (plan->atttypids[i] != (att->attisdropped ? InvalidOid : att->atttypid) ||
			strcmp(NameStr(plan->attnames[i]), NameStr(att->attname)) != 0)
			return false;
	}
	return true;
}

/*
 * Append the len bytes at s as a JSON string.
 */
static void
append_string(StringInfo buf, const char *s, size_t len)
{
	size_t		n = she_json_string_len_n(s, len);

	enlargeStringInfo(buf, (int) n);
	she_json_string_n(buf->data + buf->len, s, len);
	buf->len += (int) n;
	buf->data[buf->len] = '\0';
}

/*
 * Append a uuid as uuid_out writes it, quoted.
 */
static void
append_uuid(StringInfo buf, const pg_uuid_t *u)
{
	static const char hex[] = "0123456789abcdef";
	char		s[2 + 36];
	char	   *p = s;
	int			i;

	*p++ = '"';
	for (i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[u->data[i] >> 4];
		*p++ = hex[u->data[i] & 0x0f];
	}
	*p++ = '"';
	appendBinaryStringInfo(buf, s, p - s);
}

/*
 * Append a numeric as to_jsonb prints it: a number, but NaN and the
 * infinities (which JSON numbers cannot be) as strings.
 */
static void
append_numeric(StringInfo buf, Datum v)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, v));

	if (s[0] == 'N' || s[0] == 'I' || (s[0] == '-' && s[1] == 'I'))
		append_string(buf, s, strlen(s));
	else
		appendStringInfoString(buf, s);
}

/*
 * Append one non-NULL value of field f.
 */
static void
append_value(StringInfo buf, const RowJsonField *f, Datum v)
{
	char		tmp[Max(MAXDATELEN, MAXINT8LEN) + 1];
	struct varlena *t;
	Jsonb	   *jb;

	switch (f->kind)
	{
		case RJ_INT2:
			appendBinaryStringInfo(buf, tmp, pg_itoa(DatumGetInt16(v), tmp));
			break;
		case RJ_INT4:
			appendBinaryStringInfo(buf, tmp, pg_ltoa(DatumGetInt32(v), tmp));
			break;
		case RJ_INT8:
			appendBinaryStringInfo(buf, tmp, pg_lltoa(DatumGetInt64(v), tmp));
			break;
		case RJ_NUMERIC:
			append_numeric(buf, v);
			break;
		case RJ_BOOL:
			appendStringInfoString(buf, DatumGetBool(v) ? "true" : "false");
			break;
		case RJ_TEXT:
			t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));
			append_string(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			break;
		case RJ_NAME:
			append_string(buf, NameStr(*DatumGetName(v)), strlen(NameStr(*DatumGetName(v))));
			break;
		case RJ_UUID:
			append_uuid(buf, DatumGetUUIDP(v));
			break;
		case RJ_DATETIME:
			JsonEncodeDateTime(tmp, v, f->typid, NULL);
			append_string(buf, tmp, strlen(tmp));
			break;
		case RJ_JSONB:
			jb = DatumGetJsonbP(v);
			(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
			break;
		case RJ_NONE:
		case RJ_MISSING:
			elog(ERROR, "unexpected kind of emit() attribute: %d", (int) f->kind);
	}
}

/*
 * The bytes to_jsonb would take in: the variable-length values, as stored
 * before compression.  Stops counting past SIZE_LIMIT.
 */
static Size
row_varlena_bytes(const SheRowJson *plan)
{
	Size		n = 0;
	int			i;

	for (i = 0; i < plan->natts && n <= SIZE_LIMIT; i++)
	{
		Form_pg_attribute att = TupleDescAttr(plan->tupdesc, i);

		if (att->attlen == -1 && !att->attisdropped && !plan->isnull[i])
			n += toast_raw_datum_size(plan->values[i]);
	}
	return n;
}

/*
 * The attributes of tuple as JSON text (NUL-terminated, in the database's
 * encoding; *len bytes), valid until the next call; NULL when the row must
 * go through to_jsonb instead (see SIZE_LIMIT).  Allocates in the current
 * memory context (the trigger's per-row one).
 */
const char *
she_row_json(SheRowJson *plan, HeapTuple tuple, int *len)
{
	int			i;

	heap_deform_tuple(tuple, plan->tupdesc, plan->values, plan->isnull);
	if (row_varlena_bytes(plan) > SIZE_LIMIT)
		return NULL;

	if (out == NULL || out->maxlen > 4 * 1024 * 1024)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (out != NULL)
		{
			pfree(out->data);
			pfree(out);
		}
		out = makeStringInfo();
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(out);
	appendStringInfoChar(out, '{');
	for (i = 0; i < plan->nfields; i++)
	{
		const RowJsonField *f = &plan->fields[i];

		if (i > 0)
			appendBinaryStringInfo(out, ", ", 2);
		appendStringInfoString(out, f->prefix);
		if (f->attno < 0 || plan->isnull[f->attno])
			appendBinaryStringInfo(out, "null", 4);
		else
			append_value(out, f, plan->values[f->attno]);
	}
	appendStringInfoChar(out, '}');
	*len = out->len;
	return out->data;
}
