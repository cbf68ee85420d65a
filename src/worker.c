/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The durable-delivery background worker: publishes the outbox of the
 *	  database named by state_hub_events.database, in sequence order, and
 *	  deletes exactly the acknowledged prefix of each batch.
 *
 * Loop: read the oldest batch (ORDER BY seq; at most 1000 events and
 * worker_batch_bytes of envelopes, at least one event), publish it with
 * its ids as Nats-Msg-Id, and walk the outcomes in sequence order:
 * acknowledged events are deleted, events refused for good (too large,
 * captured by another stream, no permission) move to the dead-letter table
 * state_hub_events.rejected, both in one transaction; the walk stops at the
 * first other failure, which stays in the outbox with everything behind
 * it, and is retried after retry_interval.  Woken by committing backends
 * through its latch, and polls every second for what no commit callback
 * sees (COMMIT PREPARED, a restart, requeue_rejected()).  After a batch it
 * reads again without waiting for a wake-up (while it publishes, commits do
 * not wake it), and when that batch was small and all there was, it first
 * lets the next one grow for WORKER_COLLECT_MS: under a steady stream of
 * small commits this turns batches of a few events into batches of tens,
 * and the cost of a batch is mostly per batch, not per event.  The launcher
 * (launcher.c) starts it for one database and asks it to stop through
 * shared memory; it stops between batches.
 *
 * Order.  A batch is sent in sequence order on one connection, whose
 * messages the server handles in order, and nats.c buffers nothing while
 * reconnecting (SheConn.no_reconnect_buffer): what a broken connection
 * lost is never overtaken by what followed it.  The retry starts from the
 * first event not acknowledged (the events behind it that were stored are
 * collapsed by Nats-Msg-Id), so each event first appears in the stream in
 * sequence order.  One case is beyond reach while a batch is pipelined:
 * JetStream refusing an event for a reason that does not hold for the
 * events behind it (a stream full with discard new: a large event refused,
 * small ones still fitting); those are stored ahead of it, and this is
 * LOGged.  To keep that to the one batch where the failure appeared, every
 * attempt after a failure publishes the first event alone, until it is
 * acknowledged; then full batches again.
 *
 * Cancel (pg_cancel_backend).  A cancel abandons the current attempt, as
 * it does autovacuum's: the wait for acknowledgements ends at once
 * (nats_publish.c's stop_capped), the attempt is settled with cancel held
 * off (what was acknowledged is deleted and counted), and the ERROR the
 * cancel then raises, or raises in a statement, comes back to the error
 * block of she_worker_main, which aborts the transaction, forgets the
 * batch and starts the next attempt at once.  Any other ERROR still ends
 * the worker (FATAL), to be started again by the launcher.
 *
 * Atomic batches (state_hub_events.atomic_batches, a stream that allows
 * them).  Each run of one transaction's rows (same txn_id, consecutive
 * indexes) goes as one atomic batch of at most atomic_batch_max events; a
 * transaction the read cut off at its end waits for the next read, where it
 * comes first.  The probe after a failure is the first transaction as one
 * batch, so a batch refused as a whole (a full stream) is never stored in
 * part.  The server refuses a batch without naming the member: where the
 * refusal may come from one member (too large, "incomplete", already
 * stored: 10201, see nats_publish.c), the next attempt, at once, publishes
 * that transaction one event at a time, and the walk above settles each
 * event by its own outcome (PROBE_HEAD_ALONE).
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/uuid.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "nats_publish.h"
#include "ascii_text.h"
#include "state_hub_events.h"
#include "subject.h"

#define WORKER_BATCH	1000
#define WORKER_POLL_MS	1000
#define WORKER_COLLECT_MS	20	/* a busy worker lets a batch grow this long */
#define WORKER_COLLECT_BELOW	200 /* ... when its last batch was smaller */
#define FAILURE_LOG_MS	60000	/* repeat "not acknowledged" at most this often */
#define REJECT_LOG_MAX	10		/* rejections LOGged one by one per batch */
#define ATOMIC_RECHECK_MS	60000	/* ask the stream about allow_atomic again */
#define ATOMIC_UNKNOWN_MS	1000	/* ... or this soon when it did not answer */

/* JetStream's refusals of an atomic batch that do not name the member */
#define JS_MSG_TOO_LARGE	10054
#define JS_STREAM_MISMATCH	10060
#define JS_BATCH_INCOMPLETE	10176
#define JS_BATCH_TOO_LARGE	10199
#define JS_BATCH_DUPLICATE	10201

/* What the next attempt publishes after a failure (see "Order" above). */
typedef enum WorkerProbe
{
	PROBE_NONE = 0,				/* full batches */
	PROBE_HEAD,					/* the first event, or with atomic batches the
								 * first transaction as one batch */
	PROBE_HEAD_ALONE			/* the first transaction, one event at a time */
} WorkerProbe;

PGDLLEXPORT void she_worker_main(Datum arg);

bool		she_in_worker = false;	/* this process is the durable worker */

static SheConn conn;			/* the worker's NATS connection */

static void report_atomic(const SheBatchOutcome *res, int max_atomic, int probe);

/* Atomic batches: does the stream allow them, as last asked. */
static emit_log_hook_type prev_emit_log_hook = NULL;
static int	atomic_state = -1;	/* 1 yes, 0 no, -1 ask now, -2 no answer,
								 * -3 no such stream when last asked */
static int	atomic_logged = -1; /* the state last LOGged */
static TimestampTz atomic_checked_at = 0;

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
		she_ascii_text(she_durable->last_error, sizeof(she_durable->last_error), error);
		she_durable->last_error_at = now;
	}
	SpinLockRelease(&she_durable->mutex);
}

