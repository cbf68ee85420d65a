/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The state_hub_events.* settings.
 *
 * Every setting is PGC_SUSET or tighter: an application role must not change
 * where events go, what they claim to be, or how they are delivered.  The
 * settings the publisher process connects with (URL, authentication, TLS,
 * connect_timeout) are PGC_SIGHUP: one connection serves the cluster, and
 * the publisher reconnects when they change at reload.  What says how the
 * server is reached and who the extension is there is also
 * GUC_SUPERUSER_ONLY, so roles without pg_read_all_settings cannot SHOW it
 * or find it in pg_settings: nats_url (URLs may carry user:password@) and
 * every authentication and TLS setting; token and password are hidden from
 * SHOW ALL too.  Check hooks refuse values that could only fail later, at
 * COMMIT.
 *
 * IDENTIFICATION
 *	  src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "compat.h"
#include "queue.h"
#include "state_hub_events.h"
#include "url_mask.h"

char	   *she_nats_url = NULL;
char	   *she_stream = NULL;
int			she_stream_source = PGC_S_DEFAULT;
char	   *she_stream_subjects = NULL;
char	   *she_publisher = NULL;
int			she_publish_timeout_ms = 2000;
bool		she_wait_for_ack = true;
int			she_connect_timeout_ms = 1000;
int			she_delivery = SHE_DELIVERY_IMMEDIATE;
char	   *she_token = NULL;
char	   *she_user = NULL;
char	   *she_password = NULL;
char	   *she_creds_file = NULL;
char	   *she_nkey = NULL;
char	   *she_nkey_seed_file = NULL;
char	   *she_tls_ca_file = NULL;
char	   *she_tls_cert_file = NULL;
char	   *she_tls_key_file = NULL;
bool		she_tls_handshake_first = false;
int			she_max_event_bytes = 1024 * 1024 - SHE_HEADER_ROOM;
bool		she_create_stream = true;
int			she_stream_replicas = 1;
int			she_stream_max_age_s = 0;
int			she_duplicate_window_s = 120;
int			she_max_events_per_xact = 100000;
int			she_max_transaction_kb = 1024 * 1024;
int			she_retry_interval_ms = 5000;
int			she_batch_linger_ms = 1;
bool		she_atomic_batches = false;
int			she_atomic_batch_max = 1000;
char	   *she_database = NULL;
int			she_max_backlog_events = 1000000;
int			she_backlog_overflow = SHE_OVERFLOW_ERROR;
int			she_durable_dup_window_s = 3600;
int			she_worker_batch_kb = 8192;
int			she_test_commit_delay_ms = 0;
bool		she_test_publisher_error = false;

static const struct config_enum_entry overflow_options[] = {
	{"error", SHE_OVERFLOW_ERROR, false},
	{"accept", SHE_OVERFLOW_ACCEPT, false},
	{NULL, 0, false}
};

static const struct config_enum_entry delivery_options[] = {
	{"immediate", SHE_DELIVERY_IMMEDIATE, false},
	{"durable", SHE_DELIVERY_DURABLE, false},
	{NULL, 0, false}
};

#define SECRET_FLAGS (GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE)

/*
 * Show hooks of the settings that hold secrets.  PostgreSQL lets members of
 * pg_read_all_settings (pg_monitor among them) read every setting, so
 * GUC_SUPERUSER_ONLY alone does not keep a password from a monitoring role:
 * SHOW and current_setting() print these masked to every role, superusers
 * included (they can read the configuration files).  The extension reads
 * the variables themselves.  GUC_NO_SHOW_ALL keeps them out of pg_settings,
 * whose reset_val column bypasses show hooks.
 */
static const char *
show_masked_secret(const char *value)
{
	return (value != NULL && value[0] != '\0') ? "********" : "";
}

static const char *
show_password(void)
{
	return show_masked_secret(she_password);
}

static const char *
show_token(void)
{
	return show_masked_secret(she_token);
}

static const char *
show_nats_url(void)
{
	static char *shown = NULL;
	size_t		len;
	const char *c;

	if (she_nats_url == NULL)
		return "";
	/* "***" may be longer than the user information it replaces, per URL */
	len = strlen(she_nats_url) + 4;
	for (c = she_nats_url; *c != '\0'; c++)
		if (*c == ',')
			len += 3;
	if (shown != NULL)
		pfree(shown);
	shown = MemoryContextAlloc(TopMemoryContext, len);
	she_mask_url(she_nats_url, shown, len);
	return shown;
}

/*
 * A stream name: JetStream refuses whitespace, '.', '*', '>' and path
 * separators in it.
 */
