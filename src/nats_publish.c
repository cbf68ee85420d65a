/*-------------------------------------------------------------------------
 *
 * nats_publish.c
 *	  Publishing a batch with per-message outcomes: the one interface
 *	  "publish these messages to this stream, tell me each one's outcome by
 *	  this deadline" used by the publisher and the durable worker.
 *
 * Exact accounting.  Every outcome comes from that message's own
 * acknowledgement, never by subtraction from counters.  The batch in flight
 * (SheAckBatch) is the closure of the acks: nats.c hands the ack handler
 * the message it acknowledges, and the batch maps that message (its
 * address: a message is alive until the handler destroys it, so addresses
 * are unique among messages in flight) to its index.  At the deadline the
 * caller detaches the batch under SheConn.mu: what is still pending becomes
 * UNCONFIRMED, and an ack arriving later finds no batch, is counted in
 * SheConn.late_acks (or, once detach() has made nats.c drop its pending
 * messages, is ignored by nats.c) and changes nothing, so it is neither
 * counted twice nor taken as a success for a batch that gave up on it.
 *
 * Threads.  she_ack_handler runs on a nats thread: under SheConn.mu it
 * writes only the current batch's outcomes, its pending count and its
 * texts (plain malloc'd memory), and calls SetLatch (safe anywhere).  The
 * caller's thread reads them under the same mutex.  No palloc, no elog.
 *
 * Permissions.  The server drops a message whose subject the user may not
 * publish to and says so only with an asynchronous -ERR naming the subject
 * (nats_conn.c's error handler); JetStream never answers it.  The server
 * handles one connection's messages in order, so the -ERR belongs to the
 * first message of that subject still pending: she_publish_denied refuses
 * it for good.  (A late -ERR for a batch given up on can only hit a message
 * of the same subject, which the server refuses for the same reason, unless
 * the permissions changed in between.)
 *
 * The stream.  Nothing is looked up before publishing: if JetStream answers
 * "no responders" (no stream captures the subject) and create_stream is
 * set, the stream is created and those messages are published again within
 * the same deadline.  With state_hub_events.atomic_batches on, the stream
 * is created with allow_atomic (a raw request: see create_stream_atomic).
 *
 * Atomic batches.  Each run of one transaction's events goes as atomic
 * batches (plan_atomic, send_member); the members take their commit
 * message's outcome (spread_atomic).  The server refuses a batch without
 * naming the member; where one member may be the cause, the publisher's
 * entry (she_publish_events_cb) publishes that transaction again at once,
 * one event at a time, so that each event gets its own outcome
 * (retry_refused_batches); the durable worker's entry leaves that to the
 * worker's next attempt.
 *
 * IDENTIFICATION
 *	  src/nats_publish.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"

#include "ascii_text.h"
#include "nats_publish.h"

#define TOMBSTONE ((natsMsg *) 1)

/* Longest wait for the PONG of the flush after a batch is sent. */
#define FLUSH_WAIT_MS	1000

/* Longest wait of a single event's request, signals blocked (publish_one). */
#define SINGLE_WAIT_MS	1000

/* The closure of one batch's acknowledgements (fields under SheConn.mu). */
typedef struct SheAckBatch
{
	natsMsg   **keys;			/* open addressing: message -> index */
	int		   *vals;
	int			mask;			/* capacity - 1 (a power of two) */
	SheMsgOutcome *out;
	const SheEvent *events;		/* their subjects, for she_publish_denied */
	int			n;
	natsMsg   **kept;			/* "no responders" messages, to send again */
	int			pending;		/* sent and not answered */
	int			no_responders;	/* kept[] entries */
	Latch	   *latch;			/* set when pending reaches 0 */
	SheBatchOutcome *sum;		/* texts */
	uint64_t	deadline;		/* she_now_usec() time: MaxWait of each send */
	int		   *last;			/* atomic batches: the index of the batch's
								 * commit message, -1 outside one; or NULL */
	SheOutcomeFn fn;			/* told each acknowledged outcome, or NULL */
	void	   *fn_arg;
	bool		stream_existed; /* creating the stream found it there */
} SheAckBatch;

static inline uint32
slot_of(const SheAckBatch *b, natsMsg *m)
{
	uint64		h = ((uint64) (uintptr_t) m >> 4) * UINT64CONST(0x9E3779B97F4A7C15);

	return (uint32) (h >> 32) & b->mask;
}

/* Under mu.  Capacity is at least twice the inserts: never full. */
static void
map_insert(SheAckBatch *b, natsMsg *m, int idx)
{
	uint32		i = slot_of(b, m);

	while (b->keys[i] != NULL && b->keys[i] != TOMBSTONE)
		i = (i + 1) & b->mask;
	b->keys[i] = m;
	b->vals[i] = idx;
}

/* Under mu.  Returns the index and removes the entry, or -1. */
static int
map_take(SheAckBatch *b, natsMsg *m)
{
	uint32		i = slot_of(b, m);

	while (b->keys[i] != NULL)
	{
		if (b->keys[i] == m)
		{
			b->keys[i] = TOMBSTONE;
			return b->vals[i];
		}
		i = (i + 1) & b->mask;
	}
	return -1;
}

/* malloc'd (safe after a commit record); NULL when out of memory. */
static SheAckBatch *
batch_create(const SheEvent *events, int n, SheMsgOutcome *out, SheBatchOutcome *sum)
{
	SheAckBatch *b = calloc(1, sizeof(SheAckBatch));
	int			cap = 16;

	while (cap < 4 * n)
		cap <<= 1;
	if (b == NULL)
		return NULL;
	b->keys = calloc(cap, sizeof(natsMsg *));
	b->vals = malloc(cap * sizeof(int));
	b->kept = calloc(Max(n, 1), sizeof(natsMsg *));
	if (b->keys == NULL || b->vals == NULL || b->kept == NULL)
	{
		free(b->keys);
		free(b->vals);
		free(b->kept);
		free(b);
		return NULL;
	}
	b->mask = cap - 1;
	b->out = out;
	b->events = events;
	b->n = n;
	b->sum = sum;
	b->latch = MyLatch;
	return b;
}

static void
batch_free(SheAckBatch *b, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (b->kept[i] != NULL)
			natsMsg_Destroy(b->kept[i]);
	free(b->keys);
	free(b->vals);
	free(b->kept);
	free(b->last);
	free(b);
}

/* Refused for good: a retry of the same message cannot succeed. */
static bool
is_permanent(natsStatus s, int code)
{
	return code == JSStreamMessageExceedsMaximumErr || code == JSStreamNotMatchErr ||
		s == NATS_MAX_PAYLOAD || s == NATS_NOT_PERMITTED;
}

/* Intern an error text in sum (under mu when a batch is attached). */
static int
add_text(SheBatchOutcome *sum, const char *text)
{
	char		safe[sizeof(sum->texts[0])];
	int			i;

	/* ASCII: these texts reach post-commit WARNINGs and SQL (ascii_text.c) */
	she_ascii_text(safe, sizeof(safe), text);
	for (i = 0; i < sum->ntexts; i++)
		if (strcmp(sum->texts[i], safe) == 0)
			return i;
	if (sum->ntexts == SHE_OUTCOME_TEXTS)
		return SHE_OUTCOME_TEXTS - 1;
	strlcpy(sum->texts[sum->ntexts], safe, sizeof(sum->texts[0]));
	return sum->ntexts++;
}

