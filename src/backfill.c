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
 * The batch query also runs code that the owners of the table's column
 * types chose (to_jsonb's casts to json, the key's casts), which a plain
 * SELECT never runs: _backfill_check_code() refuses such code of a role the
 * caller does not trust before anything is read.
 *
 * IDENTIFICATION
 *	  src/backfill.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_range.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parse_coerce.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "state_hub_events.h"

PG_FUNCTION_INFO_V1(she_backfill_check);
PG_FUNCTION_INFO_V1(she_backfill_no_xact_block);
PG_FUNCTION_INFO_V1(she_trigger_args);
PG_FUNCTION_INFO_V1(she_backfill_key_operator);
PG_FUNCTION_INFO_V1(she_backfill_check_code);

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

/*
 * Code a role owns runs with the current user's rights only if that role
 * is trusted with them: a superuser, the current user, or a role the
 * current user is a member of (and could become).  A superuser is not
 * treated as a member of every role here.
 */
static bool
owner_trusted(Oid owner)
{
	Oid			me = GetUserId();

	return owner == me || superuser_arg(owner) || is_member_of_role_nosuper(me, owner);
}

/* The owner of a type or of a function. */
static Oid
object_owner(int cacheid, Oid oid)
{
	HeapTuple	tup = SearchSysCache1(cacheid, ObjectIdGetDatum(oid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for object %u", oid);
	owner = (cacheid == TYPEOID) ? ((Form_pg_type) GETSTRUCT(tup))->typowner :
		((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Refuse to backfill rel: its column (NULL: reading rel itself) would run
 * code owned by owner; what says which.
 */
static void
refuse_code(Oid rel, const char *column, Oid owner, const char *what)
{
	char	   *ownername = GetUserNameFromId(owner, true);
	char	   *relname = DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(rel)));

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 column ?
			 errmsg("cannot backfill \"%s\": column \"%s\" would run code of role \"%s\" with your rights",
					relname, column, ownername ? ownername : "?") :
			 errmsg("cannot backfill \"%s\": reading it would run code of role \"%s\" with your rights",
					relname, ownername ? ownername : "?"),
			 errdetail("%s", what),
			 errhint("Backfill as that role (it needs EXECUTE on state_hub_events.publish()), or have a superuser own that code.")));
}

/* Refuse a cast from source to target whose function an untrusted role owns. */
static void
check_cast(Oid rel, const char *column, Oid source, Oid target)
{
	Oid			func = InvalidOid;
	Oid			owner;

	if (find_coercion_pathway(target, source, COERCION_EXPLICIT, &func) != COERCION_PATH_FUNC ||
		!OidIsValid(func))
		return;
	owner = object_owner(PROCOID, func);
	if (!owner_trusted(owner))
		refuse_code(rel, column, owner,
					psprintf("The cast from type %s to type %s runs function %s.",
							 format_type_be(source), format_type_be(target),
							 format_procedure(func)));
}

/*
 * What to_jsonb() runs for a value of type typid (jsonb.c's
 * jsonb_categorize_type): domains are looked through, arrays and
 * composites convert their elements and fields, and any other type
 * created by a role (not built in) is converted by its cast to json when
 * it has one.
 */
static void
check_jsonb_code(Oid rel, const char *column, Oid typid)
{
	Oid			elem;

	check_stack_depth();
	typid = getBaseType(typid);
	elem = get_element_type(typid);
	if (OidIsValid(elem))
		check_jsonb_code(rel, column, elem);
	else if (typid != RECORDOID && type_is_rowtype(typid))
	{
		TupleDesc	td = lookup_rowtype_tupdesc(typid, -1);
		int			i;

		for (i = 0; i < td->natts; i++)
			if (!TupleDescAttr(td, i)->attisdropped)
				check_jsonb_code(rel, column, TupleDescAttr(td, i)->atttypid);
		ReleaseTupleDesc(td);
	}
	else if (typid >= FirstNormalObjectId)
		check_cast(rel, column, typid, JSONOID);
}

/* Refuse function fn (if set) when an untrusted role owns it. */
static void
check_function(Oid rel, const char *column, Oid fn, const char *what)
{
	Oid			owner;

	if (!OidIsValid(fn) || fn < FirstNormalObjectId)
		return;
	owner = object_owner(PROCOID, fn);
	if (!owner_trusted(owner))
		refuse_code(rel, column, owner,
					psprintf("%s runs function %s.", what, format_procedure(fn)));
}

/*
 * Whether a domain has CHECK constraints of its own (NOT NULL runs no code,
 * so DomainHasConstraints, which counts it too, would over-refuse).
 */
static bool
domain_has_check(Oid typid)
{
	Relation	rel = table_open(ConstraintRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	ScanKeyInit(&key, Anum_pg_constraint_contypid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(typid));
	scan = systable_beginscan(rel, ConstraintTypidIndexId, true, NULL, 1, &key);
	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
		found = ((Form_pg_constraint) GETSTRUCT(tup))->contype == CONSTRAINT_CHECK;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The code a key value of a type a role created runs when it is read from
 * text and printed: the type's input and output functions, a range's
 * canonical function, and a domain's CHECK expressions (its owner's).
 */
static void
check_key_type_code(Oid rel, const char *column, Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	Form_pg_type t;
	Oid			input;
	Oid			output;
	Oid			owner;
	char		typtype;
	char	   *what = psprintf("The key's type %s", format_type_be(typid));

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	t = (Form_pg_type) GETSTRUCT(tup);
	input = t->typinput;
	output = t->typoutput;
	owner = t->typowner;
	typtype = t->typtype;
	ReleaseSysCache(tup);
	check_function(rel, column, input, what);
	check_function(rel, column, output, what);
	if (typtype == TYPTYPE_DOMAIN && !owner_trusted(owner) && domain_has_check(typid))
		refuse_code(rel, column, owner,
					psprintf("%s is a domain of that role with CHECK constraints; they would run.",
							 what));
	if (typtype == TYPTYPE_RANGE)
	{
		tup = SearchSysCache1(RANGETYPE, ObjectIdGetDatum(typid));
		if (HeapTupleIsValid(tup))
		{
			Oid			canonical = ((Form_pg_range) GETSTRUCT(tup))->rngcanonical;

			ReleaseSysCache(tup);
			check_function(rel, column, canonical, what);
		}
	}
	check_cast(rel, column, typid, TEXTOID);
	check_cast(rel, column, TEXTOID, typid);
}

/* The type a domain is defined over (itself a domain, perhaps). */
static Oid
domain_parent(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	Oid			parent;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	parent = ((Form_pg_type) GETSTRUCT(tup))->typbasetype;
	ReleaseSysCache(tup);
	return parent;
}

/*
 * What the batch query runs for a key value of type typid: it casts the
 * column to text, and the text it resumes after back to the column's type
 * (input and output functions, casts, a domain's CHECK constraints, also
 * of the elements, fields and range subtypes).  Such code that an
 * untrusted role owns is refused; a type merely owned by one (an enum, a
 * domain without constraints) runs only built-in code and passes.
 */
static void
check_key_code(Oid rel, const char *column, Oid typid)
{
	Oid			inner = InvalidOid;

	check_stack_depth();
	if (typid >= FirstNormalObjectId)
		check_key_type_code(rel, column, typid);
	switch (get_typtype(typid))
	{
		case TYPTYPE_DOMAIN:
			inner = domain_parent(typid);	/* each level's CHECKs run */
			break;
		case TYPTYPE_RANGE:
			inner = get_range_subtype(typid);
			break;
		case TYPTYPE_MULTIRANGE:
			inner = get_multirange_range(typid);
			break;
		case TYPTYPE_COMPOSITE:
			if (typid != RECORDOID)
			{
				TupleDesc	td = lookup_rowtype_tupdesc(typid, -1);
				int			i;

				for (i = 0; i < td->natts; i++)
					if (!TupleDescAttr(td, i)->attisdropped)
						check_key_code(rel, column, TupleDescAttr(td, i)->atttypid);
				ReleaseTupleDesc(td);
			}
			break;
		default:
			inner = get_element_type(typid);
			break;
	}
	if (OidIsValid(inner))
		check_key_code(rel, column, inner);
}

/*
 * _backfill_check_code(rel regclass, key text[]) RETURNS void
 *
 * A backfill runs with its caller's rights, and its batch query runs code
 * that the owners of the table's column types chose: to_jsonb(row) calls a
 * type's cast to json, and the key is cast to text and back.  A plain
 * SELECT of the table runs none of it.  Such code owned by a role that is
 * neither a superuser nor one the caller may become would run with the
 * caller's rights (a table's owner with CREATE on a schema makes the
 * superuser who backfills the table run a function of its own): refused,
 * before anything is read.
 */
Datum
she_backfill_check_code(PG_FUNCTION_ARGS)
{
	Oid			rel = PG_GETARG_OID(0);
	ArrayType  *key = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *keys;
	bool	   *nulls;
	int			nkeys;
	Relation	r;
	TupleDesc	td;
	int			i;

	/* like backfill(): only a table the caller may read is opened */
	if (pg_class_aclcheck(rel, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot backfill \"%s\": permission denied to read it",
						DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(rel))))));
	deconstruct_array(key, TEXTOID, -1, false, TYPALIGN_INT, &keys, &nulls, &nkeys);
	r = relation_open(rel, AccessShareLock);
	td = RelationGetDescr(r);
	/* a view's query and a policy's expressions run as the reader too */
	if (!owner_trusted(r->rd_rel->relowner) &&
		(r->rd_rel->relkind == RELKIND_VIEW ||
		 check_enable_rls(rel, InvalidOid, true) == RLS_ENABLED))
		refuse_code(rel, NULL, r->rd_rel->relowner,
					r->rd_rel->relkind == RELKIND_VIEW ?
					"The view's query runs the functions it calls with the reader's rights." :
					"Its row security policies run the functions they call with the reader's rights.");
	for (i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped)
			check_jsonb_code(rel, NameStr(att->attname), att->atttypid);
	}
	for (i = 0; i < nkeys; i++)
	{
		AttrNumber	attno;

		if (nulls[i])
			continue;
		attno = get_attnum(rel, TextDatumGetCString(keys[i]));
		if (attno > 0)
			check_key_code(rel, TextDatumGetCString(keys[i]), get_atttype(rel, attno));
	}
	relation_close(r, AccessShareLock);
	PG_RETURN_VOID();
}
