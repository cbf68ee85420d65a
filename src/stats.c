/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters and the COMMIT publish-time histogram behind stats().
 *
 * When the library is in shared_preload_libraries the counters live in
 * shared memory and are cluster-wide; otherwise each backend keeps its own
 * (in TopMemoryContext) and stats() says so.
 *
 * Who touches what: the counters and histogram buckets are pg_atomic_uint64
 * and are incremented by backends, the publisher and the durable worker
 * (each event is counted once: see queue.c).  last_error and its time are
 * written under the spinlock.
 *
 * IDENTIFICATION
 *	  src/stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "ascii_text.h"
#include "state_hub_events.h"

PG_FUNCTION_INFO_V1(she_stats);
PG_FUNCTION_INFO_V1(she_stats_reset);

/*
 * Histogram of microseconds: values below 8 have their own bucket; above,
 * each power of two is split into 8 buckets (relative error under 7%).
 */
#define HIST_SUB		8
#define HIST_BUCKETS	(HIST_SUB * 38)

typedef struct SheStats
{
	pg_atomic_uint64 buffered;
	pg_atomic_uint64 published;
	pg_atomic_uint64 duplicates;
	pg_atomic_uint64 failed;
	pg_atomic_uint64 unconfirmed;
	pg_atomic_uint64 dropped;
	pg_atomic_uint64 rejected;	/* moved to the dead-letter table (worker) */
	pg_atomic_uint64 commits;
	pg_atomic_uint64 publisher_batches;	/* groups the publisher sent */
	pg_atomic_uint64 publisher_events;	/* events in them */
	pg_atomic_uint64 atomic_batches;	/* atomic batches committed */
	pg_atomic_uint64 atomic_splits; /* transactions split into several */
	pg_atomic_uint64 order_lapses[SHE_ORDER_LAPSE_KINDS];	/* see queue.c */
	pg_atomic_uint64 hist[HIST_BUCKETS];
	slock_t		mutex;			/* protects the two fields below */
	TimestampTz last_error_time;
	char		last_error[256];
} SheStats;

bool		she_preloaded = false;
static SheStats *stats = NULL;

/*
 * Zero every counter: with init, on fresh memory (pg_atomic_init and
 * SpinLockInit); without, on live counters (stats_reset()).
 */
static void
clear_stats(SheStats *s, bool init)
{
	pg_atomic_uint64 *counters[] = {&s->buffered, &s->published, &s->duplicates,
	&s->failed, &s->unconfirmed, &s->dropped, &s->rejected, &s->commits, &s->publisher_batches,
	&s->atomic_batches, &s->atomic_splits,
	&s->publisher_events, &s->order_lapses[0], &s->order_lapses[1],
	&s->order_lapses[2]};
	int			i;

	for (i = 0; i < lengthof(counters); i++)
	{
		if (init)
			pg_atomic_init_u64(counters[i], 0);
		else
			pg_atomic_write_u64(counters[i], 0);
	}
	for (i = 0; i < HIST_BUCKETS; i++)
	{
		if (init)
			pg_atomic_init_u64(&s->hist[i], 0);
		else
			pg_atomic_write_u64(&s->hist[i], 0);
	}
	if (init)
		SpinLockInit(&s->mutex);
	SpinLockAcquire(&s->mutex);
	s->last_error_time = 0;
	s->last_error[0] = '\0';
	SpinLockRelease(&s->mutex);
}

/* shmem_request_hook (preloaded only) */
void
she_stats_request_shmem(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SheStats)));
}

/* shmem_startup_hook (preloaded only) */
void
she_stats_startup_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("state_hub_events stats", sizeof(SheStats), &found);
	if (!found)
		clear_stats(stats, true);
	LWLockRelease(AddinShmemInitLock);
}

/* Not preloaded: this backend's own counters. */
void
she_stats_init_local(void)
{
	if (stats != NULL)
		return;
	stats = MemoryContextAllocZero(TopMemoryContext, sizeof(SheStats));
	clear_stats(stats, true);
}

void
she_stats_add_buffered(uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->buffered, n);
}

void
she_stats_add_failed(uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->failed, n);
}

void
she_stats_add_unconfirmed(uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->unconfirmed, n);
}

void
she_stats_add_dropped(uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->dropped, n);
}

/* The durable worker moved n events to state_hub_events.rejected. */
void
she_stats_add_rejected(uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->rejected, n);
}

/* Called on nats threads: atomics only. */
void
she_stats_atomic_published(uint64 n, uint64 duplicates)
{
	pg_atomic_fetch_add_u64(&stats->published, n);
	if (duplicates > 0)
		pg_atomic_fetch_add_u64(&stats->duplicates, duplicates);
}

/* Called on nats threads: atomics only. */
void
she_stats_atomic_failed(uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->failed, n);
}

static int
hist_bucket(uint64 usec)
{
	int			msb;
	int			idx;

	if (usec < HIST_SUB)
		return (int) usec;
	msb = 63 - __builtin_clzll(usec);
	idx = (msb - 2) * HIST_SUB + (int) ((usec >> (msb - 3)) & (HIST_SUB - 1));
	return Min(idx, HIST_BUCKETS - 1);
}

/* Midpoint of a bucket, in microseconds. */
static double
hist_value(int idx)
{
	int			msb;
	double		lo;
	double		width;

	if (idx < HIST_SUB)
		return idx;
	msb = idx / HIST_SUB + 2;
	width = (double) ((uint64) 1 << (msb - 3));
	lo = (HIST_SUB + idx % HIST_SUB) * width;
	return lo + width / 2;
}

