/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The durable-delivery launcher: a background worker without a database
 *	  connection that starts, watches and stops the worker (worker.c) of the
 *	  database named by state_hub_events.database.
 *
 * Why a launcher: a worker registered at startup with a database name dies
 * with FATAL, and is restarted to die again, as long as that database does
 * not exist (it was dropped, renamed, or not created yet).  The launcher
 * looks the name up in pg_database (a shared catalog, readable without a
 * database) and starts the worker only for a database that exists; it
 * follows a change of the setting at reload; it restarts a worker that
 * failed with a growing delay; and it holds the worker off while a DROP or
 * RENAME of its database is under way (ddl_guard.c asks it to).
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/timestamp.h"

#include "state_hub_events.h"

#define LAUNCHER_POLL_MS		5000	/* look for a missing database; safety poll */
#define LAUNCHER_WATCH_MS		1000	/* while a worker runs or stops */
#define RESTART_MIN_MS			1000
#define RESTART_MAX_MS			60000
#define HEALTHY_RUN_MS			60000	/* a worker that ran this long failed fresh */

PGDLLEXPORT void she_launcher_main(Datum arg);

/* The launcher's view of its worker. */
static BackgroundWorkerHandle *worker_handle = NULL;
static Oid	worker_dboid = InvalidOid;
static bool worker_stop_sent = false;
static TimestampTz worker_started_at = 0;
static TimestampTz next_start_at = 0;
static int	restart_delay_ms = RESTART_MIN_MS;
static char warned_missing[NAMEDATALEN] = "";

/*
 * Register the launcher (from _PG_init, when preloaded).
 */
void
she_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "state_hub_events");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "she_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "state_hub_events launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "state_hub_events launcher");
	RegisterBackgroundWorker(&bgw);
}

static void
launcher_exit(int code, Datum arg)
{
	SpinLockAcquire(&she_durable->mutex);
	she_durable->launcher_latch = NULL;
	SpinLockRelease(&she_durable->mutex);
}

/*
 * Record an error for backlog().  The clock is read before the spinlock is
 * taken (a system call does not belong under one).
 */
static void
set_error(const char *msg)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&she_durable->mutex);
	strlcpy(she_durable->last_error, msg, sizeof(she_durable->last_error));
	she_durable->last_error_at = now;
	SpinLockRelease(&she_durable->mutex);
}

/*
 * The OID of the database named name, or InvalidOid.  A heap scan: without
 * a database, the relcache has pg_database but not its indexes.
 */
static Oid
lookup_database(const char *name)
{
	Oid			dboid = InvalidOid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	if (name[0] == '\0')
		return InvalidOid;
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), name) != 0)
			continue;
#ifdef DATCONNLIMIT_INVALID_DB
		if (db->datconnlimit == DATCONNLIMIT_INVALID_DB)
			break;				/* a DROP DATABASE was interrupted */
#endif
		dboid = db->oid;
		break;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dboid;
}

/* Start the worker for dboid; returns false if no slot was free. */
static bool
start_worker(Oid dboid)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "state_hub_events");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "she_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "state_hub_events worker");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "state_hub_events worker");
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &worker_handle))
	{
		worker_handle = NULL;
		return false;
	}
	worker_dboid = dboid;
	worker_stop_sent = false;
	worker_started_at = GetCurrentTimestamp();
	return true;
}

/* Ask the running worker to finish its batch and exit. */
static void
stop_worker(void)
{
	Latch	   *latch;

	SpinLockAcquire(&she_durable->mutex);
	she_durable->worker_stop_requested = true;
	latch = she_durable->worker_latch;
	SpinLockRelease(&she_durable->mutex);
	if (latch)
		SetLatch(latch);
	worker_stop_sent = true;
}

/*
 * One round: compare what runs with what should run.  Returns how long to
 * sleep (the latch wakes us earlier: reload, worker start or exit, a DROP).
 */
