/*-------------------------------------------------------------------------
 *
 * nats_conn.c
 *	  Connection, authentication, TLS and reconnect: the NATS connection
 *	  of a background process (the publisher or the durable worker).
 *
 * The connection is created with retry-on-failed-connect: when the server
 * is down the first attempt fails fast and nats.c keeps reconnecting in the
 * background, so a caller sees status RECONNECTING and refuses its messages
 * at once instead of paying a connect timeout per batch.  The connection
 * is replaced when the settings it was made with change (at reload).
 *
 * Threads.  nats.c runs threads (timer, flusher, reader, delivery,
 * reconnect).  Every call here is made with all signals blocked, so every
 * thread nats.c starts has them blocked and PostgreSQL's handlers run only
 * on the process's own thread.  The state shared with nats threads is in
 * SheConn, under SheConn.mu (see nats_conn.h).
 *
 * Nothing here ERRORs: failures come back as text in err.
 *
 * IDENTIFICATION
 *	  src/nats_conn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <time.h>

#include "miscadmin.h"

#include "compat.h"
#include "nats_conn.h"
#include "nats_publish.h"
#include "state_hub_events.h"
#include "url_mask.h"

static char conn_name[128] = "state_hub_events";

uint64_t
she_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* One clock reading: the old "deadline > now() ? deadline - now()" read it twice. */
int64_t
she_ms_left(uint64_t deadline)
{
	uint64_t	now = she_now_usec();

	return now < deadline ? (int64_t) ((deadline - now) / 1000) : 0;
}

void
she_nats_block_signals(sigset_t *saved)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, saved);
}

void
she_nats_restore_signals(const sigset_t *saved)
{
	pthread_sigmask(SIG_SETMASK, saved, NULL);
}

/* The name the server shows for our connections (monitoring). */
void
she_conn_set_name(const char *name)
{
	strlcpy(conn_name, name, sizeof(conn_name));
}

void
she_conn_init(SheConn *c)
{
	static bool opened = false;

	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);

	/*
	 * Open nats.c without its lock spinning: by default a contended nats.c
	 * mutex is tried 2,000 times in a busy loop before its thread sleeps.
	 * The publisher's threads (its own, nats.c's reader, flusher and
	 * delivery threads) share two cores with every committing session
	 * here, where a spinning thread only delays the holder it waits for.
	 * The first call opens the library; a later one changes nothing.
	 */
	if (!opened)
	{
		sigset_t	saved;

		/* the library's threads start here: they must not take our signals */
		she_nats_block_signals(&saved);
		(void) nats_Open(0);
		she_nats_restore_signals(&saved);
		opened = true;
	}
}

/* Connection callbacks (nats threads): note the state under mu. */
static void
set_state(SheConn *c, bool up, natsConnection *nc)
{
	const char *t = NULL;

	if (!up && nc != NULL)
		(void) natsConnection_GetLastError(nc, &t);
	if (!up && (t == NULL || *t == '\0'))
		t = nats_GetLastError(NULL);	/* the connect call's, on our thread */
	pthread_mutex_lock(&c->mu);
	if (c->cb_nc != nc && c->cb_nc != (natsConnection *) -1)
	{
		pthread_mutex_unlock(&c->mu);	/* a connection closed earlier */
		return;
	}
	c->up = up;
	if (up)
	{
		c->payload_stale = c->ever_up = true;
		c->connects++;
	}
	else
		strlcpy(c->last_error, t && *t ? t : "disconnected", sizeof(c->last_error));
	pthread_mutex_unlock(&c->mu);
}

static void
connected_cb(natsConnection *nc, void *closure)
{
	set_state((SheConn *) closure, true, nc);
}

static void
disconnected_cb(natsConnection *nc, void *closure)
{
	set_state((SheConn *) closure, false, nc);
}

/*
 * Asynchronous errors (nats threads).  The server answers a publish to a
 * subject the user may not publish to with -ERR 'Permissions Violation for
 * Publish to "SUBJECT"' and drops the message: JetStream never acknowledges
 * it.  Note the subject and let nats_publish.c refuse that message (the
 * error text is this thread's last error, set by nats.c for the callback).
 */
static void
error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	SheConn    *c = (SheConn *) closure;
	const char *t = nats_GetLastError(NULL);
	const char *prefix = "Permissions Violation for Publish to \"";
	const char *p = t ? strstr(t, prefix) : NULL;
	char		subject[256];
	size_t		len;
	const char *end;

	if (err != NATS_NOT_PERMITTED || sub != NULL || p == NULL)
		return;
	p += strlen(prefix);
	end = strchr(p, '"');
	len = end ? (size_t) (end - p) : strlen(p);
	if (len >= sizeof(subject))
		return;
	memcpy(subject, p, len);
	subject[len] = '\0';
	pthread_mutex_lock(&c->mu);
	if (c->cb_nc == nc)
	{
		c->denied++;
		strlcpy(c->denied_subject, subject, sizeof(c->denied_subject));
		she_publish_denied(c, subject, t);
	}
	pthread_mutex_unlock(&c->mu);
}

