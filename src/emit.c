/*-------------------------------------------------------------------------
 *
 * emit.c
 *	  The emit() trigger function, and check_trigger() which validates an
 *	  emit() trigger's definition before the first write.  check_trigger()
 *	  is reachable by every role (the event trigger runs as whoever creates
 *	  a trigger), so it opens a table only for a caller with SELECT or
 *	  TRIGGER on it.
 *
 *	  CREATE TRIGGER ... AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW
 *	  EXECUTE FUNCTION state_hub_events.emit(subject [, column[:attribute] ...]);
 *
 * Attribute values are what to_jsonb(row) gives them.  Rows whose columns
 * all have types with a known exact rendering are written as JSON text
 * straight from the tuple (emit_json.c); others call to_jsonb through fmgr
 * and print the jsonb.  Both give the same bytes.  A model: contrib/tcn.
 *
 * IDENTIFICATION
 *	  src/emit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "emit_json.h"
#include "state_hub_events.h"

PG_FUNCTION_INFO_V1(she_emit);
PG_FUNCTION_INFO_V1(she_check_trigger);

/* One column_spec: the column read and the attribute name it becomes. */
typedef struct EmitColumn
{
	char	   *column;
	char	   *attribute;
} EmitColumn;

/*
 * Per-trigger cache in fn_extra (which lives as long as the query's trigger
 * state): parsed arguments, the fast path's plan for the table's
 * descriptor, and to_jsonb's lookup, made when first needed.
 */
typedef struct EmitCache
{
	Oid			tgoid;
	char	   *subject;
	int			ncolumns;
	EmitColumn *columns;
	bool		planned;		/* plan_tupdesc and plan are set */
	TupleDesc	plan_tupdesc;	/* the descriptor plan was made for */
	int			plan_natts;
	SheRowJson *plan;			/* NULL: every row goes through to_jsonb */
	bool		have_to_jsonb;
	FmgrInfo	to_jsonb;
} EmitCache;

/*
 * Validate an emit() trigger's definition: timing, level, subject and
 * columns.  Raises a clear ERROR naming the problem.  Returns the parsed
 * column specs (allocated in cxt) through columns/ncolumns when asked.
 */
static void
validate_emit(const char *tgname, const char *relname, TupleDesc tupdesc,
			  int16 tgtype, int nargs, char **args,
			  MemoryContext cxt, EmitColumn **columns, int *ncolumns)
{
	EmitColumn *cols = NULL;
	int			i;

	if (!TRIGGER_FOR_ROW(tgtype))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" cannot use state_hub_events.emit() FOR EACH STATEMENT",
						tgname, relname),
				 errhint("Create it AFTER ... FOR EACH ROW.")));
	if (!TRIGGER_FOR_AFTER(tgtype))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" cannot use state_hub_events.emit() as a BEFORE or INSTEAD OF trigger",
						tgname, relname),
				 errhint("Create it AFTER ... FOR EACH ROW, so only rows that were written emit events.")));
	if (nargs < 1 || args[0] == NULL || args[0][0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" calls state_hub_events.emit() without a subject",
						tgname, relname),
				 errhint("Pass the subject as the first argument: EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered').")));

	she_check_subject(args[0]);
	she_check_subject_covered(args[0]);

	if (nargs > 1)
		cols = MemoryContextAlloc(cxt, sizeof(EmitColumn) * (nargs - 1));
	for (i = 1; i < nargs; i++)
	{
		char	   *spec = MemoryContextStrdup(cxt, args[i]);
		char	   *colon = strchr(spec, ':');
		EmitColumn *c = &cols[i - 1];
		int			attno;
		bool		found = false;

		c->column = spec;
		c->attribute = spec;
		if (colon != NULL)
		{
			*colon = '\0';
			c->attribute = colon + 1;
		}
		if (c->column[0] == '\0' || c->attribute[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("trigger \"%s\" on \"%s\" has an empty column or attribute name in \"%s\"",
							tgname, relname, args[i]),
					 errhint("A column_spec is \"column\" or \"column:attribute\".")));
		for (attno = 0; attno < tupdesc->natts; attno++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, attno);

			if (!att->attisdropped && strcmp(NameStr(att->attname), c->column) == 0)
			{
				found = true;
				break;
			}
		}
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" named by trigger \"%s\" does not exist in \"%s\"",
							c->column, tgname, relname)));
	}
	if (columns != NULL)
	{
		*columns = cols;
		*ncolumns = nargs - 1;
	}
}

