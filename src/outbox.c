/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Durable delivery, the committing side: at pre-commit (or pre-prepare)
 *	  the transaction's envelopes are inserted into state_hub_events.outbox
 *	  with sequence values taken there, so they commit or vanish with the
 *	  transaction; at COMMIT the worker is woken.  The worker (worker.c)
 *	  publishes and deletes what JetStream acknowledged.
 *
 * A sequence value taken at pre-commit orders transactions that touched the
 * same rows: the later one waited for the earlier one's locks, so it reached
 * pre-commit after the earlier one committed.
 *
 * Shared state (SheDurableShared, in shared memory when preloaded): the
 * worker's latch and status.  Backends read it and set the latch; only the
 * worker writes the rest, under the spinlock.
 *
 * IDENTIFICATION
 *	  src/outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"

#include "state_hub_events.h"

PG_FUNCTION_INFO_V1(she_worker_status);

SheDurableShared *she_durable = NULL;

void
she_durable_request_shmem(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SheDurableShared)));
}

void
she_durable_startup_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	she_durable = ShmemInitStruct("state_hub_events durable", sizeof(SheDurableShared), &found);
	if (!found)
	{
		memset(she_durable, 0, sizeof(SheDurableShared));
		SpinLockInit(&she_durable->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Refuse durable publishing where the outbox cannot be written or no worker
 * will ever publish it.  At the call, in a live transaction.
 *
 * A read-only transaction (BEGIN READ ONLY, default_transaction_read_only, a
 * session that started on a standby since promoted) could not insert the
 * outbox rows at COMMIT: refuse here.  A transaction that becomes read-only
 * after its first event is handled in she_outbox_write.
 */
void
she_durable_check(int nevents_now)
{
	char	   *db;
	int64		backlog;
	char		worker_stream[sizeof(she_durable->worker_stream)];
	int			worker_source;

	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot publish durably in a read-only transaction"),
				 errdetail("With state_hub_events.delivery = 'durable' the events are written to state_hub_events.outbox at COMMIT."),
				 errhint("Publish in a read-write transaction.")));
	if (!she_preloaded || she_durable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot publish with state_hub_events.delivery = 'durable' without the worker"),
				 errhint("Add state_hub_events to shared_preload_libraries, set state_hub_events.database, and restart.")));
	db = get_database_name(MyDatabaseId);
	if (she_database[0] == '\0' || db == NULL || strcmp(db, she_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot publish durably from database \"%s\"", db ? db : "?"),
				 errdetail("The durable worker serves database \"%s\" (state_hub_events.database).",
						   she_database)));

	/*
	 * The outbox has no stream column: the worker publishes every event to
	 * its own state_hub_events.stream.  A stream a role, the database or
	 * the session set (SET, ALTER ROLE/DATABASE ... SET, a connection
	 * option), which the worker reads at its start at most, would be
	 * ignored silently: its events stored in the worker's stream instead.
	 * Refuse it here.  A value from the server's configuration is the
	 * worker's too (after a reload that the worker may not have read yet:
	 * allowed), unless the worker's own value came from elsewhere (a
	 * database's or role's setting it read at its start).
	 */
	SpinLockAcquire(&she_durable->mutex);
	strlcpy(worker_stream, she_durable->worker_stream, sizeof(worker_stream));
	worker_source = she_durable->worker_stream_source;
	SpinLockRelease(&she_durable->mutex);
	if (worker_stream[0] != '\0' && strcmp(worker_stream, she_stream) != 0 &&
		(she_stream_source > PGC_S_ARGV || worker_source > PGC_S_ARGV))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish durably to stream \"%s\"", she_stream),
				 errdetail("The durable worker publishes every event of the outbox to stream \"%s\" (its state_hub_events.stream).",
						   worker_stream),
				 she_stream_source > PGC_S_ARGV ?
				 errhint("Set state_hub_events.stream in the server configuration, or publish in immediate mode.") :
				 errhint("The worker's value comes from a database or role setting it read at its start: remove that setting and restart the worker, or publish in immediate mode.")));

	if (she_max_backlog_events > 0)
	{
		SpinLockAcquire(&she_durable->mutex);
		backlog = she_durable->backlog_events;
		SpinLockRelease(&she_durable->mutex);
		if (backlog + nevents_now >= she_max_backlog_events)
		{
			if (she_backlog_overflow == SHE_OVERFLOW_ERROR)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("cannot accept the event: the durable backlog holds %lld events",
								(long long) backlog),
						 errdetail("state_hub_events.max_backlog_events is %d and state_hub_events.backlog_overflow is 'error'.",
								   she_max_backlog_events),
						 errhint("Check that NATS is reachable: SELECT * FROM state_hub_events.backlog();")));
			else if (nevents_now == 0)
				ereport(WARNING,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("state_hub_events: the durable backlog holds %lld events, over state_hub_events.max_backlog_events (%d)",
								(long long) backlog, she_max_backlog_events),
						 errdetail("backlog_overflow is 'accept': the event is kept; the backlog keeps growing while NATS is unreachable.")));
		}
	}
}