static bool
check_stream(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL || *p == '\0')
	{
		GUC_check_errdetail("The stream name must not be empty.");
		return false;
	}
	/* JetStream's limit (JSMaxNameLen); the queue stores it in 16 bits */
	if (strlen(p) > 255)
	{
		GUC_check_errdetail("A stream name cannot be longer than 255 bytes.");
		return false;
	}
	for (; *p; p++)
	{
		if (*p <= ' ' || *p == 0x7f || strchr(".*>/\\", *p) != NULL)
		{
			GUC_check_errdetail("A stream name cannot contain whitespace, control characters, \".\", \"*\", \">\", \"/\" or \"\\\".");
			return false;
		}
	}
	/* where the value comes from travels with it (assign_stream) */
	*extra = she_guc_malloc(sizeof(int));
	if (*extra == NULL)
	{
		GUC_check_errdetail("Out of memory.");
		return false;
	}
	*(int *) *extra = (int) source;
	return true;
}

/*
 * Remember where the stream's value came from: durable publishing refuses
 * a value a role or session set (outbox.c), which the worker never sees.
 */
static void
assign_stream(const char *newval, void *extra)
{
	she_stream_source = extra != NULL ? *(int *) extra : (int) PGC_S_DEFAULT;
}

/*
 * Comma-separated subject patterns; each token non-empty, ">" only last
 * (subject.c checks), at most SHE_MAX_STREAM_SUBJECTS_LEN bytes in all.
 */
static bool
check_stream_subjects(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && strlen(*newval) > SHE_MAX_STREAM_SUBJECTS_LEN)
	{
		GUC_check_errdetail("The subject patterns cannot be longer than %d bytes in all.",
							SHE_MAX_STREAM_SUBJECTS_LEN);
		return false;
	}
	switch (she_subject_patterns_problem(*newval))
	{
		case SHE_SUBJECT_OK:
			return true;
		case SHE_SUBJECT_EMPTY:
			GUC_check_errdetail("At least one subject pattern is required.");
			break;
		case SHE_SUBJECT_EMPTY_TOKEN:
			GUC_check_errdetail("Subject patterns cannot have empty tokens.");
			break;
		case SHE_SUBJECT_GT_NOT_LAST:
			GUC_check_errdetail("\">\" must be the last token of a subject pattern.");
			break;
		default:
			GUC_check_errdetail("Subject patterns cannot contain whitespace or control characters.");
			break;
	}
	return false;
}

static bool
check_publisher(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || **newval == '\0')
	{
		GUC_check_errdetail("The publisher name must not be empty.");
		return false;
	}
	return true;
}

/*
 * Does every comma-separated URL end in a plausible host[:port]?  The host
 * part starts after the URL's last '@' (where nats.c ends user info), else
 * after "://".  Refuses, for example, a password holding ',' (the list is
 * split there, and the pieces would be printed unmasked).
 */
static bool
nats_url_hosts_valid(const char *url)
{
	const char *seg = url;

	while (*seg)
	{
		const char *end = strchr(seg, ',');
		const char *host = seg;
		const char *p;

		if (end == NULL)
			end = seg + strlen(seg);
		for (p = seg; p + 2 < end; p++)
			if (p[0] == ':' && p[1] == '/' && p[2] == '/')
			{
				host = p + 3;
				break;
			}
		for (p = host; p < end; p++)
			if (*p == '@')
				host = p + 1;
		p = host;
		if (p < end && *p == '[')
		{
			while (p < end && *p != ']')
				p++;
			if (p == end)
				return false;
			p++;
		}
		else
			while (p < end && (isalnum((unsigned char) *p) || *p == '.' || *p == '-' || *p == '_'))
				p++;
		if (p == host)
			return false;
		if (p < end && *p == ':')
		{
			const char *digits = ++p;

			while (p < end && isdigit((unsigned char) *p))
				p++;
			if (p == digits)
				return false;
		}
		if (p < end && *p == '/')
			p = end;			/* a trailing path is nats.c's to judge */
		if (p != end)
			return false;
		seg = (*end == ',') ? end + 1 : end;
	}
	return true;
}

/*
 * Replace PostgreSQL's message for a refused nats_url, which would quote the
 * value, password and all, to the client and the server log: quote it with
 * everything before its last '@' masked instead.  The value is malformed, so
 * the usual masking (url_mask.c, per comma-separated URL) could miss part of
 * a password that holds a ',' or whitespace: mask from the start.  Returns
 * false, for the check hook to return.
 */
static bool
refuse_nats_url(const char *url)
{
	const char *at = strrchr(url, '@');

	if (at == NULL)
		GUC_check_errmsg("invalid value for parameter \"state_hub_events.nats_url\": \"%s\"", url);
	else
		GUC_check_errmsg("invalid value for parameter \"state_hub_events.nats_url\": \"***%s\"", at);
	return false;
}

