/*-------------------------------------------------------------------------
 *
 * ping.c
 *	  The admin check ping(): the connection's server, TLS, identity and
 *	  round trip, and the stream's facts, as jsonb.
 *
 * she_ping_gather makes its nats calls with signals blocked into a plain
 * struct, releases every nats object, restores the signal mask, and only
 * then builds the JSON with palloc: an ERROR there leaves nothing behind.
 * The publisher answers between batches, so its nats calls are bounded
 * together (PING_BUDGET_MS): a hung server does not hold up the commits
 * queued behind a ping.
 *
 * IDENTIFICATION
 *	  src/ping.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "compat.h"
#include "nats_conn.h"
#include "ping.h"
#include "state_hub_events.h"

/*
 * The most a ping() holds the publisher (its nats calls together): commits
 * queued meanwhile wait that long before they are taken, within their own
 * publish_timeout (the configuration's, at most; connect_timeout's too, as
 * for a connection attempt).
 */
#define PING_BUDGET_MS	Max(Min(she_connect_timeout_ms, she_publish_timeout_ms), 1)

/* What the nats calls learnt; plain memory. */
typedef struct PingFacts
{
	char		connected_url[512];
	char		server_id[128];
	char		server_name[256];	/* empty where nats.c cannot tell */
	int64_t		rtt_ns;
	int64_t		max_payload;
	bool		stream_found;
	char		subjects[1024];	/* JSON array body */
	bool		file_storage;
	int64_t		replicas;
	int64_t		duplicates_ns;
	int64_t		max_age_ns;
	uint64_t	msgs;
	uint64_t	bytes;
	uint64_t	last_seq;
} PingFacts;

/*
 * Append the stream's subjects to f->subjects as a JSON array body (no
 * palloc): each one escaped, and only whole strings (the list ends with
 * the last subject that fits).
 */
static void
copy_subjects(PingFacts *f, jsStreamConfig *c)
{
	size_t		o = 0;
	int			i;

	f->subjects[0] = '\0';
	for (i = 0; i < c->SubjectsLen; i++)
	{
		char		one[sizeof(f->subjects)];
		size_t		k = 0;
		const char *p;

		if (i > 0)
			one[k++] = ',';
		one[k++] = '"';
		for (p = c->Subjects[i]; *p && k + 8 < sizeof(one); p++)
		{
			unsigned char ch = (unsigned char) *p;

			if (ch == '"' || ch == '\\')
			{
				one[k++] = '\\';
				one[k++] = ch;
			}
			else if (ch < 0x20)
				k += snprintf(one + k, sizeof(one) - k, "\\u%04x", ch);
			else
				one[k++] = ch;
		}
		if (*p)
			break;				/* too long for the answer: stop here */
		one[k++] = '"';
		if (o + k + 1 > sizeof(f->subjects))
			break;
		memcpy(f->subjects + o, one, k);
		o += k;
		f->subjects[o] = '\0';
	}
}

/*
 * The round trip (a PING and its PONG), waited for at most budget_ms: the
 * server's silence is the answer (nats.c's GetRTT waits 10 s for it).
 */
static natsStatus
measure_rtt(SheConn *c, int budget_ms, PingFacts *f, char *err, size_t errlen)
{
	uint64_t	t0 = she_now_usec();
	natsStatus	s = natsConnection_FlushTimeout(c->nc, budget_ms);

	if (s == NATS_OK)
		f->rtt_ns = (int64_t) (she_now_usec() - t0) * 1000;
	else if (s == NATS_TIMEOUT)
		snprintf(err, errlen, "the server did not answer a PING within %d ms (hung or overloaded)",
				 budget_ms);
	else
		snprintf(err, errlen, "the PING failed: %s", natsStatus_GetText(s));
	return s;
}

/*
 * The nats calls: server facts and the stream lookup, within
 * PING_BUDGET_MS together (the publisher serves no commit meanwhile).
 * Signals blocked by the caller.  Returns NATS_OK, or a status with err
 * filled in.
 */
static natsStatus
gather_facts(SheConn *c, const char *stream, PingFacts *f, char *err, size_t errlen,
			 bool *no_jetstream)
{
	jsStreamInfo *si = NULL;
	jsErrCode	ec = 0;
	jsOptions	jo;
	natsStatus	s;
	int			budget_ms = PING_BUDGET_MS;
	uint64_t	deadline = she_now_usec() + (uint64_t) budget_ms * 1000;

	(void) natsConnection_GetConnectedUrl(c->nc, f->connected_url, sizeof(f->connected_url));
	(void) natsConnection_GetConnectedServerId(c->nc, f->server_id, sizeof(f->server_id));
	she_nats_server_name(c->nc, f->server_name, sizeof(f->server_name));
	f->max_payload = natsConnection_GetMaxPayload(c->nc);
	if ((s = measure_rtt(c, budget_ms, f, err, errlen)) != NATS_OK)
		return s;
	jsOptions_Init(&jo);
	jo.Wait = Max(she_ms_left(deadline), 1);
	s = js_GetStreamInfo(&si, c->js, stream, &jo, &ec);
	if (s == NATS_OK)
	{
		jsStreamConfig *cfg = si->Config;

		f->stream_found = true;
		copy_subjects(f, cfg);
		f->file_storage = (cfg->Storage == js_FileStorage);
		f->replicas = cfg->Replicas;
		f->duplicates_ns = cfg->Duplicates;
		f->max_age_ns = cfg->MaxAge;
		f->msgs = si->State.Msgs;
		f->bytes = si->State.Bytes;
		f->last_seq = si->State.LastSeq;
		jsStreamInfo_Destroy(si);
	}
	else if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr)
		s = NATS_OK;
	else if (s == NATS_NO_RESPONDERS)
	{
		*no_jetstream = true;
		snprintf(err, errlen, "JetStream is not enabled on the server");
	}
	else
	{
		const char *t = nats_GetLastError(NULL);

		snprintf(err, errlen, "stream lookup failed: %s", t ? t : natsStatus_GetText(s));
	}
	return s;
}