/*
 * The insert's plan, prepared once per backend.  Its plan cache entry is
 * revalidated by PostgreSQL when the outbox changes (DROP and CREATE
 * EXTENSION included).
 *
 * The insert runs with the outbox owner's rights under the committing
 * session's search_path, and the plan cache analyses it again under that
 * search_path whenever it differs from the one it was planned under: every
 * function, operator, type and relation in it is therefore schema-qualified,
 * so no schema of the session's search_path (an operator or function placed
 * there would run as the owner) is ever consulted.  This replaces pinning
 * search_path around every commit, which cost ~7 us, about 5 % of the
 * durable commit's CPU (bench/analysis.md).  028_outbox_search_path.pl
 * fails should an unqualified name slip in.
 */
static SPIPlanPtr insert_plans[2][2];	/* [with the txn columns (1.3)][one row] */

#define INSERT_SQL \
	"INSERT INTO state_hub_events.outbox (seq, id, subject, envelope) " \
	"SELECT pg_catalog.nextval('state_hub_events.outbox_seq'), t.id::pg_catalog.uuid, t.subject, t.envelope " \
	"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS t(id, subject, envelope)"

/*
 * Since 1.3 each row also records its transaction (state_hub_events--1.2--1.3.sql):
 * the transaction id, the commit key (a sequence value taken once per
 * transaction, before its events'), the event's 1-based index and the count.
 */
#define INSERT_TXN_SQL \
	"INSERT INTO state_hub_events.outbox (seq, id, subject, envelope, txn_id, txn_key, txn_index, txn_count) " \
	"SELECT pg_catalog.nextval('state_hub_events.outbox_seq'), t.id::pg_catalog.uuid, t.subject, t.envelope, " \
	"$4, $5, $6 OPERATOR(pg_catalog.+) t.n::pg_catalog.int4, $7 " \
	"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) " \
	"WITH ORDINALITY AS t(id, subject, envelope, n)"

/*
 * The same for one event, the usual transaction: a VALUES row, without the
 * arrays, the function scan and its tuplestore, whose executor start cost
 * about as much as the rest of the insert (bench/analysis.md).
 */
#define INSERT_ONE_SQL \
	"INSERT INTO state_hub_events.outbox (seq, id, subject, envelope) " \
	"VALUES (pg_catalog.nextval('state_hub_events.outbox_seq'), $1::pg_catalog.uuid, $2, $3)"
#define INSERT_TXN_ONE_SQL \
	"INSERT INTO state_hub_events.outbox (seq, id, subject, envelope, txn_id, txn_key, txn_index, txn_count) " \
	"VALUES (pg_catalog.nextval('state_hub_events.outbox_seq'), $1::pg_catalog.uuid, $2, $3, " \
	"$4, $5, $6 OPERATOR(pg_catalog.+) 1, $7)"

static Oid
rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Most bytes one INSERT passes in its three text arrays.  An array is one
 * allocation, limited to MaxAllocSize (1 GB), and a transaction may buffer
 * far more envelopes than that, so the rows go in chunks.  One envelope is
 * at most max_event_bytes (64 MB at most): a chunk holds at least one.
 */
#define OUTBOX_CHUNK_BYTES	((Size) 64 * 1024 * 1024)

/* What one event adds to a chunk's arrays: three text values, aligned. */
static Size
event_array_bytes(const SheEvent *ev)
{
	return INTALIGN(VARHDRSZ + SHE_UUID_LEN) +
		INTALIGN(VARHDRSZ + strlen(ev->subject)) +
		INTALIGN(VARHDRSZ + (Size) ev->envelope_len);
}

/*
 * The prepared insert of one row (one) or of arrays of rows, with or
 * without the txn columns: prepared once per backend, kept.
 */