/*
 * Settings the worker's statements must not take from the database it
 * serves (ALTER DATABASE ... SET is allowed to the database's owner, who
 * need not be a superuser; the worker runs as one):
 *
 * - search_path: nobody's operators or functions before pg_catalog;
 * - read-only default transactions, statement, lock, idle-in-transaction
 *   and transaction timeouts, serializable isolation: each would make the
 *   worker's reads or deletes fail (or be retried forever), so delivery
 *   stops and the outbox grows until backlog_overflow refuses commits.
 *
 * - role and session_authorization: the database's owner may make every
 *   session of the database, the worker's included, run as itself (or any
 *   other role); the worker would then read the outbox with that role's
 *   rights, fail, and start again forever.  The worker runs as the
 *   bootstrap superuser, its session user, and checks that it does.
 *
 * synchronous_commit is off: the worker's only writes are deletes of
 * acknowledged rows.  One lost in a crash (or not yet on a standby that is
 * promoted) is published again and dropped by JetStream as a duplicate
 * within the duplicate window, like any re-publish: no need to wait for a
 * WAL flush per batch.
 */
static void
pin_settings(void)
{
	static const char *const settings[][2] = {
		{"search_path", "pg_catalog, pg_temp"},
		{"synchronous_commit", "off"},
		{"default_transaction_read_only", "off"},
		{"default_transaction_isolation", "read committed"},
		{"statement_timeout", "0"},
		{"lock_timeout", "0"},
		{"idle_in_transaction_session_timeout", "0"},
#if PG_VERSION_NUM >= 170000
		{"transaction_timeout", "0"},
#endif
	};
	int			i;

	for (i = 0; i < lengthof(settings); i++)
		SetConfigOption(settings[i][0], settings[i][1], PGC_SUSET, PGC_S_OVERRIDE);

	/* a catalog lookup: in a transaction (the settings stay at its commit) */
	StartTransactionCommand();
	SetConfigOption("session_authorization",
					GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false),
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("role", "none", PGC_SUSET, PGC_S_OVERRIDE);
	CommitTransactionCommand();
	if (GetSessionUserId() != BOOTSTRAP_SUPERUSERID || GetUserId() != BOOTSTRAP_SUPERUSERID)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("state_hub_events worker cannot run as a role other than the bootstrap superuser")));
}

/*
 * emit_log_hook: an ERROR that ends the worker is also its last_error in
 * backlog() and worker_status(), where monitoring looks (the server log
 * has it too).  No allocation, no ERROR: a spinlock and a copy.
 */
static void
note_error(ErrorData *edata)
{
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (edata->elevel >= ERROR && edata->message != NULL && she_durable != NULL)
	{
		char		text[256];

		snprintf(text, sizeof(text), "the worker stopped: %s", edata->message);
		set_status(-1, false, text);
	}
}

/*
 * Tell committing backends whether to set the worker's latch
 * (she_outbox_wake).  While it publishes, lets a batch grow or waits to
 * retry, the worker reads the outbox again before it waits for a wake-up,
 * so a commit need not wake it: that spares the backend a signal and the
 * worker a wake-up per commit.  Cleared before each read, so a commit that
 * still saw it set is visible to that read (the spinlock orders the two).
 */
static void
set_reads_anyway(bool on)
{
	SpinLockAcquire(&she_durable->mutex);
	she_durable->worker_reads_anyway = on;
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
 * The worker's statements, prepared once.  SPI keeps them across
 * transactions; PostgreSQL replans them when the tables change.  Those
 * with parameters are planned for each execution's arrays: a generic plan
 * compares each row's id with the batch's ids one by one (1,000 x 1,000
 * for a full batch), a custom one looks it up in a hash table.
 */
static SPIPlanPtr delete_plan = NULL;
static SPIPlanPtr reject_plan = NULL;

static SPIPlanPtr
keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_CUSTOM_PLAN);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
		*plan = p;
	}
	return *plan;
}

/* One batch read from the outbox, oldest first. */
typedef struct WorkerBatch
{
	SheEvent   *events;
	int64	   *seqs;
	int			n;
	int64		ahead;			/* outbox rows among the first `limit` */
	int64		bytes;			/* envelope bytes of the batch */
	bool		exists;			/* the outbox exists in this database */
	bool		can_reject;		/* and the dead-letter table (1.2) */
	Oid			outbox;			/* the outbox read (its seqs are its own) */
	Oid			outbox_file;	/* its relfilenode then (a TRUNCATE changes it) */
	Oid			rejected;		/* the dead-letter table then */
} WorkerBatch;

/*
 * The oldest events of the outbox, at most limit rows, with each
 * envelope's size (octet_length reads a TOASTed value's size without
 * fetching it; SPI keeps such a value TOASTed until it is printed, so
 * read_batch fetches only the envelopes within worker_batch_bytes).  The
 * limit is written into the statement, which then has no parameter:
 * PostgreSQL plans it once, not per batch (a LIMIT $n made it choose a
 * custom plan, replanned at every execution), see read_plan().
 */
#define READ_SQL \
	"SELECT seq, id::pg_catalog.text, subject, envelope, pg_catalog.octet_length(envelope)%s" \
	" FROM state_hub_events.outbox ORDER BY seq LIMIT %d"
/* Since 1.3 (the outbox's txn columns): each row's transaction too. */
#define READ_TXN_COLUMNS ", txn_id, txn_key, txn_index, txn_count"
#define READ_REPLAN_MS	1000	/* plan the read again after this long */

/*
 * The table called name in schema state_hub_events if it is the
 * extension's, else InvalidOid.  The worker runs as a superuser: a table of that name that
 * someone else made (the database's owner, in a database where the
 * extension is not installed, or was dropped) is never read, let alone
 * written, or its triggers, defaults and index functions would run with
 * the worker's rights (and its rows be published as events).
 */
static Oid
extension_table(const char *name)
{
	static Oid	verified[2];	/* outbox, rejected: relids found to be ours */
	static TimestampTz verified_at[2];
	int			k = (strcmp(name, "outbox") == 0) ? 0 : 1;
	Oid			relid = get_relname_relid(name, get_namespace_oid("state_hub_events", true));
	TimestampTz now = GetCurrentTimestamp();
	Oid			ext;

	if (!OidIsValid(relid))
		return InvalidOid;

	/*
	 * The name lookup is a syscache hit; the membership check scans
	 * pg_extension and pg_depend.  A table made anew under the name has a
	 * new relid, so a relid found to be ours is trusted for a second.
	 */
	if (relid == verified[k] && !TimestampDifferenceExceeds(verified_at[k], now, 1000))
		return relid;
	ext = get_extension_oid("state_hub_events", true);
	if (!OidIsValid(ext) || getExtensionOfObject(RelationRelationId, relid) != ext)
		return InvalidOid;
	verified[k] = relid;
	verified_at[k] = now;
	return relid;
}

