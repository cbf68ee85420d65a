/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  The shared-memory hand-off between committing backends and the
 *	  publisher process (immediate mode).
 *
 * IDENTIFICATION
 *	  src/queue.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_QUEUE_H
#define SHE_QUEUE_H

#include "nats_publish.h"
#include "state_hub_events.h"

/* What a backend learns about its committed batch. */
typedef struct SheHandOff
{
	int			nevents;
	int			stored;			/* including duplicates */
	int			duplicates;
	int			lost;			/* refused, not sent, or not queued: never stored */
	int			unconfirmed;	/* sent, no outcome in time: may be stored */
	char		reason[256];
} SheHandOff;

/* Where one event the publisher took from the queue came from. */
typedef struct SheTaken
{
	char	   *stream;
	bool		create_stream;
	int			waiter;			/* pgprocno, or -1 */
	uint64		ticket;
	uint64		deadline;		/* she_now_usec() time */
	SheStreamSpec spec;			/* the session's stream creation settings */
} SheTaken;

extern int	she_queue_size_kb;
extern bool she_publisher_registered;

extern void she_queue_request_shmem(void);
extern void she_queue_startup_shmem(void);
extern bool she_queue_ready(void);
extern int	she_queue_max_event_bytes(void);

/* backends */
extern int	she_queue_put(const SheEvent *events, int n, const char *stream,
						  bool create_stream, const SheStreamSpec *spec,
						  bool wait, int timeout_ms, SheHandOff *res);
extern void she_queue_wait(uint64 deadline, SheHandOff *res);
extern bool she_queue_wait_cancelled(void);
extern bool she_queue_wait_terminated(void);
extern void she_queue_order_begin(TransactionId xid);
extern void she_queue_order_end(void);

/* the publisher */
extern void she_queue_attach_publisher(void);
extern void she_queue_detach_publisher(int code, Datum arg);
extern void she_queue_close(void);
extern bool she_queue_is_empty(void);
extern int	she_queue_take(SheEvent *evs, SheTaken *meta, int max, int max_bytes,
						   bool may_hold, MemoryContext cxt);
extern void she_queue_report(const SheTaken *t, const SheMsgOutcome *o,
							 const SheBatchOutcome *sum);
extern void she_queue_wake_publisher(void);
extern bool she_queue_publisher_idle(void);
extern int	she_queue_commits_in_flight(void);
extern bool she_queue_linger_begin(void);
extern void she_queue_linger_end(void);
extern void she_queue_publisher_busy(void);
extern int	she_queue_gather_begin(void);
extern void she_queue_gather_end(void);

/* the server's max payload and the publisher's connection state */
extern void she_queue_set_connection(bool connected, int max_payload, const char *error);
extern void she_queue_set_connecting(bool connecting, const char *error);
extern int	she_queue_max_payload(void);
extern void she_queue_publisher_state(int *pid, bool *connected, char *error, size_t errlen);

#endif							/* SHE_QUEUE_H */
