/*-------------------------------------------------------------------------
 *
 * nats_client.c
 *	  The backend's NATS connection: connect, create the stream, publish a
 *	  committed batch and wait (bounded) for JetStream's acknowledgements;
 *	  ping(); shutdown at backend exit.
 *
 * Threads.  nats.c runs threads inside the backend (timer, flusher, reader,
 * subscription delivery, reconnect).  Every nats call here is made with all
 * signals blocked (NATS_CALL_BEGIN/END), so every thread nats creates starts
 * with all signals blocked and PostgreSQL's handlers only ever run on the
 * backend's own thread.  Callbacks that run on nats threads (ack_handler,
 * connected_cb) touch only: the stats counters (pg_atomic operations on
 * plain memory), async_errors and stream_ok (C11 atomics), and
 * async_error_text and the retry list (under async_mu).  They never call
 * palloc, elog or read settings.
 *
 * The stream.  Nothing is looked up before publishing: the first batch of a
 * connection waits for its acknowledgements, and if JetStream answers "no
 * responders" (no stream captures the subject) and create_stream is on, the
 * stream is created and those messages are published again within the same
 * time budget.  So publishing needs no stream-management rights, and the
 * common path costs no extra round trip.
 *
 * Failure handling.  The connection is created with retry-on-failed-connect:
 * when the server is down the first attempt fails fast and nats.c keeps
 * reconnecting in the background, so commits while it is down see status
 * RECONNECTING and refuse their events at once, without paying a timeout.
 * When a batch times out waiting for acknowledgements (a hung server), or a
 * connection cannot be made at all, commits skip NATS for retry_interval,
 * then the next commit probes.  Publishing resumes by itself.
 *
 * Nothing here may ERROR on the commit path: she_publish_batch runs after
 * the commit record.  Errors are returned in SheBatchResult as text.
 *
 * IDENTIFICATION
 *	  src/nats_client.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include <nats/nats.h>

#include "lib/stringinfo.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "compat.h"
#include "state_hub_events.h"

/* The session's connection; backend thread only. */
static natsConnection *conn = NULL;
static jsCtx *js = NULL;
static char *conn_key = NULL;	/* malloc'd: settings the connection used */
static char *stream_name = NULL;	/* malloc'd: the stream stream_ok is about */
static uint64 retry_after_us = 0;	/* skip NATS until this monotonic time */
static char retry_reason[256];
static bool nats_used = false;	/* nats.c initialised in this process */
static bool exit_hook_set = false;
static char dbname[NAMEDATALEN] = "?";	/* for the connection name */
static int	server_max_payload = 0;	/* learnt from the connected server */

bool		she_in_worker = false;	/* this process is the durable worker */

/* Written by nats threads. */
static atomic_uint_fast64_t async_errors;	/* refusals other than "no responders" */
static atomic_bool stream_ok;	/* a positive ack arrived on this connection */
static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static char async_error_text[256];	/* under async_mu */
static natsMsg **retry_msgs = NULL; /* under async_mu: "no responders" */
static int	nretry = 0;
static int	maxretry = 0;

#define NATS_CALL_BEGIN \
	do { \
		sigset_t	she_all_, she_saved_; \
		sigfillset(&she_all_); \
		pthread_sigmask(SIG_SETMASK, &she_all_, &she_saved_)
#define NATS_CALL_END \
		pthread_sigmask(SIG_SETMASK, &she_saved_, NULL); \
	} while (0)

static uint64
now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Copy url to out with any "user:password@" or "token@" replaced by "***@".
 */
void
she_mask_url(const char *url, char *out, size_t outlen)
{
	size_t		o = 0;
	const char *p = url;

	while (*p && o + 1 < outlen)
	{
		const char *end = strchr(p, ',');
		const char *scheme = strstr(p, "://");
		const char *at;
		const char *hoststart = p;

		if (end == NULL)
			end = p + strlen(p);
		if (scheme != NULL && scheme < end)
			hoststart = scheme + 3;
		at = memchr(hoststart, '@', end - hoststart);
		if (at != NULL)
		{
			size_t		n = hoststart - p;

			n = Min(n, outlen - 1 - o);
			memcpy(out + o, p, n);
			o += n;
			n = Min(3, outlen - 1 - o);
			memcpy(out + o, "***", n);
			o += n;
			p = at;
		}
		while (p < end && o + 1 < outlen)
			out[o++] = *p++;
		if (*p == ',' && o + 1 < outlen)
			out[o++] = *p++;
	}
	out[o] = '\0';
}

/* ---------- callbacks on nats threads ---------- */