/*
 * The relfilenode of table relid (InvalidOid if it is gone).  TRUNCATE,
 * VACUUM FULL and CLUSTER give a table a new one; its relid stays.  The
 * caller holds a lock on it, so the value is current.
 */
static Oid
table_file(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			file;

	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	file = ((Form_pg_class) GETSTRUCT(tup))->relfilenode;
	ReleaseSysCache(tup);
	return file;
}

/* An outbox row's transaction (columns 6 to 9); none for a row from before 1.3. */
static void
read_txn(HeapTuple t, TupleDesc d, SheTxn *txn)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, 6, &isnull);

	memset(txn, 0, sizeof(*txn));
	if (isnull)
		return;
	txn->xid = (uint64) DatumGetInt64(v);
	txn->key = (uint64) DatumGetInt64(SPI_getbinval(t, d, 7, &isnull));
	txn->key_kind = 'S';
	txn->index = DatumGetInt32(SPI_getbinval(t, d, 8, &isnull));
	txn->count = DatumGetInt32(SPI_getbinval(t, d, 9, &isnull));
}

/*
 * The read of at most limit rows, with or without the txn columns, planned
 * once and kept for READ_REPLAN_MS: a plan made while the outbox was small
 * (a sort of every row) is not kept while a backlog grows, where the plan
 * of that moment is an index scan in seq order.  A new limit (a probe after
 * a failure) is planned anew.
 */
static SPIPlanPtr
read_plan(int limit, bool with_txn)
{
	static SPIPlanPtr plan = NULL;
	static int	plan_limit = 0;
	static bool plan_txn = false;
	static TimestampTz planned_at = 0;
	TimestampTz now = GetCurrentTimestamp();
	char		sql[sizeof(READ_SQL) + sizeof(READ_TXN_COLUMNS) + 16];

	if (plan != NULL && plan_limit == limit && plan_txn == with_txn &&
		!TimestampDifferenceExceeds(planned_at, now, READ_REPLAN_MS))
		return plan;
	if (plan != NULL)
		SPI_freeplan(plan);
	plan = NULL;
	snprintf(sql, sizeof(sql), READ_SQL, with_txn ? READ_TXN_COLUMNS : "", limit);
	(void) keep_plan(&plan, sql, 0, NULL);
	plan_limit = limit;
	plan_txn = with_txn;
	planned_at = now;
	return plan;
}

/*
 * Read the oldest batch (at most limit rows, at most worker_batch_bytes of
 * envelopes but at least one row) into cxt.  The backlog is counted exactly
 * when it is within the first limit rows, else with count(*) at most once
 * per WORKER_POLL_MS (a large backlog makes count(*) costly).
 */