/* Mark out as refused with status s / code and text.  Under mu if attached. */
static void
set_refused(SheBatchOutcome *sum, SheMsgOutcome *o, natsStatus s, int code, const char *what)
{
	char		text[200];

	if (code != 0)
		snprintf(text, sizeof(text), "JetStream refused a message: %s (error code %d)", what, code);
	else if (s == NATS_NOT_PERMITTED || s == NATS_MAX_PAYLOAD)
		snprintf(text, sizeof(text), "NATS refused a message: %s", what);
	else
		snprintf(text, sizeof(text), "JetStream refused a message: %s", what);
	o->state = SHE_MSG_REFUSED;
	o->err_code = code;
	o->permanent = is_permanent(s, code);
	o->text = add_text(sum, text);
}

const char *
she_outcome_text(const SheBatchOutcome *sum, const SheMsgOutcome *o)
{
	return (o->text >= 0 && o->text < sum->ntexts) ? sum->texts[o->text] : "";
}

/* Under mu: tell the caller's fn a final outcome as soon as it is known. */
static void
settled(SheAckBatch *b, int i)
{
	SheMsgOutcome *o = &b->out[i];

	if (b->fn == NULL || o->reported || o->state == SHE_MSG_PENDING ||
		o->state == SHE_MSG_NO_RESPONDERS)
		return;
	o->reported = true;
	b->fn(b->fn_arg, i, o, b->sum);
}

/*
 * nats.c's ack handler (nats thread): record this message's outcome in the
 * batch it belongs to, if that batch still waits for it.
 */
void
she_ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	SheConn    *c = (SheConn *) closure;
	SheAckBatch *b;
	int			i = -1;

	pthread_mutex_lock(&c->mu);
	b = c->current;
	if (b != NULL)
		i = map_take(b, msg);
	if (i < 0)
		c->late_acks++;
	else if (b->out[i].state == SHE_MSG_PENDING)
	{
		SheMsgOutcome *o = &b->out[i];

		if (pa != NULL)
			o->state = pa->Duplicate ? SHE_MSG_DUPLICATE : SHE_MSG_STORED;
		else if (pae != NULL && pae->Err == NATS_TIMEOUT)
			o->state = SHE_MSG_UNCONFIRMED; /* no ack by MaxWait: may be stored */
		else if (pae != NULL && pae->Err == NATS_NO_RESPONDERS)
		{
			o->state = SHE_MSG_NO_RESPONDERS;
			b->kept[i] = msg;
			b->no_responders++;
			msg = NULL;
		}
		else
			set_refused(b->sum, o, pae ? pae->Err : NATS_ERR, pae ? (int) pae->ErrCode : 0,
						pae && pae->ErrText ? pae->ErrText : "unknown error");
		settled(b, i);
		if (--b->pending == 0)
			SetLatch(b->latch);
	}
	pthread_mutex_unlock(&c->mu);
	if (msg != NULL)
		natsMsg_Destroy(msg);
}

/*
 * The server refused to let us publish to subject (text: its -ERR).  Under
 * SheConn.mu, on a nats thread: refuse the first message of the current
 * batch with that subject that is still pending.
 */
void
she_publish_denied(SheConn *c, const char *subject, const char *text)
{
	SheAckBatch *b = c->current;
	int			i;

	if (b == NULL)
		return;
	for (i = 0; i < b->n; i++)
	{
		if (b->out[i].state != SHE_MSG_PENDING || strcmp(b->events[i].subject, subject) != 0)
			continue;
		set_refused(b->sum, &b->out[i], NATS_NOT_PERMITTED, 0, text);
		settled(b, i);
		if (--b->pending == 0)
			SetLatch(b->latch);
		return;
	}
}

/*
 * The headers naming the event's transaction: its id (decimal), its commit
 * key ("lsn/" or "seq/" and 16 upper-case hex digits, so that keys of one
 * kind sort as strings), the event's 1-based index and the transaction's
 * event count.  None for an event without a transaction id.
 */
static natsStatus
set_txn_headers(natsMsg *msg, const SheTxn *t)
{
	char		buf[64];
	natsStatus	s;

	if (t->xid == 0)
		return NATS_OK;
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long) t->xid);
	s = natsMsgHeader_Set(msg, SHE_HDR_TXN_ID, buf);
	if (s == NATS_OK)
	{
		snprintf(buf, sizeof(buf), "%s/%016llX", t->key_kind == 'S' ? "seq" : "lsn",
				 (unsigned long long) t->key);
		s = natsMsgHeader_Set(msg, SHE_HDR_COMMIT_KEY, buf);
	}
	if (s == NATS_OK)
	{
		snprintf(buf, sizeof(buf), "%d", (int) t->index);
		s = natsMsgHeader_Set(msg, SHE_HDR_TXN_INDEX, buf);
	}
	if (s == NATS_OK)
	{
		snprintf(buf, sizeof(buf), "%d", (int) t->count);
		s = natsMsgHeader_Set(msg, SHE_HDR_TXN_COUNT, buf);
	}
	return s;
}