static SPIPlanPtr
insert_plan(bool with_txn, bool one)
{
	SPIPlanPtr *plan = &insert_plans[with_txn ? 1 : 0][one ? 1 : 0];
	Oid			argtypes[7] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	INT8OID, INT8OID, INT4OID, INT4OID};

	if (*plan == NULL)
	{
		SPIPlanPtr	p;

		if (one)
			argtypes[0] = argtypes[1] = argtypes[2] = TEXTOID;
		p = SPI_prepare(one ? (with_txn ? INSERT_TXN_ONE_SQL : INSERT_ONE_SQL) :
						(with_txn ? INSERT_TXN_SQL : INSERT_SQL),
						with_txn ? 7 : 3, argtypes);
		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "preparing the outbox insert failed: %s", SPI_result_code_string(SPI_result));
		*plan = p;
	}
	return *plan;
}

/*
 * Insert events[0 .. n-1] with one execution of the prepared insert; the
 * arrays (or the one row's values) are built in cxt.  SPI is connected, a
 * snapshot is active.
 */
static void
insert_chunk(bool with_txn, SheEvent *events, int n, MemoryContext cxt)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	Datum		args[7];
	int			i;
	int			ret;

	if (n == 1)
	{
		args[0] = CStringGetTextDatum(events[0].id);
		args[1] = CStringGetTextDatum(events[0].subject);
		args[2] = PointerGetDatum(cstring_to_text_with_len(events[0].envelope,
														   events[0].envelope_len));
	}
	else
	{
		Datum	   *ids = palloc(n * sizeof(Datum));
		Datum	   *subjects = palloc(n * sizeof(Datum));
		Datum	   *envelopes = palloc(n * sizeof(Datum));

		for (i = 0; i < n; i++)
		{
			ids[i] = CStringGetTextDatum(events[i].id);
			subjects[i] = CStringGetTextDatum(events[i].subject);
			envelopes[i] = PointerGetDatum(cstring_to_text_with_len(events[i].envelope,
																	events[i].envelope_len));
		}
		args[0] = PointerGetDatum(construct_array(ids, n, TEXTOID, -1, false, TYPALIGN_INT));
		args[1] = PointerGetDatum(construct_array(subjects, n, TEXTOID, -1, false, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_array(envelopes, n, TEXTOID, -1, false, TYPALIGN_INT));
	}
	args[3] = Int64GetDatum((int64) events[0].txn.xid);
	args[4] = Int64GetDatum((int64) events[0].txn.key);
	args[5] = Int32GetDatum(events[0].txn.index - 1);
	args[6] = Int32GetDatum(events[0].txn.count);
	MemoryContextSwitchTo(oldcxt);

	ret = SPI_execute_plan(insert_plan(with_txn, n == 1), args, NULL, false, 0);
	if (ret != SPI_OK_INSERT || SPI_processed != (uint64) n)
		elog(ERROR, "inserting into state_hub_events.outbox failed: %d", ret);
}

/*
 * Durable mode's commit key: one value of the outbox sequence, taken at
 * pre-commit before the events' own (so a transaction that waited for
 * another's row locks gets a larger key).  Taken without SQL, with the
 * permission check nextval() makes, as the outbox owner.
 */
static void
set_txn_key(Oid nsp, SheEvent *events, int nevents)
{
	Oid			seq = get_relname_relid("outbox_seq", nsp);
	int64		key;
	int			i;

	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cannot write durable events: sequence state_hub_events.outbox_seq does not exist"),
				 errhint("Update the extension: ALTER EXTENSION state_hub_events UPDATE.")));
	key = nextval_internal(seq, true);
	for (i = 0; i < nevents; i++)
	{
		events[i].txn.key = (uint64) key;
		events[i].txn.key_kind = 'S';
	}
}

/*
 * Insert the transaction's envelopes into the outbox, in buffer order, in
 * chunks of at most OUTBOX_CHUNK_BYTES.  At pre-commit or pre-prepare: an
 * ERROR here still aborts the transaction cleanly.  Runs as the outbox's
 * owner, so application roles need no rights on it.
 *
 * The transaction may have become read-only after its events were buffered
 * (SET TRANSACTION READ ONLY, SET transaction_read_only, set_config(), a
 * BEGIN READ ONLY that turns an implicit transaction block into an explicit
 * one).  publish() refuses every event after that at the call, but the
 * events accepted before must not make COMMIT fail, and PostgreSQL offers no
 * hook on a change of a built-in setting to refuse the change itself on all
 * of those paths.  So the insert runs with the read-only flag lifted:
 * read-only forbids writes from the moment it is set, and these rows record
 * events accepted before it, as rows the transaction inserted before it
 * still commit.
 */