static void
read_batch(MemoryContext cxt, int limit, WorkerBatch *b)
{
	static TimestampTz last_count = 0;
	int64		backlog = -1;
	int64		max_bytes = (int64) she_worker_batch_kb * 1024;
	bool		with_txn;

	memset(b, 0, sizeof(*b));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	connect_spi();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading the outbox");

	b->outbox = extension_table("outbox");
	b->rejected = extension_table("rejected");
	b->exists = OidIsValid(b->outbox);
	b->can_reject = b->exists && OidIsValid(b->rejected);
	with_txn = b->exists &&
		get_attnum(get_relname_relid("outbox", get_namespace_oid("state_hub_events", true)),
				   "txn_key") != InvalidAttrNumber;
	if (b->exists &&
		SPI_execute_plan(read_plan(limit, with_txn), NULL, NULL, true, 0) == SPI_OK_SELECT)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		TupleDesc	d = SPI_tuptable->tupdesc;
		int64		sizes = 0;
		int			i;

		b->outbox_file = table_file(b->outbox);	/* locked by the read */
		b->ahead = (int64) SPI_processed;
		/* the batch: the rows within max_bytes, at least one */
		for (b->n = 0; b->n < (int) SPI_processed; b->n++)
		{
			bool		isnull;

			sizes += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[b->n], d, 5, &isnull));
			if (b->n > 0 && sizes > max_bytes)
				break;
		}
		b->events = palloc0(Max(b->n, 1) * sizeof(SheEvent));
		b->seqs = palloc(Max(b->n, 1) * sizeof(int64));
		for (i = 0; i < b->n; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			SheEvent   *ev = &b->events[i];
			bool		isnull;
			char	   *id = SPI_getvalue(t, d, 2);

			b->seqs[i] = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
			strlcpy(ev->id, id, sizeof(ev->id));
			/* the outbox's text is in the database's encoding: UTF-8 out */
			ev->subject = she_outbox_text_to_wire(SPI_getvalue(t, d, 3));
			ev->envelope = she_outbox_text_to_wire(SPI_getvalue(t, d, 4));
			ev->envelope_len = strlen(ev->envelope);
			b->bytes += ev->envelope_len;
			if (with_txn)
				read_txn(t, d, &ev->txn);
		}
		MemoryContextSwitchTo(old);

		if (b->ahead < limit)
			backlog = b->ahead;
		else if (TimestampDifferenceExceeds(last_count, GetCurrentTimestamp(), WORKER_POLL_MS) &&
				 SPI_execute("SELECT count(*) FROM state_hub_events.outbox", true, 1) == SPI_OK_SELECT)
		{
			bool		isnull;

			backlog = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			last_count = GetCurrentTimestamp();
		}
	}
	set_status(b->exists ? backlog : 0, false, NULL);

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* An int8[], int4[], uuid[] or text[] of the n Datums elems. */
static Datum
make_array(Oid elemtype, Datum *elems, int n)
{
	if (elemtype == UUIDOID)
		return PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	if (elemtype == INT8OID)
		return PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (elemtype == INT4OID)
		return PointerGetDatum(construct_array(elems, n, INT4OID, 4, true, TYPALIGN_INT));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

#define DELETE_SQL \
	"DELETE FROM state_hub_events.outbox WHERE seq = ANY ($1) AND id = ANY ($2)"

#define REJECT_SQL \
	"WITH moved AS (DELETE FROM state_hub_events.outbox " \
	"  WHERE seq = ANY ($1) AND id = ANY ($4) " \
	"  RETURNING seq, id, subject, envelope, enqueued_at) " \
	"INSERT INTO state_hub_events.rejected " \
	"  (seq, id, subject, envelope, enqueued_at, error_code, error) " \
	"SELECT m.seq, m.id, m.subject, m.envelope, m.enqueued_at, NULLIF(e.code, 0), e.error " \
	"  FROM moved m JOIN ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) " \
	"    AS e(seq, code, error) ON e.seq = m.seq"

/*
 * In one transaction: delete the acknowledged events (indexes
 * acked[0..nacked-1] of batch b) and move the refused ones (indexes
 * rej[0..nrej-1]) from the outbox to state_hub_events.rejected with their
 * errors.  A row goes only if both its seq and its id are the batch's: the
 * rows read may have been deleted since (DELETE, which keeps the table's
 * file) and the sequence set back, so that new events carry the batch's
 * seqs.  Returns how many were moved, or -1 when the outbox was emptied or
 * rewritten since the read (nothing is deleted or moved then: see below).
 */
static int
settle(WorkerBatch *b, const SheMsgOutcome *out, const SheBatchOutcome *sum,
	   const int *acked, int nacked, const int *rej, int nrej)
{
	int			moved = 0;
	int			i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	connect_spi();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "deleting acknowledged rows");
	/*
	 * The outbox read may have been dropped since (TRUNCATE, DROP and CREATE
	 * EXTENSION), and another one made, whose seqs start again: deleting
	 * these seqs there would lose its events unpublished.
	 */
	if (extension_table("outbox") != b->outbox ||
		(nrej > 0 && extension_table("rejected") != b->rejected))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("state_hub_events worker cannot settle the batch: the extension's outbox or dead-letter table is gone")));

	/*
	 * The same table, but TRUNCATEd since the read (its rows gone, perhaps
	 * its sequence set back, so new events may carry the batch's seqs), or
	 * rewritten (VACUUM FULL, CLUSTER: the rows kept).  Either way nothing
	 * is deleted: the worker reads again; what was rewritten goes again
	 * and JetStream drops it as a duplicate.  Under the lock the DELETE
	 * takes anyway, so no TRUNCATE commits between this check and it.
	 */
	LockRelationOid(b->outbox, RowExclusiveLock);
	if (table_file(b->outbox) != b->outbox_file)
		moved = -1;
	else if (nacked > 0)
	{
		Datum	   *d = palloc(nacked * sizeof(Datum));
		Datum	   *ids = palloc(nacked * sizeof(Datum));
		Datum		args[2];
		Oid			argtypes[2] = {INT8ARRAYOID, UUIDARRAYOID};

		for (i = 0; i < nacked; i++)
		{
			d[i] = Int64GetDatum(b->seqs[acked[i]]);
			ids[i] = DirectFunctionCall1(uuid_in, CStringGetDatum(b->events[acked[i]].id));
		}
		args[0] = make_array(INT8OID, d, nacked);
		args[1] = make_array(UUIDOID, ids, nacked);
		if (SPI_execute_plan(keep_plan(&delete_plan, DELETE_SQL, 2, argtypes),
							 args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "deleting from state_hub_events.outbox failed");
	}
	if (nrej > 0 && moved == 0)
	{
		Datum	   *seqs = palloc(nrej * sizeof(Datum));
		Datum	   *codes = palloc(nrej * sizeof(Datum));
		Datum	   *errors = palloc(nrej * sizeof(Datum));
		Datum	   *ids = palloc(nrej * sizeof(Datum));
		Datum		args[4];
		Oid			argtypes[4] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, UUIDARRAYOID};

		for (i = 0; i < nrej; i++)
		{
			seqs[i] = Int64GetDatum(b->seqs[rej[i]]);
			codes[i] = Int32GetDatum(out[rej[i]].err_code);
			errors[i] = CStringGetTextDatum(she_outcome_text(sum, &out[rej[i]]));
			ids[i] = DirectFunctionCall1(uuid_in, CStringGetDatum(b->events[rej[i]].id));
		}
		args[0] = make_array(INT8OID, seqs, nrej);
		args[1] = make_array(INT4OID, codes, nrej);
		args[2] = make_array(TEXTOID, errors, nrej);
		args[3] = make_array(UUIDOID, ids, nrej);
		if (SPI_execute_plan(keep_plan(&reject_plan, REJECT_SQL, 4, argtypes),
							 args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "moving refused events to state_hub_events.rejected failed");
		moved = (int) SPI_processed;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return moved;
}

/* The SQLSTATE that fits a refusal for good, for the LOG line. */
static int
refusal_errcode(const SheBatchOutcome *sum, const SheMsgOutcome *o)
{
	if (o->err_code == 10060)	/* captured by another stream */
		return ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
	if (strstr(she_outcome_text(sum, o), "Permissions Violation") != NULL)
		return ERRCODE_INSUFFICIENT_PRIVILEGE;
	return ERRCODE_PROGRAM_LIMIT_EXCEEDED;	/* too large */
}

/*
 * LOG the events moved to the dead-letter table: one line each for the
 * first REJECT_LOG_MAX of a batch, then one line for the rest.
 */
static void
log_rejected(WorkerBatch *b, const SheMsgOutcome *out, const SheBatchOutcome *sum,
			 const int *rej, int nrej)
{
	int			i;

	for (i = 0; i < nrej && i < REJECT_LOG_MAX; i++)
	{
		const SheEvent *ev = &b->events[rej[i]];

		ereport(LOG,
				(errcode(refusal_errcode(sum, &out[rej[i]])),
				 errmsg("state_hub_events worker: event %s (seq %lld, subject \"%s\") was refused for good and moved to state_hub_events.rejected",
						ev->id, (long long) b->seqs[rej[i]], ev->subject),
				 errdetail("%s", she_outcome_text(sum, &out[rej[i]])),
				 errhint("Once the cause is fixed, put it back: SELECT state_hub_events.requeue_rejected();")));
	}
	if (nrej > REJECT_LOG_MAX)
		ereport(LOG,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("state_hub_events worker: %d more events of the batch were refused for good and moved to state_hub_events.rejected",
						nrej - REJECT_LOG_MAX)));
}

