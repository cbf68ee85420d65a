/*-------------------------------------------------------------------------
 *
 * ping_request.c
 *	  ping() answered from the publisher's live connection: a backend posts
 *	  a request in shared memory, the publisher answers between batches,
 *	  the backend waits on a condition variable with a deadline.
 *
 * Who touches what: every field of PingShared under its spinlock.
 * Backends increment requested and write ask; the publisher writes the
 * answer and answered (the request number it is for), then broadcasts cv.
 * An answer serves every request up to its number (it was computed after
 * they were made).  A cancelled ping leaves only a request number behind,
 * which the publisher answers for nobody.  The backend's wait is
 * ConditionVariableTimedSleep, which checks for interrupts: ping() can be
 * cancelled or terminated at once; no signal is blocked in the backend.
 *
 * IDENTIFICATION
 *	  src/ping_request.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "ping.h"
#include "ping_request.h"
#include "queue.h"

PG_FUNCTION_INFO_V1(she_ping_sql);

#define PING_JSON_MAX	8192

typedef struct PingShared
{
	slock_t		mutex;
	ConditionVariable cv;
	uint64		requested;
	uint64		answered;
	ShePingAsk	ask;			/* of the latest request */
	ShePingAsk	answered_ask;	/* what the answer below is about */
	bool		ok;
	bool		no_jetstream;
	char		err[512];
	char		json[PING_JSON_MAX];
} PingShared;

static PingShared *ping = NULL;

void
she_ping_request_shmem(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PingShared)));
}

void
she_ping_startup_shmem(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ping = ShmemInitStruct("state_hub_events ping", sizeof(PingShared), &found);
	if (!found)
	{
		memset(ping, 0, sizeof(PingShared));
		SpinLockInit(&ping->mutex);
		ConditionVariableInit(&ping->cv);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The publisher: answer the latest request, if any, on connection c.
 */
void
she_ping_answer(SheConn *c)
{
	ShePingAsk	ask;
	uint64		req;
	uint64		answered;
	StringInfoData json;
	char		err[512] = "";
	bool		no_js = false;
	bool		ok;

	SpinLockAcquire(&ping->mutex);
	req = ping->requested;
	ask = ping->ask;
	answered = ping->answered;
	SpinLockRelease(&ping->mutex);
	if (req == answered)
		return;

	initStringInfo(&json);
	if (she_nats_url[0] == '\0')
	{
		ok = false;
		strlcpy(err, "state_hub_events.nats_url is empty", sizeof(err));
	}
	else
		ok = she_ping_gather(c, &ask, &json, err, sizeof(err), &no_js);
	if (ok && json.len >= PING_JSON_MAX)
	{
		ok = false;
		strlcpy(err, "the answer is too long", sizeof(err));
	}
	SpinLockAcquire(&ping->mutex);
	ping->answered = req;
	ping->answered_ask = ask;
	ping->ok = ok;
	ping->no_jetstream = no_js;
	strlcpy(ping->err, err, sizeof(ping->err));
	if (ok)
		memcpy(ping->json, json.data, json.len + 1);
	SpinLockRelease(&ping->mutex);
	pfree(json.data);
	ConditionVariableBroadcast(&ping->cv);
}

/* This session's request. */
static void
fill_ask(ShePingAsk *ask)
{
	memset(ask, 0, sizeof(*ask));
	strlcpy(ask->stream, she_stream, sizeof(ask->stream));
	ask->create_stream = she_create_stream;
	ask->durable = (she_delivery == SHE_DELIVERY_DURABLE);
	ask->want_dup_window_s = ask->durable ?
		Max(she_duplicate_window_s, she_durable_dup_window_s) : she_duplicate_window_s;
}

/* Post a request with this session's settings; returns its number. */
static uint64
post_request(void)
{
	uint64		my;

	ShePingAsk	ask;

	fill_ask(&ask);
	SpinLockAcquire(&ping->mutex);
	my = ++ping->requested;
	ping->ask = ask;
	SpinLockRelease(&ping->mutex);
	she_queue_wake_publisher();
	return my;
}

/* Do two requests ask for the same facts? */
static bool
same_ask(const ShePingAsk *a, const ShePingAsk *b)
{
	return strcmp(a->stream, b->stream) == 0 &&
		a->create_stream == b->create_stream &&
		a->want_dup_window_s == b->want_dup_window_s &&
		a->durable == b->durable;
}

/*
 * Wait (cancellable) for an answer to request my, or to a later one that
 * asked for the same facts; copies it into the caller's buffers.  A later
 * request with other settings overwrites ours: then ask again.  Returns
 * false at the deadline.
 */
static bool
wait_answer(uint64 my, uint64 deadline, bool *ok, bool *no_js, char *err, char *json)
{
	bool		got = false;
	bool		repost;
	ShePingAsk	mine;

	fill_ask(&mine);
	ConditionVariablePrepareToSleep(&ping->cv);
	for (;;)
	{
		repost = false;
		SpinLockAcquire(&ping->mutex);
		if (ping->answered >= my && !same_ask(&ping->answered_ask, &mine))
			repost = true;
		else if (ping->answered >= my)
		{
			got = true;
			*ok = ping->ok;
			*no_js = ping->no_jetstream;
			strlcpy(err, ping->err, 512);
			if (ping->ok)
				strlcpy(json, ping->json, PING_JSON_MAX);
		}
		SpinLockRelease(&ping->mutex);
		if (repost)
			my = post_request();
		if (got || she_ms_left(deadline) <= 0)
			break;
		(void) ConditionVariableTimedSleep(&ping->cv, Max(she_ms_left(deadline), 1),
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return got;
}

/*
 * ping() RETURNS jsonb
 *
 * The publisher's live connection (server, TLS, identity, round trip) and
 * the stream's facts, or an ERROR saying why it cannot.
 */
Datum
she_ping_sql(PG_FUNCTION_ARGS)
{
	char		masked[512];
	char		err[512] = "";
	char	   *json = palloc(PING_JSON_MAX);
	bool		ok = false;
	bool		no_js = false;
	int			pid;
	bool		connected;
	uint64		deadline;

	she_check_preloaded();
	if (she_nats_url[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot ping NATS: state_hub_events.nats_url is empty"),
				 errdetail("With an empty nats_url, publishing is a no-op.")));
	she_mask_url(she_nats_url, masked, sizeof(masked));
	she_queue_publisher_state(&pid, &connected, err, sizeof(err));
	if (pid == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot ping NATS: the state_hub_events publisher process is not running")));

	deadline = she_now_usec() +
		(uint64) (she_connect_timeout_ms + 2 * she_publish_timeout_ms + 1000) * 1000;
	if (!wait_answer(post_request(), deadline, &ok, &no_js, err, json))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("cannot ping NATS: the publisher process did not answer in time")));
	if (!ok && no_js)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot use NATS at %s: %s", masked, err)));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("cannot reach NATS at %s: %s", masked, err)));
	PG_RETURN_JSONB_P(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json))));
}
