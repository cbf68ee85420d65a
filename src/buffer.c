/*-------------------------------------------------------------------------
 *
 * buffer.c
 *	  The per-transaction event buffer and the transaction callbacks that
 *	  publish it once the commit record is written.
 *
 * Modelled on async.c (NOTIFY).  Events are appended to one array in buffer
 * order, each tagged with the subtransaction nesting level that buffered it.
 * Because a subtransaction's events are always the tail of the array when it
 * ends, COMMIT_SUB relabels that tail to the parent's level and ABORT_SUB
 * truncates it; a truncation that leaves nothing also releases the
 * destination (the first event fixes it).
 *
 * The commit path:
 *	  PRE_COMMIT   the commit timestamp is written into every envelope (the
 *				   envelopes are otherwise complete since the call), and
 *				   each event gets its transaction's facts (SheTxn: xid,
 *				   index, count; an xid is assigned if there is none);
 *				   immediate mode draws the batch's order ticket (queue.c)
 *				   before the transaction becomes visible;
 *	  COMMIT	   the commit record exists and row locks are still held: the
 *				   commit record's LSN becomes the commit key and the
 *				   batch is copied into the publisher's queue (queue.c); the
 *				   publisher puts batches in ticket order, so transactions
 *				   that touched the same rows are published in commit order;
 *	  AFTER_LOCKS  (resource release, top level, commit) row locks are gone:
 *				   with wait_for_ack, the outcomes the publisher reports are
 *				   awaited here, so the wait never holds up sessions queued on
 *				   our locks.  Nothing here may ERROR: the transaction
 *				   committed.  The backend itself never touches the network.
 *	  ABORT		   the buffer is dropped.
 *	  PRE_PREPARE  refused while events are buffered (as NOTIFY does).
 *
 * In durable mode (outbox.c) PRE_COMMIT and PRE_PREPARE also insert the
 * envelopes into state_hub_events.outbox, and COMMIT only wakes the worker:
 * the backend does no network I/O.
 *
 * The buffer holds the wire's form, UTF-8 (envelope.c converts at the call).
 * What leaves for SQL is converted back to the database's encoding: the rows
 * of pending(), and, in durable mode, the envelopes and subjects at
 * pre-commit before the outbox insert.
 *
 * The bytes of the buffered envelopes are counted: a transaction may hold at
 * most state_hub_events.max_transaction_bytes of them (refused at the call;
 * a rolled-back savepoint gives its events' bytes back).
 *
 * All state is backend-local and touched only by the backend's own thread.
 *
 * IDENTIFICATION
 *	  src/buffer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "access/parallel.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "queue.h"
#include "ascii_text.h"
#include "state_hub_events.h"

PG_FUNCTION_INFO_V1(she_publish);
PG_FUNCTION_INFO_V1(she_pending);
PG_FUNCTION_INFO_V1(she_last_commit_unpublished);

/* Events of the current top-level transaction, in buffer order. */
static MemoryContext BufferContext = NULL;
static SheEvent *events = NULL;
static int	nevents = 0;
static int	maxevents = 0;
static int64 nbytes = 0;		/* envelope bytes of events[0 .. nevents-1] */

/* Destination and behaviour, fixed by the first event still buffered. */
static char *batch_url = NULL;
static char *batch_stream = NULL;
static bool batch_wait_for_ack = true;
static bool batch_create_stream = true;
static bool batch_durable = false;
static int	batch_publish_timeout_ms = 0;
static int	batch_connect_timeout_ms = 0;
static SheStreamSpec batch_spec;	/* how the publisher creates a missing stream */

static char *last_subject = NULL;	/* in BufferContext: subjects are shared */
static bool timestamps_set = false;	/* PRE_COMMIT has run */
static bool commit_ready = false;	/* commit record written, batch may go */

/* The committed batch on its way (immediate mode). */
static SheHandOff handoff;
static uint64 handoff_start = 0;
static uint64 handoff_deadline = 0;

/* Events of the last committed transaction lost or unconfirmed (immediate). */
static int	last_unpublished = 0;

