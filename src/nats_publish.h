/*-------------------------------------------------------------------------
 *
 * nats_publish.h
 *	  Publish a batch of events to a JetStream stream and learn each
 *	  message's outcome from its own acknowledgement, by a deadline.
 *
 * IDENTIFICATION
 *	  src/nats_publish.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_NATS_PUBLISH_H
#define SHE_NATS_PUBLISH_H

#include "nats_conn.h"
#include "state_hub_events.h"

/* What became of one message. */
typedef enum SheMsgState
{
	SHE_MSG_NOT_SENT = 0,		/* never handed to the connection: lost */
	SHE_MSG_PENDING,			/* internal: sent, not answered yet */
	SHE_MSG_NO_RESPONDERS,		/* internal: no stream captured it yet */
	SHE_MSG_STORED,				/* acknowledged */
	SHE_MSG_DUPLICATE,			/* acknowledged as a duplicate of its Nats-Msg-Id */
	SHE_MSG_REFUSED,			/* the server (or the client) said no: lost */
	SHE_MSG_UNCONFIRMED			/* sent, no answer by the deadline: may be stored */
} SheMsgState;

typedef struct SheMsgOutcome
{
	uint8		state;			/* SheMsgState */
	bool		permanent;		/* refused for good: too large, wrong stream,
								 * no permission (a retry cannot help) */
	int			err_code;		/* JetStream's error code, 0 if none */
	int			text;			/* index into SheBatchOutcome.texts, or -1 */
	bool		batch_refused;	/* refused as a member of an atomic batch: which
								 * member the server objected to is unknown */
	bool		reported;		/* handed to the SheOutcomeFn already */
} SheMsgOutcome;

#define SHE_OUTCOME_TEXTS	16		/* more distinct texts share the last one */

/* The sums over a batch, and the distinct error texts its messages met. */
typedef struct SheBatchOutcome
{
	int			stored;			/* including duplicates */
	int			duplicates;
	int			refused;
	int			refused_permanent;
	int			unconfirmed;
	int			not_sent;
	char		reason[256];	/* the first failure, for a WARNING or LOG */
	int			ntexts;
	char		texts[SHE_OUTCOME_TEXTS][200];
	int			atomic_batches; /* atomic batches the server committed */
	int			atomic_splits;	/* transactions not sent as one batch */
	int			atomic_retried; /* transactions whose refused atomic batch was
								 * published again one event at a time
								 * (she_publish_events_cb) */
	int			atomic_retried_whole;	/* those of them not counted in
										 * atomic_splits (planned as one batch) */
	char		atomic_refusal[200];	/* the first such refusal's text */
} SheBatchOutcome;

/* The headers every message carries about its transaction (see README). */
#define SHE_HDR_TXN_ID		"Statehub-Txn-Id"
#define SHE_HDR_COMMIT_KEY	"Statehub-Commit-Key"
#define SHE_HDR_TXN_INDEX	"Statehub-Txn-Index"
#define SHE_HDR_TXN_COUNT	"Statehub-Txn-Count"

/*
 * How to create a missing stream: the committing session's settings,
 * carried with its batch (immediate mode).
 */
typedef struct SheStreamSpec
{
	const char *subjects;		/* stream_subjects */
	int			replicas;		/* stream_replicas */
	int			max_age_s;		/* stream_max_age */
	int			duplicate_window_s; /* duplicate_window */
} SheStreamSpec;

/* The spec the next she_publish_events creates a stream with; NULL: the settings. */
extern void she_publish_set_stream_spec(const SheStreamSpec *spec);

/*
 * For she_publish_events_cb: 0 (the default) tells fn each acknowledged
 * outcome at once; a she_now_usec() time t makes fn hear of them only if
 * the batch still waits for some at t (then those settled so far, and
 * each later one as it arrives); a batch done before t is left for the
 * caller to report (reported false), which saves a nats thread a wake-up
 * of the caller's waiters per ack.
 */
extern void she_publish_set_report_by(uint64_t t);

