/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The shared-memory hand-off of immediate mode: committing backends
 *	  append their batches to a ring; the publisher process (publisher.c)
 *	  takes them, publishes, and reports each event's outcome to the
 *	  backend that waits for it.
 *
 * Layout.  One byte ring of state_hub_events.queue_size bytes holding
 * records (a QueueRecord header, then stream, subject and envelope), and
 * one WaitSlot per backend (indexed by pgprocno).  head and tail are byte
 * positions that only grow; free space is size - (head - tail).
 *
 * Who touches what, under which lock:
 *	- head, stream_owner: writers (backends at XACT_EVENT_COMMIT) under
 *	  the queue LWLock; a writer copies its records, then a write barrier,
 *	  then publishes head.  The publisher reads head without the lock
 *	  (read barrier after), so [tail, head) is complete records.
 *	- tail: written only by the publisher, after it copied the records
 *	  out; writers read it.  space_cv is broadcast after each advance.
 *	- a WaitSlot: its backend and the publisher, under the slot's
 *	  spinlock.  The backend starts a batch (new ticket), the publisher
 *	  counts what it takes and what it reports, the backend may abandon it
 *	  at its deadline.  Every event is counted in stats() exactly once: by
 *	  the publisher when it reports an outcome to a backend still waiting
 *	  (or to none: wait_for_ack = off), else by the backend when it
 *	  abandons (not taken yet: lost, and the publisher will skip it; taken
 *	  but not reported: unconfirmed, and the publisher's later outcome is
 *	  not counted again).
 *	- publisher_latch, publisher_pid, connected, conn_error: the mutex.
 *	  max_payload: an atomic, read by every backend at publish().
 *
 * Order.  Records enter the ring in the order their writers got the
 * LWLock at XACT_EVENT_COMMIT, when row locks are still held, so
 * transactions that touched the same rows enter in commit order.  A batch
 * bigger than the free space is streamed in chunks at COMMIT, the writer
 * owning the ring's tail (stream_owner) so no other batch interleaves;
 * each wait for space is bounded by the batch's publish_timeout, after
 * which the rest of the batch is lost (counted, WARNING).  Other writers
 * wait for the owner, bounded by their own publish_timeout.
 *
 * Nothing here ERRORs or allocates on the backend side: it runs after the
 * commit record.
 *
 * IDENTIFICATION
 *	  src/queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "queue.h"

int			she_queue_size_kb = 8192;

typedef struct QueueRecord
{
	uint32		len;			/* the whole record */
	int32		waiter;			/* pgprocno of the waiting backend, or -1 */
	uint64		ticket;			/* the waiter's batch */
	uint64		deadline;		/* she_now_usec() time the waiter gives up */
	uint16		stream_len;
	uint16		subject_len;
	uint32		envelope_len;
	bool		create_stream;
	char		id[SHE_UUID_LEN + 1];
} QueueRecord;

typedef struct WaitSlot
{
	slock_t		mutex;
	uint64		ticket;			/* the batch waited for, 0: none */
	bool		abandoned;		/* the backend stopped waiting */
	int			nevents;		/* queued for this batch */
	int			taken;			/* by the publisher */
	int			reported;
	int			stored;
	int			duplicates;
	int			lost;
	int			unconfirmed;
	char		reason[256];
} WaitSlot;

typedef struct QueueShared
{
	LWLock	   *lock;			/* writers: head, stream_owner */
	ConditionVariable space_cv; /* the publisher freed space */
	int			stream_owner;	/* pgprocno streaming a big batch, or -1 */
	pg_atomic_uint64 head;
	pg_atomic_uint64 tail;
	uint64		size;
	pg_atomic_uint32 max_payload;
	slock_t		mutex;			/* the four fields below */
	Latch	   *publisher_latch;
	int			publisher_pid;
	bool		connected;
	char		conn_error[256];
	int			nslots;
	WaitSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} QueueShared;

static QueueShared *q = NULL;
static char *ring = NULL;
static uint64 next_ticket = 0;