static void
worker_exit(int code, Datum arg)
{
	she_conn_close(&conn);
	SpinLockAcquire(&she_durable->mutex);
	she_durable->worker_latch = NULL;
	she_durable->worker_reads_anyway = false;
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
 * The most events of one atomic batch, or 0 to publish one by one:
 * state_hub_events.atomic_batches is off, or the stream does not allow
 * atomic publish (said once, as is its return).  Asked again after a
 * minute, a reload, or a refused batch; after a second when the stream
 * did not answer (not created yet, no permission for the API: the request
 * then waits up to 2 s, not to be paid for every batch).  Connected.
 */
static int
worker_atomic_max(void)
{
	TimestampTz now = GetCurrentTimestamp();
	char		why[256] = "";

	if (!she_atomic_batches)
	{
		atomic_state = atomic_logged = -1;
		return 0;
	}
	if (atomic_state == -1 ||
		TimestampDifferenceExceeds(atomic_checked_at, now,
								   atomic_state < 0 ? ATOMIC_UNKNOWN_MS : ATOMIC_RECHECK_MS))
	{
		atomic_state = she_atomic_allowed(&conn, she_stream, Min(she_publish_timeout_ms, 2000),
										  why, sizeof(why));
		if (atomic_state < 0)
			atomic_state = (atomic_state == -2) ? -3 : -2;
		atomic_checked_at = now;
		if (atomic_state == 0 && atomic_logged != 0)
			ereport(WARNING,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("state_hub_events worker: state_hub_events.atomic_batches is on, but events are published one by one"),
					 errdetail("%s", why),
					 errhint("Use nats-server 2.12 or later and set allow_atomic on the stream, or turn atomic_batches off.")));
		else if (atomic_state == 1 && atomic_logged != 1)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("state_hub_events worker: publishing each transaction's events to stream \"%s\" as atomic batches of at most %d events",
							she_stream, she_atomic_batch_max)));
		if (atomic_state >= 0)
			atomic_logged = atomic_state;
	}
	return atomic_state == 1 ? she_atomic_batch_max : 0;
}

/* How many events from index f on belong to f's transaction (a run). */
static int
txn_run(const WorkerBatch *b, int f)
{
	int			j = f + 1;

	while (b->events[f].txn.xid != 0 && j < b->n &&
		   b->events[j].txn.xid == b->events[f].txn.xid &&
		   b->events[j].txn.index == b->events[j - 1].txn.index + 1)
		j++;
	return j - f;
}

/*
 * Atomic batches: cut the batch so that transactions go whole.  A probe
 * keeps only the first transaction; otherwise a transaction the read cut
 * off at its end (its last row read is not its last event) is left for
 * the next read, where it comes first, unless it is all the batch holds.
 */
static void
shape_batch(WorkerBatch *b, WorkerProbe probe)
{
	const SheTxn *t = &b->events[b->n - 1].txn;
	int			f = b->n - 1;

	if (probe != PROBE_NONE)
		f = txn_run(b, 0);
	else if (t->xid != 0 && t->index < t->count)
	{
		while (f > 0 && b->events[f - 1].txn.xid == t->xid &&
			   b->events[f - 1].txn.index == b->events[f].txn.index - 1)
			f--;
	}
	else
		return;
	if (f > 0)
		b->n = f;
}

/*
 * The index of the batch's first event on a subject NATS keeps for itself
 * ($JS.API..., _INBOX...), b->n if none.  publish() and emit() refuse those
 * at the call, but the outbox may hold rows written before they did (an
 * older library) or by its owner: sent, such a row is a request the server
 * runs with the worker's credentials ("$JS.API.STREAM.DELETE.<stream>").
 */
static int
first_reserved(const WorkerBatch *b)
{
	int			i;

	for (i = 0; i < b->n; i++)
		if (she_subject_reserved(b->events[i].subject))
			break;
	return i;
}

/* Refuse the batch's first event, on a reserved subject, for good, unsent. */
static void
refuse_reserved(WorkerBatch *b, SheMsgOutcome *out, SheBatchOutcome *res)
{
	char		text[200];

	b->n = 1;
	snprintf(text, sizeof(text),
			 "not sent: NATS reserves the subject \"%s\" (for requests to the server and replies, not events)",
			 b->events[0].subject);
	she_ascii_text(res->texts[0], sizeof(res->texts[0]), text);
	res->ntexts = 1;
	strlcpy(res->reason, res->texts[0], sizeof(res->reason));
	res->refused = res->refused_permanent = 1;
	out[0].state = SHE_MSG_REFUSED;
	out[0].permanent = true;
	out[0].err_code = 0;
	out[0].text = 0;
	out[0].batch_refused = false;
	out[0].reported = false;
}

/*
 * Publish batch b through the engine; out[i] is event i's outcome.  With
 * atomic batches each transaction goes as one batch (see shape_batch),
 * except for PROBE_HEAD_ALONE.  An event on a reserved subject is never
 * sent: the batch stops before it, and a batch it heads is that event
 * alone, refused for good.  No connection: every event is NOT_SENT.
 */