static void reset_buffer(void);
static void check_transaction_bytes(SheEvent *ev);
static void to_database_encoding(void);
static void xact_callback(XactEvent event, void *arg);
static void subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg);
static void release_callback(ResourceReleasePhase phase, bool isCommit,
							 bool isTopLevel, void *arg);
static void hand_over_batch(void);
static void report_batch(void);

/*
 * Register the transaction callbacks.  Called once from _PG_init.
 */
void
she_buffer_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	RegisterResourceReleaseCallback(release_callback, NULL);
}

/*
 * Publishing needs the library preloaded: the queue and the publisher
 * process exist only then.
 */
void
she_check_preloaded(void)
{
	if (!she_preloaded || !she_queue_ready())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot publish events: state_hub_events is not in shared_preload_libraries"),
				 errhint("Add state_hub_events to shared_preload_libraries and restart the server.")));
}

/*
 * Refuse contexts in which an event can never be published.
 */
void
she_check_can_publish(void)
{
	she_check_preloaded();
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot publish events during recovery"),
				 errdetail("This server is a hot standby; events are published by the primary.")));
	if (IsParallelWorker())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot publish events in a parallel worker")));
	if (she_delivery == SHE_DELIVERY_DURABLE)
		she_durable_check(nevents);
}

/*
 * Refuse a subject the stream's subjects do not cover: those the transaction
 * will create its stream with, fixed by its first event still buffered (with
 * none, the current stream_subjects).
 */
void
she_check_subject_covered(const char *subject)
{
	const char *subjects = (nevents > 0) ? batch_spec.subjects : she_stream_subjects;

	if (she_subject_covered(subject, subjects))
		return;
	if (strcmp(subjects, she_stream_subjects) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot publish to subject \"%s\": the stream's subjects do not cover it", subject),
				 errdetail("state_hub_events.stream_subjects is \"%s\".", subjects)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("cannot publish to subject \"%s\": the stream's subjects do not cover it", subject),
			 errdetail("The transaction's first event fixed the stream's subjects at \"%s\"; state_hub_events.stream_subjects is now \"%s\".",
					   subjects, she_stream_subjects)));
}

/*
 * Refuse the event just built if the transaction's envelopes would pass
 * max_transaction_bytes with it (its envelope is freed first); the events
 * buffered before stay.
 */
static void
check_transaction_bytes(SheEvent *ev)
{
	int64		limit = (int64) she_max_transaction_kb * 1024;

	if (nbytes + ev->envelope_len <= limit)
		return;
	pfree(ev->envelope);
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("cannot buffer an event of %d bytes: the transaction's events would exceed state_hub_events.max_transaction_bytes",
					ev->envelope_len),
			 errdetail("The transaction has buffered %lld bytes of events; the limit is %lld bytes.",
					   (long long) nbytes, (long long) limit),
			 errhint("Raise state_hub_events.max_transaction_bytes or split the transaction.")));
}

/*
 * Everything refused before an event is built: the context, the subject,
 * the transaction's state and limits.  Fixes the destination with the first
 * event.  Returns the largest envelope the event may have; the subject's
 * UTF-8 form goes to *wire_subject.
 */