static Size
slots_size(void)
{
	return MAXALIGN(offsetof(QueueShared, slots) + MaxBackends * sizeof(WaitSlot));
}

/* shmem_request_hook */
void
she_queue_request_shmem(void)
{
	RequestAddinShmemSpace(add_size(slots_size(), (Size) she_queue_size_kb * 1024));
	RequestNamedLWLockTranche("state_hub_events queue", 1);
}

/* shmem_startup_hook */
void
she_queue_startup_shmem(void)
{
	bool		found;
	int			i;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	q = ShmemInitStruct("state_hub_events queue",
						add_size(slots_size(), (Size) she_queue_size_kb * 1024), &found);
	if (!found)
	{
		memset(q, 0, slots_size());
		q->lock = &(GetNamedLWLockTranche("state_hub_events queue"))->lock;
		ConditionVariableInit(&q->space_cv);
		q->stream_owner = -1;
		pg_atomic_init_u64(&q->head, 0);
		pg_atomic_init_u64(&q->tail, 0);
		q->size = (uint64) she_queue_size_kb * 1024;
		pg_atomic_init_u32(&q->max_payload, 0);
		SpinLockInit(&q->mutex);
		q->nslots = MaxBackends;
		for (i = 0; i < q->nslots; i++)
			SpinLockInit(&q->slots[i].mutex);
	}
	ring = (char *) q + slots_size();
	LWLockRelease(AddinShmemInitLock);
}

bool
she_queue_ready(void)
{
	return q != NULL;
}

/* The largest envelope a record can carry. */
int
she_queue_max_event_bytes(void)
{
	return (int) Min((uint64) she_queue_size_kb * 1024 - sizeof(QueueRecord) - 1024,
					 (uint64) PG_INT32_MAX);
}

static void
ring_write(uint64 pos, const void *src, uint64 len)
{
	uint64		off = pos % q->size;
	uint64		first = Min(len, q->size - off);

	memcpy(ring + off, src, first);
	if (len > first)
		memcpy(ring, (const char *) src + first, len - first);
}

static void
ring_read(uint64 pos, void *dst, uint64 len)
{
	uint64		off = pos % q->size;
	uint64		first = Min(len, q->size - off);

	memcpy(dst, ring + off, first);
	if (len > first)
		memcpy((char *) dst + first, ring, len - first);
}