static void
publish_batch(WorkerBatch *b, WorkerProbe probe, SheMsgOutcome *out, SheBatchOutcome *res)
{
	int			i;
	int			r;

	memset(res, 0, sizeof(*res));
	r = first_reserved(b);
	if (r == 0)
	{
		refuse_reserved(b, out, res);
		return;
	}
	b->n = r;					/* the next read starts with it */
	if (she_conn_ensure(&conn, res->reason, sizeof(res->reason)))
	{
		int			max_atomic = worker_atomic_max();

		if (max_atomic > 0 || probe == PROBE_HEAD_ALONE)
			shape_batch(b, probe);
		else if (probe != PROBE_NONE)
			b->n = 1;

		she_publish_events_atomic(&conn, she_stream, she_create_stream, b->events, b->n,
								  she_now_usec() + (uint64) she_publish_timeout_ms * 1000,
								  probe == PROBE_HEAD_ALONE ? 0 : max_atomic, out, res);
		if (probe == PROBE_HEAD_ALONE && b->n > 1 && b->events[0].txn.index == 1 &&
			(out[0].state == SHE_MSG_STORED || out[0].state == SHE_MSG_DUPLICATE))
			res->atomic_splits++;	/* it went, one event at a time */
		if (max_atomic > 0)
			report_atomic(res, max_atomic, probe);
		else if (atomic_state == -3 && res->stored > 0)
			atomic_state = -1;	/* this batch created the stream: ask before
								 * the next one, not a second later */
		return;
	}
	for (i = 0; i < b->n; i++)
	{
		out[i].state = SHE_MSG_NOT_SENT;
		out[i].permanent = false;
		out[i].err_code = 0;
		out[i].text = -1;
		out[i].batch_refused = false;
	}
	res->not_sent = b->n;
}

/*
 * Must the refused atomic batch of event o be published one event at a
 * time to learn each one's outcome?  Yes when the refusal may be due to
 * one member (too large, no permission, already stored) or to the batch's
 * size; not when it holds for the whole batch for a while (a full stream,
 * resources): then the batch is tried again whole after retry_interval.
 */
static bool
refused_as_batch(const SheMsgOutcome *o)
{
	return o->batch_refused &&
		(o->err_code == 0 || o->err_code == JS_MSG_TOO_LARGE ||
		 o->err_code == JS_STREAM_MISMATCH || o->err_code == JS_BATCH_INCOMPLETE ||
		 o->err_code == JS_BATCH_TOO_LARGE || o->err_code == JS_BATCH_DUPLICATE);
}

/* Count and LOG what the atomic batches of an attempt did. */
static void
report_atomic(const SheBatchOutcome *res, int max_atomic, int probe)
{
	she_stats_add_atomic(res->atomic_batches, res->atomic_splits);
	if (res->atomic_splits > 0 && probe == PROBE_HEAD_ALONE)
		ereport(LOG,
				(errcode(ERRCODE_WARNING),
				 errmsg("state_hub_events worker: a transaction was published one event at a time"),
				 errdetail("JetStream refused it as an atomic batch without saying which event it objected to; each event now gets its own outcome.")));
	else if (res->atomic_splits > 0)
		ereport(LOG,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg_plural("state_hub_events worker: %d transaction was published as several atomic batches",
							   "state_hub_events worker: %d transactions were published as several atomic batches",
							   res->atomic_splits, res->atomic_splits),
				 errdetail("A batch holds at most state_hub_events.atomic_batch_max (%d) events, and the worker reads at most %d events or state_hub_events.worker_batch_bytes at a time; consumers see each part whole, not the transaction.",
						   max_atomic, WORKER_BATCH)));
	if (res->refused > 0)
		atomic_state = -1;		/* ask the stream again: was it changed? */
}

/*
 * Walk the outcomes in sequence order up to the first event that is
 * neither acknowledged nor refused for good: delete the acknowledged ones,
 * move the refused ones to the dead-letter table (when it exists), count,
 * and LOG.  Returns the index of that first failure (b->n if none); the
 * events from there on stay in the outbox, so a retry starts from it.
 */
static int
settle_batch(WorkerBatch *b, const SheMsgOutcome *out, const SheBatchOutcome *res,
			 int *ndeleted, int *nmoved)
{
	int		   *acked = palloc(Max(b->n, 1) * sizeof(int));
	int		   *rej = palloc(Max(b->n, 1) * sizeof(int));
	int			nacked = 0;
	int			nrej = 0;
	int			first;

	for (first = 0; first < b->n; first++)
	{
		const SheMsgOutcome *o = &out[first];

		if (o->state == SHE_MSG_STORED || o->state == SHE_MSG_DUPLICATE)
			acked[nacked++] = first;
		else if (o->state == SHE_MSG_REFUSED && o->permanent && b->can_reject)
			rej[nrej++] = first;
		else
			break;
	}
	*ndeleted = nacked;
	*nmoved = (nacked > 0 || nrej > 0) ? settle(b, out, res, acked, nacked, rej, nrej) : 0;
	if (*nmoved < 0)
	{
		/* the outbox was emptied or rewritten: this batch is settled */
		ereport(LOG,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("state_hub_events worker: state_hub_events.outbox was truncated or rewritten while %d events read from it were published; reading it again",
						b->n),
				 errdetail("No row was deleted for this batch; events that are still in the outbox are published again (JetStream drops the copies as duplicates).")));
		*ndeleted = *nmoved = 0;
		nrej = 0;
		first = b->n;
	}
	if (nrej > 0 && *nmoved > 0)
	{
		/* (none moved: the rows read were deleted since, see settle) */
		log_rejected(b, out, res, rej, nrej);
		set_status(-1, false, she_outcome_text(res, &out[rej[nrej - 1]]));
	}

	/*
	 * Every outcome of the attempt is counted, those behind the first
	 * failure too (they are counted again when they are retried).  Refused
	 * for good and moved: rejected, not failed.
	 */
	she_stats_atomic_published(res->stored, res->duplicates);
	she_stats_add_failed(res->refused + res->not_sent - *nmoved);
	she_stats_add_unconfirmed(res->unconfirmed);
	she_stats_add_rejected(*nmoved);
	return first;
}

/*
 * The first failure of an attempt: LOG it (the first of a run, then once a
 * minute; with a hint when it was refused for good but this database has
 * no dead-letter table yet), and say so when JetStream refused it but
 * stored events behind it, which then appear in the stream ahead of it.
 */
