/*-------------------------------------------------------------------------
 *
 * ddl_guard.c
 *	  DDL that would lose or strand the durable backlog.
 *
 * - Dropping state_hub_events.outbox while it holds events (DROP EXTENSION,
 *   DROP SCHEMA ... CASCADE, DROP OWNED) is refused, with the count and how
 *   to discard them on purpose; so is dropping state_hub_events.rejected
 *   while it holds events the stream refused (committed events that were
 *   never published, waiting for their cause to be fixed and for
 *   requeue_rejected()).  An object-access hook sees the drop of the
 *   table, whatever command caused it; the event trigger
 *   state_hub_events_guard_drop exists so that the library, and with it the
 *   hook, is loaded before such a command even in a session that has not
 *   used the extension yet.
 * - DROP DATABASE, ALTER DATABASE ... RENAME, ALTER DATABASE ... SET
 *   TABLESPACE and CREATE DATABASE ... TEMPLATE of the database the durable
 *   worker serves need that database to have no connections: the worker is
 *   stopped first, and the launcher starts it again once the command's
 *   transaction has ended.  A drop warns how many unpublished events went
 *   with it; a rename says which setting to change.
 *
 * IDENTIFICATION
 *	  src/ddl_guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/event_trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state_hub_events.h"

#define WORKER_STOP_WAIT_MS 10000

PG_FUNCTION_INFO_V1(she_guard_drop);

static object_access_hook_type prev_object_access_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* The guarded table relid is ("outbox" or "rejected"), or NULL. */
static const char *
guarded_table(Oid relid)
{
	Oid			nsp = get_namespace_oid("state_hub_events", true);
	char	   *name;

	if (!OidIsValid(nsp) || get_rel_namespace(relid) != nsp ||
		get_rel_relkind(relid) != RELKIND_RELATION)
		return NULL;
	name = get_rel_name(relid);
	if (name != NULL && strcmp(name, "outbox") == 0)
		return "outbox";
	if (name != NULL && strcmp(name, "rejected") == 0)
		return "rejected";
	return NULL;
}

/* Rows of the table committed so far (the drop holds its exclusive lock). */
static int64
count_rows(Oid relid)
{
	Relation	rel = table_open(relid, AccessExclusiveLock);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int64		n = 0;

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		n++;
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return n;
}

static void
guard_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					int subId, void *arg)
{
	const char *table = NULL;

	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access == OAT_DROP && classId == RelationRelationId && subId == 0)
		table = guarded_table(objectId);
	if (table != NULL && strcmp(table, "rejected") == 0)
	{
		int64		n = count_rows(objectId);

		if (n > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg_plural("cannot drop state_hub_events.rejected: it holds %lld committed event the stream refused",
								   "cannot drop state_hub_events.rejected: it holds %lld committed events the stream refused",
								   n, (long long) n),
					 errdetail_plural("The stream refused it, so it was never published; dropping the table would lose it.",
									  "The stream refused them, so they were never published; dropping the table would lose them.",
									  n),
					 errhint("Fix the cause and put them back (SELECT state_hub_events.requeue_rejected()), "
							 "or discard them on purpose first: TRUNCATE state_hub_events.rejected.")));
	}
	else if (table != NULL)
	{
		int64		n = count_rows(objectId);

		if (n > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg_plural("cannot drop state_hub_events.outbox: it holds %lld committed event not yet published",
								   "cannot drop state_hub_events.outbox: it holds %lld committed events not yet published",
								   n, (long long) n),
					 errdetail("Durable delivery keeps them there until JetStream acknowledges them; dropping the table would lose them."),
					 errhint("Let the worker publish them (SELECT * FROM state_hub_events.backlog()), "
							 "or discard them on purpose first: TRUNCATE state_hub_events.outbox.")));
	}
}

/*
 * Whether relid is a guarded table, or an index of one, that the current
 * role may not name in a command that locks it before its privilege check
 * (priv: the privilege that allows the command; 0: only the owner).
 */