static long
launcher_round(void)
{
	Oid			dboid;
	TimestampTz now = GetCurrentTimestamp();
	Oid			pending;
	TransactionId pending_xid;
	bool		pending_ended;

	/*
	 * A DROP/RENAME of a database under way holds its worker off until its
	 * transaction has ended; that is checked before the lookup, so that the
	 * lookup sees its outcome.  (While a DROP DATABASE runs, the lookup may
	 * already find nothing: PostgreSQL marks the database invalid first.)
	 */
	SpinLockAcquire(&she_durable->mutex);
	pending = she_durable->drop_pending_dboid;
	pending_xid = she_durable->drop_pending_xid;
	SpinLockRelease(&she_durable->mutex);
	pending_ended = OidIsValid(pending) && !TransactionIdIsInProgress(pending_xid);

	dboid = lookup_database(she_database);

	if (pending_ended)
	{
		SpinLockAcquire(&she_durable->mutex);
		if (she_durable->drop_pending_dboid == pending)
			she_durable->drop_pending_dboid = InvalidOid;
		if (pending != dboid)
			she_durable->backlog_events = 0;	/* that outbox is not served */
		SpinLockRelease(&she_durable->mutex);
		pending = InvalidOid;
	}

	if (worker_handle != NULL)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(worker_handle, &pid) != BGWH_STOPPED)
		{
			if (!worker_stop_sent &&
				(worker_dboid != dboid || pending == worker_dboid))
				stop_worker();
			/*
			 * Its start and exit (bgw_notify_pid), a reload and a DROP set
			 * our latch; only a stop or a DROP under way is watched.
			 */
			if (worker_stop_sent || OidIsValid(pending))
				return LAUNCHER_WATCH_MS;
			return LAUNCHER_POLL_MS;
		}

		/* the worker is gone: asked to (by us or a DROP), or it failed */
		pfree(worker_handle);
		worker_handle = NULL;
		SpinLockAcquire(&she_durable->mutex);
		if (she_durable->worker_stopped_on_request)
			worker_stop_sent = true;
		she_durable->worker_stopped_on_request = false;
		SpinLockRelease(&she_durable->mutex);
		if (worker_stop_sent)
			restart_delay_ms = RESTART_MIN_MS;
		else
		{
			if (TimestampDifferenceExceeds(worker_started_at, now, HEALTHY_RUN_MS))
				restart_delay_ms = RESTART_MIN_MS;
			next_start_at = TimestampTzPlusMilliseconds(now, restart_delay_ms);
			ereport(LOG,
					(errcode(ERRCODE_WARNING),
					 errmsg("state_hub_events worker exited; starting it again in %d ms",
							restart_delay_ms)));
			restart_delay_ms = Min(restart_delay_ms * 2, RESTART_MAX_MS);
		}
	}

	if (!OidIsValid(dboid))
	{
		if (she_database[0] != '\0' && strcmp(warned_missing, she_database) != 0)
		{
			char		msg[256];

			strlcpy(warned_missing, she_database, sizeof(warned_missing));
			snprintf(msg, sizeof(msg),
					 "database \"%s\" (state_hub_events.database) does not exist",
					 she_database);
			ereport(LOG,
					(errcode(ERRCODE_UNDEFINED_DATABASE),
					 errmsg("state_hub_events: %s; durable delivery waits for it", msg),
					 errhint("Create the database, or set state_hub_events.database and reload.")));
			set_error(msg);
		}
		/* a DROP ending: soon; no name: at a reload; else now and then */
		if (OidIsValid(pending))
			return LAUNCHER_WATCH_MS;
		return she_database[0] == '\0' ? -1 : LAUNCHER_POLL_MS;
	}
	warned_missing[0] = '\0';

	if (pending == dboid)
		return LAUNCHER_WATCH_MS;
	if (now < next_start_at)
		return Max(1, (long) ((next_start_at - now) / 1000));

	SpinLockAcquire(&she_durable->mutex);
	if (she_durable->drop_pending_dboid == dboid)
	{
		SpinLockRelease(&she_durable->mutex);
		return LAUNCHER_WATCH_MS;
	}
	if (she_durable->worker_pid != 0)
	{
		/* a worker started by a launcher before this one: let it finish */
		Latch	   *latch = she_durable->worker_latch;

		she_durable->worker_stop_requested = true;
		SpinLockRelease(&she_durable->mutex);
		if (latch)
			SetLatch(latch);
		return LAUNCHER_WATCH_MS;
	}
	/* no worker may see a stop request meant for its predecessor */
	she_durable->worker_stop_requested = false;
	SpinLockRelease(&she_durable->mutex);

	if (!start_worker(dboid))
	{
		ereport(LOG,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("state_hub_events: could not start the durable worker: no background worker slot is free"),
				 errhint("Raise max_worker_processes.")));
		set_error("no background worker slot is free (max_worker_processes)");
		next_start_at = TimestampTzPlusMilliseconds(now, RESTART_MAX_MS);
	}
	return LAUNCHER_WATCH_MS;
}

void
she_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database: pg_database is a shared catalog */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SpinLockAcquire(&she_durable->mutex);
	she_durable->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&she_durable->mutex);
	on_shmem_exit(launcher_exit, (Datum) 0);

	for (;;)
	{
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);

		wait_ms = launcher_round();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (wait_ms >= 0 ? WL_TIMEOUT : 0),
						 wait_ms, PG_WAIT_EXTENSION);
	}
}

/*
 * Wake the launcher (a DROP or RENAME of the served database has finished
 * or failed).  SetLatch only.
 */
void
she_launcher_wake(void)
{
	Latch	   *latch;

	if (she_durable == NULL)
		return;
	SpinLockAcquire(&she_durable->mutex);
	latch = she_durable->launcher_latch;
	SpinLockRelease(&she_durable->mutex);
	if (latch)
		SetLatch(latch);
}