static void
ack_handler(jsCtx *ctx, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	if (pa != NULL)
	{
		atomic_store(&stream_ok, true);
		she_stats_atomic_published(1, pa->Duplicate ? 1 : 0);
		natsMsg_Destroy(msg);
		return;
	}
	pthread_mutex_lock(&async_mu);
	if (pae != NULL && pae->Err == NATS_NO_RESPONDERS)
	{
		/* No stream captures the subject: keep it for the backend to retry. */
		if (nretry == maxretry)
		{
			int			newmax = maxretry ? maxretry * 2 : 64;
			natsMsg   **n = realloc(retry_msgs, newmax * sizeof(natsMsg *));

			if (n != NULL)
			{
				retry_msgs = n;
				maxretry = newmax;
			}
		}
		if (nretry < maxretry)
		{
			retry_msgs[nretry++] = msg;
			pthread_mutex_unlock(&async_mu);
			return;
		}
	}
	atomic_fetch_add(&async_errors, 1);
	she_stats_atomic_failed(1);
	snprintf(async_error_text, sizeof(async_error_text),
			 "JetStream refused a message: %s (error code %d)",
			 pae && pae->ErrText ? pae->ErrText : "unknown error",
			 pae ? (int) pae->ErrCode : 0);
	pthread_mutex_unlock(&async_mu);
	natsMsg_Destroy(msg);
}

/*
 * Take the messages that met "no responders" (backend thread).
 */
static natsMsg **
take_retry_list(int *n)
{
	natsMsg   **list;

	pthread_mutex_lock(&async_mu);
	list = retry_msgs;
	*n = nretry;
	retry_msgs = NULL;
	nretry = 0;
	maxretry = 0;
	pthread_mutex_unlock(&async_mu);
	return list;
}

static void
destroy_msgs(natsMsg **list, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		natsMsg_Destroy(list[i]);
	free(list);
}

static void
connected_cb(natsConnection *nc, void *closure)
{
	/* Required for an asynchronous first connect; nothing to do. */
}

/* ---------- connection ---------- */

/*
 * The settings a connection depends on (where and who), as one string; a
 * change means the connection must be replaced.  Timeouts are not part of
 * it: a connection keeps those it was created with.  Backend thread,
 * malloc only.
 */
static char *
make_conn_key(const char *url)
{
	char	   *key;
	size_t		len;

	len = strlen(url) + strlen(she_token) + strlen(she_user) + strlen(she_password) +
		strlen(she_creds_file) + strlen(she_nkey) + strlen(she_nkey_seed_file) +
		strlen(she_tls_ca_file) + strlen(she_tls_cert_file) + strlen(she_tls_key_file) + 18;
	key = malloc(len);
	if (key == NULL)
		return NULL;
	snprintf(key, len, "%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%d",
			 url, she_token, she_user, she_password, she_creds_file, she_nkey,
			 she_nkey_seed_file, she_tls_ca_file, she_tls_cert_file, she_tls_key_file,
			 (int) she_tls_handshake_first);
	return key;
}

/*
 * natsConnection_Connect, with one more handshake when an nkey was refused.
 * nats.c 3.4 signs about one server nonce in 300 so that nats-server
 * refuses the nkey ("authentication error - Nkey ..." in its log; measured
 * with 300 consecutive ping() calls); a new handshake gets a new nonce.
 * Call inside NATS_CALL_BEGIN.
 */
static natsStatus
connect_nats(natsConnection **ncp, natsOptions *opts)
{
	natsStatus	s = natsConnection_Connect(ncp, opts);
	const char *t = NULL;

	if (s == NATS_OK || she_nkey[0] == '\0')
		return s;
	/* with retry-on-failed-connect the error is the connection's */
	if (*ncp != NULL)
		(void) natsConnection_GetLastError(*ncp, &t);
	if (t == NULL || t[0] == '\0')
		t = nats_GetLastError(NULL);
	if (t == NULL || strstr(t, "Authorization Violation") == NULL)
		return s;
	if (*ncp != NULL)
	{
		natsConnection_Destroy(*ncp);
		*ncp = NULL;
	}
	return natsConnection_Connect(ncp, opts);
}

/*
 * Build nats options from the settings.  Call inside NATS_CALL_BEGIN.
 * Returns NATS_OK or a status with err filled in.
 */