static int
prepare_event(const char *subject, const char **wire_subject)
{
	int			max_bytes;
	int			server_max;

	she_check_can_publish();
	*wire_subject = she_check_subject(subject);
	she_check_subject_covered(subject);
	if (timestamps_set)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot publish an event after the transaction's pre-commit phase")));
	if (nevents >= she_max_events_per_xact)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot buffer more than %d events in one transaction", she_max_events_per_xact),
				 errhint("Raise state_hub_events.max_events_per_transaction or split the transaction.")));

	if (BufferContext == NULL)
		BufferContext = AllocSetContextCreate(TopMemoryContext,
											  "state_hub_events buffer",
											  ALLOCSET_DEFAULT_SIZES);

	/*
	 * The destination belongs to the first event still buffered: with none
	 * buffered (a new transaction, or every event rolled back with its
	 * savepoint) the current settings fix it.
	 */
	if (nevents == 0)
	{
		batch_url = MemoryContextStrdup(BufferContext, she_nats_url);
		batch_stream = MemoryContextStrdup(BufferContext, she_stream);
		batch_wait_for_ack = she_wait_for_ack;
		batch_create_stream = she_create_stream;
		batch_publish_timeout_ms = she_publish_timeout_ms;
		batch_connect_timeout_ms = she_connect_timeout_ms;
		batch_durable = (she_delivery == SHE_DELIVERY_DURABLE);
		batch_spec.subjects = MemoryContextStrdup(BufferContext, she_stream_subjects);
		batch_spec.replicas = she_stream_replicas;
		batch_spec.max_age_s = she_stream_max_age_s;
		batch_spec.duplicate_window_s = she_duplicate_window_s;
	}
	else if (strcmp(batch_stream, she_stream) != 0 ||
			 batch_durable != (she_delivery == SHE_DELIVERY_DURABLE))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot change state_hub_events.stream or delivery in a transaction that has buffered events"),
				 errdetail("All events of one transaction go to one destination, fixed by its first event.")));

	max_bytes = she_max_event_bytes;
	server_max = she_queue_max_payload();
	if (server_max > 0)
	{
		/*
		 * The server's limit counts the headers too (well under 1 kB); keep
		 * SHE_HEADER_ROOM for them, half of the limit on servers that allow
		 * less than 8 kB, so the limit never becomes zero or negative.
		 */
		int			room = Min(SHE_HEADER_ROOM, server_max / 2);

		max_bytes = Min(max_bytes, server_max - room);
	}
	if (!batch_durable)
		max_bytes = Min(max_bytes, she_queue_max_event_bytes());
	return max_bytes;
}

/*
 * Append the event just built to the buffer, after the transaction's byte
 * limit; its id is written to id_out (SHE_UUID_LEN + 1 bytes).
 */
static void
append_event(SheEvent *ev, const char *wire_subject, char *id_out)
{
	MemoryContext oldcxt;

	ev->nest_level = GetCurrentTransactionNestLevel();
	check_transaction_bytes(ev);

	oldcxt = MemoryContextSwitchTo(BufferContext);
	if (last_subject == NULL || strcmp(last_subject, wire_subject) != 0)
		last_subject = pstrdup(wire_subject);
	ev->subject = last_subject;

	if (nevents >= maxevents)
	{
		/*
		 * Double, but not past the limit (checked above, so the limit is
		 * more than nevents).  A huge allocation: at the largest
		 * max_events_per_transaction the array may pass MaxAllocSize.
		 */
		int			newmax = (maxevents == 0) ? 16 : maxevents * 2;

		if (newmax > she_max_events_per_xact)
			newmax = she_max_events_per_xact;
		if (events == NULL)
			events = MemoryContextAllocHuge(BufferContext, (Size) newmax * sizeof(SheEvent));
		else
			events = repalloc_huge(events, (Size) newmax * sizeof(SheEvent));
		maxevents = newmax;
	}
	MemoryContextSwitchTo(oldcxt);

	events[nevents++] = *ev;
	nbytes += ev->envelope_len;
	she_stats_add_buffered(1);
	memcpy(id_out, ev->id, SHE_UUID_LEN + 1);
}

/*
 * Validate one event and append it to the buffer; its id is written to
 * id_out (SHE_UUID_LEN + 1 bytes).  Every refusal happens here.
 */
void
she_buffer_event(const char *subject, Jsonb *attributes, char *id_out)
{
	SheEvent	ev;
	const char *wire_subject;
	int			max_bytes = prepare_event(subject, &wire_subject);

	she_build_event(&ev, wire_subject, attributes, max_bytes, BufferContext);
	append_event(&ev, wire_subject, id_out);
}

/*
 * she_buffer_event for attributes given as JSON text: attrs_len bytes in
 * the database's encoding, a JSON object exactly as jsonb would print it
 * (emit()'s rendering of a row, emit_json.c).  The same refusals.
 */