/* How long one COMMIT spent publishing.  Plain C, safe after commit. */
void
she_stats_record_commit_time(uint64 usec)
{
	pg_atomic_fetch_add_u64(&stats->commits, 1);
	pg_atomic_fetch_add_u64(&stats->hist[hist_bucket(usec)], 1);
}

/* The publisher sent a batch of nevents events (one write, one wait). */
void
she_stats_record_publisher_batch(int nevents)
{
	pg_atomic_fetch_add_u64(&stats->publisher_batches, 1);
	pg_atomic_fetch_add_u64(&stats->publisher_events, nevents);
}

/* The publisher committed atomic batches, or split a transaction. */
void
she_stats_add_atomic(uint64 batches, uint64 splits)
{
	pg_atomic_fetch_add_u64(&stats->atomic_batches, batches);
	pg_atomic_fetch_add_u64(&stats->atomic_splits, splits);
}

/*
 * The commit order of a batch may have lapsed (kind: SheOrderLapse, see
 * queue.c's Order).  An atomic add: safe after commit.
 */
void
she_stats_add_order_lapse(int kind)
{
	if (kind >= 0 && kind < SHE_ORDER_LAPSE_KINDS)
		pg_atomic_fetch_add_u64(&stats->order_lapses[kind], 1);
}

/* No allocation: safe after commit. */
void
she_stats_set_last_error(const char *msg)
{
	TimestampTz now = GetCurrentTimestamp();
	char		safe[sizeof(stats->last_error)];

	she_ascii_text(safe, sizeof(safe), msg);	/* SQL reads it back */

	SpinLockAcquire(&stats->mutex);
	strlcpy(stats->last_error, safe, sizeof(stats->last_error));
	stats->last_error_time = now;
	SpinLockRelease(&stats->mutex);
}

static double
hist_quantile(const uint64 *counts, uint64 total, double q)
{
	uint64		target = (uint64) (q * total);
	uint64		seen = 0;
	int			i;

	if (total == 0)
		return -1;
	if (target >= total)
		target = total - 1;
	for (i = 0; i < HIST_BUCKETS; i++)
	{
		seen += counts[i];
		if (seen > target)
			return hist_value(i);
	}
	return hist_value(HIST_BUCKETS - 1);
}

/*
 * stats() RETURNS TABLE (scope text, buffered bigint, published bigint,
 *	 duplicates bigint, failed bigint, unconfirmed bigint, dropped bigint,
 *	 commits bigint, commit_publish_p50_ms float8, commit_publish_p99_ms float8,
 *	 last_error text, last_error_at timestamptz, rejected bigint,
 *	 publisher_batches bigint, publisher_events bigint, atomic_batches bigint,
 *	 atomic_splits bigint, order_lapses_held bigint, order_lapses_room bigint,
 *	 order_lapses_wide bigint)
 *
 * Version 1.1 declares the first 12 columns, 1.2 the first 15 (a
 * development build of 1.2 had rejected only: 13), 1.3 all 20 (a
 * development build of 1.3 had 17): the tuple is built for the columns the
 * installed version declares.
 */
Datum
she_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[20];
	bool		nulls[20];
	uint64		counts[HIST_BUCKETS];
	uint64		total = 0;
	char		last_error[256];
	TimestampTz last_time;
	int			i;
	double		p;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (tupdesc->natts != 12 && tupdesc->natts != 13 && tupdesc->natts != 15 &&
		tupdesc->natts != 17 && tupdesc->natts != 20)
		elog(ERROR, "stats() must return 12, 13, 15, 17 or 20 columns, not %d", tupdesc->natts);

	for (i = 0; i < HIST_BUCKETS; i++)
	{
		counts[i] = pg_atomic_read_u64(&stats->hist[i]);
		total += counts[i];
	}
	SpinLockAcquire(&stats->mutex);
	strlcpy(last_error, stats->last_error, sizeof(last_error));
	last_time = stats->last_error_time;
	SpinLockRelease(&stats->mutex);

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(she_preloaded ? "cluster" : "backend");
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->buffered));
	values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->published));
	values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->duplicates));
	values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->failed));
	values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->unconfirmed));
	values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->dropped));
	values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->commits));
	p = hist_quantile(counts, total, 0.50);
	values[8] = Float8GetDatum(p / 1000.0);
	nulls[8] = (p < 0);
	p = hist_quantile(counts, total, 0.99);
	values[9] = Float8GetDatum(p / 1000.0);
	nulls[9] = (p < 0);
	values[10] = CStringGetTextDatum(last_error);
	nulls[10] = (last_error[0] == '\0');
	values[11] = TimestampTzGetDatum(last_time);
	nulls[11] = (last_time == 0);
	values[12] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->rejected));
	values[13] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->publisher_batches));
	values[14] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->publisher_events));
	values[15] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->atomic_batches));
	values[16] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->atomic_splits));
	for (i = 0; i < SHE_ORDER_LAPSE_KINDS; i++)
		values[17 + i] = Int64GetDatum((int64) pg_atomic_read_u64(&stats->order_lapses[i]));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * stats_reset() RETURNS void
 *
 * Zero the counters and the histogram (cluster-wide when preloaded).
 * Concurrent increments may land before or after the reset.
 */
Datum
she_stats_reset(PG_FUNCTION_ARGS)
{
	clear_stats(stats, false);
	PG_RETURN_VOID();
}