static natsStatus
make_options(natsOptions **optsp, const char *url, int connect_timeout_ms,
			 int publish_timeout_ms, bool background_retry, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	natsStatus	s;
	char	   *urls;
	const char *servers[64];
	int			nservers = 0;
	char	   *tok;
	char	   *save = NULL;
	char		name[128];

	urls = strdup(url);
	if (urls == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NATS_NO_MEMORY;
	}
	for (tok = strtok_r(urls, ",", &save); tok != NULL && nservers < 64;
		 tok = strtok_r(NULL, ",", &save))
		servers[nservers++] = tok;

	snprintf(name, sizeof(name), "state_hub_events db=%s pid=%d", dbname, MyProcPid);

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, servers, nservers);
	/* connect_timeout is the budget across all listed servers */
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, Max(connect_timeout_ms / Max(nservers, 1), 1));
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, name);
	if (s == NATS_OK)
		s = natsOptions_SetNoEcho(opts, true);
	if (s == NATS_OK)
		s = natsOptions_SetAllowReconnect(opts, true);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 500);
	if (s == NATS_OK)
		s = natsOptions_SetPingInterval(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxPingsOut(opts, 2);
	if (s == NATS_OK)
		s = natsOptions_SetWriteDeadline(opts, publish_timeout_ms);
	if (s == NATS_OK && background_retry)
		s = natsOptions_SetRetryOnFailedConnect(opts, true, connected_cb, NULL);
	if (s == NATS_OK && she_token[0] != '\0')
		s = natsOptions_SetToken(opts, she_token);
	if (s == NATS_OK && she_user[0] != '\0')
		s = natsOptions_SetUserInfo(opts, she_user, she_password);
	if (s == NATS_OK && she_creds_file[0] != '\0')
		s = natsOptions_SetUserCredentialsFromFiles(opts, she_creds_file, NULL);
	if (s == NATS_OK && she_nkey[0] != '\0')
		s = natsOptions_SetNKeyFromSeed(opts, she_nkey, she_nkey_seed_file);
	if (s == NATS_OK && she_tls_ca_file[0] != '\0')
	{
		s = natsOptions_SetSecure(opts, true);
		if (s == NATS_OK)
			s = natsOptions_LoadCATrustedCertificates(opts, she_tls_ca_file);
	}
	if (s == NATS_OK && she_tls_cert_file[0] != '\0')
	{
		s = natsOptions_SetSecure(opts, true);
		if (s == NATS_OK)
			s = natsOptions_LoadCertificatesChain(opts, she_tls_cert_file, she_tls_key_file);
	}
	/* the setting's check hook refuses "on" where nats.c cannot do it */
	if (s == NATS_OK && she_tls_handshake_first)
		s = she_nats_tls_handshake_first(opts);

	free(urls);
	if (s != NATS_OK)
	{
		const char *t = nats_GetLastError(NULL);

		snprintf(err, errlen, "invalid NATS options: %s", t ? t : natsStatus_GetText(s));
		natsOptions_Destroy(opts);
		return s;
	}
	*optsp = opts;
	return NATS_OK;
}

static void
drop_connection(void)
{
	if (js != NULL)
		jsCtx_Destroy(js);
	js = NULL;
	if (conn != NULL)
		natsConnection_Destroy(conn);
	conn = NULL;
	free(conn_key);
	conn_key = NULL;
	free(stream_name);
	stream_name = NULL;
	atomic_store(&stream_ok, false);
}

/*
 * Backend exit: let what was sent be acknowledged (bounded), then close the
 * connection, so nothing sent is lost and no connection thread is busy
 * while the process tears down.
 */
static void
shutdown_nats(int code, Datum arg)
{
	if (!nats_used)
		return;
	NATS_CALL_BEGIN;
	if (js != NULL && conn != NULL &&
		natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED)
	{
		jsPubOptions po;

		jsPubOptions_Init(&po);
		po.MaxWait = she_publish_timeout_ms;
		(void) js_PublishAsyncComplete(js, &po);
	}
	drop_connection();
	{
		int			n;
		natsMsg   **left = take_retry_list(&n);

		destroy_msgs(left, n);
	}
	/*
	 * nats_Close() is not called: nats.c 3.4's final cleanup frees OpenSSL's
	 * compression-method stack, which OpenSSL 3's own atexit handler frees
	 * again, crashing the backend at exit whenever OpenSSL was used (TLS, or
	 * a server that asks for it, makes nats.c initialise it).  The
	 * connection is closed above; nats.c's idle library threads end with
	 * the process.
	 */
	NATS_CALL_END;
	nats_used = false;
}

/*
 * Arrange for shutdown_nats at backend exit, and note the database name for
 * the connection name.  Called where an ERROR is still fine (when an event
 * is buffered, or by ping()), never after the commit record.
 */