void
she_buffer_event_json(const char *subject, const char *attrs, int attrs_len,
					  char *id_out)
{
	SheEvent	ev;
	const char *wire_subject;
	int			max_bytes = prepare_event(subject, &wire_subject);

	she_build_event_json(&ev, wire_subject, attrs, attrs_len, max_bytes, BufferContext);
	append_event(&ev, wire_subject, id_out);
}

/*
 * Forget everything buffered.  Never fails.
 */
static void
reset_buffer(void)
{
	if (BufferContext != NULL)
		MemoryContextReset(BufferContext);
	events = NULL;
	nevents = 0;
	maxevents = 0;
	nbytes = 0;
	batch_url = NULL;
	batch_stream = NULL;
	batch_durable = false;
	last_subject = NULL;
	timestamps_set = false;
	commit_ready = false;
	she_queue_order_end();		/* abort, or no hand-over: hold nobody back */
}

/*
 * Give every event its transaction's facts (pre-commit or pre-prepare):
 * the full transaction id, its 1-based index and the count of events the
 * transaction commits (savepoint rollbacks already removed theirs).  A
 * transaction that published but wrote nothing gets its xid here, so it
 * also writes a commit record: every message names a transaction that
 * pg_current_xact_id() and the WAL know, and immediate mode's commit key
 * (the commit record's LSN) exists for it.
 */
static void
set_txn_facts(void)
{
	uint64		xid = U64FromFullTransactionId(GetTopFullTransactionId());
	int			i;

	for (i = 0; i < nevents; i++)
	{
		events[i].txn.xid = xid;
		events[i].txn.index = i + 1;
		events[i].txn.count = nevents;
		events[i].txn.key = 0;
		events[i].txn.key_kind = 'L';
	}
}

/*
 * Immediate mode's commit key: the end of the commit record just written
 * (XACT_EVENT_COMMIT: plain C).
 */
static void
set_commit_key(void)
{
	int			i;

	for (i = 0; i < nevents; i++)
	{
		events[i].txn.key = (uint64) XactLastCommitEnd;
		events[i].txn.key_kind = 'L';
	}
}

/*
 * Write the commit timestamp into every envelope (pre-commit: plain C).
 */
static void
set_timestamps(void)
{
	char		ts[SHE_TIMESTAMP_LEN + 1];
	int			i;

	she_format_timestamp(GetCurrentTimestamp(), ts);
	for (i = 0; i < nevents; i++)
		memcpy(events[i].envelope + events[i].ts_offset, ts, SHE_TIMESTAMP_LEN);
	timestamps_set = true;
}

/*
 * Durable mode, just before the outbox insert (pre-commit or pre-prepare):
 * the outbox holds text in the database's encoding, so convert each
 * envelope and subject back from UTF-8 (nothing to do in UTF8 and SQL_ASCII
 * databases); the worker converts them to UTF-8 again when it publishes.
 * May ERROR (the transaction then aborts).  The offsets and the byte count
 * describe the UTF-8 envelopes and are not used again: the buffer is reset
 * at COMMIT, PREPARE or abort.
 */
static void
to_database_encoding(void)
{
	int			enc = GetDatabaseEncoding();
	char	   *prev_subject = NULL;
	char	   *prev_converted = NULL;
	MemoryContext oldcxt;
	int			i;

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return;
	oldcxt = MemoryContextSwitchTo(BufferContext);
	for (i = 0; i < nevents; i++)
	{
		char	   *env = she_from_wire(events[i].envelope, events[i].envelope_len);

		if (env != events[i].envelope)
		{
			pfree(events[i].envelope);
			events[i].envelope = env;
			events[i].envelope_len = (int) strlen(env);
		}
		/* subjects are shared by consecutive events: convert each once */
		if (events[i].subject != prev_subject)
		{
			prev_subject = events[i].subject;
			prev_converted = she_from_wire(prev_subject, strlen(prev_subject));
		}
		events[i].subject = prev_converted;
	}
	MemoryContextSwitchTo(oldcxt);
}