static void
log_failure(WorkerBatch *b, const SheMsgOutcome *out, const SheBatchOutcome *res,
			int first, int failed_attempts, TimestampTz *last_failure_log, int retry_ms)
{
	const SheMsgOutcome *o = &out[first];
	TimestampTz now = GetCurrentTimestamp();
	int			ahead = 0;
	int			i;

	for (i = first + 1; i < b->n; i++)
		if (out[i].state == SHE_MSG_STORED)
			ahead++;
	if (o->state == SHE_MSG_REFUSED && ahead > 0)
		ereport(LOG,
				(errcode(ERRCODE_WARNING),
				 errmsg_plural("state_hub_events worker: %d event behind event %s (seq %lld) was stored ahead of it",
							   "state_hub_events worker: %d events behind event %s (seq %lld) were stored ahead of it",
							   ahead, ahead, b->events[first].id, (long long) b->seqs[first]),
				 errdetail("JetStream refused that event but not the events sent behind it in the same batch: %s",
						   she_outcome_text(res, o))));

	if (failed_attempts == 0 ||
		TimestampDifferenceExceeds(*last_failure_log, now, FAILURE_LOG_MS))
	{
		if (o->state == SHE_MSG_REFUSED && o->permanent && !b->can_reject)
			ereport(LOG,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("state_hub_events worker: event %s (seq %lld) was refused for good, and there is no table state_hub_events.rejected to move it to",
							b->events[first].id, (long long) b->seqs[first]),
					 errdetail("%s", she_outcome_text(res, o)),
					 errhint("Update the extension: ALTER EXTENSION state_hub_events UPDATE.")));
		ereport(LOG,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("state_hub_events worker: %d of %d events not acknowledged, retrying from seq %lld every %d ms",
						b->n - first, b->n, (long long) b->seqs[first], retry_ms),
				 errdetail("%s (refused %d, of which %d for good; unconfirmed %d; not sent %d; %d failed attempts so far)",
						   she_outcome_text(res, o)[0] ? she_outcome_text(res, o) : res->reason,
						   res->refused, res->refused_permanent,
						   res->unconfirmed, res->not_sent, failed_attempts + 1)));
		*last_failure_log = now;
	}
	set_status(-1, false, she_outcome_text(res, o)[0] ? she_outcome_text(res, o) : res->reason);
}

/* What the loop keeps from one turn to the next (static: see she_worker_main). */
typedef struct WorkerLoop
{
	TimestampTz next_attempt_at;	/* after a failure: not before */
	TimestampTz last_failure_log;
	int			failed_attempts;
	WorkerProbe probe;			/* the last attempt failed */
	const char *dbname;
} WorkerLoop;

static WorkerLoop loop;

/*
 * Settle an attempt (publish_batch's outcomes) with cancel held off: the
 * acknowledged events are deleted and every outcome is counted, whatever
 * the moment of a pg_cancel_backend().  A cancel that arrived meanwhile is
 * raised when the settle is done (see cancel_recover).
 */
static int
settle_uncanceled(WorkerBatch *b, const SheMsgOutcome *out, const SheBatchOutcome *res,
				  int *ndeleted, int *nmoved)
{
	int			first;

	HOLD_CANCEL_INTERRUPTS();
	first = settle_batch(b, out, res, ndeleted, nmoved);
	if (*ndeleted > 0)
		set_status(-1, true, NULL);
	RESUME_CANCEL_INTERRUPTS();
	CHECK_FOR_INTERRUPTS();
	return first;
}

/*
 * One attempt: read the oldest batch (after a failure: its first event or
 * transaction), publish it, settle it; on a failure, LOG and set the next
 * attempt's time.  Returns how long to sleep on the latch, or -1 to read
 * again at once.
 */
static long
attempt(MemoryContext cxt, TimestampTz now)
{
	WorkerBatch b;
	SheBatchOutcome res;
	SheMsgOutcome *out;
	int			limit;
	int			first;
	int			deleted;
	int			moved;
	int			retry_ms;

	/*
	 * After a failure, one event (with atomic batches: one transaction) at
	 * a time until one is acknowledged.
	 */
	if (loop.probe == PROBE_NONE)
		limit = WORKER_BATCH;
	else if (she_atomic_batches)
		limit = Min(she_atomic_batch_max, WORKER_BATCH);
	else
		limit = 1;
	set_reads_anyway(false);
	read_batch(cxt, limit, &b);
	if (b.n > 0 && she_nats_url[0] == '\0')
		loop.next_attempt_at = TimestampTzPlusMilliseconds(now, WORKER_POLL_MS);
	if (b.n == 0 || she_nats_url[0] == '\0')
		return WORKER_POLL_MS;

	out = MemoryContextAlloc(cxt, b.n * sizeof(SheMsgOutcome));
	set_reads_anyway(true);
	CHECK_FOR_INTERRUPTS();		/* canceled while reading: not sent */
	ereport(DEBUG1,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg_internal("state_hub_events worker: publishing %d events (%lld bytes) from seq %lld",
							 b.n, (long long) b.bytes, (long long) b.seqs[0])));
	publish_batch(&b, loop.probe, out, &res);
	first = settle_uncanceled(&b, out, &res, &deleted, &moved);
	if (first == b.n)
	{
		if (loop.failed_attempts > 0)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("state_hub_events worker: publishing again after %d failed attempts",
							loop.failed_attempts)));
		loop.failed_attempts = 0;
		loop.probe = PROBE_NONE;

		/*
		 * Read again, since what was committed meanwhile woke no one
		 * (set_reads_anyway).  When the batch was small and all there was,
		 * let the next one grow first: a batch's statements, round trip and
		 * wake-ups cost about as much for one event as for a hundred.
		 */
		if (b.ahead <= b.n && b.n < WORKER_COLLECT_BELOW)
			(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 WORKER_COLLECT_MS, PG_WAIT_EXTENSION);
		return -1;
	}
	retry_ms = Max(she_retry_interval_ms, 100);
	log_failure(&b, out, &res, first, loop.failed_attempts, &loop.last_failure_log, retry_ms);
	loop.failed_attempts++;
	if (refused_as_batch(&out[first]) && loop.probe != PROBE_HEAD_ALONE)
	{
		/* learn each event's outcome at once, in order */
		loop.probe = PROBE_HEAD_ALONE;
		return -1;
	}
	loop.probe = PROBE_HEAD;
	loop.next_attempt_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), retry_ms);
	return retry_ms;
}