/*
 * nats_url: empty, or comma-separated URLs without whitespace.  A refused
 * value is never quoted with its credentials (refuse_nats_url).
 */
static bool
check_nats_url(char **newval, void **extra, GucSource source)
{
	const char *p;

	if (*newval == NULL)
		return true;
	for (p = *newval; *p; p++)
	{
		if (isspace((unsigned char) *p) || (unsigned char) *p < ' ')
		{
			GUC_check_errdetail("Server URLs cannot contain whitespace; separate them with commas only.");
			return refuse_nats_url(*newval);
		}
	}
	if (strstr(*newval, ",,") != NULL || **newval == ',' ||
		(**newval != '\0' && (*newval)[strlen(*newval) - 1] == ','))
	{
		GUC_check_errdetail("The list of server URLs has an empty entry.");
		return refuse_nats_url(*newval);
	}
	if (!nats_url_hosts_valid(*newval))
	{
		/* never echo the value: it may hold a password */
		GUC_check_errdetail("Each server URL must end in host or host:port (digits); a password in a URL may contain '@' and ':' but not ','.");
		GUC_check_errhint("Put the password in state_hub_events.password, or use creds_file.");
		return refuse_nats_url(*newval);
	}
	return true;
}

/*
 * tls_handshake_first: "on" only when the nats.c this library was built
 * with can do it (3.9 and later).
 */
static bool
check_tls_handshake_first(bool *newval, void **extra, GucSource source)
{
	if (*newval && !SHE_HAVE_TLS_HANDSHAKE_FIRST)
	{
		GUC_check_errdetail("This build of state_hub_events uses nats.c %s, which cannot start TLS before the server's INFO; nats.c 3.9 and later can.",
							NATS_VERSION_STRING);
		return false;
	}
	return true;
}

/*
 * Define every setting.  Called from _PG_init before anything else.
 */