/*
 * The fast path's plan for tupdesc (NULL: to_jsonb), made again whenever
 * the table's columns are not those it was made for.
 */
static SheRowJson *
emit_plan(EmitCache *cache, TupleDesc tupdesc, MemoryContext cxt)
{
	char	  **columns;
	char	  **attributes;
	int			i;

	if (cache->planned && (cache->plan == NULL ?
						   cache->plan_tupdesc == tupdesc && cache->plan_natts == tupdesc->natts :
						   she_row_json_matches(cache->plan, tupdesc)))
		return cache->plan;

	columns = palloc(sizeof(char *) * Max(cache->ncolumns, 1));
	attributes = palloc(sizeof(char *) * Max(cache->ncolumns, 1));
	for (i = 0; i < cache->ncolumns; i++)
	{
		columns[i] = cache->columns[i].column;
		attributes[i] = cache->columns[i].attribute;
	}
	cache->plan = she_row_json_plan(tupdesc, cache->ncolumns, columns, attributes, cxt);
	cache->plan_tupdesc = tupdesc;
	cache->plan_natts = tupdesc->natts;
	cache->planned = true;
	return cache->plan;
}

/*
 * The attributes of tuple through to_jsonb(row): the whole object, or the
 * one built from the column specs (a column the row lacks gives null).
 */
static Jsonb *
emit_attrs_jsonb(EmitCache *cache, HeapTuple tuple, TupleDesc tupdesc,
				 MemoryContext cxt)
{
	Jsonb	   *row;
	JsonbParseState *state = NULL;
	JsonbValue *res;
	int			i;

	if (!cache->have_to_jsonb)
	{
		MemoryContext old;
		FuncExpr   *expr;

		fmgr_info_cxt(F_TO_JSONB, &cache->to_jsonb, cxt);
		/* to_jsonb(anyelement) reads its argument type from fn_expr */
		old = MemoryContextSwitchTo(cxt);
		expr = makeFuncExpr(F_TO_JSONB, JSONBOID,
							list_make1(makeNullConst(tupdesc->tdtypeid, -1, InvalidOid)),
							InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		MemoryContextSwitchTo(old);
		cache->to_jsonb.fn_expr = (Node *) expr;
		cache->have_to_jsonb = true;
	}

	row = DatumGetJsonbP(FunctionCall1(&cache->to_jsonb,
									   heap_copy_tuple_as_datum(tuple, tupdesc)));
	if (cache->ncolumns == 0)
		return row;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < cache->ncolumns; i++)
	{
		EmitColumn *c = &cache->columns[i];
		JsonbValue	key;
		JsonbValue *val;
		JsonbValue	nullval;

		key.type = jbvString;
		key.val.string.val = c->attribute;
		key.val.string.len = strlen(c->attribute);
		val = getKeyJsonValueFromContainer(&row->root, c->column,
										   strlen(c->column), NULL);
		if (val == NULL)
		{
			nullval.type = jbvNull;
			val = &nullval;
		}
		pushJsonbValue(&state, WJB_KEY, &key);
		pushJsonbValue(&state, WJB_VALUE, val);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * emit() trigger function: buffers one event per written row.
 */
Datum
she_emit(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	EmitCache  *cache;
	MemoryContext cxt = fcinfo->flinfo->fn_mcxt;
	SheRowJson *plan;
	char		id[SHE_UUID_LEN + 1];

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("state_hub_events.emit() can only be called as a trigger")));
	trigger = trigdata->tg_trigger;
	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);

	if (!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) &&
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		!TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on \"%s\" cannot use state_hub_events.emit() for TRUNCATE",
						trigger->tgname, RelationGetRelationName(rel))));

	cache = (EmitCache *) fcinfo->flinfo->fn_extra;
	if (cache == NULL || cache->tgoid != trigger->tgoid)
	{
		cache = MemoryContextAllocZero(cxt, sizeof(EmitCache));
		validate_emit(trigger->tgname, RelationGetRelationName(rel), tupdesc,
					  trigger->tgtype, trigger->tgnargs, trigger->tgargs,
					  cxt, &cache->columns, &cache->ncolumns);
		cache->subject = MemoryContextStrdup(cxt, trigger->tgargs[0]);
		cache->tgoid = trigger->tgoid;
		fcinfo->flinfo->fn_extra = cache;
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		tuple = trigdata->tg_newtuple;
	else
		tuple = trigdata->tg_trigtuple;	/* INSERT: new row; DELETE: old row */

	plan = emit_plan(cache, tupdesc, cxt);
	if (plan != NULL)
	{
		int			len;
		const char *json = she_row_json(plan, tuple, &len);

		if (json != NULL)
		{
			she_buffer_event_json(cache->subject, json, len, id);
			return PointerGetDatum(NULL);
		}
	}
	she_buffer_event(cache->subject, emit_attrs_jsonb(cache, tuple, tupdesc, cxt), id);

	return PointerGetDatum(NULL);
}