/*
 * One turn of the loop: stop when asked, reload settings, wait for the
 * next attempt's time after a failure, else make an attempt and sleep
 * until woken or the poll.
 */
static void
worker_turn(MemoryContext cxt)
{
	TimestampTz now;
	long		wait_ms;

	CHECK_FOR_INTERRUPTS();
	if (stop_requested())
	{
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("state_hub_events worker for database \"%s\" stopping on request", loop.dbname)));
		SpinLockAcquire(&she_durable->mutex);
		she_durable->worker_stopped_on_request = true;
		SpinLockRelease(&she_durable->mutex);
		proc_exit(0);
	}
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		she_outbox_announce_stream(she_stream);
		loop.next_attempt_at = 0;	/* new settings: try them at once */
		atomic_state = -1;		/* atomic_batches or the stream may have changed */
	}
	ResetLatch(MyLatch);

	/*
	 * After a failed attempt, commits setting the latch do not hurry the
	 * next one: it waits for retry_interval (or the poll, with no URL).
	 */
	now = GetCurrentTimestamp();
	if (now < loop.next_attempt_at)
	{
		set_reads_anyway(true);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(1, (long) ((loop.next_attempt_at - now) / 1000)), PG_WAIT_EXTENSION);
		return;
	}
	loop.next_attempt_at = 0;
	MemoryContextReset(cxt);
	wait_ms = attempt(cxt, now);
	if (wait_ms >= 0)
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
}

/*
 * Recover from an ERROR caught by she_worker_main's error block.  A
 * canceled statement (pg_cancel_backend(), or a cancel the worker raised
 * itself after cutting a publish short: see nats_publish.c's stop_capped)
 * abandons the attempt, as a cancel does to autovacuum: the transaction is
 * aborted (its SPI, snapshot and locks with it), no batch is left in
 * flight, the attempt's memory is freed, and the next attempt starts at
 * once from the oldest event still in the outbox (what was acknowledged is
 * deleted: see settle_uncanceled; the rest is published again, JetStream
 * dropping the copies it stored by Nats-Msg-Id).  Any other ERROR ends the
 * worker as it did without the block (FATAL; the launcher starts it again).
 */
/*
 * Is the ERROR being handled a statement cancel, raised by PostgreSQL's
 * interrupt processing?  Not any ERROR with its SQLSTATE (57014): one a
 * trigger on the outbox raises at every DELETE would make every attempt
 * "canceled" and the next one start at once, thousands a second, each
 * publishing the batch again, where an ERROR ends the worker and the
 * launcher starts it again after its back-off.
 */
static bool
error_is_cancel(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	ErrorData  *e = CopyErrorData();
	bool		cancel = e->sqlerrcode == ERRCODE_QUERY_CANCELED &&
		e->funcname != NULL && strcmp(e->funcname, "ProcessInterrupts") == 0;

	FreeErrorData(e);
	MemoryContextSwitchTo(old);
	return cancel;
}

static void
recover_from_error(MemoryContext cxt)
{
	ErrorData  *edata;

	error_context_stack = NULL;
	HOLD_INTERRUPTS();
	if (!error_is_cancel())
	{
		PG_exception_stack = NULL;
		RESUME_INTERRUPTS();
		PG_RE_THROW();			/* no handler: made FATAL (pg_re_throw) */
	}
	QueryCancelPending = false;
	AbortCurrentTransaction();
	LWLockReleaseAll();
	pgstat_report_wait_end();
	she_publish_abandon(&conn);
	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	FlushErrorState();
	MemoryContextReset(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	loop.next_attempt_at = 0;
	RESUME_INTERRUPTS();
	ereport(LOG,
			(errcode(ERRCODE_QUERY_CANCELED),
			 errmsg("state_hub_events worker: attempt canceled, starting again from the oldest event in the outbox"),
			 errdetail("%s; acknowledged events were deleted, the others stay in the outbox and are published again (JetStream drops the copies it already stored).",
					   edata->message)));
	FreeErrorData(edata);
}

/*
 * Started by the launcher (launcher.c) for the database whose OID is arg.
 * From the loop on, an ERROR comes back to the sigsetjmp below
 * (recover_from_error): the loop's state is static, as locals changed
 * after sigsetjmp are not reliable after the longjmp.
 */
void
she_worker_main(Datum arg)
{
	sigjmp_buf	local_sigjmp_buf;
	MemoryContext cxt;
	char	   *dbname;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	she_in_worker = true;

	/*
	 * Like autovacuum, whatever ALTER DATABASE ... ALLOW_CONNECTIONS says:
	 * the database's owner (no superuser) may set it false, and the worker,
	 * which connects anew at every start, would be refused for as long as
	 * the owner liked while connected sessions go on filling the outbox.
	 */
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid,
											  BGWORKER_BYPASS_ALLOWCONN);

	pin_settings();
	she_outbox_announce_stream(she_stream);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = note_error;

	SpinLockAcquire(&she_durable->mutex);
	she_durable->worker_latch = &MyProc->procLatch;
	she_durable->worker_reads_anyway = false;
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
	conn.no_reconnect_buffer = true;	/* see "Order" above */

	cxt = AllocSetContextCreate(TopMemoryContext, "state_hub_events worker",
								ALLOCSET_DEFAULT_SIZES);
	memset(&loop, 0, sizeof(loop));
	loop.probe = PROBE_NONE;
	loop.dbname = dbname;
	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("state_hub_events worker started for database \"%s\"", dbname)));

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
		recover_from_error(cxt);
	PG_exception_stack = &local_sigjmp_buf;
	for (;;)
		worker_turn(cxt);
}
