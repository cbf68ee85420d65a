/*-------------------------------------------------------------------------
 *
 * publisher.c
 *	  The publisher: a static background worker without a database
 *	  connection that owns the cluster's one NATS connection for immediate
 *	  mode.  It takes the batches committing backends put in the queue
 *	  (queue.c), publishes the events of concurrent commits together (one
 *	  write, one wait for acknowledgements), and reports each event's
 *	  outcome to the backend waiting for it.
 *
 * Loop: reload settings on SIGHUP (a change of the connection settings
 * replaces the connection); make a connection only at start, after such a
 * reload, or (when the last attempt failed outright) once per
 * retry_interval: nats.c keeps reconnecting an existing connection in the
 * background, so while NATS is down batches are refused at once, never
 * paying a connect timeout, and while an attempt runs after a failure the
 * backends refuse their batches themselves (queue.c); answer a ping()
 * request; take what is queued; publish; report; sleep on the latch that
 * committing backends set.
 *
 * Shutdown (SIGTERM): the publisher stops accepting batches (new commits
 * are refused at once, and the queue is closed to a commit already past
 * that check), publishes what the queue holds until it is empty, for at most
 * publish_timeout (a hung server: refused at once after that), reports
 * every outcome, then exits.
 *
 * A group the server answered not at all within a real budget (a hung
 * server) starts a back-off of retry_interval during which batches are
 * refused at once, so later commits do not each pay publish_timeout
 * again.  Unconfirmed events of a group that was partly answered, or
 * whose budget was short, start none.
 *
 * Crash: killed by a signal, the postmaster reinitialises the cluster
 * (every backend, the queue, the counters).  Exiting with an ERROR, it
 * first reports every event it took and had not reported: unconfirmed if
 * it was handed to nats.c (it may have been sent), else lost (held in a
 * linger, or in a later group of the take), so each is counted once and
 * as what it was; it is restarted after one second; the queue survives,
 * backends waiting on it give up at their deadline (counting what it had
 * not taken as lost), and the new publisher skips those.
 *
 * IDENTIFICATION
 *	  src/publisher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/bgworker_internals.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "compat.h"
#include "nats_publish.h"
#include "ping_request.h"
#include "publisher.h"
#include "queue.h"

#define TAKE_MAX_EVENTS		10000
#define TAKE_MAX_BYTES		(8 * 1024 * 1024)
#define IDLE_POLL_MS		1000

/*
 * Linger: a small take (fewer than LINGER_EVENTS events) is held back for
 * at most batch_linger while more commits arrive, and published with them in
 * one write.  Each write costs this process and nats-server a fixed number
 * of wake-ups and syscalls, so on a busy server bigger writes leave more
 * CPU to the committing sessions.  A take that a session waits for
 * (wait_for_ack = on) is held only while other transactions are between
 * pre-commit and hand-over (their commit records being flushed, typically
 * in the same group commit), and the hand-over that ends the last of them
 * wakes the publisher, once (see she_queue_gather_begin); a take
 * nobody waits for is held the whole moment (only its consumers see the
 * delay).
 */
#define LINGER_EVENTS		64

PGDLLEXPORT void she_publisher_main(Datum arg);

static SheConn conn;
static int	last_state = -1;		/* -1 unknown, 0 down, 1 up: for the log */
static uint64 backoff_until = 0;
static char backoff_reason[256];
static uint64 backoff_connects = 0;	/* she_conn_connects() when it began */
static uint64 next_attempt = 0;	/* after a failed attempt: not before */
static bool drain_expired = false;	/* exiting, and publish_timeout passed */

/* What was taken and not yet reported: reported unconfirmed at exit. */
static SheTaken *taken_meta = NULL;
static SheMsgOutcome *taken_out = NULL;	/* reported: by publish_group */
static int	taken_n = 0;
static int	reported_n = 0;
static int	sent_n = 0;			/* taken events handed to nats.c so far */

/* Atomic batches: does the stream allow them, as last asked. */
#define ATOMIC_RECHECK_USEC	(60 * USECS_PER_SEC)
/*
 * While the stream does not answer (a hung server, no right to the
 * JetStream API), ask again at most once a second: each question waits.
 */
#define ATOMIC_UNKNOWN_RECHECK_USEC	USECS_PER_SEC
static int	atomic_state = -1;	/* 1 yes, 0 no, -1 not known, -2 no such
								 * stream when last asked */