/* The message of one event.  Signals blocked. */
static natsStatus
make_msg(natsMsg **msg, const SheEvent *ev, const char *stream)
{
	natsStatus	s;

	s = natsMsg_Create(msg, ev->subject, NULL, ev->envelope, ev->envelope_len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(*msg, "Nats-Msg-Id", ev->id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(*msg, "Nats-Expected-Stream", stream);
	if (s == NATS_OK)
		s = set_txn_headers(*msg, &ev->txn);
	return s;
}

static bool send_one(SheConn *c, SheAckBatch *b, natsMsg *msg, int i);

/*
 * Make event i a member of the atomic batch that ends at b->last[i] (ADR-50:
 * Nats-Batch-Id, the commit event's id; Nats-Batch-Sequence from 1;
 * Nats-Batch-Commit on the last).  Members before the last go with a core
 * publish, which the server never answers; the last one goes with
 * send_one and its acknowledgement is the batch's.  Returns false when
 * the connection failed; a member over the server's max payload is refused
 * and the batch goes on (the server then refuses it as incomplete).
 * Signals blocked.
 */
static bool
send_member(SheConn *c, SheAckBatch *b, natsMsg *msg, int i)
{
	int			l = b->last[i];
	int			f = i;
	char		seq[16];
	natsStatus	s;

	while (f > 0 && b->last[f - 1] == l)
		f--;
	snprintf(seq, sizeof(seq), "%d", i - f + 1);
	s = natsMsgHeader_Set(msg, "Nats-Batch-Id", b->events[l].id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Batch-Sequence", seq);
	if (s == NATS_OK && i == l)
		s = natsMsgHeader_Set(msg, "Nats-Batch-Commit", "1");
	if (s == NATS_OK && i == l)
		return send_one(c, b, msg, i);
	if (s == NATS_OK)
		s = natsConnection_PublishMsg(c->nc, msg);
	natsMsg_Destroy(msg);
	if (s == NATS_MAX_PAYLOAD)
	{
		/* the server sees a gap and refuses the batch: go on to its commit */
		pthread_mutex_lock(&c->mu);
		set_refused(b->sum, &b->out[i], s, 0, "the message exceeds the server's max payload");
		pthread_mutex_unlock(&c->mu);
		return true;
	}
	if (s != NATS_OK)
	{
		const char *t = nats_GetLastError(NULL);
		char		text[200];

		snprintf(text, sizeof(text), "publishing failed: %s", t ? t : natsStatus_GetText(s));
		pthread_mutex_lock(&c->mu);
		b->out[i].text = add_text(b->sum, text);
		pthread_mutex_unlock(&c->mu);
	}
	return s == NATS_OK;
}

/*
 * Hand one message to the connection as part of batch b (index i).  On
 * success nats.c owns it.  Returns false when the connection failed (the
 * message is NOT_SENT); a refusal of this message alone returns true.
 * Signals blocked.
 */
static bool
send_one(SheConn *c, SheAckBatch *b, natsMsg *msg, int i)
{
	natsStatus	s;
	bool		answered;
	jsPubOptions po;

	pthread_mutex_lock(&c->mu);
	map_insert(b, msg, i);
	b->out[i].state = SHE_MSG_PENDING;
	b->pending++;
	pthread_mutex_unlock(&c->mu);

	/*
	 * No MaxWait: nats.c (3.4) keeps MaxWait deadlines in a sorted list that
	 * holds every message sent within MaxWait, acknowledged or not, and
	 * walks it from the head whenever a deadline is earlier than the last
	 * one, as every message of a batch sent after another one with a later
	 * deadline is: a 100,000-event transaction spent ~70-90 % of the
	 * publisher's time in that walk (perf), and the expiries of one big
	 * batch stalled the next.  Unanswered messages do not pile up in nats.c
	 * either way: detach() drops what is still pending.
	 */
	jsPubOptions_Init(&po);
	s = js_PublishMsgAsync(c->js, &msg, &po);
	if (s == NATS_OK)
		return true;

	/* not sent: nats.c calls no handler for it */
	pthread_mutex_lock(&c->mu);
	answered = (map_take(b, msg) < 0);
	if (!answered)
	{
		b->pending--;
		if (s == NATS_MAX_PAYLOAD)
			set_refused(b->sum, &b->out[i], s, 0, "the message exceeds the server's max payload");
		else
		{
			const char *t = nats_GetLastError(NULL);
			char		text[200];

			snprintf(text, sizeof(text), "publishing failed: %s", t ? t : natsStatus_GetText(s));
			b->out[i].state = SHE_MSG_NOT_SENT;
			b->out[i].text = add_text(b->sum, text);
		}
	}
	pthread_mutex_unlock(&c->mu);
	natsMsg_Destroy(msg);
	return s == NATS_MAX_PAYLOAD;
}

/* Split stream_subjects into out[] (pointers into the malloc'd *copy). */
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

static const SheStreamSpec *stream_spec = NULL;

/* Set the spec a missing stream is created with (see nats_publish.h). */
void
she_publish_set_stream_spec(const SheStreamSpec *spec)
{
	stream_spec = spec;
}

static uint64_t report_by = 0;
static bool flush_groups = true;	/* see she_publish_set_flush */

/* Whether a batch of more than one event is flushed (nats_publish.h). */
void
she_publish_set_flush(bool flush)
{
	flush_groups = flush;
}

/* Set the time by which fn hears of every settled outcome (nats_publish.h). */
void
she_publish_set_report_by(uint64_t t)
{
	report_by = t;
}

/* Append s to buf as a JSON string (quotes and backslashes escaped). */
static void
json_str(char *buf, size_t len, const char *s)
{
	size_t		o = strlen(buf);

	if (o + 1 < len)
		buf[o++] = '"';
	for (; *s && o + 3 < len; s++)
	{
		if (*s == '"' || *s == '\\')
			buf[o++] = '\\';
		buf[o++] = *s;
	}
	if (o + 1 < len)
		buf[o++] = '"';
	buf[o] = '\0';
}

/*
 * Create the stream cfg with a raw API request whose configuration is what
 * js_AddStream sends for it (the server fills in the same defaults) plus
 * "allow_atomic":true, which nats.c before 3.14 cannot express.  A server
 * before 2.12 ignores the field it does not know (nats-server 2.9 was
 * tested: the stream is created exactly as without it), so this works on
 * every server.  Returns the NATS status; *ec is JetStream's error code,
 * etext its description.  Signals blocked.
 */
static natsStatus
create_stream_atomic(SheConn *c, const jsStreamConfig *cfg, int wait_ms, jsErrCode *ec,
					 char *etext, size_t elen)
{
	char		req[4096] = "{\"name\":";
	char		subj[300];
	natsMsg    *reply = NULL;
	natsStatus	s;
	const char *data;
	const char *e;
	int			i;

	json_str(req, sizeof(req), cfg->Name);
	strlcat(req, ",\"subjects\":[", sizeof(req));
	for (i = 0; i < cfg->SubjectsLen; i++)
	{
		if (i > 0)
			strlcat(req, ",", sizeof(req));
		json_str(req, sizeof(req), cfg->Subjects[i]);
	}
	snprintf(subj, sizeof(subj),
			 "],\"retention\":\"limits\",\"max_consumers\":-1,\"max_msgs\":-1,\"max_bytes\":-1,"
			 "\"max_age\":%lld,\"max_msgs_per_subject\":-1,\"max_msg_size\":-1,\"discard\":\"old\","
			 "\"storage\":\"file\",\"num_replicas\":%d,\"duplicate_window\":%lld,\"allow_atomic\":true}",
			 (long long) cfg->MaxAge, (int) cfg->Replicas, (long long) cfg->Duplicates);
	if (strlcat(req, subj, sizeof(req)) >= sizeof(req))
		return NATS_INSUFFICIENT_BUFFER;
	snprintf(subj, sizeof(subj), "$JS.API.STREAM.CREATE.%s", cfg->Name);
	s = natsConnection_RequestString(&reply, c->nc, subj, req, wait_ms);
	if (s != NATS_OK)
		return s;
	data = natsMsg_GetData(reply);
	if (data != NULL && strstr(data, "\"error\":{") != NULL)
	{
		s = NATS_ERR;
		if ((e = strstr(data, "\"err_code\":")) != NULL)
			*ec = (jsErrCode) atoi(e + strlen("\"err_code\":"));
		if ((e = strstr(data, "\"description\":\"")) != NULL)
		{
			e += strlen("\"description\":\"");
			snprintf(etext, elen, "%.*s", (int) strcspn(e, "\""), e);
		}
	}
	natsMsg_Destroy(reply);
	return s;
}

/*
 * Refuse a message that met "no responders" although the stream exists
 * (creating it found it there): its subjects do not capture the message's
 * subject, or (in a cluster) the stream has no leader at the moment.  Not
 * for good: the second passes once a leader is elected, so the durable
 * worker keeps the event at the head of the outbox and retries it.  With
 * stream NULL (a batch's texts are shared) the text names no subject.
 */
static void
uncaptured(SheBatchOutcome *sum, SheMsgOutcome *o, const char *stream, const char *subject)
{
	char		text[200];

	if (stream != NULL)
		snprintf(text, sizeof(text),
				 "no stream captures the subjects (stream \"%s\" exists but does not capture subject \"%s\", or has no leader)",
				 stream, subject);
	else
		snprintf(text, sizeof(text),
				 "no stream captures the subjects (the stream exists but does not capture them, or has no leader)");
	o->state = SHE_MSG_REFUSED;
	o->permanent = false;
	o->text = add_text(sum, text);
}

/*
 * Create the stream (JetStream said no stream captures our subjects), as
 * the batch's spec says, or else as the settings say, with atomic publish
 * allowed when state_hub_events.atomic_batches is on.  A stream of that
 * name already there (error 10058: a racing creator, or a stream whose
 * subjects do not capture the message) counts as success and sets
 * *existed.  Signals blocked.
 */
static bool
create_stream_now(SheConn *c, const char *stream, uint64_t deadline, char *reason, size_t reasonlen,
				  bool *existed)
{
	jsStreamInfo *si = NULL;
	jsErrCode	ec = 0;
	jsOptions	jo;
	natsStatus	s;
	jsStreamConfig cfg;
	const char *subjects[64];
	char	   *copy = NULL;
	char		etext[200] = "";
	int			wait_ms = (int) Max(she_ms_left(deadline), 1);

	jsOptions_Init(&jo);
	jo.Wait = wait_ms;
	jsStreamConfig_Init(&cfg);
	cfg.Name = stream;
	cfg.SubjectsLen = split_subjects(stream_spec ? stream_spec->subjects : she_stream_subjects,
									 &copy, subjects, 64);
	cfg.Subjects = subjects;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = stream_spec ? stream_spec->replicas : she_stream_replicas;
	cfg.MaxAge = (int64_t) (stream_spec ? stream_spec->max_age_s : she_stream_max_age_s) * 1000000000;
	if (stream_spec)
		cfg.Duplicates = (int64_t) stream_spec->duplicate_window_s * 1000000000;
	else
		cfg.Duplicates = (int64_t) (she_in_worker ? Max(she_duplicate_window_s, she_durable_dup_window_s)
									: she_duplicate_window_s) * 1000000000;
	if (she_atomic_batches)
		s = create_stream_atomic(c, &cfg, wait_ms, &ec, etext, sizeof(etext));
	else
		s = js_AddStream(&si, c->js, &cfg, &jo, &ec);
	free(copy);
	if (si != NULL)
		jsStreamInfo_Destroy(si);
	*existed = (s != NATS_OK && ec == JSStreamNameExistErr);
	if (s == NATS_OK || ec == JSStreamNameExistErr)
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
				 stream, etext[0] ? etext : t ? t : natsStatus_GetText(s));
	}
	return false;
}

/* Why no stream takes the messages, when it is not (or cannot be) created. */
static void
no_stream_reason(const char *stream, bool create_stream, const char *create_err,
				 char *reason, size_t reasonlen)
{
	if (!create_stream)
		snprintf(reason, reasonlen,
				 "no stream captures the subjects (stream \"%s\" is missing and state_hub_events.create_stream is off)",
				 stream);
	else
		strlcpy(reason, create_err, reasonlen);
}

/* she_now_usec() time a stopping process publishes until; 0: not stopping */
static uint64_t stop_deadline = 0;

/*
 * When a process asked to stop (SIGTERM: the publisher's shutdown request,
 * the worker's die()) gives up on NATS: the publisher publishes for at
 * most publish_timeout (its configuration file's value) from the first
 * time it sees the request, whatever deadlines the sessions gave their
 * batches; the worker at once (the outbox keeps what was not acknowledged,
 * and the next worker publishes it again).  0 while no stop is requested.
 */
uint64_t
she_publish_stop_deadline(void)
{
	if (stop_deadline == 0 && ProcDiePending)
		stop_deadline = she_now_usec();
	else if (stop_deadline == 0 && ShutdownRequestPending)
		stop_deadline = she_now_usec() + (uint64_t) she_publish_timeout_ms * 1000;
	return stop_deadline;
}

/*
 * deadline, or earlier when the process is asked to stop; now when a
 * statement cancel is pending (pg_cancel_backend() on the durable worker:
 * the attempt is given up, what is unanswered becomes UNCONFIRMED, and the
 * worker raises the cancel once the attempt is settled; the publisher has
 * no database connection and ignores SIGINT).
 */
static uint64_t
stop_capped(uint64_t deadline)
{
	uint64_t	stop = she_publish_stop_deadline();

	if (QueryCancelPending)
		return Min(deadline, she_now_usec());

	return (stop != 0 && stop < deadline) ? stop : deadline;
}

/*
 * Wait until every sent message of b is answered or deadline passes, or
 * sooner when the process is asked to stop (SIGTERM).  On MyLatch (the
 * ack handler and the signal handlers set it), so the process's signals
 * stay live.
 */
static void
wait_for_acks(SheConn *c, SheAckBatch *b, uint64_t deadline)
{
	for (;;)
	{
		int			pending;
		int64_t		left;

		pthread_mutex_lock(&c->mu);
		pending = b->pending;
		pthread_mutex_unlock(&c->mu);
		left = she_ms_left(stop_capped(deadline));
		if (pending == 0 || left <= 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) Max(left, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Send every message of the batch, or until the connection fails (the
 * rest stays NOT_SENT).  Signals blocked.
 */
static void
send_all(SheConn *c, SheAckBatch *b, const char *stream, const SheEvent *events, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		natsMsg    *msg = NULL;
		natsStatus	s = make_msg(&msg, &events[i], stream);

		if (s != NATS_OK)
		{
			char		text[200];

			snprintf(text, sizeof(text), "cannot build the message: %s", natsStatus_GetText(s));
			natsMsg_Destroy(msg);
			pthread_mutex_lock(&c->mu);
			b->out[i].text = add_text(b->sum, text);
			pthread_mutex_unlock(&c->mu);
			break;
		}
		if (b->last != NULL && b->last[i] >= 0)
		{
			if (!send_member(c, b, msg, i))
				break;
		}
		else if (!send_one(c, b, msg, i))
			break;
	}
}

/*
 * Cut events into atomic batches: each run of one transaction's events
 * (same xid, consecutive indexes) of two or more events becomes batches of
 * at most max events; a one-event rest goes alone (one message is atomic).
 * A transaction counts as split when its run holds its first event and
 * does not go as one batch (more than max events, or only part of it was
 * taken from the queue).  Fills last[] (see SheAckBatch).
 */
static void
plan_atomic(const SheEvent *ev, int n, int max, int *last, SheBatchOutcome *sum)
{
	int			i = 0;

	while (i < n)
	{
		int			j = i + 1;
		int			f;

		while (ev[i].txn.xid != 0 && j < n && ev[j].txn.xid == ev[i].txn.xid &&
			   ev[j].txn.index == ev[j - 1].txn.index + 1)
			j++;
		for (f = i; f < j; f++)
			last[f] = -1;
		if (ev[i].txn.index == 1 && (j - i > max || j - i < ev[i].txn.count))
			sum->atomic_splits++;
		for (f = i; f < j && j - i >= 2; f += max)
		{
			int			l = Min(f + max, j) - 1;
			int			k;

			for (k = f; k <= l && l > f; k++)
				last[k] = l;
		}
		i = j;
	}
}

/*
 * Give each member of an atomic batch its batch's outcome (that of the
 * commit message): all stored, or none.  A batch whose commit was never
 * sent stays NOT_SENT (the server drops it after its batch timeout).
 *
 * A refused batch: the server names no member (a member too large makes
 * the commit fail as "incomplete", 10176; a message id already stored,
 * "contains duplicate message id", 10201), so every member, the commit
 * too, is refused with batch_refused set and never for good: publishing
 * them one by one learns each one's outcome (the publisher does so at once,
 * retry_refused_batches; the durable worker on its next attempt).
 *
 * Duplicates.  nats-server (2.12 to 2.15: the atomic path checks every
 * member's Nats-Msg-Id at the commit) refuses a batch holding an id of
 * its duplicate window with 10201 rather than acknowledging it, so a
 * commit acknowledged as a duplicate does not occur; were one to come,
 * the members would count as duplicates: the batch stored nothing.
 */
static void
spread_atomic(SheAckBatch *b, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		int			l = b->last[i];

		if (l < 0)
			continue;
		if (i == l)
		{
			if (b->out[l].state == SHE_MSG_STORED || b->out[l].state == SHE_MSG_DUPLICATE)
				b->sum->atomic_batches++;
			else if (b->out[l].state == SHE_MSG_REFUSED)
			{
				b->out[l].permanent = false;
				b->out[l].batch_refused = true;
			}
			continue;
		}
		if (b->out[l].state == SHE_MSG_REFUSED)
		{
			b->out[i] = b->out[l];
			b->out[i].reported = false; /* its own report, not the commit's */
			b->out[i].permanent = false;
			b->out[i].batch_refused = true;
		}
		else if (b->out[l].state != SHE_MSG_NOT_SENT)
		{
			b->out[i] = b->out[l];
			b->out[i].reported = false; /* its own report, not the commit's */
		}
		else if (b->out[i].text < 0)
			b->out[i].text = b->out[l].text;
	}
}

/*
 * Send again the atomic batch whose commit message (index l, msg) met "no
 * responders": its members went before it as core publishes, which no
 * stream captured, so the commit alone would make the server refuse the
 * batch as incomplete (10176) and lose every event of it.  The members are
 * made and sent again first, then the commit.  Signals blocked.
 */
static void
resend_atomic(SheConn *c, SheAckBatch *b, natsMsg *msg, int l, const char *stream)
{
	int			f = l;
	int			i;

	while (f > 0 && b->last[f - 1] == l)
		f--;
	for (i = f; i < l; i++)
	{
		natsMsg    *m = NULL;

		if (make_msg(&m, &b->events[i], stream) != NATS_OK)
		{
			natsMsg_Destroy(m);
			break;				/* the server refuses the batch as incomplete */
		}
		if (!send_member(c, b, m, i))
			break;
	}
	(void) send_one(c, b, msg, l);
}

/*
 * The messages that met "no responders": create the stream and send them
 * again, or refuse them.  Signals blocked.
 */
static void
retry_no_responders(SheConn *c, SheAckBatch *b, int n, const char *stream,
					bool create_stream, uint64_t deadline)
{
	char		reason[200] = "";
	bool		existed = false;
	bool		created = create_stream &&
		create_stream_now(c, stream, deadline, reason, sizeof(reason), &existed);
	int			i;

	pthread_mutex_lock(&c->mu);
	b->stream_existed = existed;
	pthread_mutex_unlock(&c->mu);

	if (!create_stream)
		no_stream_reason(stream, false, "", reason, sizeof(reason));
	for (i = 0; i < n; i++)
	{
		natsMsg    *msg;

		pthread_mutex_lock(&c->mu);
		msg = b->kept[i];
		b->kept[i] = NULL;
		if (msg != NULL)
			b->no_responders--;
		if (msg != NULL && !created)
		{
			b->out[i].state = SHE_MSG_REFUSED;
			b->out[i].text = add_text(b->sum, reason);
		}
		pthread_mutex_unlock(&c->mu);
		if (msg == NULL)
			continue;
		if (!created)
			natsMsg_Destroy(msg);
		else if (b->last != NULL && b->last[i] == i)
			resend_atomic(c, b, msg, i, stream);
		else
			(void) send_one(c, b, msg, i);
	}
}

/*
 * Give up on what is still unanswered: detach the batch, so later acks
 * change nothing; pending becomes UNCONFIRMED, and nats.c forgets those
 * messages (only this batch is in flight; an ack arriving later for one is
 * ignored by nats.c).  Signals blocked.
 */
static void
detach(SheConn *c, SheAckBatch *b, int n, int publish_ms)
{
	int			i;
	int			t = -1;
	natsMsgList unanswered;

	pthread_mutex_lock(&c->mu);
	c->current = NULL;
	for (i = 0; i < n; i++)
	{
		if (b->out[i].state == SHE_MSG_PENDING)
		{
			if (t < 0)
			{
				char		text[200];

				snprintf(text, sizeof(text), "no acknowledgement from JetStream within %d ms", publish_ms);
				t = add_text(b->sum, text);
			}
			b->out[i].state = SHE_MSG_UNCONFIRMED;
			b->out[i].text = t;
		}
		else if (b->out[i].state == SHE_MSG_NO_RESPONDERS)
		{
			b->out[i].state = SHE_MSG_REFUSED;
			if (b->stream_existed)
				uncaptured(b->sum, &b->out[i], NULL, NULL);
			else
				b->out[i].text = add_text(b->sum, "no stream captures the subjects");
		}
	}
	pthread_mutex_unlock(&c->mu);
	if (t >= 0 && js_PublishAsyncGetPendingList(&unanswered, c->js) == NATS_OK)
		natsMsgList_Destroy(&unanswered);
}

/*
 * Forget the batch in flight, if any (the publisher exiting on an ERROR):
 * no ack handler reports an outcome of it after this returns.
 */
void
she_publish_abandon(SheConn *c)
{
	pthread_mutex_lock(&c->mu);
	c->current = NULL;
	pthread_mutex_unlock(&c->mu);
}

/*
 * Did the server refuse to let us publish to subject since the error
 * handler's count was "before"?  (A request the server drops for lack of
 * permission times out: the -ERR is the only answer.)
 */
static bool
denied_meanwhile(SheConn *c, uint64_t before, const char *subject, char *text, size_t textlen)
{
	bool		denied;

	pthread_mutex_lock(&c->mu);
	denied = c->denied != before && strcmp(c->denied_subject, subject) == 0;
	pthread_mutex_unlock(&c->mu);
	if (denied)
		snprintf(text, textlen, "Permissions Violation for Publish to \"%s\"", subject);
	return denied;
}

/*
 * Publish one message with a single request (one round trip, no flush).
 * Signals are blocked during the request, so it waits at most
 * SINGLE_WAIT_MS: a SIGTERM is seen within that.  Returns true when the
 * request got no answer in that time and the deadline is not reached:
 * o is left PENDING and the caller waits on (publish_core).
 */
static bool
publish_one(SheConn *c, const char *stream, bool create_stream, const SheEvent *ev,
			uint64_t deadline, SheMsgOutcome *o, SheBatchOutcome *sum)
{
	natsMsg    *msg = NULL;
	jsPubAck   *pa = NULL;
	jsErrCode	ec = 0;
	jsPubOptions po;
	natsStatus	s;
	bool		created = false;
	bool		existed = false;
	char		reason[200] = "";
	uint64_t	denied;

	pthread_mutex_lock(&c->mu);
	denied = c->denied;
	pthread_mutex_unlock(&c->mu);
	s = make_msg(&msg, ev, stream);
	if (s != NATS_OK)
	{
		snprintf(reason, sizeof(reason), "cannot build the message: %s", natsStatus_GetText(s));
		o->text = add_text(sum, reason);
		natsMsg_Destroy(msg);
		return false;
	}
	for (;;)
	{
		jsPubOptions_Init(&po);
		po.MaxWait = Max(Min(she_ms_left(deadline), SINGLE_WAIT_MS), 1);
		ec = 0;
		s = js_PublishMsg(&pa, c->js, msg, &po, &ec);
		if (s == NATS_NO_RESPONDERS && !created && create_stream &&
			(created = create_stream_now(c, stream, deadline, reason, sizeof(reason), &existed)))
			continue;
		break;
	}
	natsMsg_Destroy(msg);
	if (s == NATS_OK)
	{
		o->state = pa->Duplicate ? SHE_MSG_DUPLICATE : SHE_MSG_STORED;
		jsPubAck_Destroy(pa);
	}
	else if (s == NATS_MAX_PAYLOAD)
		set_refused(sum, o, s, 0, "the message exceeds the server's max payload");
	else if (s == NATS_TIMEOUT && denied_meanwhile(c, denied, ev->subject, reason, sizeof(reason)))
		set_refused(sum, o, NATS_NOT_PERMITTED, 0, reason);
	else if (s == NATS_TIMEOUT && she_ms_left(deadline) > 0)
		return true;
	else if (s == NATS_TIMEOUT)
	{
		snprintf(reason, sizeof(reason), "no acknowledgement from JetStream within %d ms",
				 (int) po.MaxWait);
		o->state = SHE_MSG_UNCONFIRMED;
		o->text = add_text(sum, reason);
	}
	else if (s == NATS_NO_RESPONDERS)
	{
		if (existed)
		{
			uncaptured(sum, o, stream, ev->subject);
			return false;
		}
		if (!create_stream)
			no_stream_reason(stream, false, "", reason, sizeof(reason));
		else if (created)
			snprintf(reason, sizeof(reason),
					 "no stream captures the subjects (stream \"%s\" was created but does not capture subject \"%s\")",
					 stream, ev->subject);
		o->state = SHE_MSG_REFUSED;
		o->text = add_text(sum, reason);
	}
	else
	{
		const char *t = nats_GetLastError(NULL);

		/* nats.c prefixes its own source location: "(js.c:535): ..." */
		if (t != NULL && t[0] == '(' && strstr(t, "): ") != NULL)
			t = strstr(t, "): ") + 3;
		set_refused(sum, o, s, (int) ec, t ? t : natsStatus_GetText(s));
	}
	return false;
}

/*
 * Ask JetStream for the stream's info with a raw API request (nats.c
 * before 3.14 does not know the field) and look for "allow_atomic":true,
 * which only servers that support atomic batch publish (2.12 and later)
 * report.  An error answer (no such stream yet) is -2, no answer -1.
 * Signals blocked by the caller.
 */
int
she_atomic_allowed(SheConn *c, const char *stream, int timeout_ms, char *err, size_t errlen)
{
	char		subj[300];
	natsMsg    *reply = NULL;
	natsStatus	s;
	int			res;
	sigset_t	saved;

	if (c->nc == NULL)
	{
		snprintf(err, errlen, "no connection to NATS");
		return -1;
	}
	snprintf(subj, sizeof(subj), "$JS.API.STREAM.INFO.%s", stream);
	she_nats_block_signals(&saved);
	s = natsConnection_Request(&reply, c->nc, subj, NULL, 0, Max(timeout_ms, 1));
	she_nats_restore_signals(&saved);
	if (s != NATS_OK)
	{
		snprintf(err, errlen, "asking JetStream about stream \"%s\" failed: %s",
				 stream, natsStatus_GetText(s));
		return -1;
	}
	if (natsMsg_GetData(reply) != NULL &&
		strstr(natsMsg_GetData(reply), "\"allow_atomic\":true") != NULL)
		res = 1;
	else
	{
		bool		error = natsMsg_GetData(reply) != NULL &&
			strstr(natsMsg_GetData(reply), "\"error\"") != NULL;

		if (error)
			snprintf(err, errlen, "JetStream has no info on stream \"%s\" (not created yet?)", stream);
		else
			snprintf(err, errlen, "stream \"%s\" does not allow atomic batch publish (that needs nats-server 2.12 or later and allow_atomic in the stream's configuration)",
					 stream);
		res = error ? -2 : 0;
	}
	natsMsg_Destroy(reply);
	return res;
}

/* Sum the outcomes; reason = the text of the first message not stored. */
static void
summarize(const SheMsgOutcome *out, int n, SheBatchOutcome *sum)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		switch ((SheMsgState) out[i].state)
		{
			case SHE_MSG_DUPLICATE:
				sum->duplicates++;
				/* FALLTHROUGH */
			case SHE_MSG_STORED:
				sum->stored++;
				continue;
			case SHE_MSG_REFUSED:
				sum->refused++;
				if (out[i].permanent)
					sum->refused_permanent++;
				break;
			case SHE_MSG_UNCONFIRMED:
				sum->unconfirmed++;
				break;
			default:
				sum->not_sent++;
				break;
		}
		if (sum->reason[0] == '\0')
			strlcpy(sum->reason, she_outcome_text(sum, &out[i]), sizeof(sum->reason));
	}
}

