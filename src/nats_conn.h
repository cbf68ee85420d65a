/*-------------------------------------------------------------------------
 *
 * nats_conn.h
 *	  One NATS connection and its JetStream context, built from the
 *	  connection settings (URL, authentication, TLS, connect timeout).
 *
 * Only background processes (the publisher, the durable worker) use this.
 *
 * IDENTIFICATION
 *	  src/nats_conn.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_NATS_CONN_H
#define SHE_NATS_CONN_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include <nats/nats.h>

struct SheAckBatch;

/*
 * A connection.  nc, js, key, max_payload and no_reconnect_buffer belong
 * to the owning process's main thread.  mu guards what nats threads write:
 * current and late_acks (the ack handler, nats_publish.c), denied and
 * denied_subject (the error handler), and up, payload_stale and last_error
 * (the connection callbacks), so the state is known without a nats call,
 * which can block while nats.c is reconnecting.
 */
typedef struct SheConn
{
	natsConnection *nc;
	jsCtx	   *js;
	char	   *key;			/* malloc'd: the settings nc was made with */
	int			max_payload;	/* the server's, once connected; else 0 */
	bool		no_reconnect_buffer;	/* set before the first ensure: a
										 * publish while reconnecting fails at
										 * once instead of waiting in nats.c's
										 * buffer (the durable worker) */
	pthread_mutex_t mu;
	struct SheAckBatch *current;	/* under mu: the batch acks belong to */
	uint64_t	late_acks;		/* under mu: acks of batches given up on */
	uint64_t	denied;			/* under mu: publish permission violations */
	char		denied_subject[256];	/* under mu: the last one's subject */
	natsConnection *cb_nc;		/* under mu: callbacks of other connections
								 * are ignored; -1 while connecting */
	bool		up;				/* under mu: connected, per nats.c's callbacks */
	bool		payload_stale;	/* under mu: (re)connected since max_payload */
	char		last_error[256];	/* under mu: why it is not up */
	bool		ever_up;		/* under mu: connected since it was made */
	uint64_t	connects;		/* under mu: times nats.c (re)connected it */
	char		connect_error[256];	/* why the first attempt failed */
} SheConn;

extern void she_conn_init(SheConn *c);
extern bool she_conn_ensure(SheConn *c, char *err, size_t errlen);
extern bool she_conn_is_connected(SheConn *c, char *err, size_t errlen);
extern int	she_conn_state_hint(SheConn *c);
extern uint64_t she_conn_connects(SheConn *c);
extern bool she_conn_settings_changed(SheConn *c);
extern void she_conn_close(SheConn *c);
extern void she_conn_set_name(const char *name);

/* Every nats call is made with all signals blocked: threads it starts inherit that. */
extern void she_nats_block_signals(sigset_t *saved);
extern void she_nats_restore_signals(const sigset_t *saved);

/* Microseconds on the monotonic clock (system-wide: comparable across processes). */
extern uint64_t she_now_usec(void);

/* Milliseconds left until deadline, read from one clock reading; never wraps. */
extern int64_t she_ms_left(uint64_t deadline);

#endif							/* SHE_NATS_CONN_H */