void
she_define_settings(void)
{
	DefineCustomStringVariable("state_hub_events.nats_url",
							   "Comma-separated NATS server URLs; empty disables publishing.",
							   "Credentials in URLs are masked wherever the extension prints them.",
							   &she_nats_url, "", PGC_SIGHUP, SECRET_FLAGS,
							   check_nats_url, NULL, show_nats_url);
	DefineCustomStringVariable("state_hub_events.stream",
							   "JetStream stream that receives the events.",
							   NULL, &she_stream, "ACTIVITY_EVENTS", PGC_SUSET, 0,
							   check_stream, assign_stream, NULL);
	DefineCustomStringVariable("state_hub_events.stream_subjects",
							   "Comma-separated subject patterns of the stream; other subjects are refused.",
							   NULL, &she_stream_subjects, "org.>", PGC_SUSET, 0,
							   check_stream_subjects, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.publisher",
							   "Value of the envelope's publisher field.",
							   NULL, &she_publisher, "state-hub", PGC_SUSET, 0,
							   check_publisher, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.publish_timeout",
							"Upper bound on how long COMMIT waits for acknowledgements.",
							NULL, &she_publish_timeout_ms, 2000, 1, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("state_hub_events.wait_for_ack",
							 "Whether COMMIT waits for JetStream acknowledgements.",
							 NULL, &she_wait_for_ack, true, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.batch_linger",
							"How long the publisher holds a small write back for more commits to join it.",
							"0 publishes each take at once.",
							&she_batch_linger_ms, 1, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.connect_timeout",
							"Upper bound on one connection attempt.",
							NULL, &she_connect_timeout_ms, 1000, 1, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomEnumVariable("state_hub_events.delivery",
							 "Delivery mode: immediate or durable.",
							 NULL, &she_delivery, SHE_DELIVERY_IMMEDIATE,
							 delivery_options, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.token",
							   "Token for NATS authentication.",
							   NULL, &she_token, "", PGC_SIGHUP, SECRET_FLAGS,
							   NULL, NULL, show_token);
	DefineCustomStringVariable("state_hub_events.user",
							   "User name for NATS authentication.",
							   NULL, &she_user, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.password",
							   "Password for NATS authentication.",
							   NULL, &she_password, "", PGC_SIGHUP, SECRET_FLAGS,
							   NULL, NULL, show_password);
	DefineCustomStringVariable("state_hub_events.creds_file",
							   "NATS credentials file (user JWT and seed).",
							   NULL, &she_creds_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.nkey",
							   "Public nkey for NATS authentication (with nkey_seed_file).",
							   NULL, &she_nkey, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.nkey_seed_file",
							   "File holding the nkey seed.",
							   NULL, &she_nkey_seed_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.tls_ca_file",
							   "CA certificates that verify the server (enables TLS).",
							   NULL, &she_tls_ca_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.tls_cert_file",
							   "Client certificate for mutual TLS.",
							   NULL, &she_tls_cert_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.tls_key_file",
							   "Client private key for mutual TLS.",
							   NULL, &she_tls_key_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomBoolVariable("state_hub_events.tls_handshake_first",
							 "Whether to start TLS before the server's INFO (servers with handshake_first).",
							 NULL, &she_tls_handshake_first, false, PGC_SIGHUP, 0,
							 check_tls_handshake_first, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.max_event_bytes",
							"Largest envelope accepted at the call.",
							"Clamped to the server's max payload, less header room, once connected.",
							&she_max_event_bytes, 1024 * 1024 - SHE_HEADER_ROOM,
							256, 64 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomBoolVariable("state_hub_events.create_stream",
							 "Create the stream on first use if it is missing.",
							 NULL, &she_create_stream, true, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.stream_replicas",
							"Replicas of the stream when the extension creates it.",
							NULL, &she_stream_replicas, 1, 1, 5,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.stream_max_age",
							"Maximum age of messages in the stream when the extension creates it; 0 is unlimited.",
							NULL, &she_stream_max_age_s, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.duplicate_window",
							"Duplicate window of the stream when the extension creates it.",
							NULL, &she_duplicate_window_s, 120, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.max_events_per_transaction",
							"Most events one transaction may buffer.",
							NULL, &she_max_events_per_xact, 100000, 1, 10000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.max_transaction_bytes",
							"Most envelope bytes one transaction may buffer.",
							"An event that would pass it is refused at the call; its memory is the publishing backend's until COMMIT.",
							&she_max_transaction_kb, 1024 * 1024, 1024, INT_MAX,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.retry_interval",
							"After a failed connection or an unanswered batch, how long commits skip NATS before trying again.",
							NULL, &she_retry_interval_ms, 5000, 0, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("state_hub_events.atomic_batches",
							 "Publish each transaction's events as one JetStream atomic batch (both delivery modes).",
							 "Needs nats-server 2.12 or later and a stream with allow_atomic (a stream the extension creates gets it); otherwise events are published one by one.",
							 &she_atomic_batches, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.atomic_batch_max",
							"Most events in one atomic batch: the server's jetstream.limits.batch.max_msgs.",
							"A larger transaction is split into several atomic batches (LOGged, counted in stats()).",
							&she_atomic_batch_max, 1000, 2, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	/* PGC_POSTMASTER settings can only be defined at preload */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("state_hub_events.queue_size",
							"Shared memory for committed events on their way to the publisher process.",
							"A batch bigger than the free space is streamed in chunks at COMMIT, each wait bounded by publish_timeout.",
							&she_queue_size_kb, 8192, 256, 1024 * 1024,
							PGC_POSTMASTER, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomStringVariable("state_hub_events.database",
							   "Database whose outbox the durable worker publishes (needs preloading).",
							   "Read when the worker starts: a change takes effect at the next server start.",
							   &she_database, "", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.max_backlog_events",
							"Durable mode: events the outbox may hold before backlog_overflow applies; 0 is unlimited.",
							NULL, &she_max_backlog_events, 1000000, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("state_hub_events.backlog_overflow",
							 "Durable mode, backlog full: 'error' refuses new events at the call, 'accept' keeps them and warns.",
							 NULL, &she_backlog_overflow, SHE_OVERFLOW_ERROR,
							 overflow_options, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.durable_duplicate_window",
							"Duplicate window of the stream when the durable worker creates it.",
							NULL, &she_durable_dup_window_s, 3600, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("state_hub_events.worker_batch_bytes",
							"Durable mode: most envelope bytes the worker reads and publishes as one batch.",
							"A batch also holds at most 1000 events, and at least one.",
							&she_worker_batch_kb, 8192, 1, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);

	/*
	 * A test setting, not for production: a sleep at XACT_EVENT_COMMIT
	 * before the batch is handed over, after the transaction became
	 * visible, so a test can make another transaction commit in that
	 * window (commit order, test/t/018_publisher.pl).  Hidden, superuser.
	 */
	DefineCustomIntVariable("state_hub_events.test_commit_delay_ms",
							"Test only: delay the hand-over at commit.",
							NULL, &she_test_commit_delay_ms, 0, 0, 10000,
							PGC_SUSET, GUC_UNIT_MS | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	/*
	 * A test setting, not for production: the publisher raises an ERROR
	 * at the end of each linger, while it holds the events it took, so a
	 * test can check how a publisher that exits with an ERROR counts them
	 * (test/t/071_publisher_dies_lingering.pl).  Hidden.
	 */
	DefineCustomBoolVariable("state_hub_events.test_publisher_error",
							 "Test only: make the publisher exit with an ERROR while it holds a take.",
							 NULL, &she_test_publisher_error, false,
							 PGC_SIGHUP, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("state_hub_events");
}