static bool
guarded_refused(Oid relid, AclMode priv)
{
	if (OidIsValid(relid) && get_rel_relkind(relid) == RELKIND_INDEX)
	{
		Oid			heap = IndexGetRelation(relid, true);

		return OidIsValid(heap) && guarded_table(heap) != NULL &&
			!she_rel_ownercheck(heap, GetUserId());
	}
	return OidIsValid(relid) && guarded_table(relid) != NULL &&
		!she_rel_ownercheck(relid, GetUserId()) &&
		(priv == 0 || pg_class_aclcheck(relid, GetUserId(), priv) != ACLCHECK_OK);
}

/*
 * The extension's relation of the same name as an unqualified rv, when its
 * schema is on the search path.  The guard looks the name up without a
 * lock and PostgreSQL looks it up again: if a relation of that name earlier
 * on the path is dropped in between (its DROP committing while the command
 * waits for a lock), PostgreSQL's lookup lands on the extension's.  So the
 * twin is checked too.
 */
static Oid
guarded_twin(RangeVar *rv)
{
	Oid			nsp;
	List	   *path;
	bool		on_path;

	if (rv->schemaname != NULL)
		return InvalidOid;
	nsp = get_namespace_oid("state_hub_events", true);
	if (!OidIsValid(nsp))
		return InvalidOid;
	path = fetch_search_path(false);
	on_path = list_member_oid(path, nsp);
	list_free(path);
	return on_path ? get_relname_relid(rv->relname, nsp) : InvalidOid;
}

/*
 * Refuse, before PostgreSQL locks it, a command on the outbox or the
 * dead-letter table that the current role may not run (ERROR).  Some
 * commands lock the table they name first and check privileges after:
 * CREATE TRIGGER and a foreign key's REFERENCES (SHARE ROW EXCLUSIVE),
 * CREATE RULE, PARTITION OF (of CREATE TABLE and of CREATE FOREIGN TABLE),
 * ATTACH PARTITION and DETACH PARTITION (also ... FINALIZE), and ALTER
 * INDEX ... ATTACH PARTITION of the table's index (ACCESS EXCLUSIVE).  Any role with USAGE on the schema could so queue a lock
 * request that every durable commit (ROW EXCLUSIVE, for its outbox rows)
 * waits behind, for as long as an older holder keeps its lock: a prepared
 * transaction with durable events holds it until COMMIT PREPARED.
 * priv is the privilege that allows the command (0: only the owner).
 */
static void
check_guarded_rangevar(RangeVar *rv, AclMode priv)
{
	bool		refused;

	if (rv == NULL || (strcmp(rv->relname, "outbox") != 0 &&
					   strcmp(rv->relname, "rejected") != 0))
		return;
	refused = guarded_refused(RangeVarGetRelid(rv, NoLock, true), priv);
	if (refused || guarded_refused(guarded_twin(rv), priv))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", rv->relname),
				 refused ? 0 : errhint("Qualify the name with its schema: it can also name state_hub_events.%s.",
									   rv->relname)));
}

/*
 * ALTER INDEX ... ATTACH PARTITION names an index, which PostgreSQL locks
 * ACCESS EXCLUSIVE with no privilege check at all (the command fails only
 * once it holds the lock); every durable commit opens the outbox's index
 * ROW EXCLUSIVE.  Only the owner of the guarded table may name its index.
 */
static void
check_guarded_index(RangeVar *rv)
{
	bool		refused;

	if (rv == NULL)
		return;
	refused = guarded_refused(RangeVarGetRelid(rv, NoLock, true), 0);
	if (refused || guarded_refused(guarded_twin(rv), 0))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for index %s", rv->relname),
				 refused ? 0 : errhint("Qualify the name with its schema: it can also name state_hub_events.%s.",
									   rv->relname)));
}

/* The tables a foreign key constraint (if c is one) references. */
static void
check_guarded_constraint(Node *c)
{
	if (c != NULL && IsA(c, Constraint) && ((Constraint *) c)->contype == CONSTR_FOREIGN)
		check_guarded_rangevar(((Constraint *) c)->pktable, ACL_REFERENCES);
}

/*
 * CREATE TABLE, and CREATE FOREIGN TABLE (a CreateStmt with a server):
 * PARTITION OF locks its parent, a foreign key the table it references.
 */
