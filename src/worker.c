/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The durable-delivery background worker: publishes the outbox of the
 *	  database named by state_hub_events.database, in sequence order, and
 *	  deletes exactly the rows whose batch JetStream acknowledged.
 *
 * Loop: read the oldest batch (ORDER BY seq), publish it with its ids as
 * Nats-Msg-Id and wait for the acknowledgements; all acknowledged: delete
 * those rows by seq (never by a high-water mark, so a row that became
 * visible late is not skipped); anything missing: keep the whole batch and
 * try again after retry_interval (re-publishes collapse by Nats-Msg-Id).
 * Woken by committing backends through its latch, and polls every second
 * for what no commit callback sees (COMMIT PREPARED, a restart).  The
 * launcher (launcher.c) starts it for one database and asks it to stop
 * through shared memory; it stops between batches.
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "nats_publish.h"
#include "state_hub_events.h"

#define WORKER_BATCH	1000
#define WORKER_POLL_MS	1000
#define FAILURE_LOG_MS	60000	/* repeat "not acknowledged" at most this often */

PGDLLEXPORT void she_worker_main(Datum arg);

bool		she_in_worker = false;	/* this process is the durable worker */

static SheConn conn;			/* the worker's NATS connection */

/*
 * Record the worker's status in shared memory: the backlog when backlog is
 * not negative, the time of a publish, the last error.  The clock is read
 * before the spinlock is taken (a system call does not belong under one).
 */
static void
set_status(int64 backlog, bool published, const char *error)
{
	TimestampTz now = (published || error != NULL) ? GetCurrentTimestamp() : 0;

	SpinLockAcquire(&she_durable->mutex);
	if (backlog >= 0)
		she_durable->backlog_events = backlog;
	if (published)
		she_durable->last_published_at = now;
	if (error != NULL)
	{
		strlcpy(she_durable->last_error, error, sizeof(she_durable->last_error));
		she_durable->last_error_at = now;
	}
	SpinLockRelease(&she_durable->mutex);
}

/* SPI_connect, or ERROR: the worker's statements need it. */
static void
connect_spi(void)
{
	int			ret = SPI_connect();

	if (ret != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
}

/*
 * The worker's two statements, planned once.  SPI keeps them across
 * transactions; PostgreSQL replans them when the outbox changes.
 */
static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr delete_plan = NULL;

static SPIPlanPtr
keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
		*plan = p;
	}
	return *plan;
}

/*
 * Read the oldest batch into cxt.  Returns the number of rows; *exists is
 * false when the extension is not installed in this database.  The backlog
 * is counted exactly when it fits in one batch, else with count(*) at most
 * once per WORKER_POLL_MS (a large backlog makes count(*) costly).
 */
static int
read_batch(MemoryContext cxt, SheEvent **events, int64 **seqs, bool *exists)
{
	static TimestampTz last_count = 0;
	int			n = 0;
	int64		backlog = -1;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	connect_spi();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading the outbox");

	*exists = OidIsValid(get_relname_relid("outbox",
										   get_namespace_oid("state_hub_events", true)));
	if (*exists &&
		SPI_execute_plan(keep_plan(&read_plan,
								   "SELECT seq, id::text, subject, envelope FROM state_hub_events.outbox "
								   "ORDER BY seq LIMIT " CppAsString2(WORKER_BATCH), 0, NULL),
						 NULL, NULL, true, 0) == SPI_OK_SELECT)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		uint64		i;

		n = (int) SPI_processed;
		*events = palloc0(Max(n, 1) * sizeof(SheEvent));
		*seqs = palloc(Max(n, 1) * sizeof(int64));
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *id = SPI_getvalue(t, d, 2);
			char	   *env = SPI_getvalue(t, d, 4);

			(*seqs)[i] = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
			strlcpy((*events)[i].id, id, sizeof((*events)[i].id));
			(*events)[i].subject = SPI_getvalue(t, d, 3);
			(*events)[i].envelope = env;
			(*events)[i].envelope_len = strlen(env);
		}
		MemoryContextSwitchTo(old);

		if (n < WORKER_BATCH)
			backlog = n;
		else if (TimestampDifferenceExceeds(last_count, GetCurrentTimestamp(), WORKER_POLL_MS) &&
				 SPI_execute("SELECT count(*) FROM state_hub_events.outbox", true, 1) == SPI_OK_SELECT)
		{
			bool		isnull;

			backlog = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			last_count = GetCurrentTimestamp();
		}
	}
	set_status(*exists ? backlog : 0, false, NULL);

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return n;
}

