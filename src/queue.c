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
 *	- head, nwaiting, waitq (the admission FIFO): writers (backends at
 *	  XACT_EVENT_COMMIT) under the queue LWLock; a writer copies its records, then a write barrier,
 *	  then publishes head.  The publisher reads head without the lock
 *	  (read barrier after), so [tail, head) is complete records.
 *	- tail: written only by the publisher, after it copied the records
 *	  out; writers read it.  space_cv is broadcast after each advance.
 *	- a WaitSlot: its backend and the publisher, under the slot's
 *	  spinlock.  The backend starts a batch (a new ticket from a shared
 *	  counter, so a later backend on the same PGPROC never matches an
 *	  earlier one's abandoned records), the publisher
 *	  counts what it takes and what it reports, the backend may abandon it
 *	  at its deadline.  Every event is counted in stats() exactly once: by
 *	  the publisher when it reports an outcome to a backend still waiting
 *	  (or to none: wait_for_ack = off), else by the backend when it
 *	  abandons (not taken yet: lost, and the publisher will skip it; taken
 *	  but not reported: unconfirmed, and the publisher's later outcome is
 *	  not counted again).
 *	- publisher_idle (an atomic): the publisher sets it just before it
 *	  sleeps (then looks at head once more); the first writer that sees
 *	  it clears it and sets the publisher's latch.  A publisher that is
 *	  busy is not woken per commit: it takes again before it sleeps.
 *	- order_ends, gather_until (atomics): every ended order ticket counts
 *	  in order_ends; the publisher gathering a take that sessions wait for
 *	  sets gather_until, and the writer whose count reaches it wakes it
 *	  (see she_queue_gather_begin).
 *	- closed, seg_last, seg_min (written): under the queue LWLock;
 *	  seg_min is read by the publisher without it (see Scan), lapses are
 *	  atomics.
 *	- publisher_latch, publisher_pid, publisher_started, connected,
 *	  conn_error: the mutex.
 *	  max_payload: an atomic, read by every backend at publish().
 *
 * Order.  PostgreSQL makes a transaction visible (ProcArrayEndTransaction)
 * before XACT_EVENT_COMMIT, so a transaction T2 that sees T1's rows in
 * that window can append its batch before T1 does.  Ring order is
 * therefore not commit order; tickets are.  At XACT_EVENT_PRE_COMMIT
 * (still in the proc array) a backend draws its batch's ticket from the
 * shared counter and announces (ticket, xid) in its slot's order field;
 * T2 saw T1 only after T1 left the proc array, so T2's ticket is larger.
 * Every record carries its batch's ticket (QueueRecord.ticket, also the
 * wait slot's batch id).  The slot's ticket is cleared once the batch is
 * appended, before any wait for room (best effort for batches bigger
 * than the free space: the publisher never waits for a writer that waits
 * for it), at abort, and when the queue refuses the batch.
 *
 * The publisher (she_queue_take, order_cut) reads the counter (c), then
 * the slots, then head.  m is the smallest ticket of a slot whose
 * transaction already left the proc array (PGPROC.xid no longer its xid)
 * and has not handed over: only such a transaction can have been seen by
 * a batch already in the ring.  A slot still in the proc array (waiting
 * for synchronous replication, say) holds nobody back.  Every record
 * below min(c, m) depends only on batches already in [tail, head).  The
 * take stops before the first record at or above min(c, m), and where no
 * later record in the ring has a smaller ticket than one taken; what it
 * took is sorted by ticket (stable: a batch stays in order).  When
 * nothing can be taken because of m, it waits on its latch (the hand-over
 * or the abort sets it) for at most ORDER_WAIT_MS per ticket, then clears
 * that ticket and goes on.  Where the order may lapse (a ticket held back
 * that long, a batch that waited for room, an inversion wider than one
 * take) it is counted in lapses and in stats() (order_lapses_held, _room,
 * _wide), and the publisher LOGs the counts at most once per LAPSE_LOG_MS.
 * Cost: one atomic add per commit (the ticket is also the wait slot's
 * batch id) and one store to clear it; a scan of the slots per take.
 *
 * Rewind.  A writer that finds the ring empty at least QUEUE_REWIND_BYTES
 * into a lap pads the rest of the lap with one record (QUEUE_PAD_WAITER)
 * and writes at the lap's start; the publisher skips the padding.  In a
 * steady flow the ring so stays within its first pages, which every
 * process has touched already: each page a process touches first costs
 * it a page fault (and its exit one more page to unmap).
 *
 * Scan.  To find the cut, the publisher reads record headers only up to
 * the take's size limits and on to the end of that segment of the ring
 * (QUEUE_SEGMENTS segments); for the records after, it needs only their
 * smallest ticket, which writers keep per segment (seg_min, under the
 * lock, before head is published).  So a take reads about what it
 * returns plus one segment, whatever the backlog behind it.
 *
 * Admission.  Records enter the ring in the order their writers got the
 * LWLock at XACT_EVENT_COMMIT.  Writers
 * that find no room line up in waitq and enter first come first served (a
 * newcomer joins the line even if its batch would fit; one that gives up
 * leaves and passes its turn).  A batch bigger than the free space is
 * streamed in chunks at COMMIT by the head of the line, so no other batch
 * interleaves; each writer's waits are bounded by its own publish_timeout
 * from its commit, after which the rest of its batch is lost (counted,
 * WARNING).
 *
 * Without a publisher (not registered, or exited after it ran) batches are
 * refused at once.  A publisher draining the queue to exit closes it
 * (closed, under the lock): a writer that passed that check appends no
 * more and counts the rest of its batch lost, so nothing lands behind the
 * drain's last take.  Postmaster death ends every wait without exiting: the
 * transaction committed; the backend exits after the commit.
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
#include "tcop/tcopprot.h"

#include "compat.h"
#include "queue.h"

int			she_queue_size_kb = 8192;

/*
 * A record's waiter when it is only padding to the end of the ring's lap
 * (see Rewind): it holds no event, and the publisher skips it.
 */
#define QUEUE_PAD_WAITER	(-2)

/*
 * Rewind: a writer that finds the ring empty at least this far into a lap
 * pads the rest of the lap and writes at its start, so that the pages in
 * use stay few (each process faults on every shared page it first
 * touches; 32 sessions writing all over an 8 MB ring fault ~once per
 * commit).  At most a quarter of the ring.
 */
#define QUEUE_REWIND_BYTES	(64 * 1024)

typedef struct QueueRecord
{
	uint32		len;			/* the whole record */
	int32		waiter;			/* pgprocno of the waiting backend, -1
								 * (none) or QUEUE_PAD_WAITER */
	uint64		ticket;			/* the batch: its order ticket (see Order) */
	uint64		deadline;		/* she_now_usec() time the waiter gives up */
	uint16		stream_len;
	uint16		subject_len;
	uint32		envelope_len;
	bool		create_stream;
	char		id[SHE_UUID_LEN + 1];
	SheTxn		txn;			/* the event's transaction, for its headers */
	/* the session's stream creation settings; stream_subjects follows stream */
	uint16		subjects_len;
	int32		stream_replicas;
	int32		stream_max_age_s;
	int32		duplicate_window_s;
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
	/* commit order: set by the backend at PRE_COMMIT, read by the publisher */
	pg_atomic_uint64 order;		/* ticket not yet handed over, 0: none */
	TransactionId order_xid;	/* its transaction (in the proc array or not) */
} WaitSlot;

/*
 * The ring in segments for the publisher's scan (see Scan): the smallest
 * ticket of the records that start in each segment of the current lap.
 */
#define QUEUE_SEGMENTS		1024

/*
 * Why the commit order may lapse (counted in QueueShared.lapses for the
 * LOG, and in stats(): see count_lapse).
 */
typedef enum OrderLapse
{
	LAPSE_HELD = SHE_LAPSE_HELD,	/* a ticket held back more than ORDER_WAIT_MS */
	LAPSE_ROOM = SHE_LAPSE_ROOM,	/* a batch waited for room in the ring */
	LAPSE_WIDE = SHE_LAPSE_WIDE,	/* an inversion wider than one take */
	NUM_LAPSES = SHE_ORDER_LAPSE_KINDS
} OrderLapse;

typedef struct QueueShared
{
	LWLock	   *lock;			/* writers: head, nwaiting, waitq */
	ConditionVariable space_cv; /* space freed, or the admission turn moved */
	int			nwaiting;		/* writers in waitq */
	pg_atomic_uint64 head;
	pg_atomic_uint64 tail;
	pg_atomic_uint64 next_ticket;	/* batch tickets, unique cluster-wide */
	uint64		size;
	pg_atomic_uint32 max_payload;
	pg_atomic_uint32 publisher_idle;	/* 1: it may sleep; the next writer
										 * sets its latch (see wake_if_idle) */
	pg_atomic_uint32 publisher_lingering;	/* 1: it holds a take nobody
											 * waits for; a writer whose
											 * session waits wakes it */
	pg_atomic_uint64 order_ends;	/* order tickets ended so far (see
									 * she_queue_gather_begin) */
	pg_atomic_uint64 gather_until;	/* 0, or the order_ends count at which
									 * the gathering publisher is woken */
	bool		closed;			/* under lock: the publisher drains to exit */
	uint64		seg_bytes;		/* the ring in QUEUE_SEGMENTS parts */
	uint64		seg_last;		/* under lock: segment of the last record */
	pg_atomic_uint64 seg_min[QUEUE_SEGMENTS];	/* see Scan */
	pg_atomic_uint64 lapses[NUM_LAPSES];	/* see Order: counted, LOGged */
	slock_t		mutex;			/* the six fields below */
	Latch	   *publisher_latch;
	int			publisher_pid;
	bool		connected;
	bool		connecting;		/* inside a connection attempt */
	bool		publisher_started;	/* it attached since shmem init */
	char		conn_error[256];
	int			nslots;
	WaitSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} QueueShared;

static QueueShared *q = NULL;
static int *waitq = NULL;		/* MaxBackends pgprocnos, FIFO, under lock */
static char *ring = NULL;
static bool in_waitq = false;	/* this backend is in waitq */
static bool wait_cancelled = false; /* this commit's waits were cancelled */
static bool wait_terminated = false;	/* ... or ended by a termination */
static uint64 my_order = 0;		/* this backend's ticket from PRE_COMMIT */

/*
 * How long the publisher holds back later tickets for a transaction that
 * left the proc array without handing its batch over (see Order).
 */
#define ORDER_WAIT_MS		200

/* At most one LOG line about lapses of the commit order per this. */
#define LAPSE_LOG_MS		10000

/* the publisher's memory of the ticket it waits for */
static uint64 order_waited = 0;
static uint64 order_wait_until = 0;

/* Set in the postmaster by _PG_init, inherited by every backend. */
bool		she_publisher_registered = false;

/*
 * The commit order of a batch may have lapsed: counted for the publisher's
 * LOG (report_lapses) and in stats().  Atomics only: safe after commit.
 */
static void
count_lapse(OrderLapse kind)
{
	pg_atomic_fetch_add_u64(&q->lapses[kind], 1);
	she_stats_add_order_lapse((int) kind);
}

static Size
header_size(void)
{
	return MAXALIGN(offsetof(QueueShared, slots) + MaxBackends * sizeof(WaitSlot));
}

/* The header, the wait slots and the admission FIFO (the ring follows). */
static Size
slots_size(void)
{
	return header_size() + MAXALIGN(MaxBackends * sizeof(int));
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
		q->nwaiting = 0;
		pg_atomic_init_u64(&q->head, 0);
		pg_atomic_init_u64(&q->tail, 0);
		pg_atomic_init_u64(&q->next_ticket, 1);
		q->size = (uint64) she_queue_size_kb * 1024;
		pg_atomic_init_u32(&q->max_payload, 0);
		pg_atomic_init_u32(&q->publisher_idle, 1);
		pg_atomic_init_u32(&q->publisher_lingering, 0);
		pg_atomic_init_u64(&q->order_ends, 0);
		pg_atomic_init_u64(&q->gather_until, 0);
		q->closed = false;
		q->seg_bytes = Max(q->size / QUEUE_SEGMENTS, 1);
		q->seg_last = 0;
		for (i = 0; i < QUEUE_SEGMENTS; i++)
			pg_atomic_init_u64(&q->seg_min[i], PG_UINT64_MAX);
		for (i = 0; i < NUM_LAPSES; i++)
			pg_atomic_init_u64(&q->lapses[i], 0);
		SpinLockInit(&q->mutex);
		q->nslots = MaxBackends;
		for (i = 0; i < q->nslots; i++)
		{
			SpinLockInit(&q->slots[i].mutex);
			pg_atomic_init_u64(&q->slots[i].order, 0);
		}
	}
	waitq = (int *) ((char *) q + header_size());
	ring = (char *) q + slots_size();
	LWLockRelease(AddinShmemInitLock);
}