static void
check_guarded_create(CreateStmt *cs)
{
	ListCell   *lc;
	ListCell   *lc2;

	if (cs->partbound != NULL)
		foreach(lc, cs->inhRelations)
			check_guarded_rangevar(lfirst_node(RangeVar, lc), 0);
	foreach(lc, cs->constraints)
		check_guarded_constraint(lfirst(lc));
	foreach(lc, cs->tableElts)
		if (IsA(lfirst(lc), ColumnDef))
			foreach(lc2, ((ColumnDef *) lfirst(lc))->constraints)
				check_guarded_constraint(lfirst(lc2));
}

/* Commands that lock a guarded table before their privilege check. */
static void
check_guarded_locks(Node *stmt)
{
	ListCell   *lc;
	ListCell   *lc2;

	if (IsA(stmt, CreateTrigStmt))
		check_guarded_rangevar(((CreateTrigStmt *) stmt)->relation, ACL_TRIGGER);
	else if (IsA(stmt, RuleStmt))
		check_guarded_rangevar(((RuleStmt *) stmt)->relation, 0);
	else if (IsA(stmt, CreateStmt))
		check_guarded_create((CreateStmt *) stmt);
	else if (IsA(stmt, CreateForeignTableStmt))
		check_guarded_create(&((CreateForeignTableStmt *) stmt)->base);
	else if (IsA(stmt, AlterTableStmt))
	{
		foreach(lc, ((AlterTableStmt *) stmt)->cmds)
		{
			AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

			if (cmd->subtype == AT_AddConstraint)
				check_guarded_constraint(cmd->def);
			else if (cmd->subtype == AT_AddColumn && cmd->def != NULL && IsA(cmd->def, ColumnDef))
				foreach(lc2, ((ColumnDef *) cmd->def)->constraints)
					check_guarded_constraint(lfirst(lc2));
			else if ((cmd->subtype == AT_AttachPartition ||
					  cmd->subtype == AT_DetachPartition ||
					  cmd->subtype == AT_DetachPartitionFinalize) &&
					 cmd->def != NULL && IsA(cmd->def, PartitionCmd))
			{
				check_guarded_rangevar(((PartitionCmd *) cmd->def)->name, 0);
				check_guarded_index(((PartitionCmd *) cmd->def)->name);
			}
		}
	}
}

/* Commands that need a database nobody is connected to. */
typedef enum SheDbCommand
{
	SHE_DB_NONE,
	SHE_DB_DROP,				/* DROP DATABASE */
	SHE_DB_RENAME,				/* ALTER DATABASE ... RENAME TO */
	SHE_DB_OTHER				/* ... SET TABLESPACE, CREATE DATABASE ... TEMPLATE */
} SheDbCommand;

static const char *
option_value(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = lfirst_node(DefElem, lc);

		if (strcmp(d->defname, name) == 0 && d->arg != NULL)
			return defGetString(d);
	}
	return NULL;
}

/*
 * The database such a command acts on, if the durable worker serves it (or
 * is about to).
 */
static Oid
served_database(Node *stmt, const char **name, SheDbCommand *cmd)
{
	Oid			dboid;
	Oid			served;

	*cmd = SHE_DB_NONE;
	*name = NULL;
	if (IsA(stmt, DropdbStmt))
	{
		*cmd = SHE_DB_DROP;
		*name = ((DropdbStmt *) stmt)->dbname;
	}
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		*cmd = SHE_DB_RENAME;
		*name = ((RenameStmt *) stmt)->subname;
	}
	else if (IsA(stmt, AlterDatabaseStmt) &&
			 option_value(((AlterDatabaseStmt *) stmt)->options, "tablespace") != NULL)
	{
		*cmd = SHE_DB_OTHER;
		*name = ((AlterDatabaseStmt *) stmt)->dbname;
	}
	else if (IsA(stmt, CreatedbStmt))
	{
		*cmd = SHE_DB_OTHER;
		*name = option_value(((CreatedbStmt *) stmt)->options, "template");
	}
	if (*name == NULL)
		return InvalidOid;

	dboid = get_database_oid(*name, true);
	if (!OidIsValid(dboid))
		return InvalidOid;
	SpinLockAcquire(&she_durable->mutex);
	served = she_durable->worker_dboid;
	SpinLockRelease(&she_durable->mutex);
	if (dboid == served || strcmp(*name, she_database) == 0)
		return dboid;
	return InvalidOid;
}