/*
 * Publish a batch and report each message's outcome by the deadline (see
 * nats_publish.h).  The connection must exist (she_conn_ensure).
 */
void
she_publish_events(SheConn *c, const char *stream, bool create_stream,
				   const SheEvent *events, int n, uint64_t deadline,
				   SheMsgOutcome *out, SheBatchOutcome *sum)
{
	she_publish_events_cb(c, stream, create_stream, events, n, deadline, 0,
						  out, sum, NULL, NULL);
}

static void publish_core(SheConn *c, const char *stream, bool create_stream,
						 const SheEvent *events, int n, uint64_t deadline,
						 int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
						 SheOutcomeFn fn, void *fn_arg);
static void retry_refused_batches(SheConn *c, const char *stream, bool create_stream,
								  const SheEvent *events, int n, uint64_t deadline,
								  int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
								  SheOutcomeFn fn, void *fn_arg);

/*
 * Publish, with atomic batches of at most max_atomic events (see
 * nats_publish.h).  A refused batch stays refused: the durable worker
 * publishes it one event at a time on its next attempt.
 */
void
she_publish_events_atomic(SheConn *c, const char *stream, bool create_stream,
						  const SheEvent *events, int n, uint64_t deadline,
						  int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum)
{
	publish_core(c, stream, create_stream, events, n, deadline, max_atomic,
				 out, sum, NULL, NULL);
}