static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (nevents > 0)
			{
				set_timestamps();
				set_txn_facts();
				/* durable: the envelopes commit (or vanish) with the transaction */
				if (batch_durable)
				{
					to_database_encoding();
					she_outbox_write(events, nevents);
				}
				else if (batch_url[0] != '\0')
					she_queue_order_begin(GetTopTransactionIdIfAny());
			}
			break;

		case XACT_EVENT_PRE_PREPARE:
			if (nevents > 0 && batch_durable)
			{
				/* they leave at COMMIT PREPARED, when the rows become visible */
				set_timestamps();
				set_txn_facts();	/* the prepared transaction's xid */
				to_database_encoding();
				she_outbox_write(events, nevents);
			}
			else if (nevents > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has published events"),
						 errdetail_plural("%d event is buffered; in immediate mode it can only leave at COMMIT.",
										  "%d events are buffered; in immediate mode they can only leave at COMMIT.",
										  nevents, nevents)));
			break;

		case XACT_EVENT_COMMIT:
			/* The commit record is written; publish once locks are gone. */
			last_unpublished = 0;
			if (nevents > 0 && batch_durable)
			{
				she_outbox_wake();
				reset_buffer();
			}
			else if (nevents > 0 && batch_url[0] == '\0')
			{
				she_stats_add_dropped(nevents);	/* publishing is off */
				reset_buffer();
			}
			else if (nevents > 0)
			{
				set_commit_key();
				hand_over_batch();
				commit_ready = true;
			}
			else
				reset_buffer();
			break;

		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
			reset_buffer();
			break;

		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			{
				int			i;

				for (i = nevents - 1; i >= 0 && events[i].nest_level >= level; i--)
					events[i].nest_level = level - 1;
			}
			break;

		case SUBXACT_EVENT_ABORT_SUB:
			while (nevents > 0 && events[nevents - 1].nest_level >= level)
			{
				nevents--;
				nbytes -= events[nevents].envelope_len;
				pfree(events[nevents].envelope);
			}

			/*
			 * Nothing left: release the destination too, so that the next
			 * event fixes it afresh.  Levels never decrease along the array
			 * (a subtransaction's events are the tail), so the first event,
			 * which fixed the destination, goes only with the last one.
			 */
			if (nevents == 0 && batch_url != NULL)
				reset_buffer();
			break;

		default:
			break;
	}
}

/*
 * Resource release: the first AFTER_LOCKS call of a committed top-level
 * transaction publishes.  Row locks are released by then.
 */
static void
release_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel || !commit_ready)
		return;
	commit_ready = false;
	report_batch();
	reset_buffer();
}


/*
 * XACT_EVENT_COMMIT (row locks still held): hand the batch to the
 * publisher's queue, so transactions that touched the same rows enter it
 * in commit order.  No ERROR; waits only for queue space, bounded.
 */