static int	atomic_logged = -1; /* the state last LOGged */
static uint64 atomic_checked_at = 0;
static char atomic_stream[256];
static uint64 next_refresh = 0;	/* she_now_usec() time of the next full refresh */

/* Register the publisher (from _PG_init, when preloaded). */
void
she_publisher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "state_hub_events");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "she_publisher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "state_hub_events publisher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "state_hub_events publisher");
	RegisterBackgroundWorker(&bgw);

	/* RegisterBackgroundWorker only LOGs when max_worker_processes is full */
	she_publisher_registered = she_bgworker_registered("state_hub_events",
														"she_publisher_main");
	if (!she_publisher_registered)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("state_hub_events: cannot register the publisher process"),
				 errdetail("max_worker_processes (%d) leaves no background worker slot for it.",
						   max_worker_processes),
				 errhint("Raise max_worker_processes.  Until then every event of immediate mode is lost and counted failed.")));
}

/*
 * before_shmem_exit: events taken and not reported (an ERROR while
 * publishing or lingering) get an outcome, so their backends and stats()
 * count each once: unconfirmed if handed to nats.c (below sent_n), else
 * lost, never sent; then backends stop handing batches over.
 */
static void
publisher_exit(int code, Datum arg)
{
	SheMsgOutcome o;
	SheBatchOutcome sum;

	memset(&o, 0, sizeof(o));
	memset(&sum, 0, sizeof(sum));
	sum.ntexts = 2;
	strlcpy(sum.texts[0], "the publisher process exited before their outcome was known",
			sizeof(sum.texts[0]));
	strlcpy(sum.texts[1], "the publisher process exited before sending them",
			sizeof(sum.texts[1]));
	she_publish_abandon(&conn); /* no ack handler reports from now on */
	for (; reported_n < taken_n; reported_n++)
		if (!taken_out[reported_n].reported)
		{
			bool		sent = (reported_n < sent_n);

			o.state = sent ? SHE_MSG_UNCONFIRMED : SHE_MSG_NOT_SENT;
			o.text = sent ? 0 : 1;
			strlcpy(sum.reason, sum.texts[o.text], sizeof(sum.reason));
			she_queue_report(&taken_meta[reported_n], &o, &sum);
		}
	taken_n = reported_n = 0;
	she_queue_detach_publisher(code, arg);
	she_conn_close(&conn);
}

/* A take of n events starts: none of them is reported yet. */
static void
begin_take(SheMsgOutcome *out, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		out[i].reported = false;
	taken_n = n;
	reported_n = 0;
	sent_n = 0;
}

/* Does a backend wait for any of these n events' outcomes? */
static bool
anyone_waits(const SheTaken *meta, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (meta[i].waiter >= 0)
			return true;
	return false;
}

/*
 * After a take of n events: while the take is small and more commits are
 * on their way (see LINGER_EVENTS), wait for them and take them too.
 * Returns the new count; what is taken here joins the take (begin_take).
 */
static int
linger(SheEvent *evs, SheTaken *meta, SheMsgOutcome *out, int n, MemoryContext cxt)
{
	uint64		until = she_now_usec() + (uint64) she_batch_linger_ms * 1000;
	int			i;

	while (n < LINGER_EVENTS && !ShutdownRequestPending && conn.js != NULL &&
		   she_now_usec() < until)
	{
		bool		waits = anyone_waits(meta, n);
		int			m;
		int			bytes = 0;

		if (!waits)
		{
			/* a commit whose session waits ends the linger (it wakes us) */
			if (she_queue_linger_begin())
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 Max(she_ms_left(until), 1), PG_WAIT_EXTENSION);
			she_queue_linger_end();
		}
		else
		{
			int			g = she_queue_gather_begin();

			if (g < 0)
				break;			/* no commit on its way */
			/* the hand-over that ends the last commit counted sets the latch */
			if (g > 0)
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 Max(she_ms_left(until), 1), PG_WAIT_EXTENSION);
			she_queue_gather_end();
		}
		ResetLatch(MyLatch);
		for (i = 0; i < n; i++)
			bytes += evs[i].envelope_len + strlen(evs[i].subject);
		/* never wait here for another transaction's order ticket */
		m = she_queue_take(evs + n, meta + n, TAKE_MAX_EVENTS - n,
						   Max(TAKE_MAX_BYTES - bytes, 1), false, cxt);
		for (i = n; i < n + m; i++)
			out[i].reported = false;
		n += m;
		taken_n = n;
		if (m == 0 && (!waits || !she_queue_is_empty()))
			break;				/* nothing came, or what came is held back */
	}
	if (she_test_publisher_error)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("state_hub_events publisher: test_publisher_error is on")));
	return n;
}