/*
 * she_publish_events_atomic with fn told each acknowledged outcome as it
 * arrives, and refused atomic batches published again one event at a time
 * (see nats_publish.h).
 */
void
she_publish_events_cb(SheConn *c, const char *stream, bool create_stream,
					  const SheEvent *events, int n, uint64_t deadline,
					  int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
					  SheOutcomeFn fn, void *fn_arg)
{
	publish_core(c, stream, create_stream, events, n, deadline, max_atomic,
				 out, sum, fn, fn_arg);
	if (max_atomic >= 2 && sum->refused > 0)
		retry_refused_batches(c, stream, create_stream, events, n, deadline,
							  max_atomic, out, sum, fn, fn_arg);
}

/*
 * With a report_by time: the batch's outcomes are left to the caller (who
 * reports them together at the end) unless some are still awaited at
 * report_by; then fn is told those settled so far, and each later one as
 * it arrives.
 */
static void
report_late(SheConn *c, SheAckBatch *b, int n, SheOutcomeFn fn, uint64_t by)
{
	int			i;

	wait_for_acks(c, b, by);
	pthread_mutex_lock(&c->mu);
	if (b->pending > 0)
	{
		b->fn = fn;
		for (i = 0; i < n; i++)
			settled(b, i);
	}
	pthread_mutex_unlock(&c->mu);
}