bool
she_queue_ready(void)
{
	return q != NULL;
}

/*
 * The largest envelope a record can carry, with room for the longest stream,
 * subject and stream_subjects: the same whatever stream_subjects a session
 * has now (a transaction's events carry its first event's).  queue_size is
 * at least 256kB, far more than that room; never negative all the same.
 */
int
she_queue_max_event_bytes(void)
{
	uint64		room = sizeof(QueueRecord) + 1024 + SHE_MAX_STREAM_SUBJECTS_LEN;
	uint64		size = (uint64) she_queue_size_kb * 1024;

	if (size <= room)
		return 0;
	return (int) Min(size - room, (uint64) PG_INT32_MAX);
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

/*
 * A writer appended records: wake the publisher only if it announced that
 * it may sleep (she_queue_publisher_idle), and only the first writer to see
 * that.  A busy publisher takes again before it sleeps, so commits that
 * arrive while it publishes cost it no wake-up.  The barrier pairs with
 * the one in she_queue_publisher_idle: either this writer sees the flag or
 * the publisher sees the new head.
 */
static void
wake_if_idle(void)
{
	pg_memory_barrier();
	if (pg_atomic_read_u32(&q->publisher_idle) == 0)
		return;
	if (pg_atomic_exchange_u32(&q->publisher_idle, 0) == 1)
		she_queue_wake_publisher();
}

/*
 * Set the publisher's flag (idle or lingering), then look at the queue once
 * more: the barrier pairs with a writer's, which appends before it reads
 * the flag, so either the writer sees the flag or we see its records.
 * Returns false, with the flag cleared, when records arrived meanwhile.
 */
static bool
announce_if_empty(pg_atomic_uint32 *flag)
{
	pg_atomic_write_u32(flag, 1);
	pg_memory_barrier();
	if (pg_atomic_read_u64(&q->head) == pg_atomic_read_u64(&q->tail))
		return true;
	pg_atomic_write_u32(flag, 0);
	return false;
}

/*
 * The publisher is about to sleep: announce it, then look once more.
 * Returns false (and stays busy) when records arrived meanwhile.
 */
bool
she_queue_publisher_idle(void)
{
	return announce_if_empty(&q->publisher_idle);
}

/*
 * The publisher holds a take that nobody waits for (linger): a writer whose
 * session waits for its outcomes wakes it (wake_if_lingering), others do
 * not.  Returns false, and does not announce it, when records arrived
 * meanwhile (take them first).  The barrier pairs with the writer's, as in
 * she_queue_publisher_idle.
 */
bool
she_queue_linger_begin(void)
{
	return announce_if_empty(&q->publisher_lingering);
}

/* The linger is over. */
void
she_queue_linger_end(void)
{
	pg_atomic_write_u32(&q->publisher_lingering, 0);
}

/* A writer whose session waits appended records: end a linger at once. */
static void
wake_if_lingering(void)
{
	pg_memory_barrier();
	if (pg_atomic_read_u32(&q->publisher_lingering) == 0)
		return;
	if (pg_atomic_exchange_u32(&q->publisher_lingering, 0) == 1)
		she_queue_wake_publisher();
}

/*
 * The publisher holds a take that sessions wait for, to gather the commits
 * now between pre-commit and hand-over into the same write.  Rather than
 * being woken by each of their hand-overs (a signal from the session and a
 * wake-up of the publisher per commit), it asks to be woken once, by the
 * hand-over that ends the last of the tickets it counts (see
 * end_order_ticket): order_ends is read before the slots are scanned, and
 * every ticket counted ends after that read, so order_ends reaching the
 * read value plus the count means all of them ended (tickets drawn later
 * end earlier at most, which only wakes it sooner).  Returns -1 when no
 * commit is in flight, 0 when they all ended meanwhile (take, no sleep),
 * 1 when the publisher may sleep until woken.  The barrier pairs with the
 * writer's, as in she_queue_publisher_idle.
 */
int
she_queue_gather_begin(void)
{
	uint64		ends = pg_atomic_read_u64(&q->order_ends);
	int			k;

	pg_memory_barrier();
	k = she_queue_commits_in_flight();
	if (k == 0)
		return -1;
	pg_atomic_write_u64(&q->gather_until, ends + k);
	pg_memory_barrier();
	if (pg_atomic_read_u64(&q->order_ends) < ends + k)
		return 1;
	pg_atomic_write_u64(&q->gather_until, 0);
	return 0;
}

/* The gathering is over (woken, or its linger ran out). */
void
she_queue_gather_end(void)
{
	pg_atomic_write_u64(&q->gather_until, 0);
}

/*
 * This backend's order ticket ended (handed over, or none will be): count
 * it, and wake a gathering publisher when it was the last one it waits
 * for.  The atomic add is a full barrier: the slot's clear comes first.
 */
static void
end_order_ticket(void)
{
	uint64		ends = pg_atomic_fetch_add_u64(&q->order_ends, 1) + 1;
	uint64		until = pg_atomic_read_u64(&q->gather_until);

	if (until != 0 && ends >= until &&
		pg_atomic_compare_exchange_u64(&q->gather_until, &until, 0))
		she_queue_wake_publisher();
}

/* The publisher woke up: writers need not wake it until it is idle again. */
void
she_queue_publisher_busy(void)
{
	pg_atomic_write_u32(&q->publisher_idle, 0);
}

/*
 * A record with this ticket starts at pos (the caller holds the lock):
 * keep the smallest ticket of each segment's records (see Scan).  A
 * segment is emptied when head first enters it in a lap, so it never
 * holds a ticket of a record consumed a lap ago; the slot it shares with
 * the segment a lap back is only read by the publisher for segments past
 * the one holding tail.
 */
static void
note_segment(uint64 pos, uint64 ticket)
{
	uint64		s = pos / q->seg_bytes;
	pg_atomic_uint64 *m;

	if (s != q->seg_last)
	{
		uint64		x = Max(q->seg_last + 1, s >= QUEUE_SEGMENTS ? s - QUEUE_SEGMENTS + 1 : 0);

		for (; x <= s; x++)
			pg_atomic_write_u64(&q->seg_min[x % QUEUE_SEGMENTS], PG_UINT64_MAX);
		q->seg_last = s;
	}
	m = &q->seg_min[s % QUEUE_SEGMENTS];
	if (ticket < pg_atomic_read_u64(m))
		pg_atomic_write_u64(m, ticket);
}

/* Append one record at *head (the caller holds the lock and checked space). */
static void
append_record(uint64 *head, const SheEvent *ev, const char *stream, bool create,
			  const SheStreamSpec *spec, int waiter, uint64 ticket, uint64 deadline)
{
	QueueRecord r;
	uint64		p = *head + sizeof(r);

	memset(&r, 0, sizeof(r));
	r.stream_len = strlen(stream);
	r.subjects_len = strlen(spec->subjects);
	r.subject_len = strlen(ev->subject);
	r.envelope_len = ev->envelope_len;
	r.len = sizeof(r) + r.stream_len + r.subjects_len + r.subject_len + r.envelope_len;
	r.waiter = waiter;
	r.ticket = ticket;
	r.deadline = deadline;
	r.create_stream = create;
	r.stream_replicas = spec->replicas;
	r.stream_max_age_s = spec->max_age_s;
	r.duplicate_window_s = spec->duplicate_window_s;
	memcpy(r.id, ev->id, sizeof(r.id));
	r.txn = ev->txn;
	note_segment(*head, ticket);
	ring_write(*head, &r, sizeof(r));
	ring_write(p, stream, r.stream_len);
	p += r.stream_len;
	ring_write(p, spec->subjects, r.subjects_len);
	p += r.subjects_len;
	ring_write(p, ev->subject, r.subject_len);
	p += r.subject_len;
	ring_write(p, ev->envelope, r.envelope_len);
	*head += r.len;
}

/* The bytes of one event's record in the ring. */
static uint64
record_len(const SheEvent *ev, const char *stream, const SheStreamSpec *spec)
{
	return sizeof(QueueRecord) + strlen(stream) + strlen(spec->subjects) +
		strlen(ev->subject) + ev->envelope_len;
}

/*
 * Rewind (the caller holds the lock): when the ring is empty and head is
 * at least QUEUE_REWIND_BYTES into its lap, pad the rest of the lap with
 * one record the publisher skips, so the next record starts the next lap.
 * The padding takes the lap's rest of the free space until the publisher
 * skips it, which it does only at its next take, so it is written only
 * when the publisher announced that it sleeps (publisher_idle: not in a
 * group's wait for acks, which lasts up to publish_timeout; this writer
 * or its order ticket wakes it, and it takes at once) and the writer's
 * whole batch (events[0..n-1]) fits the lap's start: a rewind never makes
 * a batch wait for room longer than the publisher's wake-up, and a record
 * follows the padding.
 * Not noted in the segments' minima: nothing is taken from it.
 */
static void
rewind_if_empty(uint64 *head, uint64 *free_bytes, const SheEvent *events, int n,
				const char *stream, const SheStreamSpec *spec)
{
	uint64		off = *head % q->size;
	uint64		rest = q->size - off;
	uint64		need = 0;
	QueueRecord r;
	int			i;

	if (*head != pg_atomic_read_u64(&q->tail) ||
		pg_atomic_read_u32(&q->publisher_idle) == 0 ||
		off < Min((uint64) QUEUE_REWIND_BYTES, q->size / 4) ||
		rest < sizeof(r) || rest > PG_UINT32_MAX)
		return;
	for (i = 0; i < n && need <= off; i++)
		need += record_len(&events[i], stream, spec);
	if (need > off)
		return;
	memset(&r, 0, sizeof(r));
	r.len = (uint32) rest;
	r.waiter = QUEUE_PAD_WAITER;
	ring_write(*head, &r, sizeof(r));
	*head += rest;
	*free_bytes = off;			/* the ring was empty: all but the padding */
}

/* Remove this backend from the admission FIFO (caller holds the lock). */
static void
leave_waitq(void)
{
	int			me = she_my_proc_number();
	int			k;

	for (k = 0; k < q->nwaiting; k++)
		if (waitq[k] == me)
			break;
	if (k < q->nwaiting)
	{
		memmove(&waitq[k], &waitq[k + 1], (q->nwaiting - k - 1) * sizeof(int));
		q->nwaiting--;
	}
	in_waitq = false;
}

/*
 * Copy as many of events[*i..n-1] as fit, in admission order: writers
 * that found no room wait in a FIFO (waitq), and a writer may append only
 * when the FIFO is empty or it is at its head; one that arrives while
 * others wait joins the tail even if its batch would fit.  The head stays
 * there while it streams a batch bigger than the free space, so no other
 * batch interleaves.  Returns true when the turn moved on (others must be
 * woken).  Sets *closed, appending nothing, once the publisher drains the
 * queue to exit (see she_queue_close).  Under no lock on entry.
 */
static bool
append_some(const SheEvent *events, int n, int *i, const char *stream, bool create,
			const SheStreamSpec *spec, int waiter, uint64 ticket, uint64 deadline,
			bool *closed)
{
	int			me = she_my_proc_number();
	uint64		head;
	uint64		free_bytes;
	bool		turn_moved = false;

	LWLockAcquire(q->lock, LW_EXCLUSIVE);
	*closed = q->closed;
	if (*closed)
	{
		if (in_waitq)
		{
			leave_waitq();
			turn_moved = true;
		}
		LWLockRelease(q->lock);
		return turn_moved;
	}
	if (!in_waitq && q->nwaiting > 0)
	{
		waitq[q->nwaiting++] = me;
		in_waitq = true;
		LWLockRelease(q->lock);
		return false;
	}
	if (in_waitq && waitq[0] != me)
	{
		LWLockRelease(q->lock);
		return false;
	}
	head = pg_atomic_read_u64(&q->head);
	free_bytes = q->size - (head - pg_atomic_read_u64(&q->tail));
	if (*i < n)
		rewind_if_empty(&head, &free_bytes, events + *i, n - *i, stream, spec);
	while (*i < n)
	{
		uint64		len = record_len(&events[*i], stream, spec);

		if (len > free_bytes)
			break;
		append_record(&head, &events[*i], stream, create, spec, waiter, ticket, deadline);
		free_bytes -= len;
		(*i)++;
	}
	pg_write_barrier();
	pg_atomic_write_u64(&q->head, head);
	if (*i < n && !in_waitq)
	{
		/* the FIFO was empty: this writer is its head */
		waitq[q->nwaiting++] = me;
		in_waitq = true;
	}
	else if (*i == n && in_waitq)
	{
		leave_waitq();
		turn_moved = true;
	}
	LWLockRelease(q->lock);
	return turn_moved;
}

/*
 * Start a batch with this ticket in this backend's slot.  Tickets come
 * from one shared counter: the next backend on the same PGPROC must never
 * reuse a ticket whose records an earlier backend abandoned in the ring.
 */
static void
start_slot(int n, uint64 ticket)
{
	WaitSlot   *slot = &q->slots[she_my_proc_number()];

	SpinLockAcquire(&slot->mutex);
	slot->ticket = ticket;
	slot->abandoned = false;
	slot->nevents = n;
	slot->taken = slot->reported = 0;
	slot->stored = slot->duplicates = slot->lost = slot->unconfirmed = 0;
	slot->reason[0] = '\0';
	SpinLockRelease(&slot->mutex);
}

/*
 * XACT_EVENT_PRE_COMMIT (immediate mode, events buffered, xid assigned):
 * draw this batch's order ticket and announce it in the slot, before the
 * transaction leaves the proc array.  One atomic add; no lock.
 */
void
she_queue_order_begin(TransactionId xid)
{
	WaitSlot   *slot;

	if (q == NULL)
		return;
	my_order = pg_atomic_fetch_add_u64(&q->next_ticket, 1);
	if (she_my_proc_number() >= q->nslots)
		return;
	slot = &q->slots[she_my_proc_number()];
	pg_write_barrier();
	slot->order_xid = xid;
	pg_write_barrier();
	pg_atomic_write_u64(&slot->order, my_order);
}

/*
 * The batch is handed over (or will not be: abort, refused, or it waits
 * for room): clear the slot's ticket so it holds nobody back, and wake a
 * publisher that may wait for it.  Never fails; cheap when there is none.
 */
void
she_queue_order_end(void)
{
	if (my_order == 0)
		return;
	my_order = 0;
	if (she_my_proc_number() < q->nslots)
		pg_atomic_write_u64(&q->slots[she_my_proc_number()].order, 0);
	end_order_ticket();
	wake_if_idle();
}

/*
 * How many transactions drew an order ticket at pre-commit and have not
 * handed their batch over yet: commits on their way to the queue (or
 * waiting for a synchronous standby).  The publisher reads it to decide
 * whether holding a small write back for a moment gathers them into it.
 */
int
she_queue_commits_in_flight(void)
{
	int			n = 0;
	int			i;

	for (i = 0; i < q->nslots; i++)
		if (pg_atomic_read_u64(&q->slots[i].order) != 0)
			n++;
	return n;
}

/*
 * Is the publisher process there to take a batch?  Not when it could not
 * be registered (max_worker_processes), nor when it ran and exited (crash
 * loop, restart): then batches are refused at once instead of each waiting
 * publish_timeout, and the ring cannot fill up behind a missing reader.
 * Before its first start (server start-up) batches queue as usual.
 */
static bool
publisher_missing(void)
{
	bool		missing;

	if (!she_publisher_registered)
		return true;
	SpinLockAcquire(&q->mutex);
	missing = (q->publisher_pid == 0 && q->publisher_started);
	SpinLockRelease(&q->mutex);
	return missing;
}

/*
 * Is the publisher inside a connection attempt after its last one failed
 * (or the connection was lost)?  Then a commit is refused at once with why
 * it is not connected (copied into reason), instead of waiting for the
 * attempt (up to connect_timeout per listed server pass).  The first
 * attempt after start-up, or after a reload while connected, is waited for.
 */
static bool
publisher_reconnecting(char *reason, size_t reasonlen)
{
	bool		refuse;

	SpinLockAcquire(&q->mutex);
	refuse = (q->connecting && !q->connected && q->conn_error[0] != '\0');
	if (refuse)
		strlcpy(reason, q->conn_error, reasonlen);
	SpinLockRelease(&q->mutex);
	return refuse;
}

/*
 * A cancel (pg_cancel_backend) or a termination ends a commit-time wait
 * for the publisher, as for synchronous replication: the transaction has
 * committed, so the wait just stops (what was not queued is lost, what was
 * taken and not reported is unconfirmed).  A cancel is consumed here; a
 * termination stays pending, and the backend exits after the commit.
 */
static bool
wait_interrupted(void)
{
	if (ProcDiePending)
	{
		wait_terminated = true; /* the caller warns, then stops output */
		return true;
	}
	if (QueryCancelPending)
	{
		QueryCancelPending = false;
		wait_cancelled = true;
	}
	return wait_cancelled;
}

/*
 * Did a termination end one of this commit's waits?  Then, as synchronous
 * replication does, the caller sends its WARNING and sets whereToSendOutput
 * to DestNone: the client is told what became of its events, and not the
 * FATAL that would read as a failed COMMIT.
 */
bool
she_queue_wait_terminated(void)
{
	return wait_terminated;
}

/* Did a cancel end one of this commit's waits (hand-over or outcomes)? */
bool
she_queue_wait_cancelled(void)
{
	return wait_cancelled;
}

/*
 * Hand a committed batch to the publisher (at XACT_EVENT_COMMIT: no ERROR,
 * no allocation, every wait bounded by timeout_ms).  With wait, the slot
 * is set up for she_queue_wait.  Returns how many events were queued; the
 * others are counted lost in res (and in stats()).
 *
 * If the postmaster dies meanwhile, stop waiting (like SyncRepWaitForLSN:
 * exiting here would turn the committed transaction into an abort, a
 * PANIC): count the rest lost and let the backend exit after the commit.
 */
int
she_queue_put(const SheEvent *events, int n, const char *stream, bool create_stream,
			  const SheStreamSpec *spec, bool wait, int timeout_ms, SheHandOff *res)
{
	uint64		deadline = she_now_usec() + (uint64) timeout_ms * 1000;
	bool		use_slot;
	uint64		ticket;
	int			waiter;
	int			i = 0;
	bool		pm_dead = false;
	bool		interrupted = false;
	bool		closed = false;
	bool		reset = false;
	bool		on_list = false;

	memset(res, 0, sizeof(*res));
	res->nevents = n;
	wait_cancelled = false;
	wait_terminated = false;
	if (publisher_missing())
		snprintf(res->reason, sizeof(res->reason),
				 "the publisher process is not running%s",
				 she_publisher_registered ? "" :
				 " (it could not be registered: raise max_worker_processes)");
	if (res->reason[0] != '\0' || publisher_reconnecting(res->reason, sizeof(res->reason)))
	{
		/*
		 * Refused at once.  The slot still gets a batch (of none), or
		 * she_queue_wait would collect the previous batch's outcomes.
		 */
		if (wait && she_my_proc_number() < q->nslots)
			start_slot(0, my_order ? my_order : pg_atomic_fetch_add_u64(&q->next_ticket, 1));
		she_queue_order_end();
		res->lost = n;
		she_stats_add_failed(n);
		return 0;
	}
	use_slot = wait && she_my_proc_number() < q->nslots;
	ticket = my_order ? my_order : pg_atomic_fetch_add_u64(&q->next_ticket, 1);
	if (use_slot)
		start_slot(n, ticket);
	waiter = use_slot ? she_my_proc_number() : -1;
	for (;;)
	{
		int			before = i;
		int			rc;

		/*
		 * On the wake-up list before looking, so no broadcast is missed;
		 * the first look goes without (the batch usually fits), and one
		 * that does not fit looks again once on the list.
		 */
		if (on_list)
			ConditionVariablePrepareToSleep(&q->space_cv);
		if (append_some(events, n, &i, stream, create_stream, spec,
						waiter, ticket, deadline, &closed))
			ConditionVariableBroadcast(&q->space_cv);	/* the next writer's turn */

		/*
		 * Appended (head published): the ticket holds nobody back any
		 * more.  If the batch did not fit, it is cleared before any wait
		 * for room too (best effort: the publisher must not wait for a
		 * writer that waits for it, counted as a lapse of the order).
		 * Clearing wakes the publisher.
		 */
		if (my_order != 0)
		{
			if (i < n && !closed)
				count_lapse(LAPSE_ROOM);
			she_queue_order_end();
		}
		else if (i > before)
			wake_if_idle();
		if (i > before && use_slot)
			wake_if_lingering();
		if (i == n || closed || she_ms_left(deadline) <= 0)
			break;
		if (!on_list)
		{
			on_list = true;
			continue;
		}
		if (wait_interrupted())
		{
			interrupted = true;
			break;
		}
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_POSTMASTER_DEATH,
					   (long) Max(she_ms_left(deadline), 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		reset = true;
		if (rc & WL_POSTMASTER_DEATH)
		{
			pm_dead = true;
			break;
		}
	}
	if (on_list)
		ConditionVariableCancelSleep();
	if (reset)
		SetLatch(MyLatch);		/* whatever else it announced is re-checked */
	if (in_waitq)
	{
		/* gave up: pass the turn to the next writer */
		LWLockAcquire(q->lock, LW_EXCLUSIVE);
		leave_waitq();
		LWLockRelease(q->lock);
		ConditionVariableBroadcast(&q->space_cv);
	}
	if (i < n)
	{
		res->lost = n - i;
		if (pm_dead)
			snprintf(res->reason, sizeof(res->reason),
					 "the postmaster died while %d events waited for room in the publisher's queue",
					 n - i);
		else if (closed)
			snprintf(res->reason, sizeof(res->reason),
					 "the publisher process stopped before %d events were queued",
					 n - i);
		else if (interrupted)
			snprintf(res->reason, sizeof(res->reason),
					 "the wait for room in the publisher's queue (state_hub_events.queue_size) was cancelled with %d events not queued",
					 n - i);
		else
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
	if (pm_dead)
	{
		ProcDiePending = true;
		whereToSendOutput = DestNone;
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
					 "%s (%d not taken, %d without outcome)",
					 wait_cancelled ? "the wait for the publisher's outcome was cancelled" :
					 ProcDiePending ? "the wait for the publisher's outcome ended: the session is terminating" :
					 "the publisher process did not report within state_hub_events.publish_timeout",
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
	bool		pm_dead = false;

	if (she_my_proc_number() >= q->nslots)
		return;
	slot = &q->slots[she_my_proc_number()];
	while (!collect(slot, she_ms_left(limit) <= 0 || pm_dead || wait_interrupted(), res))
	{
		int			rc;

		/* never exit here on postmaster death: the transaction committed */
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_POSTMASTER_DEATH,
					   (long) Max(she_ms_left(limit), 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		reset = true;
		if (rc & WL_POSTMASTER_DEATH)
		{
			pm_dead = true;
			ProcDiePending = true;
			whereToSendOutput = DestNone;
		}
	}

	/*
	 * Set the latch again only for an interrupt that arrived meanwhile.  Any
	 * other wake-up it carried is a hint whose waiter re-checks its condition
	 * before sleeping; set unconditionally, it made the session's next read
	 * from its client return at once and read again (one more recv() per
	 * commit).
	 */
	if (reset && InterruptPending)
		SetLatch(MyLatch);
}

/*
 * The publisher announces itself (its latch is what backends set).  The
 * reason its predecessor left ("not running") goes: the first attempt of
 * a restarted publisher is waited for, as at server start.
 */
void
she_queue_attach_publisher(void)
{
	LWLockAcquire(q->lock, LW_EXCLUSIVE);
	q->closed = false;
	LWLockRelease(q->lock);
	SpinLockAcquire(&q->mutex);
	q->publisher_latch = MyLatch;
	q->publisher_pid = MyProcPid;
	q->publisher_started = true;
	q->connected = false;
	q->connecting = false;
	q->conn_error[0] = '\0';
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
	q->connecting = false;
	strlcpy(q->conn_error, "the publisher process is not running", sizeof(q->conn_error));
	SpinLockRelease(&q->mutex);
}

/*
 * The publisher drains the queue to exit (SIGTERM): from now on no writer
 * appends (a writer already past the check for a running publisher finds
 * the queue closed under the lock and counts the rest of its batch lost),
 * so a take that finds the ring empty has seen every record.  Writers
 * waiting for room are woken to give up at once.
 */
void
she_queue_close(void)
{
	LWLockAcquire(q->lock, LW_EXCLUSIVE);
	q->closed = true;
	LWLockRelease(q->lock);
	ConditionVariableBroadcast(&q->space_cv);
}

/* Has the publisher taken every record appended so far? */
bool
she_queue_is_empty(void)
{
	return pg_atomic_read_u64(&q->head) == pg_atomic_read_u64(&q->tail);
}

/* Does the slot still wait for this event's batch?  Counts it taken. */
static bool
claim(const SheTaken *t)
{
	WaitSlot   *slot;
	bool		ok;

	if (t->waiter < 0)
		return true;
	slot = &q->slots[t->waiter];
	SpinLockAcquire(&slot->mutex);
	ok = (slot->ticket == t->ticket && !slot->abandoned);
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
 * The smallest ticket of a transaction that has left the proc array (its
 * changes are visible) and not handed its batch over yet; PG_UINT64_MAX
 * if none.  A transaction still in the proc array was seen by nobody, so
 * it holds nobody back (synchronous replication waits there).  The
 * ticket is read again after the xid: unchanged, the xid read belongs to
 * it.  *slotno is the slot of the ticket returned.
 */
static uint64
ended_order_min(int *slotno)
{
	uint64		min = PG_UINT64_MAX;
	int			i;

	for (i = 0; i < q->nslots; i++)
	{
		WaitSlot   *slot = &q->slots[i];
		uint64		t = pg_atomic_read_u64(&slot->order);
		TransactionId xid;

		if (t == 0 || t >= min)
			continue;
		pg_read_barrier();
		xid = slot->order_xid;
		if (she_proc_xid(i) == xid)
			continue;			/* not visible yet */
		pg_read_barrier();
		if (pg_atomic_read_u64(&slot->order) != t)
			continue;			/* handed over meanwhile */
		min = t;
		*slotno = i;
	}
	return min;
}

/*
 * The publisher waits (on its latch, which the backend's hand-over or
 * abort sets) for the ended transaction holding ticket t in slotno, at
 * most ORDER_WAIT_MS per ticket; after that the ticket is cleared, so it
 * holds nobody back again (its batch, if it comes, is published late),
 * counted as a lapse of the order (see report_lapses).
 */
static void
wait_for_order(uint64 t, int slotno)
{
	uint64		now = she_now_usec();
	int			dummy;

	if (order_waited != t)
	{
		order_waited = t;
		order_wait_until = now + ORDER_WAIT_MS * 1000;
	}
	if (now >= order_wait_until)
	{
		uint64		expected = t;

		if (pg_atomic_compare_exchange_u64(&q->slots[slotno].order, &expected, 0))
		{
			count_lapse(LAPSE_HELD);
			ereport(DEBUG1,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg_internal("state_hub_events publisher: gave up waiting %d ms for the batch of order ticket " UINT64_FORMAT " (pgprocno %d); later transactions go first",
									 ORDER_WAIT_MS, t, slotno)));
		}
		return;
	}
	/* as in she_queue_publisher_idle: the backend's clear sets the latch */
	pg_atomic_write_u32(&q->publisher_idle, 1);
	pg_memory_barrier();
	if (ended_order_min(&dummy) == t)
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(she_ms_left(order_wait_until), 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	pg_atomic_write_u32(&q->publisher_idle, 0);
}

/*
 * The smallest ticket of the records that start in [from, head), from the
 * segments' minima (see Scan); from is the first record of its segment.
 */
static uint64
segments_min(uint64 from, uint64 head)
{
	uint64		min = PG_UINT64_MAX;
	uint64		s;

	for (s = from / q->seg_bytes; s <= (head - 1) / q->seg_bytes; s++)
		min = Min(min, pg_atomic_read_u64(&q->seg_min[s % QUEUE_SEGMENTS]));
	return min;
}

/*
 * How many records from tail may be taken so that transactions that
 * touched the same rows are published in commit order.  A transaction
 * that saw another's changes drew its ticket after that one left the proc
 * array, so its ticket is larger.  The ticket counter is read first (c),
 * then the slots (m: ended, not handed over), then head: every record
 * below min(c, m) depends only on batches in [tail, head).  The cut k is
 * the largest one, not past the first record at or above min(c, m) nor
 * the size limits, after which no record has a smaller ticket than one
 * before it; what is taken is then sorted by ticket.  Headers are read
 * up to the size limits and on to the end of that segment; the records
 * after it count by their segments' minima (see Scan).  *nrec is k, and
 * *nread the headers read.  When k is 0: *hold_c, held only by c (take
 * again at once); *hold_m and *mslot, held by the ended transaction m
 * (wait for it).
 */
static void
order_cut(int max, int max_bytes, MemoryContext cxt, int *nrec, int *nread,
		  uint64 *hold_m, int *mslot, bool *hold_c)
{
	uint64		c = pg_atomic_read_u64(&q->next_ticket);
	uint64		m;
	uint64		bound;
	uint64		head;
	uint64		pos = pg_atomic_read_u64(&q->tail);
	uint64		seg = pos / q->seg_bytes;
	uint64		bytes = 0;
	uint64		rest = PG_UINT64_MAX;	/* the smallest ticket not read */
	uint64	   *t;
	uint64	   *smin;
	uint64		prefmax = 0;
	int			cap = 64;
	int			nall = 0;
	int			first_held = -1;
	int			kmax = -1;
	int			k = 0;
	int			j;

	pg_memory_barrier();
	m = ended_order_min(mslot);
	bound = Min(c, m);
	pg_read_barrier();
	head = pg_atomic_read_u64(&q->head);
	pg_read_barrier();
	*hold_m = 0;
	*hold_c = false;
	t = MemoryContextAlloc(cxt, cap * sizeof(uint64));
	while (pos < head)
	{
		QueueRecord r;

		if (kmax < 0 && (nall >= max || bytes >= (uint64) max_bytes))
			kmax = nall;
		if (kmax >= 0 && pos / q->seg_bytes != seg)
		{
			rest = segments_min(pos, head);
			break;
		}
		seg = pos / q->seg_bytes;
		ring_read(pos, &r, sizeof(r));
		if (first_held < 0 && r.ticket >= bound)
		{
			first_held = nall;
			if (kmax < 0)
				kmax = nall;	/* nothing from here on is taken */
		}
		if (nall == cap)
		{
			cap *= 2;
			t = repalloc(t, cap * sizeof(uint64));
		}
		t[nall++] = r.ticket;
		bytes += r.len;
		pos += r.len;
	}
	if (kmax < 0)
		kmax = nall;
	if (first_held >= 0 && first_held < kmax)
		kmax = first_held;
	smin = MemoryContextAlloc(cxt, (nall + 1) * sizeof(uint64));
	smin[nall] = rest;
	for (j = nall - 1; j >= 0; j--)
		smin[j] = Min(t[j], smin[j + 1]);
	/*
	 * Cutting before record j is safe when no record from j on has a
	 * smaller ticket than one before it (an equal one is the same batch,
	 * whose rest follows in the next take).
	 */
	for (j = 0; j <= kmax; j++)
	{
		if (prefmax <= smin[j])
			k = j;
		if (j < kmax)
			prefmax = Max(prefmax, t[j]);
	}
	if (k == 0 && nall > 0)
	{
		if (first_held >= 0 && kmax == first_held)
		{
			if (bound == c)
				*hold_c = true;
			else
				*hold_m = m;
		}
		else
		{
			/* an inversion wider than one take: best effort */
			k = kmax;
			count_lapse(LAPSE_WIDE);
			ereport(DEBUG1,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg_internal("state_hub_events publisher: took %d records out of ticket order (the take's size limit)", k)));
		}
	}
	pfree(t);
	pfree(smin);
	*nrec = k;
	*nread = nall;
}

/* qsort: by ticket, then by position (stable: a batch stays in order) */
static int
cmp_taken(const void *a, const void *b)
{
	const uint64 *x = (const uint64 *) a;
	const uint64 *y = (const uint64 *) b;

	if (x[0] != y[0])
		return x[0] < y[0] ? -1 : 1;
	return x[1] < y[1] ? -1 : (x[1] > y[1] ? 1 : 0);
}

/* Put the n taken events in ticket order (usually they already are). */
static void
sort_taken(SheEvent *evs, SheTaken *meta, int n, MemoryContext cxt)
{
	uint64	   *key;
	SheEvent   *e2;
	SheTaken   *m2;
	int			i;

	for (i = 1; i < n; i++)
		if (meta[i].ticket < meta[i - 1].ticket)
			break;
	if (i >= n)
		return;
	key = MemoryContextAlloc(cxt, n * 2 * sizeof(uint64));
	for (i = 0; i < n; i++)
	{
		key[2 * i] = meta[i].ticket;
		key[2 * i + 1] = i;
	}
	qsort(key, n, 2 * sizeof(uint64), cmp_taken);
	e2 = MemoryContextAlloc(cxt, n * sizeof(SheEvent));
	m2 = MemoryContextAlloc(cxt, n * sizeof(SheTaken));
	for (i = 0; i < n; i++)
	{
		e2[i] = evs[key[2 * i + 1]];
		m2[i] = meta[key[2 * i + 1]];
	}
	memcpy(evs, e2, n * sizeof(SheEvent));
	memcpy(meta, m2, n * sizeof(SheTaken));
}

/*
 * The record at *pos (before head) is a rewind's padding (see Rewind)?
 * Then move tail past it, free its room, and say so.  A padding is only
 * ever written into an empty ring, so it is always the first record.
 */
static bool
skip_padding(uint64 *pos)
{
	QueueRecord r;

	pg_read_barrier();
	ring_read(*pos, &r, sizeof(r));
	if (r.waiter != QUEUE_PAD_WAITER)
		return false;
	*pos += r.len;
	pg_memory_barrier();
	pg_atomic_write_u64(&q->tail, *pos);
	ConditionVariableBroadcast(&q->space_cv);
	return true;
}

/*
 * Copy the k records from pos into evs/meta (in cxt) and return where they
 * end.  Touches nothing shared but the ring's bytes: an ERROR (out of
 * memory) here leaves the queue as it was, and the restarted publisher
 * takes the same records once.
 */
static uint64
copy_records(uint64 pos, int k, SheEvent *evs, SheTaken *meta, MemoryContext cxt)
{
	uint64		now = she_now_usec();
	int			n;

	for (n = 0; n < k; n++)
	{
		QueueRecord r;
		uint64		p;

		ring_read(pos, &r, sizeof(r));
		p = pos + sizeof(r);
		pos += r.len;
		memset(&evs[n], 0, sizeof(SheEvent));
		memcpy(evs[n].id, r.id, sizeof(r.id));
		evs[n].txn = r.txn;
		meta[n].stream = read_string(p, r.stream_len, cxt);
		p += r.stream_len;
		meta[n].spec.subjects = read_string(p, r.subjects_len, cxt);
		meta[n].spec.replicas = r.stream_replicas;
		meta[n].spec.max_age_s = r.stream_max_age_s;
		meta[n].spec.duplicate_window_s = r.duplicate_window_s;
		p += r.subjects_len;
		evs[n].subject = read_string(p, r.subject_len, cxt);
		evs[n].envelope = read_string(p + r.subject_len, r.envelope_len, cxt);
		evs[n].envelope_len = r.envelope_len;
		meta[n].create_stream = r.create_stream;
		meta[n].waiter = r.waiter;
		meta[n].ticket = r.ticket;
		/* nobody waits (wait_for_ack = off, or gave up): a fresh budget */
		if (r.waiter < 0 || r.deadline <= now)
			meta[n].deadline = now + (uint64) she_publish_timeout_ms * 1000;
		else
			meta[n].deadline = r.deadline;
	}
	return pos;
}

/*
 * LOG, at most once per LAPSE_LOG_MS, how many batches the commit order
 * was not guaranteed for since the last such line (see Order).
 */
static void
report_lapses(void)
{
	static uint64 logged[NUM_LAPSES];
	static uint64 logged_at = 0;
	uint64		now_n[NUM_LAPSES];
	uint64		total = 0;
	uint64		now;
	int			i;

	for (i = 0; i < NUM_LAPSES; i++)
	{
		now_n[i] = pg_atomic_read_u64(&q->lapses[i]);
		total += now_n[i] - logged[i];
	}
	if (total == 0)
		return;
	now = she_now_usec();
	if (logged_at != 0 && now - logged_at < (uint64) LAPSE_LOG_MS * 1000)
		return;
	ereport(LOG,
			(errcode(ERRCODE_WARNING),
			 errmsg("state_hub_events publisher: the commit order of " UINT64_FORMAT " batches was not guaranteed since the last report",
					total),
			 errdetail("Held back for a committed transaction not handed over within %d ms: " UINT64_FORMAT "; waited for room in the queue (state_hub_events.queue_size): " UINT64_FORMAT "; out of order wider than one take: " UINT64_FORMAT ".  Since start: " UINT64_FORMAT ", " UINT64_FORMAT ", " UINT64_FORMAT ".",
					   ORDER_WAIT_MS, now_n[LAPSE_HELD] - logged[LAPSE_HELD],
					   now_n[LAPSE_ROOM] - logged[LAPSE_ROOM],
					   now_n[LAPSE_WIDE] - logged[LAPSE_WIDE],
					   now_n[LAPSE_HELD], now_n[LAPSE_ROOM], now_n[LAPSE_WIDE])));
	memcpy(logged, now_n, sizeof(logged));
	logged_at = now;
}

/*
 * The publisher takes up to max events (about max_bytes) from the queue
 * into evs/meta (copies in cxt), skipping those whose backend gave up, and
 * frees their space.  What it takes is cut and sorted so that
 * transactions that touched the same rows come out in commit order (see
 * Order); it may wait (bounded) for a committed batch not handed over yet.
 * Everything is allocated (copied, sorted) before an event is counted
 * taken in its slot: an ERROR leaves no slot counting an event twice.
 */
int
she_queue_take(SheEvent *evs, SheTaken *meta, int max, int max_bytes, bool may_hold,
			   MemoryContext cxt)
{
	uint64		pos = pg_atomic_read_u64(&q->tail);
	int			k = 0;
	int			nread = 0;
	int			tries = 0;
	bool		waited = false;
	int			n = 0;
	int			i;

	report_lapses();
	while (pg_atomic_read_u64(&q->head) != pos)
	{
		uint64		hold_m;
		int			mslot = -1;
		bool		hold_c;
		int			r;

		if (skip_padding(&pos))
			continue;
		order_cut(max, max_bytes, cxt, &k, &r, &hold_m, &mslot, &hold_c);
		nread += r;
		if (k > 0)
			break;
		if (!may_hold && (hold_m != 0 || hold_c))
			break;				/* the caller publishes what it has first */
		if (hold_m != 0)
			wait_for_order(hold_m, mslot);
		else if (hold_c && ++tries > 100)
		{
			/* tickets keep arriving out of order: let the writers run */
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1,
							 PG_WAIT_EXTENSION);
			tries = 0;
		}
		waited = waited || hold_m != 0;
	}
	if (waited)
		SetLatch(MyLatch);		/* whatever else it announced is re-checked */
	if (k == 0)
		return 0;
	pos = copy_records(pos, k, evs, meta, cxt);
	sort_taken(evs, meta, k, cxt);
	elog(DEBUG2, "state_hub_events publisher: taking %d records, read %d record headers",
		 k, nread);
	/* no ERROR from here on: spinlocks, atomics, a broadcast */
	for (i = 0; i < k; i++)
	{
		if (!claim(&meta[i]))
			continue;			/* abandoned: freed */
		if (n < i)
		{
			evs[n] = evs[i];
			meta[n] = meta[i];
		}
		n++;
	}
	pg_memory_barrier();
	pg_atomic_write_u64(&q->tail, pos);
	ConditionVariableBroadcast(&q->space_cv);
	return n;
}

/* Count one reported outcome in stats() (atomics only: safe under a spinlock). */
static void
count_outcome(SheMsgState state)
{
	if (state == SHE_MSG_STORED || state == SHE_MSG_DUPLICATE)
		she_stats_atomic_published(1, state == SHE_MSG_DUPLICATE ? 1 : 0);
	else if (state == SHE_MSG_UNCONFIRMED)
		she_stats_add_unconfirmed(1);
	else
		she_stats_add_failed(1);
}

/*
 * Report one event's outcome to its backend, and count it in stats()
 * unless its backend already did (it gave up on the batch).  The count is
 * made under the slot's spinlock, before the backend can see the outcome:
 * once its COMMIT returns, stats() agrees with its WARNING.  Called by the
 * publisher's main thread once a group's acks are in (and at its exit):
 * atomics, spinlocks and SetLatch only.
 */
void
she_queue_report(const SheTaken *t, const SheMsgOutcome *o, const SheBatchOutcome *sum)
{
	bool		stored = (o->state == SHE_MSG_STORED || o->state == SHE_MSG_DUPLICATE);
	bool		unconfirmed = (o->state == SHE_MSG_UNCONFIRMED);
	bool		wake = false;
	WaitSlot   *slot;

	if (t->waiter < 0)
	{
		count_outcome((SheMsgState) o->state);
		return;
	}
	slot = &q->slots[t->waiter];
	SpinLockAcquire(&slot->mutex);
	if (slot->ticket == t->ticket && !slot->abandoned)
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
		count_outcome((SheMsgState) o->state);
		wake = (slot->reported >= slot->nevents);
	}
	SpinLockRelease(&slot->mutex);
	if (wake)
		SetLatch(&ProcGlobal->allProcs[t->waiter].procLatch);
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

/*
 * The publisher starts (or ends) a connection attempt; error, when not
 * NULL, is why it is not connected meanwhile (see publisher_reconnecting).
 */
void
she_queue_set_connecting(bool connecting, const char *error)
{
	SpinLockAcquire(&q->mutex);
	q->connecting = connecting;
	if (error != NULL && !q->connected)
		strlcpy(q->conn_error, error, sizeof(q->conn_error));
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