/*
 * Keep a connection for the current settings and tell backends (max
 * payload, connected or why not).
 */
static void
refresh_connection(void)
{
	static char last_err[256] = "";
	char		err[256] = "";
	bool		up = false;

	if (she_nats_url[0] == '\0')
	{
		she_conn_close(&conn);
		snprintf(err, sizeof(err), "state_hub_events.nats_url is empty");
	}
	else if (conn.nc == NULL && she_now_usec() < next_attempt)
		strlcpy(err, last_err, sizeof(err));	/* the last attempt failed */
	else if (conn.nc == NULL)
	{
		char		masked[512];
		char		why[256];

		/* while it runs after a failure, backends refuse with this */
		she_mask_url(she_nats_url, masked, sizeof(masked));
		snprintf(why, sizeof(why), "not connected to NATS at %s (connecting; %s)", masked,
				 last_err[0] ? last_err : "the previous connection was closed");
		she_queue_set_connecting(true, last_err[0] ? why : NULL);
		if (last_state == -1)	/* at start and after a reload, not every retry */
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("state_hub_events publisher: connecting to NATS at %s", masked)));
		if (she_conn_ensure(&conn, err, sizeof(err)))
			up = she_conn_is_connected(&conn, err, sizeof(err));
		else
			next_attempt = she_now_usec() + (uint64) Max(she_retry_interval_ms, 1000) * 1000;
	}
	else
		up = she_conn_is_connected(&conn, err, sizeof(err));
	strlcpy(last_err, up ? "" : err, sizeof(last_err));
	she_queue_set_connection(up, up ? conn.max_payload : 0, err);
	she_queue_set_connecting(false, NULL);
	if ((int) up != last_state)
	{
		char		masked[512];

		she_mask_url(she_nats_url, masked, sizeof(masked));
		if (up)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("state_hub_events publisher: connected to NATS at %s", masked)));
		else
			ereport(LOG,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("state_hub_events publisher: not connected to NATS: %s", err)));
		last_state = up;
	}
}

/*
 * Is a full refresh_connection() due?  Not in every loop: it builds the
 * settings key (malloc) and asks nats.c for the status.  Due when there is
 * no connection, after a reload, when nats.c's callbacks changed the state
 * (read under SheConn.mu only, no nats call), and once per IDLE_POLL_MS.
 */
static bool
refresh_due(bool reloaded)
{
	uint64		now = she_now_usec();

	if (reloaded || conn.nc == NULL || now >= next_refresh ||
		she_conn_state_hint(&conn) != last_state)
	{
		next_refresh = now + (uint64) IDLE_POLL_MS * 1000;
		return true;
	}
	return false;
}

/* Refuse a group at once: every event not sent, with reason. */
static void
refuse_group(SheMsgOutcome *out, int n, SheBatchOutcome *sum, const char *reason)
{
	int			i;

	memset(sum, 0, sizeof(*sum));
	strlcpy(sum->texts[0], reason, sizeof(sum->texts[0]));
	sum->ntexts = 1;
	strlcpy(sum->reason, reason, sizeof(sum->reason));
	sum->not_sent = n;
	for (i = 0; i < n; i++)
	{
		memset(&out[i], 0, sizeof(out[i]));
		out[i].state = SHE_MSG_NOT_SENT;
		out[i].text = 0;
	}
}

/*
 * How long the publisher waits for a group's acknowledgements (*last): the
 * latest deadline of its events, so one session's short publish_timeout
 * never shortens another's (a backend that stops waiting earlier counts its
 * own events; the publisher's later outcome is not counted again).  Events
 * nobody waits for got a fresh budget in she_queue_take.  And when the
 * group, if still waiting, starts reporting each ack as it arrives
 * (*report_by): 100 ms before its earliest deadline, since a session waits
 * past its own deadline only a short grace (Min(connect_timeout, 1 s):
 * she_queue_wait), which a small connect_timeout makes tiny.  Never 0 (that
 * means "at once from the start", the nats thread's wake-ups this defers).
 */