/*
 * Send events[0..n-1] asynchronously as batch b and wait for their
 * acknowledgements until deadline (or the stop: wait_for_acks); what is
 * unanswered then is UNCONFIRMED.  With flush, the messages are written at
 * once and the PONG waited for (at most FLUSH_WAIT_MS, signals blocked);
 * without, nats.c's flusher writes them within about a millisecond.
 * Signals blocked on entry and on return (*saved: the caller's mask).
 */
static void
publish_async(SheConn *c, const char *stream, bool create_stream,
			  const SheEvent *events, int n, uint64_t deadline, int publish_ms,
			  int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
			  SheOutcomeFn fn, void *fn_arg, bool flush, sigset_t *saved)
{
	SheAckBatch *b;
	bool		retry;
	int			i;

	if ((b = batch_create(events, n, out, sum)) == NULL)
	{
		for (i = 0; i < n; i++)
			out[i].text = add_text(sum, "out of memory");
		return;
	}
	b->deadline = deadline;
	if (max_atomic >= 2 && (b->last = malloc(n * sizeof(int))) != NULL)
		plan_atomic(events, n, max_atomic, b->last, sum);
	if (b->last == NULL)
	{
		b->fn = report_by != 0 ? NULL : fn;	/* deferred: see below */
		b->fn_arg = fn_arg;
	}
	pthread_mutex_lock(&c->mu);
	c->current = b;
	pthread_mutex_unlock(&c->mu);
	send_all(c, b, stream, events, n);

	/*
	 * Write now rather than after the flusher's ~1 ms delay.  The flush
	 * waits for a PONG, with signals blocked: at most FLUSH_WAIT_MS, so a
	 * hung server cannot hold off a SIGTERM for the whole deadline (the
	 * messages are written before the PING; the acks are waited for below).
	 */
	if (flush)
		(void) natsConnection_FlushTimeout(c->nc, Max(Min(she_ms_left(deadline), FLUSH_WAIT_MS), 1));
	she_nats_restore_signals(saved);
	if (fn != NULL && b->last == NULL && report_by != 0 && report_by < deadline)
		report_late(c, b, n, fn, report_by);
	wait_for_acks(c, b, deadline);
	she_nats_block_signals(saved);
	pthread_mutex_lock(&c->mu);
	retry = b->no_responders > 0;
	pthread_mutex_unlock(&c->mu);
	if (retry)
	{
		retry_no_responders(c, b, n, stream, create_stream, deadline);
		she_nats_restore_signals(saved);
		wait_for_acks(c, b, deadline);
		she_nats_block_signals(saved);
	}
	detach(c, b, n, publish_ms);
	if (b->last != NULL)
		spread_atomic(b, n);
	batch_free(b, n);
}