void
she_nats_register_exit(void)
{
	if (!exit_hook_set)
	{
		char	   *d = get_database_name(MyDatabaseId);

		if (d != NULL)
			strlcpy(dbname, d, sizeof(dbname));
		before_shmem_exit(shutdown_nats, (Datum) 0);
		exit_hook_set = true;
	}
}

/*
 * Make sure a connection object exists for these settings.  Inside
 * NATS_CALL_BEGIN.  Returns false with reason filled when there is none.
 */
static bool
ensure_connection(const char *url, int connect_timeout_ms, int publish_timeout_ms,
				  char *reason, size_t reasonlen)
{
	char	   *key = make_conn_key(url);
	natsOptions *opts = NULL;
	natsStatus	s;
	jsOptions	jo;
	char		masked[512];

	if (key == NULL)
	{
		snprintf(reason, reasonlen, "out of memory");
		return false;
	}
	if (conn != NULL && strcmp(key, conn_key) == 0 &&
		natsConnection_Status(conn) != NATS_CONN_STATUS_CLOSED)
	{
		free(key);
		return true;
	}
	drop_connection();
	SheAssert(exit_hook_set);
	nats_used = true;

	if (make_options(&opts, url, connect_timeout_ms, publish_timeout_ms, true,
					 reason, reasonlen) != NATS_OK)
	{
		free(key);
		return false;
	}
	s = connect_nats(&conn, opts);
	natsOptions_Destroy(opts);
	if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
	{
		const char *t = nats_GetLastError(NULL);

		she_mask_url(url, masked, sizeof(masked));
		snprintf(reason, reasonlen, "cannot connect to NATS at %s: %s",
				 masked, t ? t : natsStatus_GetText(s));
		conn = NULL;
		free(key);
		return false;
	}

	jsOptions_Init(&jo);
	jo.Wait = publish_timeout_ms;
	jo.PublishAsync.AckHandler = ack_handler;
	s = natsConnection_JetStream(&js, conn, &jo);
	if (s != NATS_OK)
	{
		snprintf(reason, reasonlen, "cannot create a JetStream context: %s",
				 natsStatus_GetText(s));
		natsConnection_Destroy(conn);
		conn = NULL;
		js = NULL;
		free(key);
		return false;
	}
	conn_key = key;
	return true;
}

/*
 * Split the stream_subjects setting into a malloc'd array.
 */
static int
split_subjects(const char *patterns, char **copy, const char **out, int max)
{
	char	   *save = NULL;
	char	   *tok;
	int			n = 0;

	*copy = strdup(patterns);
	if (*copy == NULL)
		return 0;
	for (tok = strtok_r(*copy, ",", &save); tok != NULL && n < max;
		 tok = strtok_r(NULL, ",", &save))
		out[n++] = tok;
	return n;
}

/*
 * Create the stream (JetStream said no stream captures our subjects).  A
 * racing creator (error 10058) counts as success.  Inside NATS_CALL_BEGIN.
 */
static bool
create_stream_now(const char *stream, int wait_ms, char *reason, size_t reasonlen)
{
	jsStreamInfo *si = NULL;
	jsErrCode	ec = 0;
	jsOptions	jo;
	natsStatus	s;
	jsStreamConfig cfg;
	const char *subjects[64];
	char	   *copy = NULL;

	jsOptions_Init(&jo);
	jo.Wait = Max(wait_ms, 1);
	jsStreamConfig_Init(&cfg);
	cfg.Name = stream;
	cfg.SubjectsLen = split_subjects(she_stream_subjects, &copy, subjects, 64);
	cfg.Subjects = subjects;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = she_stream_replicas;
	cfg.MaxAge = (int64_t) she_stream_max_age_s * 1000000000;
	cfg.Duplicates = (int64_t) (she_in_worker ? Max(she_duplicate_window_s, she_durable_dup_window_s)
								: she_duplicate_window_s) * 1000000000;
	s = js_AddStream(&si, js, &cfg, &jo, &ec);
	free(copy);
	if (s == NATS_OK)
	{
		jsStreamInfo_Destroy(si);
		return true;
	}
	if (ec == JSStreamNameExistErr)
		return true;
	if (s == NATS_NO_RESPONDERS)
		snprintf(reason, reasonlen, "JetStream did not answer: is JetStream enabled for this account?");
	else if (s == NATS_TIMEOUT)
		snprintf(reason, reasonlen, "no stream captures the subjects, and creating stream \"%s\" got no answer within %d ms",
				 stream, wait_ms);
	else
	{
		const char *t = nats_GetLastError(NULL);

		snprintf(reason, reasonlen, "no stream captures the subjects, and creating stream \"%s\" failed: %s",
				 stream, t ? t : natsStatus_GetText(s));
	}
	return false;
}