static void
group_deadlines(const SheTaken *meta, int n, uint64 *last, uint64 *report_by)
{
	uint64		lo = meta[0].deadline;
	uint64		hi = meta[0].deadline;
	int			i;

	for (i = 1; i < n; i++)
	{
		lo = Min(lo, meta[i].deadline);
		hi = Max(hi, meta[i].deadline);
	}
	*last = hi;
	*report_by = lo > 100000 + 1 ? lo - 100000 : 1;
}

/*
 * The most events of one atomic batch for stream, or 0 to publish one by
 * one: state_hub_events.atomic_batches is off, or the stream does not
 * allow atomic publish (an older nats-server, or allow_atomic not set),
 * which is said once (WARNING), as is its return.  Asked again after a
 * minute, a reload, or a refusal in an atomic group.
 */
static int
atomic_max(const char *stream)
{
	uint64		now = she_now_usec();
	char		why[256] = "";

	if (!she_atomic_batches)
	{
		atomic_state = atomic_logged = -1;
		return 0;
	}
	if (strcmp(stream, atomic_stream) != 0 ||
		(atomic_state < 0 && now - atomic_checked_at > ATOMIC_UNKNOWN_RECHECK_USEC) ||
		now - atomic_checked_at > ATOMIC_RECHECK_USEC)
	{
		int			st = she_atomic_allowed(&conn, stream,
											Min(she_publish_timeout_ms, 2000), why, sizeof(why));

		strlcpy(atomic_stream, stream, sizeof(atomic_stream));
		atomic_checked_at = now;
		atomic_state = st;
		if (st == 0 && atomic_logged != 0)
			ereport(WARNING,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("state_hub_events publisher: state_hub_events.atomic_batches is on, but events are published one by one"),
					 errdetail("%s", why),
					 errhint("Use nats-server 2.12 or later and set allow_atomic on the stream, or turn atomic_batches off.")));
		else if (st == 1 && atomic_logged != 1)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("state_hub_events publisher: publishing each transaction's events to stream \"%s\" as atomic batches of at most %d events",
							stream, she_atomic_batch_max)));
		if (st >= 0)
			atomic_logged = st;
	}
	return atomic_state == 1 ? she_atomic_batch_max : 0;
}

/*
 * Count and LOG what the atomic batches of a group did: transactions split
 * over several batches, and those whose refused batch was published again
 * one event at a time (in stats() atomic_splits too, each transaction
 * once).
 */
static void
report_atomic(const SheBatchOutcome *sum, int max_atomic)
{
	she_stats_add_atomic(sum->atomic_batches, sum->atomic_splits + sum->atomic_retried_whole);
	if (sum->atomic_splits > 0)
		ereport(LOG,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg_plural("state_hub_events publisher: %d transaction was published as several atomic batches",
							   "state_hub_events publisher: %d transactions were published as several atomic batches",
							   sum->atomic_splits, sum->atomic_splits),
				 errdetail("A batch holds at most state_hub_events.atomic_batch_max (%d) events, and the publisher takes at most %d events or %d MB from the queue at a time; consumers see each part whole, not the transaction.",
						   max_atomic, TAKE_MAX_EVENTS, TAKE_MAX_BYTES / (1024 * 1024))));
	if (sum->atomic_retried > 0)
		ereport(LOG,
				(errcode(ERRCODE_WARNING),
				 errmsg_plural("state_hub_events publisher: JetStream refused the atomic batch of %d transaction (%s); its events were published again one event at a time",
							   "state_hub_events publisher: JetStream refused the atomic batches of %d transactions (the first: %s); their events were published again one event at a time",
							   sum->atomic_retried, sum->atomic_retried, sum->atomic_refusal),
				 errdetail("JetStream does not say which event of a batch it objects to; published alone, each event gets its own outcome, and only those it refuses are lost.")));
	if (sum->refused > 0)
	{
		atomic_state = -1;		/* ask the stream again: was it changed? */
		atomic_checked_at = 0;
	}
}

/*
 * SheOutcomeFn: report an acknowledged outcome to its backend from the nats
 * thread that received it (meta: the group's SheTaken array).  Only for a
 * group still waiting for acks shortly before its earliest deadline (see publish_group).
 */