/*
 * A single event whose request got no answer within SINGLE_WAIT_MS (a
 * hung or slow server): the signals its request held off are let in, and
 * unless the process is asked to stop (then it is UNCONFIRMED now), the
 * same message, same Nats-Msg-Id, goes again asynchronously for the rest
 * of the deadline, which a SIGTERM cuts short (wait_for_acks).  The request
 * cannot be waited for again: nats.c forgets it at its timeout.  If the
 * first copy was stored, JetStream acknowledges the second as a
 * duplicate; in immediate mode an event's id is new, so that duplicate is
 * our own first copy and counts as stored.  (The durable worker keeps
 * "duplicate": an earlier worker may have stored the event.)
 */
static void
publish_one_more(SheConn *c, const char *stream, bool create_stream, const SheEvent *ev,
				 uint64_t deadline, int publish_ms, SheMsgOutcome *o, SheBatchOutcome *sum,
				 sigset_t *saved)
{
	char		text[200];

	she_nats_restore_signals(saved);	/* a pending SIGTERM is handled here */
	she_nats_block_signals(saved);
	deadline = stop_capped(deadline);
	if (she_ms_left(deadline) <= 0)
	{
		snprintf(text, sizeof(text), "no acknowledgement from JetStream within %d ms (stopping)",
				 Min(SINGLE_WAIT_MS, publish_ms));
		o->state = SHE_MSG_UNCONFIRMED;
		o->text = add_text(sum, text);
		return;
	}
	o->state = SHE_MSG_NOT_SENT;
	publish_async(c, stream, create_stream, ev, 1, deadline, publish_ms, 0, o, sum,
				  NULL, NULL, false, saved);
	if (o->state == SHE_MSG_DUPLICATE && !she_in_worker)
		o->state = SHE_MSG_STORED;
	else if ((o->state == SHE_MSG_REFUSED && !o->permanent) || o->state == SHE_MSG_NOT_SENT)
	{
		/*
		 * What became of the second copy says nothing of the first, which
		 * the stream may have stored after its request gave up (a cluster
		 * electing a new stream leader answers late): not refused, not
		 * lost, but unconfirmed.  A permanent refusal (permissions, size)
		 * would have met the first copy too.
		 */
		snprintf(text, sizeof(text), "no acknowledgement within %d ms, then sent again: %s",
				 Min(SINGLE_WAIT_MS, publish_ms),
				 o->state == SHE_MSG_NOT_SENT && o->text < 0 ? "not sent" : she_outcome_text(sum, o));
		o->state = SHE_MSG_UNCONFIRMED;
		o->err_code = 0;
		o->text = add_text(sum, text);
	}
}