/* The stream part of the JSON. */
static void
stream_json(StringInfo buf, const ShePingAsk *ask, const PingFacts *f)
{
	appendStringInfoString(buf, ",\"stream\":");
	escape_json(buf, ask->stream);
	appendStringInfo(buf, ",\"stream_exists\":%s", f->stream_found ? "true" : "false");
	if (!f->stream_found)
	{
		appendStringInfo(buf, ",\"will_create\":%s", ask->create_stream ? "true" : "false");
		return;
	}
	appendStringInfo(buf, ",\"stream_subjects\":[%s],\"storage\":\"%s\",\"replicas\":%lld,"
					 "\"duplicate_window_s\":%.3f,\"max_age_s\":%.3f,"
					 "\"messages\":%llu,\"bytes\":%llu,\"last_seq\":%llu",
					 f->subjects, f->file_storage ? "file" : "memory",
					 (long long) f->replicas, f->duplicates_ns / 1e9, f->max_age_ns / 1e9,
					 (unsigned long long) f->msgs, (unsigned long long) f->bytes,
					 (unsigned long long) f->last_seq);
	/* what an operator should know about this stream */
	appendStringInfoString(buf, ",\"warnings\":[");
	if (f->duplicates_ns < (int64_t) ask->want_dup_window_s * 1000000000)
		appendStringInfo(buf, "\"the stream's duplicate window (%.0f s) is shorter than %s (%d s): a re-published event outside it is stored twice\"",
						 f->duplicates_ns / 1e9,
						 ask->durable ? "what durable delivery asks for (state_hub_events.durable_duplicate_window)"
						 : "state_hub_events.duplicate_window", ask->want_dup_window_s);
	appendStringInfoChar(buf, ']');
}

/* The identity the connection uses, never a secret. */
static void
identity_json(StringInfo buf)
{
	appendStringInfo(buf, ",\"tls\":%s,\"tls_handshake_first\":%s,\"auth\":",
					 (she_tls_ca_file[0] != '\0' || she_tls_cert_file[0] != '\0' ||
					  she_tls_handshake_first ||
					  strstr(she_nats_url, "tls://") != NULL) ? "true" : "false",
					 she_tls_handshake_first ? "true" : "false");
	if (she_creds_file[0] != '\0')
		appendStringInfoString(buf, "\"creds file\"");
	else if (she_nkey[0] != '\0')
		escape_json(buf, psprintf("nkey %s", she_nkey));
	else if (she_user[0] != '\0')
		escape_json(buf, psprintf("user %s", she_user));
	else if (she_token[0] != '\0')
		appendStringInfoString(buf, "\"token\"");
	else if (strchr(she_nats_url, '@') != NULL)
		appendStringInfoString(buf, "\"credentials in the URL\"");
	else
		appendStringInfoString(buf, "\"none\"");
}

/*
 * Ask the live connection c about itself and ask->stream; on success write
 * the JSON object into json and return true, else fill err (and
 * *no_jetstream when JetStream does not answer at all).
 */
bool
she_ping_gather(SheConn *c, const ShePingAsk *ask, StringInfo json,
				char *err, size_t errlen, bool *no_jetstream)
{
	PingFacts  *f = palloc0(sizeof(PingFacts));
	sigset_t	saved;
	natsStatus	s;
	char		url2[512];
	uint64_t	t0 = she_now_usec();

	*no_jetstream = false;
	if (!she_conn_is_connected(c, err, errlen))
		return false;
	she_nats_block_signals(&saved);
	s = gather_facts(c, ask->stream, f, err, errlen, no_jetstream);
	she_nats_restore_signals(&saved);
	if (s != NATS_OK)
		return false;

	she_mask_url(f->connected_url, url2, sizeof(url2));
	appendStringInfoString(json, "{\"connected_url\":");
	escape_json(json, url2);
	appendStringInfoString(json, ",\"server_id\":");
	escape_json(json, f->server_id);
	/* null where nats.c cannot tell (before 3.14) */
	appendStringInfoString(json, ",\"server_name\":");
	if (f->server_name[0] != '\0')
		escape_json(json, f->server_name);
	else
		appendStringInfoString(json, "null");
	appendStringInfoString(json, ",\"nats_client\":");
	escape_json(json, nats_GetVersion());
	appendStringInfo(json, ",\"rtt_us\":%lld,\"lookup_ms\":%.3f,\"max_payload\":%lld,\"jetstream\":true,"
					 "\"publisher_pid\":%d",
					 (long long) (f->rtt_ns / 1000), (she_now_usec() - t0) / 1000.0,
					 (long long) f->max_payload, MyProcPid);
	stream_json(json, ask, f);
	identity_json(json);
	appendStringInfoChar(json, '}');
	return true;
}