/*
 * The settings a connection depends on, as one malloc'd string; a change
 * means the connection must be replaced.  publish_timeout is not part of
 * it: a connection keeps the write deadline it was made with.
 */
static char *
make_conn_key(void)
{
	char	   *key;
	size_t		len;

	len = strlen(she_nats_url) + strlen(she_token) + strlen(she_user) + strlen(she_password) +
		strlen(she_creds_file) + strlen(she_nkey) + strlen(she_nkey_seed_file) +
		strlen(she_tls_ca_file) + strlen(she_tls_cert_file) + strlen(she_tls_key_file) + 50;
	key = malloc(len);
	if (key == NULL)
		return NULL;
	snprintf(key, len, "%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%d\n%d",
			 she_nats_url, she_token, she_user, she_password, she_creds_file, she_nkey,
			 she_nkey_seed_file, she_tls_ca_file, she_tls_cert_file, she_tls_key_file,
			 she_connect_timeout_ms, (int) she_tls_handshake_first);
	return key;
}

/* Authentication and TLS options from the settings. */
static natsStatus
set_auth_options(natsOptions *opts)
{
	natsStatus	s = NATS_OK;

	if (she_token[0] != '\0')
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
	return s;
}

/*
 * Build nats options from the settings.  Signals blocked.  Returns NATS_OK
 * or a status with err filled in.
 */
static natsStatus
make_options(SheConn *c, natsOptions **optsp, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	natsStatus	s;
	char	   *urls;
	const char *servers[64];
	int			nservers = 0;
	char	   *tok;
	char	   *save = NULL;

	urls = strdup(she_nats_url);
	if (urls == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NATS_NO_MEMORY;
	}
	for (tok = strtok_r(urls, ",", &save); tok != NULL && nservers < 64;
		 tok = strtok_r(NULL, ",", &save))
		servers[nservers++] = tok;

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, servers, nservers);
	/* connect_timeout is the budget across all listed servers */
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, Max(she_connect_timeout_ms / Max(nservers, 1), 1));
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, conn_name);
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
		s = natsOptions_SetWriteDeadline(opts, she_publish_timeout_ms);
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(opts, true, connected_cb, c);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, connected_cb, c);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, disconnected_cb, c);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(opts, disconnected_cb, c);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, error_cb, c);

	/*
	 * The durable worker: what reaches the server must be a prefix of what
	 * it sent on one connection, or a message lost with a broken connection
	 * is overtaken by later ones that nats.c buffered and sent after the
	 * reconnect.  nats.c (3.4 to 3.9 at least) refuses a publish while
	 * reconnecting once its buffer holds reconnectBufSize bytes, and stores
	 * 0 as given (its header says 0 means the default; its code compares
	 * the buffered length against it, so every such publish fails with
	 * NATS_INSUFFICIENT_BUFFER).
	 */
	if (s == NATS_OK && c->no_reconnect_buffer)
		s = natsOptions_SetReconnectBufSize(opts, 0);
	if (s == NATS_OK)
		s = set_auth_options(opts);
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

/*
 * natsConnection_Connect, with up to NKEY_HANDSHAKES handshakes when an
 * nkey was refused.  nats.c 3.4 signs about one server nonce in 300 so that
 * nats-server refuses the nkey; a new handshake gets a new nonce (two
 * refusals in a row were seen under load).  A wrong nkey still fails, after
 * the last handshake.  Signals blocked.
 */
#define NKEY_HANDSHAKES 3

static natsStatus
connect_nats(natsConnection **ncp, natsOptions *opts)
{
	natsStatus	s = natsConnection_Connect(ncp, opts);
	int			attempt;

	for (attempt = 1; attempt < NKEY_HANDSHAKES; attempt++)
	{
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
		s = natsConnection_Connect(ncp, opts);
	}
	return s;
}

/*
 * Close and forget the connection (acks still due are dropped by nats.c;
 * no batch may be in flight).
 */