/*
 * Publish events[0..n-1], with atomic batches of at most max_atomic
 * events, fn told each acknowledged outcome as it arrives.  A single
 * message keeps the synchronous request (one write, no PING/PONG, no
 * flusher wake-up: half the context switches and syscalls of the
 * asynchronous path with its flush, as measured); fn is not called for it
 * and the caller reports it.  Nor for atomic batches, whose members take
 * their commit message's outcome only at the end (spread_atomic).
 */
static void
publish_core(SheConn *c, const char *stream, bool create_stream,
			 const SheEvent *events, int n, uint64_t deadline,
			 int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
			 SheOutcomeFn fn, void *fn_arg)
{
	sigset_t	saved;
	int			i;
	int			publish_ms;

	deadline = stop_capped(deadline);
	publish_ms = (int) Max(she_ms_left(deadline), 1);
	memset(sum, 0, sizeof(*sum));
	for (i = 0; i < n; i++)
	{
		out[i].state = SHE_MSG_NOT_SENT;
		out[i].permanent = false;
		out[i].err_code = 0;
		out[i].text = -1;
		out[i].batch_refused = false;
		out[i].reported = false;
	}
	if (n == 0)
		return;
	if (c->js == NULL || !she_conn_is_connected(c, sum->reason, sizeof(sum->reason)))
	{
		if (c->js == NULL)
			snprintf(sum->reason, sizeof(sum->reason), "no connection to NATS");
		for (i = 0; i < n; i++)
			out[i].text = add_text(sum, sum->reason);
		summarize(out, n, sum);
		return;
	}

	she_nats_block_signals(&saved);
	if (n == 1 && events[0].txn.count > 1 && events[0].txn.index == 1 && max_atomic >= 2)
		sum->atomic_splits++;	/* the rest of its transaction comes later */
	if (n == 1)
	{
		if (publish_one(c, stream, create_stream, &events[0], deadline, &out[0], sum))
			publish_one_more(c, stream, create_stream, &events[0], deadline, publish_ms,
							 &out[0], sum, &saved);
	}
	else
		publish_async(c, stream, create_stream, events, n, deadline, publish_ms,
					  max_atomic, out, sum, fn, fn_arg, flush_groups, &saved);
	she_nats_restore_signals(&saved);
	summarize(out, n, sum);
}

/* JetStream's refusals of an atomic batch that one member may cause */
#define JS_BATCH_INCOMPLETE		10176
#define JS_BATCH_TOO_LARGE		10199
#define JS_BATCH_DUPLICATE		10201

/*
 * Was o refused as a member of an atomic batch for a reason one member may
 * cause (the server names none): a member over the stream's max_msg_size
 * or the server's max payload (the batch is then "incomplete", 10176),
 * captured by another stream, on a subject we may not publish to (no
 * code), already stored (10201), or the batch over the server's limit
 * (10199)?  Not a refusal that holds for the whole batch (a full stream):
 * that one stands, so the stream never stores part of the transaction.
 * The same list as the durable worker's.
 */
static bool
member_refusal(const SheMsgOutcome *o)
{
	return o->state == SHE_MSG_REFUSED && o->batch_refused &&
		(o->err_code == 0 || o->err_code == JSStreamMessageExceedsMaximumErr ||
		 o->err_code == JSStreamNotMatchErr || o->err_code == JS_BATCH_INCOMPLETE ||
		 o->err_code == JS_BATCH_TOO_LARGE || o->err_code == JS_BATCH_DUPLICATE);
}

/* A retry's acknowledged outcomes, told to the caller's fn at their index. */
typedef struct RetryRelay
{
	SheOutcomeFn fn;
	void	   *arg;
	int			offset;			/* the retried run's first index */
} RetryRelay;

/* SheOutcomeFn of a retry (nats thread, under SheConn.mu). */
static void
relay_outcome(void *arg, int i, const SheMsgOutcome *o, const SheBatchOutcome *sum)
{
	const RetryRelay *r = (const RetryRelay *) arg;

	r->fn(r->arg, r->offset + i, o, sum);
}

/*
 * Did plan_atomic plan the transaction whose first event is ev[i] as one
 * batch (and so not count it split)?
 */
static bool
planned_whole(const SheEvent *ev, int n, int i, int max)
{
	int			j = i + 1;

	if (ev[i].txn.xid == 0 || ev[i].txn.index != 1)
		return false;
	while (j < n && ev[j].txn.xid == ev[i].txn.xid &&
		   ev[j].txn.index == ev[j - 1].txn.index + 1)
		j++;
	return j - i <= max && j - i >= ev[i].txn.count;
}

/* Count the transactions of the refused run events[f..l-1] that go again. */
static void
count_retried(const SheEvent *events, int n, int f, int l, int max_atomic,
			  SheBatchOutcome *sum)
{
	int			i;

	for (i = f; i < l; i++)
	{
		if (i > f && events[i].txn.xid == events[i - 1].txn.xid)
			continue;
		sum->atomic_retried++;
		/* plan_atomic counted those it split in atomic_splits */
		if (planned_whole(events, n, i, max_atomic))
			sum->atomic_retried_whole++;
	}
}

/*
 * After publish_core: publish again, one event at a time (each with its
 * own acknowledgement and its Nats-Msg-Id, within the same deadline), each
 * run of events refused as members of atomic batches for a reason one
 * member may cause, so that each gets its own outcome: only the events
 * the server objects to stay refused.  None of them was reported to fn
 * (atomic batches are settled at the end).  An event already stored is
 * acknowledged as a duplicate: nats-server refuses a whole batch holding
 * one (10201) rather than acknowledging the batch as a duplicate.  Those
 * events enter the stream after what the group sent behind them.  Then
 * sum is summed again, its texts holding the retries' too.
 */
static void
retry_refused_batches(SheConn *c, const char *stream, bool create_stream,
					  const SheEvent *events, int n, uint64_t deadline,
					  int max_atomic, SheMsgOutcome *out, SheBatchOutcome *sum,
					  SheOutcomeFn fn, void *fn_arg)
{
	int			f = 0;
	bool		retried = false;

	while (f < n && she_ms_left(deadline) > 0)
	{
		int			l = f;
		int			i;
		SheBatchOutcome sub;
		RetryRelay	relay = {fn, fn_arg, f};

		while (l < n && member_refusal(&out[l]))
			l++;
		if (l == f)
		{
			f++;
			continue;
		}
		if (sum->atomic_refusal[0] == '\0')
			strlcpy(sum->atomic_refusal, she_outcome_text(sum, &out[f]),
					sizeof(sum->atomic_refusal));
		count_retried(events, n, f, l, max_atomic, sum);
		publish_core(c, stream, create_stream, events + f, l - f, deadline, 0,
					 out + f, &sub, fn ? relay_outcome : NULL, &relay);
		for (i = f; i < l; i++)
			if (out[i].text >= 0)
				out[i].text = add_text(sum, she_outcome_text(&sub, &out[i]));
		retried = true;
		f = l;
	}
	if (!retried)
		return;
	sum->stored = sum->duplicates = sum->refused = sum->refused_permanent = 0;
	sum->unconfirmed = sum->not_sent = 0;
	sum->reason[0] = '\0';
	summarize(out, n, sum);
}