static void
report_acked(void *arg, int i, const SheMsgOutcome *o, const SheBatchOutcome *sum)
{
	const SheTaken *meta = (const SheTaken *) arg;

	if (o->state != SHE_MSG_STORED && o->state != SHE_MSG_DUPLICATE)
		she_stats_set_last_error(she_outcome_text(sum, o));
	she_queue_report(&meta[i], o, sum);
}

/*
 * Publish one group (same stream and create flag) and report it.  Every
 * outcome is reported here, by this thread, once the group's last
 * acknowledgement is in, unless acks are still awaited shortly before
 * the group's earliest deadline (a session's own limit: a backend that gives up
 * counts its events as unconfirmed): from then on each is reported from
 * the nats thread as it arrives (report_acked).  Reporting every ack from
 * the nats thread that received it, with a signal to its backend per ack,
 * that thread was preempted by the backend it woke at nearly every ack, and
 * nats.c's message collector thread woken behind it; at 32 clients with
 * wait_for_ack = on that cost ~15-20 µs of this process's CPU per
 * transaction (bench/analysis.md, "Session 5").  The first backends of a
 * group wait for its last ack: microseconds.
 */
static void
publish_group(SheEvent *evs, SheTaken *meta, SheMsgOutcome *out, int n)
{
	SheBatchOutcome sum;
	uint64		now = she_now_usec();
	char		why[256];
	int			i;

	/* nats.c connected again since: the server answers, the back-off ends */
	if (backoff_until != 0 && she_conn_connects(&conn) != backoff_connects)
		backoff_until = 0;
	if (drain_expired)
		refuse_group(out, n, &sum, "the publisher process stopped before publishing them");
	else if (now < backoff_until)
	{
		snprintf(why, sizeof(why), "NATS was unavailable (%s); the next attempt is in %d ms",
				 backoff_reason, (int) ((backoff_until - now) / 1000));
		refuse_group(out, n, &sum, why);
	}
	else if (conn.js == NULL)
	{
		/* she_publish_events checks that the connection is up */
		strlcpy(why, she_nats_url[0] == '\0' ? "state_hub_events.nats_url is empty" :
				"no connection to NATS", sizeof(why));
		refuse_group(out, n, &sum, why);
	}
	else
	{
		uint64		deadline;
		uint64		report_by;
		int			max_atomic = atomic_max(meta[0].stream);
		uint64		connects = she_conn_connects(&conn);

		sent_n = reported_n + n;	/* this group's start is reported_n */
		she_publish_set_stream_spec(&meta[0].spec);
		group_deadlines(meta, n, &deadline, &report_by);
		she_publish_set_report_by(report_by);
		/* nobody waits: let nats.c's flusher write it, no PING/PONG */
		she_publish_set_flush(anyone_waits(meta, n));
		she_publish_events_cb(&conn, meta[0].stream, meta[0].create_stream, evs, n,
							  deadline, max_atomic, out, &sum, report_acked, meta);
		she_publish_set_report_by(0);
		she_publish_set_flush(true);
		she_publish_set_stream_spec(NULL);
		if (max_atomic > 0)
			report_atomic(&sum, max_atomic);
		else if (atomic_state == -2 && sum.stored > 0)
			atomic_checked_at = 0;	/* this group created the stream: ask
									 * before the next one, not a second later */

		/*
		 * Back off only when the server answered nothing within a real
		 * budget (at least half of publish_timeout, capped at 500 ms: a
		 * hung server), never because a short deadline left a few events
		 * unconfirmed while NATS is healthy.
		 */
		if (sum.unconfirmed + sum.not_sent == n && sum.unconfirmed > 0 &&
			deadline >= now + (uint64) Min(she_publish_timeout_ms, 1000) * 500)
		{
			backoff_until = she_now_usec() + (uint64) she_retry_interval_ms * 1000;
			backoff_connects = connects;	/* a reconnect meanwhile ends it */
			strlcpy(backoff_reason, sum.reason, sizeof(backoff_reason));
		}
	}
	/* stats() first: a backend woken below may read it at once */
	if (sum.stored < n)
		she_stats_set_last_error(sum.reason);
	she_stats_record_publisher_batch(n);
	for (i = 0; i < n; i++)
	{
		if (!out[i].reported)
			she_queue_report(&meta[i], &out[i], &sum);
		reported_n++;
	}
}