void
she_conn_close(SheConn *c)
{
	sigset_t	saved;

	pthread_mutex_lock(&c->mu);
	c->cb_nc = NULL;
	c->up = false;
	pthread_mutex_unlock(&c->mu);
	she_nats_block_signals(&saved);
	if (c->js != NULL)
		jsCtx_Destroy(c->js);
	c->js = NULL;
	if (c->nc != NULL)
		natsConnection_Destroy(c->nc);
	c->nc = NULL;
	she_nats_restore_signals(&saved);
	free(c->key);
	c->key = NULL;
	c->max_payload = 0;
}

/* Have the connection settings changed since the connection was made? */
bool
she_conn_settings_changed(SheConn *c)
{
	char	   *key;
	bool		changed;

	if (c->nc == NULL)
		return false;
	key = make_conn_key();
	changed = (key == NULL || strcmp(key, c->key) != 0);
	free(key);
	return changed;
}

/* Create the connection and its JetStream context.  Signals blocked. */
static bool
open_connection(SheConn *c, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	jsOptions	jo;
	natsStatus	s;
	char		masked[512];
	char		first_error[256] = "";

	if (make_options(c, &opts, err, errlen) != NATS_OK)
		return false;
	pthread_mutex_lock(&c->mu);
	c->cb_nc = (natsConnection *) -1;
	c->up = c->ever_up = false;
	pthread_mutex_unlock(&c->mu);
	c->connect_error[0] = '\0';
	/*
	 * A first attempt without background retry tells exactly why it fails
	 * (an authentication error, a certificate); then the connection that
	 * keeps retrying.  Only the publisher (or worker) pays this, at start
	 * and when the settings change, never a commit.
	 */
	s = natsOptions_SetRetryOnFailedConnect(opts, false, NULL, NULL);
	if (s == NATS_OK)
		s = connect_nats(&c->nc, opts);
	if (s != NATS_OK)
	{
		const char *t = nats_GetLastError(NULL);

		strlcpy(first_error, t ? t : natsStatus_GetText(s), sizeof(first_error));
		if (c->nc != NULL)
			natsConnection_Destroy(c->nc);
		c->nc = NULL;
		if (natsOptions_SetRetryOnFailedConnect(opts, true, connected_cb, c) == NATS_OK)
			s = connect_nats(&c->nc, opts);
	}
	natsOptions_Destroy(opts);
	pthread_mutex_lock(&c->mu);
	c->cb_nc = c->nc;
	pthread_mutex_unlock(&c->mu);
	if (s == NATS_OK)
		set_state(c, true, c->nc);
	else if (s == NATS_NOT_YET_CONNECTED)
	{
		set_state(c, false, c->nc);
		strlcpy(c->connect_error, first_error, sizeof(c->connect_error));
	}
	if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
	{
		const char *t = nats_GetLastError(NULL);

		she_mask_url(she_nats_url, masked, sizeof(masked));
		snprintf(err, errlen, "cannot connect to NATS at %s: %s",
				 masked, t ? t : natsStatus_GetText(s));
		c->nc = NULL;
		return false;
	}
	jsOptions_Init(&jo);
	jo.Wait = she_publish_timeout_ms;
	jo.PublishAsync.AckHandler = she_ack_handler;
	jo.PublishAsync.AckHandlerClosure = c;
	s = natsConnection_JetStream(&c->js, c->nc, &jo);
	if (s != NATS_OK)
	{
		snprintf(err, errlen, "cannot create a JetStream context: %s", natsStatus_GetText(s));
		natsConnection_Destroy(c->nc);
		c->nc = NULL;
		c->js = NULL;
		return false;
	}
	return true;
}

/*
 * Write mark for the len bytes at hit, in text (a buffer of size bytes),
 * keeping what follows as room allows; returns the byte after the mark, or
 * NULL when there was no room for it and the text was cut at hit.
 */
static char *
replace_at(char *text, size_t size, char *hit, size_t len, const char *mark)
{
	size_t		mlen = strlen(mark);
	size_t		at = hit - text;
	size_t		tail = strlen(hit + len);

	if (at + mlen >= size)
	{
		*hit = '\0';			/* no room for the mark: cut the text */
		return NULL;
	}
	tail = Min(tail, size - 1 - at - mlen);
	memmove(hit + mlen, hit + len, tail);
	memcpy(hit, mark, mlen);
	hit[mlen + tail] = '\0';
	return hit + mlen;
}

/*
 * A text this long may have been cut: nats.c's own texts are at most 255
 * bytes, and so are the buffers that keep them.
 */
#define NATS_TEXT_MAX	256

/*
 * The file settings are hidden from non-superusers, but nats.c names a file
 * it cannot open ("error opening file '/etc/nats/hub.creds'"), and these
 * texts reach every committing role (WARNINGs, stats().last_error).  Write
 * "(hidden)" for each configured path in text (a buffer of len bytes), and,
 * when the text may have been cut (by nats.c or by a buffer on the way), for
 * a start of a path it ends with.  Main thread only: it reads the settings.
 */