/* Delete exactly the acknowledged rows. */
static void
delete_rows(int64 *seqs, int n)
{
	Datum	   *d = palloc(n * sizeof(Datum));
	Datum		arg;
	Oid			argtype = INT8ARRAYOID;
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(seqs[i]);
	arg = PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	connect_spi();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "deleting acknowledged rows");
	if (SPI_execute_plan(keep_plan(&delete_plan,
								   "DELETE FROM state_hub_events.outbox WHERE seq = ANY ($1)",
								   1, &argtype),
						 &arg, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "deleting from state_hub_events.outbox failed");
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

static void
worker_exit(int code, Datum arg)
{
	she_conn_close(&conn);
	SpinLockAcquire(&she_durable->mutex);
	she_durable->worker_latch = NULL;
	she_durable->worker_pid = 0;
	she_durable->worker_dboid = InvalidOid;
	SpinLockRelease(&she_durable->mutex);
}

/* Has the launcher, or a DROP/RENAME of this database, asked us to stop? */
static bool
stop_requested(void)
{
	bool		stop;

	SpinLockAcquire(&she_durable->mutex);
	stop = she_durable->worker_stop_requested ||
		she_durable->drop_pending_dboid == MyDatabaseId;
	SpinLockRelease(&she_durable->mutex);
	return stop;
}

/*
 * Publish one batch through the engine and count its outcomes.  The
 * per-message outcomes (and whether a refusal is permanent) are in out.
 */
static void
publish_batch(SheEvent *events, int n, SheBatchOutcome *res)
{
	SheMsgOutcome *out = palloc(n * sizeof(SheMsgOutcome));

	memset(res, 0, sizeof(*res));
	if (!she_conn_ensure(&conn, res->reason, sizeof(res->reason)))
		res->not_sent = n;
	else
		she_publish_events(&conn, she_stream, she_create_stream, events, n,
						   she_now_usec() + (uint64) she_publish_timeout_ms * 1000, out, res);
	she_stats_atomic_published(res->stored, res->duplicates);
	she_stats_add_failed(res->refused + res->not_sent);
	she_stats_add_unconfirmed(res->unconfirmed);
	pfree(out);
}

/*
 * Started by the launcher (launcher.c) for the database whose OID is arg.
 */
void
she_worker_main(Datum arg)
{
	MemoryContext cxt;
	char	   *dbname;
	TimestampTz next_attempt_at = 0;
	TimestampTz last_failure_log = 0;
	int			failed_attempts = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	she_in_worker = true;
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);

	/*
	 * The worker's only writes are deletes of acknowledged rows.  One lost
	 * in a crash (or not yet on a standby that is promoted) is published
	 * again and dropped by JetStream as a duplicate within the duplicate
	 * window, like any re-publish: no need to wait for a WAL flush per
	 * batch.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	SpinLockAcquire(&she_durable->mutex);
	she_durable->worker_latch = &MyProc->procLatch;
	she_durable->worker_pid = MyProcPid;
	she_durable->worker_dboid = MyDatabaseId;
	SpinLockRelease(&she_durable->mutex);
	on_shmem_exit(worker_exit, (Datum) 0);

	StartTransactionCommand();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	{
		char		name[128];

		snprintf(name, sizeof(name), "state_hub_events db=%s pid=%d", dbname, MyProcPid);
		she_conn_set_name(name);
	}
	she_conn_init(&conn);

	cxt = AllocSetContextCreate(TopMemoryContext, "state_hub_events worker",
								ALLOCSET_DEFAULT_SIZES);
	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("state_hub_events worker started for database \"%s\"", dbname)));

	for (;;)
	{
		SheEvent   *events = NULL;
		int64	   *seqs = NULL;
		bool		exists;
		int			n;
		long		wait_ms = WORKER_POLL_MS;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (stop_requested())
		{
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("state_hub_events worker for database \"%s\" stopping on request", dbname)));
			SpinLockAcquire(&she_durable->mutex);
			she_durable->worker_stopped_on_request = true;
			SpinLockRelease(&she_durable->mutex);
			proc_exit(0);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_attempt_at = 0;	/* new settings: try them at once */
		}
		ResetLatch(MyLatch);

		/*
		 * After a failed attempt, commits setting the latch do not hurry the
		 * next one: it waits for retry_interval (or the poll, with no URL).
		 */
		now = GetCurrentTimestamp();
		if (now < next_attempt_at)
		{
			wait_ms = Max(1, (long) ((next_attempt_at - now) / 1000));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
			continue;
		}
		next_attempt_at = 0;
		MemoryContextReset(cxt);

		n = read_batch(cxt, &events, &seqs, &exists);
		if (n > 0 && she_nats_url[0] == '\0')
			next_attempt_at = TimestampTzPlusMilliseconds(now, WORKER_POLL_MS);
		else if (n > 0)
		{
			SheBatchOutcome res;

			publish_batch(events, n, &res);
			if (res.stored == n)
			{
				delete_rows(seqs, n);
				set_status(-1, true, NULL);
				if (failed_attempts > 0)
					ereport(LOG,
							(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
							 errmsg("state_hub_events worker: publishing again after %d failed attempts",
									failed_attempts)));
				failed_attempts = 0;
				if (n == WORKER_BATCH)
					continue;	/* more to do */
			}
			else
			{
				int			retry_ms = Max(she_retry_interval_ms, 100);

				now = GetCurrentTimestamp();	/* the attempt took time */

				/*
				 * Keep the batch; re-publishes collapse by Nats-Msg-Id.  Log
				 * the first failure of a run, then once a minute.
				 */
				if (failed_attempts == 0 ||
					TimestampDifferenceExceeds(last_failure_log, now, FAILURE_LOG_MS))
				{
					ereport(LOG,
							(errcode(ERRCODE_CONNECTION_FAILURE),
							 errmsg("state_hub_events worker: %d of %d events not acknowledged, retrying every %d ms",
									n - res.stored, n, retry_ms),
							 errdetail("%s (refused %d, of which %d for good; unconfirmed %d; not sent %d; %d failed attempts so far)",
									   res.reason, res.refused, res.refused_permanent,
									   res.unconfirmed, res.not_sent, failed_attempts + 1)));
					last_failure_log = now;
				}
				failed_attempts++;
				set_status(-1, false, res.reason);
				next_attempt_at = TimestampTzPlusMilliseconds(now, retry_ms);
				wait_ms = retry_ms;
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
	}
}