/*
 * true (the default): a batch of more than one event is written at once
 * and the PONG of a PING waited for (at most FLUSH_WAIT_MS), for the
 * sessions that wait for its outcomes.  false: nats.c's flusher thread
 * writes it within about a millisecond, with no PING/PONG; for a batch
 * nobody waits for, where that round trip is only CPU on both sides
 * (about a quarter of the publisher's CPU per event at 32 clients).
 */
extern void she_publish_set_flush(bool flush);

/*
 * Publish events[0..n-1] to stream (with Nats-Msg-Id = id and
 * Nats-Expected-Stream = stream) and fill out[i] with each one's outcome by
 * deadline (she_now_usec() time).  Creates the stream on "no responders"
 * when create_stream.  Never ERRORs and never pallocs (safe after a commit
 * record).  Waits on MyLatch and resets it: callers re-check what else
 * their latch may have announced.
 */
extern void she_publish_events(SheConn *c, const char *stream, bool create_stream,
							   const SheEvent *events, int n, uint64_t deadline,
							   SheMsgOutcome *out, SheBatchOutcome *sum);

/*
 * The same, publishing each run of events of one transaction (same
 * SheTxn.xid, consecutive indexes) as JetStream atomic batches of at most
 * max_atomic events (0: none).  The caller checked the stream allows it
 * (she_atomic_allowed).  sum counts committed batches and split
 * transactions.
 */
extern void she_publish_events_atomic(SheConn *c, const char *stream, bool create_stream,
									  const SheEvent *events, int n, uint64_t deadline,
									  int max_atomic, SheMsgOutcome *out,
									  SheBatchOutcome *sum);

/*
 * Does stream allow atomic batch publish (nats-server 2.12 and later, the
 * stream's allow_atomic)?  1 yes, 0 no (why in err), -1 unknown (no answer;
 * why in err), -2 unknown (JetStream answered with an error: no such stream
 * yet; why in err).  One stream-info request, bounded by timeout_ms.
 */
extern int	she_atomic_allowed(SheConn *c, const char *stream, int timeout_ms,
							   char *err, size_t errlen);

/*
 * Called on a nats thread, under SheConn.mu, as soon as message i has its
 * final outcome from its acknowledgement (stored, duplicate, refused):
 * plain C, atomics, spinlocks and SetLatch only.  Outcomes settled on the
 * caller's thread (not sent, unconfirmed at the deadline) are not passed;
 * the caller finds them with reported still false.
 */
typedef void (*SheOutcomeFn) (void *arg, int i, const SheMsgOutcome *o,
							  const SheBatchOutcome *sum);

/*
 * she_publish_events_atomic, telling each acknowledged outcome to fn at
 * once (a batch of one message is published by a synchronous request, and
 * atomic batches settle their members together at the end: fn is not
 * called for those).  An atomic batch the server refused without naming
 * the member, for a reason one member may cause (too large, no
 * permission, already stored, the batch too large), is published again at
 * once, within the same deadline, one event at a time (the publisher:
 * only the events the server objects to are refused); those transactions
 * count in sum->atomic_retried.  The durable worker does that itself, on its
 * next attempt, to keep the outbox's order.
 */
extern void she_publish_events_cb(SheConn *c, const char *stream, bool create_stream,
								  const SheEvent *events, int n, uint64_t deadline,
								  int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
								  SheOutcomeFn fn, void *fn_arg);

/* Forget the batch in flight: no outcome of it is reported after this. */
extern void she_publish_abandon(SheConn *c);

/*
 * Once the process is asked to stop (SIGTERM): the she_now_usec() time it
 * publishes until (the publisher: publish_timeout from the request; the
 * durable worker: now); 0 while no stop is requested.  Every deadline
 * given to the functions above is cut to it.
 */
extern uint64_t she_publish_stop_deadline(void);

/* The error text of one message's outcome ("" if none). */
extern const char *she_outcome_text(const SheBatchOutcome *sum, const SheMsgOutcome *o);

/* The server refused a publish to subject (nats threads, under SheConn.mu). */
extern void she_publish_denied(SheConn *c, const char *subject, const char *text);

/* nats.c's ack handler for SheConn's JetStream context (nats threads). */
extern void she_ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa,
							jsPubAckErr *pae, void *closure);

#endif							/* SHE_NATS_PUBLISH_H */