static void
hide_file_paths(char *text, size_t len)
{
	const char *paths[] = {she_creds_file, she_nkey_seed_file, she_tls_ca_file,
	she_tls_cert_file, she_tls_key_file};
	const char *mark = "(hidden)";
	bool		cut = strlen(text) + 1 >= Min(len, NATS_TEXT_MAX);
	int			i;

	for (i = 0; i < lengthof(paths); i++)
	{
		size_t		plen = paths[i] ? strlen(paths[i]) : 0;
		char	   *from = text;
		char	   *hit;
		size_t		tlen;
		size_t		k;

		while (plen > 0 && from != NULL && (hit = strstr(from, paths[i])) != NULL)
			from = replace_at(text, len, hit, plen, mark);
		if (!cut || plen == 0)
			continue;
		/* the longest start of the path the text ends with */
		tlen = strlen(text);
		for (k = Min(plen - 1, tlen); k > 0; k--)
		{
			if (memcmp(text + tlen - k, paths[i], k) == 0)
			{
				(void) replace_at(text, len, text + tlen - k, k, mark);
				break;
			}
		}
	}
}

/*
 * Make sure a connection object exists for the current settings (it may
 * still be reconnecting).  Returns false with err filled when there is none.
 */
bool
she_conn_ensure(SheConn *c, char *err, size_t errlen)
{
	sigset_t	saved;
	char	   *key;
	bool		ok;

	/* no natsConnection_Status(): it blocks while nats.c reconnects */
	if (c->nc != NULL && !she_conn_settings_changed(c))
		return true;
	she_conn_close(c);
	key = make_conn_key();
	if (key == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	she_nats_block_signals(&saved);
	ok = open_connection(c, err, errlen);
	she_nats_restore_signals(&saved);
	if (!ok)
	{
		hide_file_paths(err, errlen);
		free(key);
		return false;
	}
	c->key = key;
	return true;
}

/*
 * The state nats.c's callbacks last reported: 1 up, 0 not (or no
 * connection), 2 (re)connected since she_conn_is_connected last looked.
 * No nats call; a loss the callbacks did not report yet is found by
 * she_conn_is_connected.
 */
int
she_conn_state_hint(SheConn *c)
{
	int			state;

	if (c->nc == NULL)
		return 0;
	pthread_mutex_lock(&c->mu);
	state = !c->up ? 0 : c->payload_stale ? 2 : 1;
	pthread_mutex_unlock(&c->mu);
	return state;
}

/*
 * How many times nats.c has (re)connected c: a change says the server
 * answered since.  No nats call.
 */
uint64_t
she_conn_connects(SheConn *c)
{
	uint64_t	n;

	pthread_mutex_lock(&c->mu);
	n = c->connects;
	pthread_mutex_unlock(&c->mu);
	return n;
}

/*
 * Is the connection up right now?  If not, err says why (the last error
 * nats.c saw).  No nats call unless it is up (one that blocks while nats.c
 * reconnects would make every commit pay a connect timeout).  Learns the
 * server's max payload after each (re)connect.
 */
bool
she_conn_is_connected(SheConn *c, char *err, size_t errlen)
{
	sigset_t	saved;
	char		masked[512];
	bool		up;
	bool		stale;

	if (c->nc == NULL)
	{
		snprintf(err, errlen, "no connection to NATS");
		return false;
	}
	pthread_mutex_lock(&c->mu);
	up = c->up;
	stale = c->payload_stale;
	c->payload_stale = false;
	if (!up)
	{
		she_mask_url(she_nats_url, masked, sizeof(masked));
		snprintf(err, errlen, "not connected to NATS at %s (reconnecting in the background): %s",
				 masked, !c->ever_up && c->connect_error[0] ? c->connect_error : c->last_error);
	}
	pthread_mutex_unlock(&c->mu);
	if (up)
	{
		/* the callback may not have told a loss yet: ask (fast while up) */
		she_nats_block_signals(&saved);
		up = (natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED);
		if (up && (stale || c->max_payload == 0))
			c->max_payload = (int) Min(natsConnection_GetMaxPayload(c->nc), (int64_t) INT_MAX);
		she_nats_restore_signals(&saved);
		if (!up)
		{
			she_mask_url(she_nats_url, masked, sizeof(masked));
			snprintf(err, errlen, "not connected to NATS at %s (reconnecting in the background): connection lost",
					 masked);
		}
	}
	if (!up)
		hide_file_paths(err, errlen);
	return up;
}