/*
 * Wait for outstanding acknowledgements until deadline.  Returns NATS_OK or
 * NATS_TIMEOUT.  Inside NATS_CALL_BEGIN.
 */
static natsStatus
wait_for_acks(uint64 deadline)
{
	uint64		now = now_usec();
	jsPubOptions po;

	jsPubOptions_Init(&po);
	po.MaxWait = (now < deadline) ? (int64_t) Max((deadline - now) / 1000, 1) : 1;
	return js_PublishAsyncComplete(js, &po);
}

/*
 * The message of one event: its subject, the envelope, Nats-Msg-Id = the
 * event's id, and Nats-Expected-Stream.  Inside NATS_CALL_BEGIN.
 */
static natsStatus
make_msg(natsMsg **msg, const SheEvent *ev, const char *stream)
{
	natsStatus	s;

	s = natsMsg_Create(msg, ev->subject, NULL, ev->envelope, ev->envelope_len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(*msg, "Nats-Msg-Id", ev->id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(*msg, "Nats-Expected-Stream", stream);
	return s;
}

/*
 * Publish a batch of one event and wait for its ack: a single request, the
 * same round trip as a raw js_PublishMsg (the asynchronous path needs a flush
 * and two thread hand-offs).  Returns true when the wait timed out.
 * Inside NATS_CALL_BEGIN.
 */
static bool
publish_one_sync(const SheBatch *b, uint64 deadline, SheBatchResult *res)
{
	const SheEvent *ev = &b->events[0];
	natsMsg    *msg = NULL;
	jsPubAck   *pa = NULL;
	jsErrCode	ec = 0;
	jsPubOptions po;
	natsStatus	s;
	bool		created = false;

	s = make_msg(&msg, ev, b->stream);
	if (s != NATS_OK)
	{
		snprintf(res->reason, sizeof(res->reason), "cannot build the message: %s",
				 natsStatus_GetText(s));
		natsMsg_Destroy(msg);
		return false;			/* not sent: counted as failed by the caller */
	}
	for (;;)
	{
		uint64		now = now_usec();

		jsPubOptions_Init(&po);
		po.MaxWait = (now < deadline) ? (int64_t) Max((deadline - now) / 1000, 1) : 1;
		ec = 0;
		s = js_PublishMsg(&pa, js, msg, &po, &ec);
		if (s == NATS_NO_RESPONDERS && !created && she_create_stream)
		{
			now = now_usec();
			created = create_stream_now(b->stream,
										(int) ((deadline > now ? deadline - now : 1000) / 1000),
										res->reason, sizeof(res->reason));
			if (created)
				continue;
		}
		break;
	}
	natsMsg_Destroy(msg);
	res->sent = 1;

	if (s == NATS_OK)
	{
		atomic_store(&stream_ok, true);
		she_stats_atomic_published(1, pa->Duplicate ? 1 : 0);
		jsPubAck_Destroy(pa);
		res->acked = 1;
		return false;
	}
	if (s == NATS_TIMEOUT)
	{
		res->unconfirmed = 1;
		she_stats_add_unconfirmed(1);
		snprintf(res->reason, sizeof(res->reason),
				 "no acknowledgement from JetStream within %d ms", b->publish_timeout_ms);
		return true;
	}
	res->refused = 1;
	she_stats_add_failed(1);
	if (s == NATS_NO_RESPONDERS)
	{
		if (!she_create_stream)
			snprintf(res->reason, sizeof(res->reason),
					 "no stream captures the subjects (stream \"%s\" is missing and state_hub_events.create_stream is off)",
					 b->stream);
		/* else create_stream_now filled the reason */
	}
	else
	{
		const char *t = nats_GetLastError(NULL);

		snprintf(res->reason, sizeof(res->reason), "JetStream refused a message: %s (error code %d)",
				 t ? t : natsStatus_GetText(s), (int) ec);
	}
	return false;
}

/*
 * Publish a committed batch.  Runs after the commit record: never ERRORs,
 * never allocates with palloc.  The wait for acknowledgements is bounded by
 * the batch's publish_timeout, the connection attempt by connect_timeout.
 */
void
she_publish_batch(const SheBatch *b, SheBatchResult *res)
{
	uint64		start = now_usec();
	uint64		deadline = start + (uint64) b->publish_timeout_ms * 1000;
	uint64_t	errors_before = 0;
	uint64_t	errs = 0;
	int			no_responders = 0;
	bool		must_wait;
	natsStatus	s = NATS_OK;
	int			i;
	char		masked[512];

	memset(res, 0, sizeof(*res));

	if (start < retry_after_us)
	{
		res->refused = b->nevents;
		snprintf(res->reason, sizeof(res->reason),
				 "NATS was unavailable (%s); the next attempt is in %d ms",
				 retry_reason, (int) ((retry_after_us - start) / 1000));
		she_stats_add_failed(b->nevents);
		return;
	}

	NATS_CALL_BEGIN;

	if (!ensure_connection(b->url, b->connect_timeout_ms, b->publish_timeout_ms,
						   res->reason, sizeof(res->reason)))
		goto backoff;

	if (natsConnection_Status(conn) != NATS_CONN_STATUS_CONNECTED)
	{
		const char *t = NULL;

		(void) natsConnection_GetLastError(conn, &t);
		she_mask_url(b->url, masked, sizeof(masked));
		snprintf(res->reason, sizeof(res->reason),
				 "not connected to NATS at %s (reconnecting in the background)%s%s",
				 masked, t && *t ? ": " : "", t && *t ? t : "");
		goto out;
	}

	server_max_payload = (int) Min(natsConnection_GetMaxPayload(conn), (int64_t) INT_MAX);

	if (stream_name == NULL || strcmp(stream_name, b->stream) != 0)
	{
		free(stream_name);
		stream_name = strdup(b->stream);
		atomic_store(&stream_ok, false);
	}
	{
		/* "no responders" that arrived after an earlier commit returned */
		int			nold;
		natsMsg   **old = take_retry_list(&nold);

		if (nold > 0)
		{
			she_stats_add_failed(nold);
			atomic_store(&stream_ok, false);
		}
		destroy_msgs(old, nold);
	}
	/* Until the stream has acknowledged once, wait: it may have to be created. */
	must_wait = b->wait_for_ack || !atomic_load(&stream_ok);

	if (must_wait && b->nevents == 1)
	{
		if (publish_one_sync(b, deadline, res))
			goto backoff;
		goto out;
	}

	errors_before = atomic_load(&async_errors);
	for (i = 0; i < b->nevents; i++)
	{
		const SheEvent *ev = &b->events[i];
		natsMsg    *msg = NULL;

		s = make_msg(&msg, ev, b->stream);
		if (s == NATS_OK)
			s = js_PublishMsgAsync(js, &msg, NULL);
		natsMsg_Destroy(msg);
		if (s != NATS_OK)
		{
			const char *t = nats_GetLastError(NULL);

			snprintf(res->reason, sizeof(res->reason), "publishing failed: %s",
					 t ? t : natsStatus_GetText(s));
			break;
		}
		res->sent++;
	}

	if (must_wait && res->sent > 0)
	{
		natsMsg   **retry;
		int			n;

		/*
		 * Write what the connection buffered now, rather than after the
		 * flusher's ~1 ms delay; its PING/PONG overlaps the acks.  (With
		 * SendAsap every message would be its own write: slower for big
		 * batches, no faster for one event.)
		 */
		{
			uint64		now = now_usec();

			(void) natsConnection_FlushTimeout(conn, now < deadline ? (int64_t) Max((deadline - now) / 1000, 1) : 1);
		}
		s = wait_for_acks(deadline);
		retry = take_retry_list(&n);
		if (n > 0)
		{
			/* No stream captures the subjects: create it, publish them again. */
			bool		created = false;

			if (she_create_stream)
				created = create_stream_now(b->stream,
											(int) ((deadline > now_usec() ? deadline - now_usec() : 1000) / 1000),
											res->reason, sizeof(res->reason));
			else
				snprintf(res->reason, sizeof(res->reason),
						 "no stream captures the subjects (stream \"%s\" is missing and state_hub_events.create_stream is off)",
						 b->stream);
			if (created)
			{
				int			j;

				for (j = 0; j < n; j++)
				{
					if (js_PublishMsgAsync(js, &retry[j], NULL) != NATS_OK)
						no_responders++;
					natsMsg_Destroy(retry[j]);	/* no-op once taken over */
				}
				free(retry);
				s = wait_for_acks(deadline);
				retry = take_retry_list(&n);
			}
			no_responders += n;
			destroy_msgs(retry, n);
		}
		if (s == NATS_TIMEOUT)
		{
			natsMsgList pending;

			if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
			{
				res->unconfirmed = Min(pending.Count, res->sent);
				she_stats_add_unconfirmed(pending.Count);
				natsMsgList_Destroy(&pending);
			}
			snprintf(res->reason, sizeof(res->reason),
					 "no acknowledgement from JetStream within %d ms", b->publish_timeout_ms);
		}
		errs = atomic_load(&async_errors) - errors_before;
		if (errs > 0)
		{
			pthread_mutex_lock(&async_mu);
			strlcpy(res->reason, async_error_text, sizeof(res->reason));
			pthread_mutex_unlock(&async_mu);
		}
		res->refused = (int) Min(errs + no_responders, (uint64_t) res->sent);
		res->acked = Max(res->sent - res->unconfirmed - res->refused, 0);
		if (no_responders > 0)
			she_stats_add_failed(no_responders);
		if (s == NATS_TIMEOUT)
			goto backoff;
	}
	goto out;

backoff:
	/* Later commits skip NATS for a while instead of paying the timeout. */
	retry_after_us = now_usec() + (uint64) she_retry_interval_ms * 1000;
	strlcpy(retry_reason, res->reason, sizeof(retry_reason));

out:
	NATS_CALL_END;
	/* Acks and error acks are counted by ack_handler; what never left, here. */
	if (b->nevents > res->sent)
	{
		she_stats_add_failed(b->nevents - res->sent);
		res->refused += b->nevents - res->sent;
	}
}

/*
 * The server's max payload, as learnt when this backend last published
 * (0 before that).  No nats call: it is asked for every buffered event.
 */
int
she_server_max_payload(void)
{
	return server_max_payload;
}

/*
 * ping(): connect with the current settings on a fresh connection (so the
 * exact reason of a failure is reported), look the stream up, and return
 * the facts as jsonb.  Everything nats.c allocated is released before any
 * ERROR is raised.
 */
Jsonb *
she_ping(void)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	jsCtx	   *pjs = NULL;
	jsStreamInfo *si = NULL;
	jsErrCode	ec = 0;
	jsOptions	jo;
	natsStatus	s;
	char		err[512] = "";
	char		masked[512];
	char		connected_url[512] = "";
	char		server_id[128] = "";
	char		server_name[256] = "";
	int64_t		rtt_ns = 0;
	int64_t		max_payload = 0;
	bool		stream_found = false;
	bool		jetstream = true;
	StringInfoData buf;
	uint64		t0;

	if (she_nats_url[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot ping NATS: state_hub_events.nats_url is empty"),
				 errdetail("With an empty nats_url, publishing is a no-op.")));
	she_mask_url(she_nats_url, masked, sizeof(masked));
	initStringInfo(&buf);

	she_nats_register_exit();
	t0 = now_usec();
	NATS_CALL_BEGIN;
	nats_used = true;
	s = make_options(&opts, she_nats_url, she_connect_timeout_ms,
					 she_publish_timeout_ms, false, err, sizeof(err));
	if (s == NATS_OK)
	{
		s = connect_nats(&nc, opts);
		if (s != NATS_OK)
		{
			const char *t = nats_GetLastError(NULL);

			snprintf(err, sizeof(err), "%s", t ? t : natsStatus_GetText(s));
		}
	}
	if (s == NATS_OK)
	{
		(void) natsConnection_GetConnectedUrl(nc, connected_url, sizeof(connected_url));
		(void) natsConnection_GetConnectedServerId(nc, server_id, sizeof(server_id));
		she_nats_server_name(nc, server_name, sizeof(server_name));
		(void) natsConnection_GetRTT(nc, &rtt_ns);
		max_payload = natsConnection_GetMaxPayload(nc);
		jsOptions_Init(&jo);
		jo.Wait = she_publish_timeout_ms;
		s = natsConnection_JetStream(&pjs, nc, &jo);
		if (s == NATS_OK)
		{
			s = js_GetStreamInfo(&si, pjs, she_stream, &jo, &ec);
			if (s == NATS_OK)
				stream_found = true;
			else if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr)
				s = NATS_OK;
			else if (s == NATS_NO_RESPONDERS)
			{
				jetstream = false;
				snprintf(err, sizeof(err), "JetStream is not enabled on the server");
			}
			else
			{
				const char *t = nats_GetLastError(NULL);

				snprintf(err, sizeof(err), "stream lookup failed: %s",
						 t ? t : natsStatus_GetText(s));
			}
		}
	}

	if (s == NATS_OK)
	{
		char		url2[512];

		she_mask_url(connected_url, url2, sizeof(url2));
		appendStringInfoString(&buf, "{\"connected_url\":");
		escape_json(&buf, url2);
		appendStringInfoString(&buf, ",\"server_id\":");
		escape_json(&buf, server_id);
		/* null where nats.c cannot tell (before 3.14) */
		appendStringInfoString(&buf, ",\"server_name\":");
		if (server_name[0] != '\0')
			escape_json(&buf, server_name);
		else
			appendStringInfoString(&buf, "null");
		appendStringInfoString(&buf, ",\"nats_client\":");
		escape_json(&buf, nats_GetVersion());
		appendStringInfo(&buf, ",\"rtt_us\":%lld,\"connect_ms\":%.3f,\"max_payload\":%lld,\"jetstream\":true",
						 (long long) (rtt_ns / 1000), (now_usec() - t0) / 1000.0,
						 (long long) max_payload);
		appendStringInfoString(&buf, ",\"stream\":");
		escape_json(&buf, she_stream);
		appendStringInfo(&buf, ",\"stream_exists\":%s", stream_found ? "true" : "false");
		if (stream_found)
		{
			jsStreamConfig *c = si->Config;
			int			i;

			appendStringInfoString(&buf, ",\"stream_subjects\":[");
			for (i = 0; i < c->SubjectsLen; i++)
			{
				if (i > 0)
					appendStringInfoChar(&buf, ',');
				escape_json(&buf, c->Subjects[i]);
			}
			appendStringInfo(&buf, "],\"storage\":\"%s\",\"replicas\":%lld,"
							 "\"duplicate_window_s\":%.3f,\"max_age_s\":%.3f,"
							 "\"messages\":%llu,\"bytes\":%llu,\"last_seq\":%llu",
							 c->Storage == js_FileStorage ? "file" : "memory",
							 (long long) c->Replicas,
							 c->Duplicates / 1e9, c->MaxAge / 1e9,
							 (unsigned long long) si->State.Msgs,
							 (unsigned long long) si->State.Bytes,
							 (unsigned long long) si->State.LastSeq);
			/* what an operator should know about this stream */
			appendStringInfoString(&buf, ",\"warnings\":[");
			{
				bool		durable = (she_delivery == SHE_DELIVERY_DURABLE);
				int			want = durable ? Max(she_duplicate_window_s, she_durable_dup_window_s)
					: she_duplicate_window_s;

				if (c->Duplicates < (int64_t) want * 1000000000)
					appendStringInfo(&buf, "\"the stream's duplicate window (%.0f s) is shorter than %s (%d s): a re-published event outside it is stored twice\"",
									 c->Duplicates / 1e9,
									 durable ? "what durable delivery asks for (state_hub_events.durable_duplicate_window)"
									 : "state_hub_events.duplicate_window", want);
			}
			appendStringInfoChar(&buf, ']');
		}
		else
			appendStringInfo(&buf, ",\"will_create\":%s", she_create_stream ? "true" : "false");
		appendStringInfo(&buf, ",\"tls\":%s,\"tls_handshake_first\":%s,\"auth\":",
						 (she_tls_ca_file[0] != '\0' || she_tls_cert_file[0] != '\0' ||
						  she_tls_handshake_first ||
						  strstr(she_nats_url, "tls://") != NULL) ? "true" : "false",
						 she_tls_handshake_first ? "true" : "false");
		if (she_creds_file[0] != '\0')
			appendStringInfoString(&buf, "\"creds file\"");
		else if (she_nkey[0] != '\0')
			escape_json(&buf, psprintf("nkey %s", she_nkey));
		else if (she_user[0] != '\0')
			escape_json(&buf, psprintf("user %s", she_user));
		else if (she_token[0] != '\0')
			appendStringInfoString(&buf, "\"token\"");
		else if (strchr(she_nats_url, '@') != NULL)
			appendStringInfoString(&buf, "\"credentials in the URL\"");
		else
			appendStringInfoString(&buf, "\"none\"");
		appendStringInfo(&buf, ",\"session_connection\":\"%s\"}",
						 conn == NULL ? "none" :
						 natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED ? "connected" :
						 "not connected");
	}

	if (si != NULL)
		jsStreamInfo_Destroy(si);
	if (pjs != NULL)
		jsCtx_Destroy(pjs);
	if (nc != NULL)
		natsConnection_Destroy(nc);
	if (opts != NULL)
		natsOptions_Destroy(opts);
	NATS_CALL_END;

	if (!jetstream)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot use NATS at %s: %s", masked, err)));
	if (s != NATS_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("cannot reach NATS at %s: %s", masked, err)));

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
