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
 * replaces the connection); make sure a connection exists (nats.c keeps
 * reconnecting in the background, so while NATS is down batches are
 * refused at once, never paying a connect timeout); answer a ping()
 * request; take what is queued; publish; report; sleep on the latch that
 * committing backends set.
 *
 * A group the server answered not at all within a real budget (a hung
 * server) starts a back-off of retry_interval during which batches are
 * refused at once, so later commits do not each pay publish_timeout
 * again.  Unconfirmed events of a group that was partly answered, or
 * whose budget was short, start none.
 *
 * Crash: killed by a signal, the postmaster reinitialises the cluster
 * (every backend, the queue, the counters).  Exiting with an ERROR, it is
 * restarted after one second; the queue survives, backends waiting on it
 * give up at their deadline (counting what it had not taken as lost and
 * what it had taken as unconfirmed), and the new publisher skips those.
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

PGDLLEXPORT void she_publisher_main(Datum arg);

static SheConn conn;
static int	last_state = -1;		/* -1 unknown, 0 down, 1 up: for the log */
static uint64 backoff_until = 0;
static char backoff_reason[256];
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

static void
publisher_exit(int code, Datum arg)
{
	she_queue_detach_publisher(code, arg);
	she_conn_close(&conn);
}

/*
 * Keep a connection for the current settings and tell backends (max
 * payload, connected or why not).
 */
static void
refresh_connection(void)
{
	char		err[256] = "";
	bool		up = false;

	if (she_nats_url[0] == '\0')
	{
		she_conn_close(&conn);
		snprintf(err, sizeof(err), "state_hub_events.nats_url is empty");
	}
	else if (she_conn_ensure(&conn, err, sizeof(err)))
		up = she_conn_is_connected(&conn, err, sizeof(err));
	she_queue_set_connection(up, up ? conn.max_payload : 0, err);
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
 * How long the publisher waits for a group's acknowledgements: the latest
 * deadline of its events, so one session's short publish_timeout never
 * shortens another's (a backend that stops waiting earlier counts its own
 * events; the publisher's later outcome is not counted again).  Events
 * nobody waits for got a fresh budget in she_queue_take.
 */
static uint64
group_deadline(const SheTaken *meta, int n)
{
	uint64		d = meta[0].deadline;
	int			i;

	for (i = 1; i < n; i++)
		d = Max(d, meta[i].deadline);
	return d;
}

/*
 * SheOutcomeFn: report an acknowledged outcome to its backend straight from
 * the nats thread that received it (meta: the group's SheTaken array), so
 * a waiting backend is woken without a hop through this process's main
 * thread.  A failure is noted in stats() first, as publish_group does.
 */
static void
report_acked(void *arg, int i, const SheMsgOutcome *o, const SheBatchOutcome *sum)
{
	const SheTaken *meta = (const SheTaken *) arg;

	if (o->state != SHE_MSG_STORED && o->state != SHE_MSG_DUPLICATE)
		she_stats_set_last_error(she_outcome_text(sum, o));
	she_queue_report(&meta[i], o, sum);
}

/* Publish one group (same stream and create flag) and report it. */
static void
publish_group(SheEvent *evs, SheTaken *meta, SheMsgOutcome *out, int n)
{
	SheBatchOutcome sum;
	uint64		now = she_now_usec();
	char		why[256];
	int			i;

	if (now < backoff_until)
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
		uint64		deadline = group_deadline(meta, n);

		she_publish_events_cb(&conn, meta[0].stream, meta[0].create_stream, evs, n,
							  deadline, out, &sum, report_acked, meta);

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
			strlcpy(backoff_reason, sum.reason, sizeof(backoff_reason));
		}
	}
	for (i = 0; i < n; i++)
		if (!out[i].reported)
			she_queue_report(&meta[i], &out[i], &sum);
	if (sum.stored < n)
		she_stats_set_last_error(sum.reason);
	she_stats_record_publisher_batch(n);
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
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	snprintf(name, sizeof(name), "state_hub_events publisher pid=%d", MyProcPid);
	she_conn_set_name(name);
	she_conn_init(&conn);
	she_queue_attach_publisher();
	before_shmem_exit(publisher_exit, (Datum) 0);

	cxt = AllocSetContextCreate(TopMemoryContext, "state_hub_events publisher",
								ALLOCSET_DEFAULT_SIZES);
	evs = MemoryContextAlloc(TopMemoryContext, TAKE_MAX_EVENTS * sizeof(SheEvent));
	meta = MemoryContextAlloc(TopMemoryContext, TAKE_MAX_EVENTS * sizeof(SheTaken));
	out = MemoryContextAlloc(TopMemoryContext, TAKE_MAX_EVENTS * sizeof(SheMsgOutcome));

	for (;;)
	{
		int			n;
		bool		reloaded = false;

		CHECK_FOR_INTERRUPTS();
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
		n = she_queue_take(evs, meta, TAKE_MAX_EVENTS, TAKE_MAX_BYTES, cxt);
		if (n > 0)
		{
			pgstat_report_activity(STATE_RUNNING, "publishing");
			publish_taken(evs, meta, out, n);
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