/*
 * _check_trigger(trigger_oid oid, emit_oid oid) RETURNS boolean
 *
 * Validates a trigger that calls state_hub_events.emit(): true when it is
 * sound, a clear ERROR otherwise; false for triggers that do not call
 * emit().  Runs at CREATE TRIGGER through an event trigger, and by hand
 * through check_triggers(regclass).
 *
 * Before it locks the table and reads its columns, the caller must hold
 * SELECT or TRIGGER on it (owners hold both): CREATE TRIGGER needs TRIGGER,
 * so the event trigger always passes, and nobody else can lock a table or
 * probe its definition through this function.
 */
Datum
she_check_trigger(PG_FUNCTION_ARGS)
{
	Oid			tgoid = PG_GETARG_OID(0);
	Oid			emit_oid = PG_GETARG_OID(1);
	Relation	tgrel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Form_pg_trigger tg;
	Relation	rel;
	char	  **args = NULL;
	int			nargs;
	char	   *tgname;

	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(tgoid));
	scan = systable_beginscan(tgrel, TriggerOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
	{
		systable_endscan(scan);
		table_close(tgrel, AccessShareLock);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("trigger with OID %u does not exist", tgoid)));
	}
	tg = (Form_pg_trigger) GETSTRUCT(tup);
	if (tg->tgfoid != emit_oid)
	{
		systable_endscan(scan);
		table_close(tgrel, AccessShareLock);
		PG_RETURN_BOOL(false);
	}

	tgname = pstrdup(NameStr(tg->tgname));
	nargs = tg->tgnargs;
	if (nargs > 0)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_trigger_tgargs,
									 RelationGetDescr(tgrel), &isnull);
		bytea	   *val = DatumGetByteaPP(d);
		char	   *p = VARDATA_ANY(val);
		int			i;

		args = palloc(nargs * sizeof(char *));
		for (i = 0; i < nargs; i++)
		{
			args[i] = pstrdup(p);
			p += strlen(p) + 1;
		}
	}

	if (pg_class_aclmask(tg->tgrelid, GetUserId(), ACL_SELECT | ACL_TRIGGER,
						 ACLMASK_ANY) == 0)
	{
		char	   *relname = get_rel_name(tg->tgrelid);

		systable_endscan(scan);
		table_close(tgrel, AccessShareLock);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot check the triggers of table \"%s\": permission denied",
						relname ? relname : "?"),
				 errhint("Checking a table's emit() triggers needs SELECT or TRIGGER on it.")));
	}

	rel = table_open(tg->tgrelid, AccessShareLock);
	validate_emit(tgname, RelationGetRelationName(rel), RelationGetDescr(rel),
				  tg->tgtype, nargs, args, CurrentMemoryContext, NULL, NULL);
	table_close(rel, AccessShareLock);

	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	PG_RETURN_BOOL(true);
}
