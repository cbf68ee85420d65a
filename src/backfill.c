/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  The C parts of backfill(): the checks made at the call, the
 *	  splitting of an emit() trigger's arguments, and the key type's
 *	  ordering operator.  The batches themselves
 *	  are PL/pgSQL (state_hub_events--1.2--1.3.sql): a procedure that
 *	  COMMITs between batches, running with its caller's rights.
 *
 * The "where" text is SQL its caller could run as themselves, and it runs
 * with nobody else's rights; still, it must stay one boolean expression and
 * never reshape the batch query around it (a trailing "--" would comment out
 * the batch's key condition and LIMIT, a ") ORDER BY" would reorder it).  It
 * is parsed here as the WHERE clause of a statement of its own, and refused
 * unless that statement is exactly "SELECT 1 WHERE <expression>".
 *
 * IDENTIFICATION
 *	  src/backfill.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/stratnum.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "state_hub_events.h"

PG_FUNCTION_INFO_V1(she_backfill_check);
PG_FUNCTION_INFO_V1(she_backfill_no_xact_block);
PG_FUNCTION_INFO_V1(she_trigger_args);
PG_FUNCTION_INFO_V1(she_backfill_key_operator);

#define WHERE_PREFIX "SELECT 1 WHERE "

/* Error context while the "where" text is parsed: positions point into it. */
static void
where_error_callback(void *arg)
{
	const char *where = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		pos -= (int) strlen(WHERE_PREFIX);
		if (pos > 0)
		{
			internalerrposition(pos);
			internalerrquery(where);
		}
	}
	errcontext("backfill's \"where\" text");
}

/*
 * Refuse a "where" text that is not exactly one expression.  Whether it is
 * boolean, and whether its columns exist, the batch query itself says
 * before anything is published.
 */
static void
check_where(const char *where)
{
	ErrorContextCallback errcb;
	List	   *raw;
	RawStmt    *rs;
	SelectStmt *s;
	const char *p;

	for (p = where; *p && isspace((unsigned char) *p); p++)
		;
	if (*p == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot backfill with an empty \"where\" text"),
				 errhint("Pass NULL for every row, or a boolean expression such as 'id > 100'.")));

	errcb.callback = where_error_callback;
	errcb.arg = (void *) where;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	raw = raw_parser(psprintf(WHERE_PREFIX "%s", where), RAW_PARSE_DEFAULT);
	error_context_stack = errcb.previous;

	rs = (list_length(raw) == 1) ? linitial_node(RawStmt, raw) : NULL;
	s = (rs != NULL && IsA(rs->stmt, SelectStmt)) ? (SelectStmt *) rs->stmt : NULL;
	if (s == NULL || rs->stmt_len != 0 ||
		s->op != SETOP_NONE || s->whereClause == NULL ||
		list_length(s->targetList) != 1 || s->fromClause != NIL ||
		s->intoClause != NULL || s->distinctClause != NIL ||
		s->groupClause != NIL || s->havingClause != NULL ||
		s->windowClause != NIL || s->valuesLists != NIL ||
		s->sortClause != NIL || s->limitOffset != NULL ||
		s->limitCount != NULL || s->lockingClause != NIL ||
		s->withClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("cannot backfill with \"where\" text \"%s\": it is not a single expression", where),
				 errdetail("The text must be one boolean expression over the table's columns, without a semicolon or clauses of its own."),
				 errhint("For example: 'created_at < now() - interval ''1 day'''.")));
}

/*
 * _backfill_check(subject text, "where" text, batch_size integer) RETURNS void
 *
 * The checks of backfill()'s arguments that need the library: the subject
 * as publish() checks it (also when no row will be published), the batch
 * size against max_events_per_transaction, and the shape of "where".
 */
