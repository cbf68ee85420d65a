/*-------------------------------------------------------------------------
 *
 * state_hub_events.h
 *	  Declarations shared by the files of the state_hub_events extension.
 *
 * The extension buffers lifecycle events during a transaction (buffer.c),
 * builds each event's EventEnvelope at the call (envelope.c, with the plain C
 * subject.c and envelope_json.c), and hands the batch to NATS JetStream once
 * the commit record is written (the engine: nats_conn.c for the connection,
 * nats_publish.c for per-message outcomes, ping.c for the admin check; each
 * with its own header; url_mask.c hides credentials in printed URLs).
 * Settings live in guc.c, counters in stats.c, the emit() trigger in emit.c.
 * Durable delivery: the outbox rows in outbox.c, the background processes
 * in launcher.c and worker.c, and the DDL that would lose a backlog in
 * ddl_guard.c.
 *
 * IDENTIFICATION
 *	  src/state_hub_events.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef STATE_HUB_EVENTS_H
#define STATE_HUB_EVENTS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/palloc.h"
#include "utils/jsonb.h"

/* The plain C parts (no PostgreSQL headers; test/fuzz builds them alone). */
#include "envelope_json.h"
#include "subject.h"
#include "url_mask.h"

/* Our own assertion macro: Debian's server is built without assertions. */
#ifdef SHE_ASSERT_CHECKING
#define SheAssert(cond) \
	do { if (!(cond)) elog(PANIC, "state_hub_events assertion failed: %s (%s:%d)", \
						   #cond, __FILE__, __LINE__); } while (0)
#else
#define SheAssert(cond) ((void) 0)
#endif

#define SHE_UUID_LEN		36	/* canonical text form, without NUL */
#define SHE_TIMESTAMP_LEN	27	/* YYYY-MM-DDTHH:MM:SS.ffffffZ */
#define SHE_MAX_SUBJECT_LEN 255
#define SHE_HEADER_ROOM		4096	/* headers and control line per message */

/* ---------- guc.c ---------- */

typedef enum SheDelivery
{
	SHE_DELIVERY_IMMEDIATE,
	SHE_DELIVERY_DURABLE
} SheDelivery;

extern char *she_nats_url;
extern char *she_stream;
extern int	she_stream_source;	/* GucSource of she_stream */
extern char *she_stream_subjects;

/* the longest stream_subjects: the publisher's queue records it in 16 bits */
#define SHE_MAX_STREAM_SUBJECTS_LEN 4096
extern char *she_publisher;
extern int	she_publish_timeout_ms;
extern bool she_wait_for_ack;
extern int	she_connect_timeout_ms;
extern int	she_delivery;
extern char *she_token;
extern char *she_user;
extern char *she_password;
extern char *she_creds_file;
extern char *she_nkey;
extern char *she_nkey_seed_file;
extern char *she_tls_ca_file;
extern char *she_tls_cert_file;
extern char *she_tls_key_file;
extern bool she_tls_handshake_first;
extern int	she_max_event_bytes;
extern int	she_max_transaction_kb;
extern bool she_create_stream;
extern int	she_stream_replicas;
extern int	she_stream_max_age_s;
extern int	she_duplicate_window_s;
extern int	she_max_events_per_xact;
extern int	she_retry_interval_ms;
extern int	she_batch_linger_ms;
extern bool she_atomic_batches;
extern int	she_atomic_batch_max;

extern char *she_database;
extern int	she_max_backlog_events;
extern int	she_backlog_overflow;
extern int	she_durable_dup_window_s;
extern int	she_worker_batch_kb;
extern int	she_test_commit_delay_ms;	/* tests only, hidden */
extern bool she_test_publisher_error;	/* tests only, hidden */

typedef enum SheOverflow
{
	SHE_OVERFLOW_ERROR,
	SHE_OVERFLOW_ACCEPT
} SheOverflow;

extern void she_define_settings(void);

/* ---------- envelope.c ---------- */

/*
 * The facts of an event's transaction that its message headers carry
 * (Statehub-Txn-Id, Statehub-Commit-Key, Statehub-Txn-Index,
 * Statehub-Txn-Count; see nats_publish.c).  xid 0: no headers.
 */
typedef struct SheTxn
{
	uint64		xid;			/* full transaction id (pg_current_xact_id()) */
	uint64		key;			/* commit LSN (kind 'L') or outbox sequence ('S') */
	char		key_kind;		/* 'L' or 'S' */
	int32		index;			/* 1-based position in the transaction */
	int32		count;			/* events of the committed transaction */
} SheTxn;

/* One buffered event: its envelope is complete but for the timestamp. */
typedef struct SheEvent
{
	char		id[SHE_UUID_LEN + 1];
	char	   *subject;		/* UTF-8 (see envelope.c) */
	char	   *envelope;		/* NUL-terminated JSON, UTF-8 */
	int			envelope_len;
	int			ts_offset;		/* where the timestamp placeholder sits */
	int			attrs_offset;	/* where the attributes object starts */
	int			attrs_len;
	int			nest_level;		/* subtransaction level that buffered it */
	SheTxn		txn;			/* set at pre-commit and commit */
} SheEvent;

extern const char *she_check_subject(const char *subject);
extern char *she_to_wire(const char *s, int len, const char *what);
extern char *she_from_wire(const char *s, int len);
extern char *she_outbox_text_to_wire(char *s);
extern void she_build_event(SheEvent *ev, const char *subject,
							Jsonb *attributes, int max_bytes,
							MemoryContext target);
extern void she_build_event_json(SheEvent *ev, const char *subject,
								 const char *attrs, int attrs_len,
								 int max_bytes, MemoryContext target);
extern void she_format_timestamp(TimestampTz ts, char *buf);

/* ---------- buffer.c ---------- */

extern void she_buffer_init(void);
extern void she_buffer_event(const char *subject, Jsonb *attributes, char *id_out);
extern void she_buffer_event_json(const char *subject, const char *attrs,
								  int attrs_len, char *id_out);
extern void she_check_can_publish(void);
extern void she_check_subject_covered(const char *subject);
extern void she_check_preloaded(void);

/* ---------- outbox.c, launcher.c, worker.c (durable delivery) ---------- */

#include "storage/latch.h"
#include "storage/spin.h"

typedef struct SheDurableShared
{
	slock_t		mutex;			/* protects everything below */
	Latch	   *launcher_latch;
	Latch	   *worker_latch;	/* set by committing backends */
	bool		worker_reads_anyway;	/* it reads the outbox again without
										 * being woken: commits need not set
										 * its latch (worker.c) */
	int			worker_pid;
	Oid			worker_dboid;	/* the database the worker serves */
	bool		worker_stop_requested;	/* by the launcher or ddl_guard.c */
	bool		worker_stopped_on_request;	/* its last exit was asked for */
	Oid			drop_pending_dboid; /* DROP/RENAME DATABASE under way */
	TransactionId drop_pending_xid; /* ... in this transaction */
	int64		backlog_events; /* as the worker last counted */
	TimestampTz last_published_at;
	TimestampTz last_error_at;
	char		last_error[256];
	char		worker_stream[256]; /* the stream the worker publishes to */
	int			worker_stream_source;	/* its GucSource */
} SheDurableShared;

extern SheDurableShared *she_durable;
extern bool she_in_worker;

extern void she_durable_request_shmem(void);
extern void she_durable_startup_shmem(void);
extern void she_durable_check(int nevents_now);
extern void she_outbox_write(SheEvent *events, int nevents);
extern void she_outbox_wake(void);
extern void she_outbox_announce_stream(const char *stream);
extern void she_launcher_register(void);
extern void she_launcher_wake(void);

/* ---------- ddl_guard.c ---------- */

extern void she_ddl_guard_init(void);

/* ---------- stats.c ---------- */

/*
 * Why the commit order of a batch may have lapsed (queue.c, Order): counted
 * in stats() (order_lapses_held, _room, _wide, in this order).
 */
typedef enum SheOrderLapse
{
	SHE_LAPSE_HELD,				/* a ticket held back more than 200 ms */
	SHE_LAPSE_ROOM,				/* a batch waited for room in the queue */
	SHE_LAPSE_WIDE,				/* an inversion wider than one take */
	SHE_ORDER_LAPSE_KINDS
} SheOrderLapse;

extern void she_stats_request_shmem(void);
extern void she_stats_startup_shmem(void);
extern void she_stats_init_local(void);
extern void she_stats_add_published(uint64 n, uint64 duplicates);
extern void she_stats_add_failed(uint64 n);
extern void she_stats_add_unconfirmed(uint64 n);
extern void she_stats_add_dropped(uint64 n);
extern void she_stats_add_rejected(uint64 n);
extern void she_stats_add_buffered(uint64 n);
extern void she_stats_record_commit_time(uint64 usec);
extern void she_stats_set_last_error(const char *msg);
extern void she_stats_atomic_published(uint64 n, uint64 duplicates);
extern void she_stats_atomic_failed(uint64 n);
extern void she_stats_record_publisher_batch(int nevents);
extern void she_stats_add_atomic(uint64 batches, uint64 splits);
extern void she_stats_add_order_lapse(int kind);

extern bool she_preloaded;

#endif							/* STATE_HUB_EVENTS_H */