void
she_outbox_write(SheEvent *events, int nevents)
{
	Oid			outbox;
	Oid			save_userid;
	int			save_sec;
	bool		save_read_only = XactReadOnly;
	int			ret;
	bool		with_txn;
	Oid			nsp;

	/*
	 * publish() takes no lock, so the extension may have been dropped and
	 * created again since this transaction last read the invalidation
	 * queue: look the schema, the outbox and its sequence up in caches that
	 * know it (else the old sequence's OID, or a kept plan's, made the
	 * COMMIT fail with "could not open relation with OID ...").
	 */
	AcceptInvalidationMessages();
	nsp = get_namespace_oid("state_hub_events", true);
	outbox = get_relname_relid("outbox", nsp);
	if (!OidIsValid(outbox))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("cannot write durable events: table state_hub_events.outbox does not exist"),
				 errhint("Update the extension: ALTER EXTENSION state_hub_events UPDATE.")));
	with_txn = get_attnum(outbox, "txn_key") != InvalidAttrNumber;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(rel_owner(outbox),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);

	XactReadOnly = false;
	PG_TRY();
	{
		MemoryContext chunk_cxt;
		int			start = 0;

		if ((ret = SPI_connect()) != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
		/* at pre-commit the statement's snapshot is gone: take one */
		PushActiveSnapshot(GetTransactionSnapshot());
		if (with_txn)
			set_txn_key(nsp, events, nevents);

		chunk_cxt = AllocSetContextCreate(TopTransactionContext,
										  "state_hub_events outbox chunk",
										  ALLOCSET_DEFAULT_SIZES);
		while (start < nevents)
		{
			Size		bytes = event_array_bytes(&events[start]);
			int			end = start + 1;

			while (end < nevents && bytes + event_array_bytes(&events[end]) <= OUTBOX_CHUNK_BYTES)
				bytes += event_array_bytes(&events[end++]);
			insert_chunk(with_txn, events + start, end - start, chunk_cxt);
			MemoryContextReset(chunk_cxt);
			start = end;
		}
		MemoryContextDelete(chunk_cxt);

		PopActiveSnapshot();
		SPI_finish();
	}
	PG_FINALLY();
	{
		XactReadOnly = save_read_only;
	}
	PG_END_TRY();
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * The worker announces the stream it publishes to (at start and after a
 * reload) and where its value came from, which she_durable_check compares
 * a session's with.
 */
void
she_outbox_announce_stream(const char *stream)
{
	SpinLockAcquire(&she_durable->mutex);
	strlcpy(she_durable->worker_stream, stream, sizeof(she_durable->worker_stream));
	she_durable->worker_stream_source = she_stream_source;
	SpinLockRelease(&she_durable->mutex);
}

/*
 * Wake the worker, unless it is publishing or waiting to retry: it reads
 * the outbox again before it waits for a wake-up (worker.c), and a commit
 * that saw it busy committed before that read.  Safe after the commit
 * record: SetLatch only.
 */
void
she_outbox_wake(void)
{
	Latch	   *latch;

	if (she_durable == NULL)
		return;
	SpinLockAcquire(&she_durable->mutex);
	latch = she_durable->worker_reads_anyway ? NULL : she_durable->worker_latch;
	SpinLockRelease(&she_durable->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * worker_status() RETURNS TABLE (worker_pid int, backlog_events bigint,
 *	 last_published_at timestamptz, last_error text, last_error_at timestamptz)
 */
Datum
she_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	SheDurableShared copy;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (she_durable == NULL)
	{
		memset(nulls, true, sizeof(nulls));
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}
	SpinLockAcquire(&she_durable->mutex);
	memcpy(&copy, she_durable, sizeof(copy));
	SpinLockRelease(&she_durable->mutex);

	values[0] = Int32GetDatum(copy.worker_pid);
	nulls[0] = (copy.worker_pid == 0);
	values[1] = Int64GetDatum(copy.backlog_events);
	values[2] = TimestampTzGetDatum(copy.last_published_at);
	nulls[2] = (copy.last_published_at == 0);
	values[3] = CStringGetTextDatum(copy.last_error);
	nulls[3] = (copy.last_error[0] == '\0');
	values[4] = TimestampTzGetDatum(copy.last_error_at);
	nulls[4] = (copy.last_error_at == 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