static void
hand_over_batch(void)
{
	/*
	 * Test only: widen the window between becoming visible and hand-over.
	 * A cancel or terminate ends the delay (and is left pending).
	 */
	if (she_test_commit_delay_ms > 0)
	{
		uint64_t	end = she_now_usec() + (uint64_t) she_test_commit_delay_ms * 1000;
		uint64_t	now;

		while (!QueryCancelPending && !ProcDiePending && (now = she_now_usec()) < end)
		{
			long		left = (long) ((end - now + 999) / 1000);

			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 left, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	handoff_start = she_now_usec();
	handoff_deadline = handoff_start + (uint64) batch_publish_timeout_ms * 1000;
	(void) she_queue_put(events, nevents, batch_stream, batch_create_stream, &batch_spec,
						 batch_wait_for_ack, batch_publish_timeout_ms, &handoff);
}

/*
 * A cancel that ended a commit-time wait was consumed there, as for
 * synchronous replication: a COMMIT that has committed reports no error.
 * Inside a procedure that COMMITs (CALL backfill(...), one COMMIT per
 * batch) the cancel was meant for the CALL: set it pending again, so that
 * the procedure's next interrupt check ends it after this commit.
 */
static void
rearm_cancel(void)
{
	if (she_queue_wait_cancelled() && SPI_inside_nonatomic_context())
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
}

/*
 * RESOURCE_RELEASE_AFTER_LOCKS (locks gone): with wait_for_ack, wait for
 * the publisher's outcome of each event; then WARN about what was lost or
 * unconfirmed.  Plain C and WARNINGs only: the transaction committed.
 */
static void
report_batch(void)
{
	char		reason[sizeof(handoff.reason)];

	if (batch_wait_for_ack)
		she_queue_wait(handoff_deadline, &handoff);
	she_stats_record_commit_time(she_now_usec() - handoff_start);

	/*
	 * After the commit record: the WARNING is converted to the client's
	 * encoding, where a character it lacks would make an ERROR (a PANIC
	 * here).  ASCII converts everywhere (ascii_text.c).
	 */
	she_ascii_text(reason, sizeof(reason), handoff.reason);
	strlcpy(handoff.reason, reason, sizeof(handoff.reason));
	last_unpublished = handoff.lost + handoff.unconfirmed;

	if (handoff.lost > 0)
	{
		she_stats_set_last_error(handoff.reason);
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("state_hub_events: %d of %d events of the committed transaction were not published",
						handoff.lost, handoff.nevents),
				 errdetail("%s", handoff.reason),
				 errhint("The transaction is committed; these events are lost. See state_hub_events.stats().")));
	}
	if (handoff.unconfirmed > 0)
	{
		she_stats_set_last_error(handoff.reason);
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("state_hub_events: %d of %d events were sent but not confirmed within state_hub_events.publish_timeout",
						handoff.unconfirmed, handoff.nevents),
				 errdetail("%s", handoff.reason),
				 errhint("They may have been stored; consumers deduplicate by the envelope's id.")));
	}
	rearm_cancel();
	if (she_queue_wait_terminated())
		whereToSendOutput = DestNone;	/* see she_queue_wait_terminated */
}

/*
 * publish(subject text, attributes jsonb DEFAULT '{}') RETURNS uuid
 *
 * Buffers one event in the current transaction and returns its id.
 */
Datum
she_publish(PG_FUNCTION_ARGS)
{
	char		id[SHE_UUID_LEN + 1];
	char	   *subject;
	Jsonb	   *attributes = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cannot publish an event with a NULL subject")));
	subject = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		attributes = PG_GETARG_JSONB_P(1);

	she_buffer_event(subject, attributes, id);

	PG_RETURN_DATUM(DirectFunctionCall1(uuid_in, CStringGetDatum(id)));
}

/*
 * pending() RETURNS TABLE (id uuid, subject text, attributes jsonb)
 *
 * The events the current transaction would publish at COMMIT, in order.
 */
Datum
she_pending(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	int			i;

	InitMaterializedSRF(fcinfo, 0);

	/* each row's values are scratch: the tuplestore copies them */
	rowcxt = AllocSetContextCreate(CurrentMemoryContext,
								   "state_hub_events pending row",
								   ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < nevents; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		char	   *attrs;

		oldcxt = MemoryContextSwitchTo(rowcxt);
		attrs = pnstrdup(events[i].envelope + events[i].attrs_offset,
						 events[i].attrs_len);
		/* the buffer holds UTF-8: back to the database's encoding */
		attrs = she_from_wire(attrs, events[i].attrs_len);
		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(events[i].id));
		values[1] = CStringGetTextDatum(she_from_wire(events[i].subject,
													  strlen(events[i].subject)));
		values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(attrs));
		MemoryContextSwitchTo(oldcxt);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextReset(rowcxt);
	}
	MemoryContextDelete(rowcxt);
	return (Datum) 0;
}

/*
 * _last_commit_unpublished() RETURNS integer
 *
 * How many events of this session's last committed transaction the
 * publisher reported lost or unconfirmed (the COMMIT's WARNINGs): 0 when
 * every one was acknowledged, in durable mode (the outbox holds them) and
 * with publishing off.  backfill() stops on a batch that was not published.
 */
Datum
she_last_commit_unpublished(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(last_unpublished);
}