Datum
she_backfill_check(PG_FUNCTION_ARGS)
{
	char	   *subject;
	int			batch_size;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cannot backfill with a NULL subject"),
				 errhint("Pass the subject the events get, usually the one of the table's emit() trigger.")));
	subject = text_to_cstring(PG_GETARG_TEXT_PP(0));
	she_check_subject(subject);
	she_check_subject_covered(subject);

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cannot backfill with a NULL batch_size")));
	batch_size = PG_GETARG_INT32(2);
	if (batch_size < 1 || batch_size > she_max_events_per_xact)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot backfill in batches of %d rows", batch_size),
				 errdetail("batch_size must be between 1 and state_hub_events.max_events_per_transaction (%d).",
						   she_max_events_per_xact)));

	if (!PG_ARGISNULL(1))
		check_where(text_to_cstring(PG_GETARG_TEXT_PP(1)));

	PG_RETURN_VOID();
}

/*
 * _backfill_no_xact_block() RETURNS void
 *
 * backfill() COMMITs after each batch: refuse it inside BEGIN ... COMMIT
 * at the call, as VACUUM does, rather than after a first batch's work.
 */
Datum
she_backfill_no_xact_block(PG_FUNCTION_ARGS)
{
	PreventInTransactionBlock(true, "CALL state_hub_events.backfill()");
	PG_RETURN_VOID();
}

/*
 * _trigger_args(tgargs bytea, tgnargs int2) RETURNS text[]
 *
 * pg_trigger's arguments (NUL-terminated strings, one after the other) as
 * an array.  Executable by PUBLIC (backfill() calls it with its caller's
 * rights), so input pg_trigger never holds is refused with a user error.
 */
Datum
she_trigger_args(PG_FUNCTION_ARGS)
{
	bytea	   *args = PG_GETARG_BYTEA_PP(0);
	int			nargs = PG_GETARG_INT16(1);
	const char *p = VARDATA_ANY(args);
	const char *end = p + VARSIZE_ANY_EXHDR(args);
	Datum	   *elems;
	int			i;

	if (nargs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot split trigger arguments: their count %d is negative", nargs),
				 errdetail("The count is pg_trigger.tgnargs, zero or more.")));

	elems = palloc(sizeof(Datum) * Max(nargs, 1));
	for (i = 0; i < nargs; i++)
	{
		size_t		len = strnlen(p, end - p);

		if (p + len >= end)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot split trigger arguments: %d expected, only %d end with a zero byte",
							nargs, i),
					 errdetail("pg_trigger.tgargs holds each argument followed by a zero byte.")));
		/* text in the database encoding, as pg_trigger's arguments are */
		(void) pg_verifymbstr(p, len, false);
		elems[i] = PointerGetDatum(cstring_to_text_with_len(p, len));
		p += len + 1;
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, nargs, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * _backfill_key_operator(typ regtype, strategy integer) RETURNS regoperator
 *
 * The operator of a btree strategy (3 "=", 4 ">=", 5 ">") of a key column's
 * type: the member of the type's default btree operator class, whose
 * ordering ORDER BY uses.  The batch query names it schema-qualified, so no
 * operator in a schema of its caller's search_path is ever chosen for the
 * key comparison.  NULL when the type cannot be sorted (no default btree
 * operator class, or an array or composite of such a type).  Executable by
 * PUBLIC: it reads nothing but the catalogs.
 */
Datum
she_backfill_key_operator(PG_FUNCTION_ARGS)
{
	Oid			typid = PG_GETARG_OID(0);
	int32		strategy = PG_GETARG_INT32(1);
	TypeCacheEntry *tc;
	Oid			op;

	if (strategy < BTLessStrategyNumber || strategy > BTGreaterStrategyNumber)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot find a btree operator of strategy %d", strategy),
				 errdetail("Btree strategies are 1 to 5.")));
	if (!OidIsValid(typid) || !SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(typid)) ||
		!get_typisdefined(typid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cannot find the ordering of type with OID %u: it does not exist", typid)));
	/* gt_opr is set only if the type (and its elements or fields) sorts */
	tc = lookup_type_cache(typid, TYPECACHE_GT_OPR | TYPECACHE_BTREE_OPFAMILY);
	if (!OidIsValid(tc->gt_opr) || !OidIsValid(tc->btree_opf))
		PG_RETURN_NULL();
	op = get_opfamily_member(tc->btree_opf, tc->btree_opintype, tc->btree_opintype,
							 (int16) strategy);
	if (!OidIsValid(op))
		PG_RETURN_NULL();
	PG_RETURN_OID(op);
}