/*
 * May the current role run cmd on database dboid at all?  Only then is the
 * worker stopped for it: PostgreSQL checks the privileges only inside the
 * command, and a role that may not drop, rename or copy the database
 * (any role that can log in) must not be able to stop delivery by trying.
 * DROP, RENAME and SET TABLESPACE need its owner; CREATE DATABASE ...
 * TEMPLATE needs CREATEDB and its owner, or a database marked as template.
 */
static bool
may_run_on(Oid dboid, SheDbCommand cmd)
{
	HeapTuple	tup;
	bool		is_template;

	if (she_database_ownercheck(dboid, GetUserId()))
		return true;
	if (cmd != SHE_DB_OTHER || !have_createdb_privilege())
		return false;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tup))
		return false;
	is_template = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
	ReleaseSysCache(tup);
	return is_template;
}

/* Stop the worker of dboid; wait for it to exit, boundedly. */
static void
stop_worker_for(Oid dboid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   WORKER_STOP_WAIT_MS);
	/* the launcher holds the worker off until this transaction ends */
	TransactionId xid = GetCurrentTransactionId();
	Latch	   *latch;

	SpinLockAcquire(&she_durable->mutex);
	she_durable->drop_pending_dboid = dboid;
	she_durable->drop_pending_xid = xid;
	latch = she_durable->worker_latch;
	SpinLockRelease(&she_durable->mutex);
	if (latch)
		SetLatch(latch);

	for (;;)
	{
		bool		running;

		SpinLockAcquire(&she_durable->mutex);
		running = she_durable->worker_pid != 0 && she_durable->worker_dboid == dboid;
		SpinLockRelease(&she_durable->mutex);
		if (!running || GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
call_next(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
		  ProcessUtilityContext context, ParamListInfo params,
		  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * Run a command on database dboid with its worker stopped; returns the
 * backlog the worker last counted there.  The launcher starts the worker
 * again once the command's transaction has ended and the database (still)
 * has the configured name.
 */
static int64
run_without_worker(Oid dboid, PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	volatile int64 backlog = 0;

	PG_TRY();
	{
		stop_worker_for(dboid);
		SpinLockAcquire(&she_durable->mutex);
		backlog = she_durable->backlog_events;
		SpinLockRelease(&she_durable->mutex);
		call_next(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		/* the database stays: let the launcher start its worker again */
		SpinLockAcquire(&she_durable->mutex);
		if (she_durable->drop_pending_dboid == dboid)
			she_durable->drop_pending_dboid = InvalidOid;
		SpinLockRelease(&she_durable->mutex);
		she_launcher_wake();
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* done (its commit follows): the launcher will find the name gone */
	she_launcher_wake();
	return backlog;
}

static void
guard_process_utility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	const char *name = NULL;
	SheDbCommand cmd = SHE_DB_NONE;
	Oid			dboid = InvalidOid;
	int64		backlog;

	check_guarded_locks(pstmt->utilityStmt);
	if (she_durable != NULL)
		dboid = served_database(pstmt->utilityStmt, &name, &cmd);
	if (!OidIsValid(dboid) || !may_run_on(dboid, cmd))
	{
		call_next(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		return;
	}

	backlog = run_without_worker(dboid, pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
	if (cmd == SHE_DB_DROP && backlog > 0)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("state_hub_events: database \"%s\" held %lld durable events not yet published; they are dropped with it",
						name, (long long) backlog)));
	else if (cmd == SHE_DB_RENAME)
		ereport(NOTICE,
				(errcode(ERRCODE_WARNING),
				 errmsg("state_hub_events: the durable worker no longer serves this database"),
				 errhint("To go on publishing its outbox, set state_hub_events.database = '%s' and reload.",
						 ((RenameStmt *) pstmt->utilityStmt)->newname)));
}

void
she_ddl_guard_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = guard_object_access;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = guard_process_utility;
}

/*
 * _guard_drop() RETURNS event_trigger, at ddl_command_start of DROP
 * EXTENSION, DROP SCHEMA and DROP OWNED.  Calling it loads the library;
 * the object-access hook does the checking.
 */
Datum
she_guard_drop(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("state_hub_events._guard_drop() must be called as an event trigger")));
	PG_RETURN_VOID();
}