/* Publish what was taken, in order, one group per stream run. */
static void
publish_taken(SheEvent *evs, SheTaken *meta, SheMsgOutcome *out, int n)
{
	int			start = 0;

	while (start < n)
	{
		int			end = start + 1;

		while (end < n && meta[end].create_stream == meta[start].create_stream &&
			   strcmp(meta[end].stream, meta[start].stream) == 0)
			end++;
		publish_group(evs + start, meta + start, out + start, end - start);
		start = end;
	}
}

/*
 * SIGTERM: new commits are refused at once (the publisher is detached),
 * and the queue is closed, so a commit that had already passed that check
 * counts what it could not append lost instead of leaving it behind the
 * last take; what the queue holds is published, for at most
 * publish_timeout, then refused; every outcome is reported.  Then exit.
 * A take may return nothing while records remain (their backends gave
 * up): the drain ends only when the queue is empty.
 */
static void
drain_and_exit(SheEvent *evs, SheTaken *meta, SheMsgOutcome *out, MemoryContext cxt)
{
	uint64		until = she_publish_stop_deadline();	/* from the SIGTERM */
	int			n;
	int			total = 0;

	she_queue_detach_publisher(0, (Datum) 0);
	she_queue_close();
	pgstat_report_activity(STATE_RUNNING, "publishing the queue before exiting");
	while (!she_queue_is_empty())
	{
		MemoryContextReset(cxt);
		n = she_queue_take(evs, meta, TAKE_MAX_EVENTS, TAKE_MAX_BYTES, true, cxt);
		if (n == 0)
			continue;
		begin_take(out, n);
		drain_expired = (she_now_usec() >= until);
		publish_taken(evs, meta, out, n);
		taken_n = reported_n = 0;
		total += n;
	}
	if (total > 0)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("state_hub_events publisher: reported the outcome of %d queued events before exiting",
						total)));
	/* 1, as after die(): a publisher terminated outside shutdown is restarted */
	proc_exit(1);
}

/*
 * Entry point.  No database: settings come from the configuration files.
 */
void
she_publisher_main(Datum arg)
{
	MemoryContext cxt;
	SheEvent   *evs;
	SheTaken   *meta;
	SheMsgOutcome *out;
	char		name[128];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	snprintf(name, sizeof(name), "state_hub_events publisher pid=%d", MyProcPid);
	she_conn_set_name(name);
	she_conn_init(&conn);
	she_queue_attach_publisher();
	before_shmem_exit(publisher_exit, (Datum) 0);
	taken_meta = meta = MemoryContextAlloc(TopMemoryContext, TAKE_MAX_EVENTS * sizeof(SheTaken));

	cxt = AllocSetContextCreate(TopMemoryContext, "state_hub_events publisher",
								ALLOCSET_DEFAULT_SIZES);
	evs = MemoryContextAlloc(TopMemoryContext, TAKE_MAX_EVENTS * sizeof(SheEvent));
	taken_out = out = MemoryContextAlloc(TopMemoryContext, TAKE_MAX_EVENTS * sizeof(SheMsgOutcome));

	for (;;)
	{
		int			n;
		bool		reloaded = false;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			drain_and_exit(evs, meta, out, cxt);
		if (ConfigReloadPending)
		{
			reloaded = true;
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (she_conn_settings_changed(&conn))
			{
				she_conn_close(&conn);
				backoff_until = 0;
			}
			atomic_state = -1;	/* atomic_batches or the stream may have changed */
			atomic_checked_at = 0;
			next_attempt = 0;
			last_state = -1;	/* log the state after every reload */
		}
		ResetLatch(MyLatch);
		if (refresh_due(reloaded))
			refresh_connection();

		/* whatever a ping answer or a take allocates lives until the next turn */
		MemoryContextReset(cxt);
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			she_ping_answer(&conn);
			MemoryContextSwitchTo(old);
		}
		n = she_queue_take(evs, meta, TAKE_MAX_EVENTS, TAKE_MAX_BYTES, true, cxt);
		if (n > 0)
		{
			begin_take(out, n);
			n = linger(evs, meta, out, n, cxt);
			pgstat_report_activity(STATE_RUNNING, "publishing");
			publish_taken(evs, meta, out, n);
			taken_n = reported_n = 0;
			pgstat_report_activity(STATE_IDLE, NULL);
			continue;			/* take again before sleeping */
		}
		if (!she_queue_publisher_idle())
			continue;			/* records arrived after the take */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 IDLE_POLL_MS, PG_WAIT_EXTENSION);
		she_queue_publisher_busy();
	}
}