void
she_queue_wake_publisher(void)
{
	Latch	   *latch;

	SpinLockAcquire(&q->mutex);
	latch = q->publisher_latch;
	SpinLockRelease(&q->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* Append one record at *head (the caller holds the lock and checked space). */
static void
append_record(uint64 *head, const SheEvent *ev, const char *stream, bool create,
			  int waiter, uint64 ticket, uint64 deadline)
{
	QueueRecord r;

	memset(&r, 0, sizeof(r));
	r.stream_len = strlen(stream);
	r.subject_len = strlen(ev->subject);
	r.envelope_len = ev->envelope_len;
	r.len = sizeof(r) + r.stream_len + r.subject_len + r.envelope_len;
	r.waiter = waiter;
	r.ticket = ticket;
	r.deadline = deadline;
	r.create_stream = create;
	memcpy(r.id, ev->id, sizeof(r.id));
	ring_write(*head, &r, sizeof(r));
	ring_write(*head + sizeof(r), stream, r.stream_len);
	ring_write(*head + sizeof(r) + r.stream_len, ev->subject, r.subject_len);
	ring_write(*head + sizeof(r) + r.stream_len + r.subject_len, ev->envelope, r.envelope_len);
	*head += r.len;
}

static uint64
record_len(const SheEvent *ev, const char *stream)
{
	return sizeof(QueueRecord) + strlen(stream) + strlen(ev->subject) + ev->envelope_len;
}

/*
 * Copy as many of events[*i..n-1] as fit.  Returns false when another
 * writer owns the ring's tail (nothing copied).  Under no lock on entry.
 */
static bool
append_some(const SheEvent *events, int n, int *i, const char *stream, bool create,
			int waiter, uint64 ticket, uint64 deadline)
{
	int			me = MyProc->pgprocno;
	uint64		head;
	uint64		free_bytes;

	LWLockAcquire(q->lock, LW_EXCLUSIVE);
	if (q->stream_owner >= 0 && q->stream_owner != me)
	{
		LWLockRelease(q->lock);
		return false;
	}
	head = pg_atomic_read_u64(&q->head);
	free_bytes = q->size - (head - pg_atomic_read_u64(&q->tail));
	while (*i < n)
	{
		uint64		len = record_len(&events[*i], stream);

		if (len > free_bytes)
			break;
		append_record(&head, &events[*i], stream, create, waiter, ticket, deadline);
		free_bytes -= len;
		(*i)++;
	}
	pg_write_barrier();
	pg_atomic_write_u64(&q->head, head);
	/* the rest follows in chunks: no other batch may come between */
	q->stream_owner = (*i < n) ? me : -1;
	LWLockRelease(q->lock);
	return true;
}

/* Start a batch in this backend's slot; returns its ticket. */
static uint64
start_slot(int n)
{
	WaitSlot   *slot = &q->slots[MyProc->pgprocno];
	uint64		ticket = ++next_ticket;

	SpinLockAcquire(&slot->mutex);
	slot->ticket = ticket;
	slot->abandoned = false;
	slot->nevents = n;
	slot->taken = slot->reported = 0;
	slot->stored = slot->duplicates = slot->lost = slot->unconfirmed = 0;
	slot->reason[0] = '\0';
	SpinLockRelease(&slot->mutex);
	return ticket;
}

/*
 * Hand a committed batch to the publisher (at XACT_EVENT_COMMIT: no ERROR,
 * no allocation, every wait bounded by timeout_ms).  With wait, the slot
 * is set up for she_queue_wait.  Returns how many events were queued; the
 * others are counted lost in res (and in stats()).
 */
int
she_queue_put(const SheEvent *events, int n, const char *stream, bool create_stream,
			  bool wait, int timeout_ms, SheHandOff *res)
{
	uint64		deadline = she_now_usec() + (uint64) timeout_ms * 1000;
	bool		use_slot = wait && MyProc->pgprocno < q->nslots;
	uint64		ticket = use_slot ? start_slot(n) : 0;
	int			waiter = use_slot ? MyProc->pgprocno : -1;
	int			i = 0;

	memset(res, 0, sizeof(*res));
	res->nevents = n;
	for (;;)
	{
		int			before = i;
		bool		owner_ok = append_some(events, n, &i, stream, create_stream,
										   waiter, ticket, deadline);

		if (i > before)
			she_queue_wake_publisher();
		if (i == n || she_ms_left(deadline) <= 0)
			break;
		/* first call prepares and returns at once; then we re-check */
		(void) ConditionVariableTimedSleep(&q->space_cv, Max(she_ms_left(deadline), 1),
										   PG_WAIT_EXTENSION);
		(void) owner_ok;
	}
	ConditionVariableCancelSleep();
	if (i < n)
	{
		LWLockAcquire(q->lock, LW_EXCLUSIVE);
		if (q->stream_owner == MyProc->pgprocno)
			q->stream_owner = -1;
		LWLockRelease(q->lock);
		ConditionVariableBroadcast(&q->space_cv);	/* writers waiting for us */
		res->lost = n - i;
		snprintf(res->reason, sizeof(res->reason),
				 "the publisher's queue (state_hub_events.queue_size) had no room for %d events within %d ms",
				 n - i, timeout_ms);
		she_stats_add_failed(n - i);
		if (use_slot)
		{
			WaitSlot   *slot = &q->slots[waiter];

			SpinLockAcquire(&slot->mutex);
			slot->nevents = i;
			SpinLockRelease(&slot->mutex);
		}
	}
	return i;
}

/* Add the slot's outcomes to res, abandoning the batch if not complete. */
static bool
collect(WaitSlot *slot, bool give_up, SheHandOff *res)
{
	bool		done;

	SpinLockAcquire(&slot->mutex);
	done = slot->reported >= slot->nevents;
	if (done || give_up)
	{
		int			not_taken = slot->nevents - slot->taken;
		int			unreported = slot->taken - slot->reported;

		slot->abandoned = !done;
		res->stored += slot->stored;
		res->duplicates += slot->duplicates;
		res->lost += slot->lost + (done ? 0 : not_taken);
		res->unconfirmed += slot->unconfirmed + (done ? 0 : unreported);
		if (res->reason[0] == '\0')
			strlcpy(res->reason, slot->reason, sizeof(res->reason));
		if (!done && not_taken > 0)
			she_stats_add_failed(not_taken);
		if (!done && unreported > 0)
			she_stats_add_unconfirmed(unreported);
		if (!done && res->reason[0] == '\0')
			snprintf(res->reason, sizeof(res->reason),
					 "the publisher process did not report within state_hub_events.publish_timeout (%d not taken, %d without outcome)",
					 not_taken, unreported);
	}
	SpinLockRelease(&slot->mutex);
	return done || give_up;
}

/*
 * Wait (at RESOURCE_RELEASE_AFTER_LOCKS: no ERROR, interrupts held) until
 * the publisher reported every queued event of this backend's batch, or
 * deadline plus a short grace for the publisher's own deadline passes.
 */
void
she_queue_wait(uint64 deadline, SheHandOff *res)
{
	WaitSlot   *slot;
	uint64		limit = deadline + (uint64) Min(she_connect_timeout_ms, 1000) * 1000;
	bool		reset = false;

	if (MyProc->pgprocno >= q->nslots)
		return;
	slot = &q->slots[MyProc->pgprocno];
	while (!collect(slot, she_ms_left(limit) <= 0, res))
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) Max(she_ms_left(limit), 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		reset = true;
	}
	if (reset)
		SetLatch(MyLatch);		/* whatever else it announced is re-checked */
}

/* The publisher announces itself (its latch is what backends set). */
void
she_queue_attach_publisher(void)
{
	SpinLockAcquire(&q->mutex);
	q->publisher_latch = MyLatch;
	q->publisher_pid = MyProcPid;
	SpinLockRelease(&q->mutex);
}

/* before_shmem_exit of the publisher. */
void
she_queue_detach_publisher(int code, Datum arg)
{
	SpinLockAcquire(&q->mutex);
	q->publisher_latch = NULL;
	q->publisher_pid = 0;
	q->connected = false;
	strlcpy(q->conn_error, "the publisher process is not running", sizeof(q->conn_error));
	SpinLockRelease(&q->mutex);
}

/* Does the slot still wait for this record's batch?  Counts it taken. */
static bool
claim(const QueueRecord *r)
{
	WaitSlot   *slot;
	bool		ok;

	if (r->waiter < 0)
		return true;
	slot = &q->slots[r->waiter];
	SpinLockAcquire(&slot->mutex);
	ok = (slot->ticket == r->ticket && !slot->abandoned);
	if (ok)
		slot->taken++;
	SpinLockRelease(&slot->mutex);
	return ok;
}

/* Copy n bytes at pos into a NUL-terminated string in cxt. */
static char *
read_string(uint64 pos, uint32 n, MemoryContext cxt)
{
	char	   *s = MemoryContextAlloc(cxt, n + 1);

	ring_read(pos, s, n);
	s[n] = '\0';
	return s;
}

/*
 * The publisher takes up to max events (about max_bytes) from the queue
 * into evs/meta (copies in cxt), skipping those whose backend gave up, and
 * frees their space.
 */
int
she_queue_take(SheEvent *evs, SheTaken *meta, int max, int max_bytes, MemoryContext cxt)
{
	uint64		pos = pg_atomic_read_u64(&q->tail);
	uint64		head = pg_atomic_read_u64(&q->head);
	uint64		bytes = 0;
	int			n = 0;

	pg_read_barrier();
	while (pos < head && n < max && bytes < (uint64) max_bytes)
	{
		QueueRecord r;
		uint64		p;

		ring_read(pos, &r, sizeof(r));
		p = pos + sizeof(r);
		pos += r.len;
		bytes += r.len;
		if (!claim(&r))
			continue;
		memset(&evs[n], 0, sizeof(SheEvent));
		memcpy(evs[n].id, r.id, sizeof(r.id));
		meta[n].stream = read_string(p, r.stream_len, cxt);
		evs[n].subject = read_string(p + r.stream_len, r.subject_len, cxt);
		evs[n].envelope = read_string(p + r.stream_len + r.subject_len, r.envelope_len, cxt);
		evs[n].envelope_len = r.envelope_len;
		meta[n].create_stream = r.create_stream;
		meta[n].waiter = r.waiter;
		meta[n].ticket = r.ticket;
		meta[n].deadline = r.deadline;
		n++;
	}
	pg_memory_barrier();
	pg_atomic_write_u64(&q->tail, pos);
	ConditionVariableBroadcast(&q->space_cv);
	return n;
}

/*
 * Report one event's outcome to its backend, and count it in stats()
 * unless its backend already did (it gave up on the batch).
 */
void
she_queue_report(const SheTaken *t, const SheMsgOutcome *o, const SheBatchOutcome *sum)
{
	bool		stored = (o->state == SHE_MSG_STORED || o->state == SHE_MSG_DUPLICATE);
	bool		unconfirmed = (o->state == SHE_MSG_UNCONFIRMED);
	bool		count = true;
	bool		wake = false;

	if (t->waiter >= 0)
	{
		WaitSlot   *slot = &q->slots[t->waiter];

		SpinLockAcquire(&slot->mutex);
		count = (slot->ticket == t->ticket && !slot->abandoned);
		if (count)
		{
			slot->reported++;
			if (stored)
				slot->stored++;
			else if (unconfirmed)
				slot->unconfirmed++;
			else
				slot->lost++;
			if (o->state == SHE_MSG_DUPLICATE)
				slot->duplicates++;
			if (!stored && slot->reason[0] == '\0')
				strlcpy(slot->reason, she_outcome_text(sum, o), sizeof(slot->reason));
			wake = (slot->reported >= slot->nevents);
		}
		SpinLockRelease(&slot->mutex);
		if (wake)
			SetLatch(&ProcGlobal->allProcs[t->waiter].procLatch);
	}
	if (!count)
		return;
	if (stored)
		she_stats_atomic_published(1, o->state == SHE_MSG_DUPLICATE ? 1 : 0);
	else if (unconfirmed)
		she_stats_add_unconfirmed(1);
	else
		she_stats_add_failed(1);
}

/* The publisher's (or worker's) connection state, for backends and ping(). */
void
she_queue_set_connection(bool connected, int max_payload, const char *error)
{
	if (q == NULL)
		return;
	if (max_payload > 0)
		pg_atomic_write_u32(&q->max_payload, (uint32) max_payload);
	if (MyLatch == NULL || she_in_worker)
		return;
	SpinLockAcquire(&q->mutex);
	q->connected = connected;
	strlcpy(q->conn_error, error ? error : "", sizeof(q->conn_error));
	SpinLockRelease(&q->mutex);
}

/* The server's max payload as last learnt by a background process, or 0. */
int
she_queue_max_payload(void)
{
	return q ? (int) pg_atomic_read_u32(&q->max_payload) : 0;
}

void
she_queue_publisher_state(int *pid, bool *connected, char *error, size_t errlen)
{
	SpinLockAcquire(&q->mutex);
	*pid = q->publisher_pid;
	*connected = q->connected;
	strlcpy(error, q->conn_error, errlen);
	SpinLockRelease(&q->mutex);
}
