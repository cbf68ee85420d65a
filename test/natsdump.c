/*-------------------------------------------------------------------------
 *
 * natsdump.c
 *	  Test and demo helper built on nats.c: reads a JetStream stream back,
 *	  one JSON line per message, counts its messages, or manages the stream.
 *
 *	  natsdump URL dump STREAM [FROM_SEQ] [OPTIONS]
 *			messages with seq, subject, headers (msg_id, expected_stream, and
 *			every header as "headers": {name: first value}), body
 *	  natsdump URL envelopes STREAM [FROM_SEQ] [OPTIONS]
 *			one line per message: {"Nats-Msg-Id": ..., "envelope": <body>}
 *	  natsdump URL count STREAM [OPTIONS]   the number of messages
 *	  natsdump URL info STREAM              the stream's config and state as JSON
 *	  natsdump URL purge STREAM             remove every message
 *	  natsdump URL delete STREAM            delete the stream
 *	  natsdump URL create STREAM SUBJECT [DUP_WINDOW_S [LIMIT=N ...]]
 *			create a stream
 *	  natsdump URL update STREAM LIMIT=N ...  change a stream's limits
 *			(LIMIT: max_msg_size, max_bytes, max_msgs, discard=old|new)
 *	  natsdump URL atomic STREAM   allow atomic batch publish on the stream
 *			(nats-server 2.12 and later; exit status 2 where it cannot)
 *	  natsdump URL fill STREAM SUBJECT[,SUBJECT...] N
 *			publish N small messages {"n": i}, taking the subjects in turn
 *
 *	  OPTIONS
 *	  --subject F    only messages on subjects matching F (wildcards allowed)
 *	  --from SEQ     start at stream sequence SEQ (same as FROM_SEQ)
 *	  --limit N      print at most N messages
 *	  --at-least N   count: ask again (every 50 ms) until the count is N or more
 *	  --timeout S    give up after S seconds: exit status 1, the error on
 *					 stderr (dump and envelopes: default 60; count: default 0,
 *					 one look)
 *
 *	  dump and envelopes read through an ordered consumer (flow control and
 *	  heartbeats) whose pending limits are lifted, so a large stream never
 *	  makes this reader a slow consumer, and they stop at the last message
 *	  on the filter (the stream's subject by default) when they started:
 *	  they never wait for a message that is not there.  count asks the
 *	  stream's state (one stream-info request), never reads messages.
 *
 *	  Credentials come from the environment: NATS_TOKEN, NATS_USER and
 *	  NATS_PASSWORD, NATS_CA (turns TLS on), NATS_CERT and NATS_KEY, NATS_CREDS;
 *	  NATS_TLS_FIRST=1 starts TLS before the server's INFO.
 *
 *	  Exit status 2 with the error on stderr when NATS cannot be used, 1
 *	  when a deadline passed, 3 for a usage error; a missing stream on
 *	  dump/info/count prints nothing, null and 0.
 *
 * IDENTIFICATION
 *	  test/natsdump.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

#include "compat.h"

/* exit statuses: 1 a deadline passed, 2 NATS failed, 3 a usage error */
#define EXIT_TIMEOUT 1
#define EXIT_NATS 2
#define EXIT_USAGE 3

static void
die(const char *what, natsStatus s)
{
	const char *t = nats_GetLastError(NULL);

	if (t != NULL && *t != '\0')
		fprintf(stderr, "natsdump: %s: %s (%s)\n", what, natsStatus_GetText(s), t);
	else
		fprintf(stderr, "natsdump: %s: %s\n", what, natsStatus_GetText(s));
	exit(EXIT_NATS);
}

/* Print a JSON string (the body is JSON already; headers and subjects are not). */
static void
put_json_string(const char *s, int len)
{
	int			i;

	putchar('"');
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* The demo's format: the header and the envelope itself, one JSON line. */
static void
print_envelope(natsMsg *m)
{
	const char *v = NULL;

	printf("{\"Nats-Msg-Id\":");
	if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v != NULL)
		put_json_string(v, (int) strlen(v));
	else
		printf("null");
	printf(",\"envelope\":%.*s}\n", natsMsg_GetDataLength(m), natsMsg_GetData(m));
}

static void
print_msg(natsMsg *m, uint64_t seq)
{
	const char *v = NULL;
	const char *body = natsMsg_GetData(m);
	int			blen = natsMsg_GetDataLength(m);

	printf("{\"seq\":%llu,\"subject\":", (unsigned long long) seq);
	put_json_string(natsMsg_GetSubject(m), (int) strlen(natsMsg_GetSubject(m)));
	printf(",\"msg_id\":");
	if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v != NULL)
		put_json_string(v, (int) strlen(v));
	else
		printf("null");
	printf(",\"expected_stream\":");
	v = NULL;
	if (natsMsgHeader_Get(m, "Nats-Expected-Stream", &v) == NATS_OK && v != NULL)
		put_json_string(v, (int) strlen(v));
	else
		printf("null");
	printf(",\"headers\":{");
	{
		const char **keys = NULL;
		int			nkeys = 0;
		int			i;

		if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK)
		{
			for (i = 0; i < nkeys; i++)
			{
				v = NULL;
				(void) natsMsgHeader_Get(m, keys[i], &v);
				printf("%s", i ? "," : "");
				put_json_string(keys[i], (int) strlen(keys[i]));
				putchar(':');
				put_json_string(v ? v : "", v ? (int) strlen(v) : 0);
			}
			free((void *) keys);
		}
	}
	printf("},\"raw\":");
	put_json_string(body ? body : "", body ? blen : 0);
	printf("}\n");
}

/*
 * Turn on allow_atomic with raw API requests (nats.c before 3.14 does not
 * know the field): the stream's config from STREAM.INFO, with the field
 * added, sent to STREAM.UPDATE.  An older server ignores the field: then
 * the updated config does not show it, and this fails (exit status 2).
 */
static void
cmd_atomic(natsConnection *nc, const char *stream)
{
	char		subj[300];
	natsMsg    *reply = NULL;
	const char *data;
	const char *cfg;
	const char *p;
	char	   *req;
	int			depth = 0;
	bool		in_str = false;
	natsStatus	s;

	snprintf(subj, sizeof(subj), "$JS.API.STREAM.INFO.%s", stream);
	if ((s = natsConnection_Request(&reply, nc, subj, NULL, 0, 5000)) != NATS_OK)
		die("stream info", s);
	data = natsMsg_GetData(reply);
	if (data == NULL || (cfg = strstr(data, "\"config\":{")) == NULL)
	{
		fprintf(stderr, "natsdump: no config in %s\n", data ? data : "(empty)");
		exit(EXIT_NATS);
	}
	cfg += strlen("\"config\":");
	for (p = cfg; *p; p++)
	{
		if (in_str && *p == '\\' && p[1])
			p++;
		else if (*p == '"')
			in_str = !in_str;
		else if (!in_str && *p == '{')
			depth++;
		else if (!in_str && *p == '}' && --depth == 0)
			break;
	}
	req = malloc((p - cfg) + 64);
	sprintf(req, "{\"allow_atomic\":true,%.*s", (int) (p - cfg), cfg + 1);
	natsMsg_Destroy(reply);
	reply = NULL;
	snprintf(subj, sizeof(subj), "$JS.API.STREAM.UPDATE.%s", stream);
	if ((s = natsConnection_RequestString(&reply, nc, subj, req, 5000)) != NATS_OK)
		die("stream update", s);
	data = natsMsg_GetData(reply);
	if (data == NULL || strstr(data, "\"allow_atomic\":true") == NULL)
	{
		fprintf(stderr, "natsdump: the server did not turn allow_atomic on: %s\n", data ? data : "(empty)");
		exit(EXIT_NATS);
	}
	free(req);
	natsMsg_Destroy(reply);
}

/* What the options asked for. */
typedef struct DumpOpts
{
	const char *subject;		/* --subject, or NULL */
	uint64_t	from;			/* --from or FROM_SEQ; 0 = the first */
	int64_t		limit;			/* --limit; -1 = all */
	int64_t		at_least;		/* --at-least; -1 = one look */
	int64_t		timeout_ms;		/* --timeout; -1 = the command's default */
} DumpOpts;

/* Give up: a deadline passed before the reader had what it needed. */
static void
timed_out(const char *what)
{
	fflush(stdout);
	fprintf(stderr, "natsdump: timed out %s\n", what);
	exit(EXIT_TIMEOUT);
}

/* Parse a non-negative decimal number or exit with a usage error. */
static uint64_t
number_arg(const char *opt, const char *v)
{
	char	   *end = NULL;
	unsigned long long n;

	if (v == NULL || *v == '\0' || *v == '-')
	{
		fprintf(stderr, "natsdump: %s needs a non-negative number\n", opt);
		exit(EXIT_USAGE);
	}
	n = strtoull(v, &end, 10);
	if (*end != '\0')
	{
		fprintf(stderr, "natsdump: %s needs a non-negative number, not \"%s\"\n", opt, v);
		exit(EXIT_USAGE);
	}
	return (uint64_t) n;
}

/*
 * Split the arguments after STREAM into options and positional arguments
 * (at most npos of them, into pos).  Returns the number of positional ones.
 */
static int
parse_args(int argc, char **argv, DumpOpts *o, char **pos, int npos)
{
	int			n = 0;
	int			i;

	o->subject = NULL;
	o->from = 0;
	o->limit = -1;
	o->at_least = -1;
	o->timeout_ms = -1;
	for (i = 0; i < argc; i++)
	{
		const char *a = argv[i];
		const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

		if (strncmp(a, "--", 2) != 0)
		{
			if (n == npos)
			{
				fprintf(stderr, "natsdump: unexpected argument \"%s\"\n", a);
				exit(EXIT_USAGE);
			}
			pos[n++] = argv[i];
			continue;
		}
		if (v == NULL)
		{
			fprintf(stderr, "natsdump: %s needs a value\n", a);
			exit(EXIT_USAGE);
		}
		if (strcmp(a, "--subject") == 0)
			o->subject = v;
		else if (strcmp(a, "--from") == 0)
			o->from = number_arg(a, v);
		else if (strcmp(a, "--limit") == 0)
			o->limit = (int64_t) number_arg(a, v);
		else if (strcmp(a, "--at-least") == 0)
			o->at_least = (int64_t) number_arg(a, v);
		else if (strcmp(a, "--timeout") == 0)
			o->timeout_ms = (int64_t) number_arg(a, v) * 1000;
		else
		{
			fprintf(stderr, "natsdump: unknown option \"%s\"\n", a);
			exit(EXIT_USAGE);
		}
		i++;
	}
	return n;
}

/*
 * How many messages the stream holds (on subjects matching subject, when
 * given), from the stream's state: one request, no message is read.  A
 * missing stream holds 0.  Returns the status; *count is set on NATS_OK.
 */
static natsStatus
count_messages(jsCtx *js, const char *stream, const char *subject, uint64_t *count)
{
	jsStreamInfo *si = NULL;
	jsOptions	o;
	jsErrCode	ec = 0;
	natsStatus	s;

	jsOptions_Init(&o);
	o.Stream.Info.SubjectsFilter = subject;
	s = js_GetStreamInfo(&si, js, stream, subject ? &o : NULL, &ec);
	if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr)
	{
		*count = 0;
		return NATS_OK;
	}
	if (s != NATS_OK)
		return s;
	if (subject == NULL)
		*count = si->State.Msgs;
	else
	{
		int			i;

		*count = 0;
		for (i = 0; si->State.Subjects != NULL && i < si->State.Subjects->Count; i++)
			*count += si->State.Subjects->List[i].Msgs;
	}
	jsStreamInfo_Destroy(si);
	return NATS_OK;
}

/*
 * count: print the number of messages; with --at-least, ask again until it
 * is reached or the deadline passes (errors in between, e.g. while a
 * cluster elects a stream leader, count as "not yet").
 */
static void
cmd_count(jsCtx *js, const char *stream, DumpOpts *o)
{
	int64_t		timeout = o->timeout_ms < 0 ? 0 : o->timeout_ms;
	int64_t		deadline = nats_Now() + timeout;
	uint64_t	n = 0;
	natsStatus	s;

	for (;;)
	{
		s = count_messages(js, stream, o->subject, &n);
		if (s == NATS_OK && (o->at_least < 0 || n >= (uint64_t) o->at_least))
			break;
		if (nats_Now() >= deadline)
		{
			char		what[512];

			if (s != NATS_OK && o->at_least < 0)
				die("stream info", s);
			printf("%llu\n", (unsigned long long) n);
			snprintf(what, sizeof(what),
					 "after %lld s waiting for %lld messages%s%s in stream %s: %llu%s%s",
					 (long long) (timeout / 1000), (long long) o->at_least,
					 o->subject ? " on " : "", o->subject ? o->subject : "",
					 stream, (unsigned long long) n,
					 s != NATS_OK ? "; last error: " : "",
					 s != NATS_OK ? natsStatus_GetText(s) : "");
			timed_out(what);
		}
		nats_Sleep(50);
	}
	printf("%llu\n", (unsigned long long) n);
}

/* Print one message in the command's format. */
static void
print_one(natsMsg *m, uint64_t seq, bool envelopes)
{
	if (envelopes)
		print_envelope(m);
	else
		print_msg(m, seq);
}

/*
 * dump and envelopes: the messages from the start sequence up to the last
 * one the stream held when we started, on the filter subject when given, at
 * most limit of them, within the deadline.
 */
static void
cmd_dump(jsCtx *js, jsStreamInfo *si, const char *stream, bool envelopes, DumpOpts *o)
{
	int64_t		timeout = o->timeout_ms < 0 ? 60000 : o->timeout_ms;
	int64_t		deadline = nats_Now() + timeout;
	uint64_t	seq = o->from ? o->from : si->State.FirstSeq;
	uint64_t	last = si->State.LastSeq;
	int64_t		printed = 0;
	const char *filter = o->subject;
	jsErrCode	ec = 0;
	natsStatus	s;
	char		what[512];

	if (seq < si->State.FirstSeq)
		seq = si->State.FirstSeq;
	if (filter == NULL && si->Config->SubjectsLen == 1)
		filter = si->Config->Subjects[0];
	if (seq == 0 || seq > last || o->limit == 0)
		return;

	if (filter != NULL)
	{
		/*
		 * An ordered consumer streams them: one request, not one per
		 * message.  It has flow control and idle heartbeats; lifting the
		 * client's pending limits (65536 messages by default) keeps a large
		 * stream from making us a slow consumer that drops messages.
		 */
		natsSubscription *sub = NULL;
		natsMsg    *lm = NULL;
		jsSubOptions so;
		bool		done = false;

		/*
		 * The last message on the filter tells where to stop (and that there
		 * is nothing to read, without waiting for it).
		 */
		s = js_GetLastMsg(&lm, js, stream, filter, NULL, &ec);
		if (s == NATS_NOT_FOUND)
			return;
		if (s != NATS_OK)
			die("last message", s);
		last = natsMsg_GetSequence(lm);
		natsMsg_Destroy(lm);
		if (seq > last)
			return;

		jsSubOptions_Init(&so);
		so.Stream = stream;
		so.Ordered = true;
		so.Config.DeliverPolicy = js_DeliverByStartSequence;
		so.Config.OptStartSeq = seq;
		s = js_SubscribeSync(&sub, js, filter, NULL, &so, &ec);
		if (s != NATS_OK)
			die("subscribe", s);
		s = natsSubscription_SetPendingLimits(sub, -1, -1);
		if (s != NATS_OK)
			die("pending limits", s);
		while (!done && (o->limit < 0 || printed < o->limit))
		{
			natsMsg    *m = NULL;
			jsMsgMetaData *meta = NULL;
			int64_t		left = deadline - nats_Now();

			if (left > 0)
				s = natsSubscription_NextMsg(&m, sub, left);
			if (left <= 0 || s == NATS_TIMEOUT)
			{
				snprintf(what, sizeof(what),
						 "after %lld s reading stream %s%s%s: %lld messages read, up to sequence %llu",
						 (long long) (timeout / 1000), stream,
						 o->subject ? " on " : "", o->subject ? o->subject : "",
						 (long long) printed, (unsigned long long) seq);
				timed_out(what);
			}
			if (s != NATS_OK)
				die("next message", s);
			s = natsMsg_GetMetaData(&meta, m);
			if (s != NATS_OK)
				die("message metadata", s);
			seq = meta->Sequence.Stream;
			if (seq > last)
				done = true;	/* published after we started */
			else
			{
				print_one(m, seq, envelopes);
				printed++;
				done = (seq == last);
			}
			jsMsgMetaData_Destroy(meta);
			natsMsg_Destroy(m);
		}
		natsSubscription_Unsubscribe(sub);
		natsSubscription_Destroy(sub);
		return;
	}

	/* several subjects and no filter: one request per sequence */
	for (; seq <= last && (o->limit < 0 || printed < o->limit); seq++)
	{
		natsMsg    *m = NULL;

		if (nats_Now() >= deadline)
		{
			snprintf(what, sizeof(what), "after %lld s reading stream %s at sequence %llu",
					 (long long) (timeout / 1000), stream, (unsigned long long) seq);
			timed_out(what);
		}
		s = js_GetMsg(&m, js, stream, seq, NULL, &ec);
		if (s == NATS_NOT_FOUND)
			continue;			/* deleted */
		if (s != NATS_OK)
			die("get message", s);
		print_one(m, seq, envelopes);
		printed++;
		natsMsg_Destroy(m);
	}
}

/* A message of fill was refused or its acknowledgement timed out. */
static void
fill_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	__atomic_add_fetch((int *) closure, 1, __ATOMIC_SEQ_CST);
}

/*
 * fill: publish n messages {"n": i} (i from 1), taking the comma-separated
 * subjects in turn, asynchronously with at most 4096 in flight; every one
 * must be acknowledged.
 */
static void
cmd_fill(natsConnection *nc, const char *subjects, uint64_t n)
{
	jsCtx	   *js = NULL;
	jsOptions	o;
	jsPubOptions po;
	char	   *list = strdup(subjects);
	char	   *subj[64];
	int			nsubj = 0;
	char	   *tok;
	natsStatus	s;
	uint64_t	i;
	natsMsgList pending = {NULL, 0};
	int			failed = 0;

	for (tok = strtok(list, ","); tok != NULL && nsubj < 64; tok = strtok(NULL, ","))
		subj[nsubj++] = tok;
	if (nsubj == 0)
	{
		fprintf(stderr, "natsdump: fill needs a subject\n");
		exit(EXIT_USAGE);
	}
	jsOptions_Init(&o);
	o.PublishAsync.MaxPending = 4096;
	o.PublishAsync.StallWait = 10000;
	o.PublishAsync.ErrHandler = fill_error;
	o.PublishAsync.ErrHandlerClosure = &failed;
	s = natsConnection_JetStream(&js, nc, &o);
	if (s != NATS_OK)
		die("jetstream", s);
	for (i = 1; i <= n; i++)
	{
		char		body[32];
		int			len = snprintf(body, sizeof(body), "{\"n\": %llu}", (unsigned long long) i);

		s = js_PublishAsync(js, subj[(i - 1) % nsubj], body, len, NULL);
		if (s != NATS_OK)
			die("publish", s);
	}
	jsPubOptions_Init(&po);
	po.MaxWait = 30000;
	s = js_PublishAsyncComplete(js, &po);
	if (s == NATS_TIMEOUT)
		timed_out("after 30 s waiting for acknowledgements of fill");
	if (s != NATS_OK)
		die("publish acknowledgements", s);
	if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
	{
		failed += pending.Count;
		natsMsgList_Destroy(&pending);
	}
	if (__atomic_load_n(&failed, __ATOMIC_SEQ_CST) > 0)
	{
		fprintf(stderr, "natsdump: %d messages of fill were not stored\n", failed);
		exit(EXIT_NATS);
	}
	jsCtx_Destroy(js);
	free(list);
}

/*
 * Apply "name=value" limits to a stream config; exits with a usage error on
 * an unknown name.
 */
static void
set_limits(jsStreamConfig *cfg, char **args, int nargs)
{
	int			i;

	for (i = 0; i < nargs; i++)
	{
		const char *eq = strchr(args[i], '=');
		const char *v = eq ? eq + 1 : "";
		size_t		len = eq ? (size_t) (eq - args[i]) : strlen(args[i]);

		if (len == 12 && strncmp(args[i], "max_msg_size", len) == 0)
			cfg->MaxMsgSize = (int32_t) atol(v);
		else if (len == 9 && strncmp(args[i], "max_bytes", len) == 0)
			cfg->MaxBytes = atoll(v);
		else if (len == 8 && strncmp(args[i], "max_msgs", len) == 0)
			cfg->MaxMsgs = atoll(v);
		else if (len == 7 && strncmp(args[i], "discard", len) == 0)
			cfg->Discard = strcmp(v, "new") == 0 ? js_DiscardNew : js_DiscardOld;
		else
		{
			fprintf(stderr, "natsdump: unknown limit \"%s\"\n", args[i]);
			exit(EXIT_USAGE);
		}
	}
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsStreamInfo *si = NULL;
	jsErrCode	ec = 0;
	natsStatus	s;
	natsOptions *opts = NULL;
	const char *cmd;
	const char *stream;
	DumpOpts	o;
	char	   *pos[8] = {NULL};
	int			npos;

	if (argc < 4)
	{
		fprintf(stderr, "usage: natsdump URL dump|envelopes|count|info|purge|delete|create|update|fill STREAM [...]\n");
		return EXIT_USAGE;
	}
	cmd = argv[2];
	stream = argv[3];
	npos = parse_args(argc - 4, argv + 4, &o, pos, 8);
	if ((strcmp(cmd, "dump") == 0 || strcmp(cmd, "envelopes") == 0) && npos > 0)
	{
		if (npos > 1)
		{
			fprintf(stderr, "natsdump: unexpected argument \"%s\"\n", pos[1]);
			return EXIT_USAGE;
		}
		o.from = number_arg("FROM_SEQ", pos[0]);
	}

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetURL(opts, argv[1]);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK && getenv("NATS_TOKEN"))
		s = natsOptions_SetToken(opts, getenv("NATS_TOKEN"));
	if (s == NATS_OK && getenv("NATS_USER"))
		s = natsOptions_SetUserInfo(opts, getenv("NATS_USER"), getenv("NATS_PASSWORD"));
	if (s == NATS_OK && getenv("NATS_CA"))
	{
		s = natsOptions_SetSecure(opts, true);
		if (s == NATS_OK)
			s = natsOptions_LoadCATrustedCertificates(opts, getenv("NATS_CA"));
	}
	if (s == NATS_OK && getenv("NATS_CERT"))
		s = natsOptions_LoadCertificatesChain(opts, getenv("NATS_CERT"), getenv("NATS_KEY"));
	/* a server with tls { handshake_first: true } (nats.c 3.9 and later) */
	if (s == NATS_OK && getenv("NATS_TLS_FIRST"))
		s = she_nats_tls_handshake_first(opts);
	if (s == NATS_OK && getenv("NATS_CREDS"))
		s = natsOptions_SetUserCredentialsFromFiles(opts, getenv("NATS_CREDS"), NULL);
	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, opts);
	if (s != NATS_OK)
		die("connect", s);

	if (strcmp(cmd, "atomic") == 0)
	{
		cmd_atomic(nc, stream);
		goto done;
	}
	if (strcmp(cmd, "fill") == 0)
	{
		if (npos != 2)
		{
			fprintf(stderr, "usage: natsdump URL fill STREAM SUBJECT[,SUBJECT...] N\n");
			return EXIT_USAGE;
		}
		cmd_fill(nc, pos[0], number_arg("N", pos[1]));
		goto done;
	}

	s = natsConnection_JetStream(&js, nc, NULL);
	if (s != NATS_OK)
		die("jetstream", s);

	if (strcmp(cmd, "create") == 0)
	{
		jsStreamConfig cfg;
		const char *subj[1];

		if (npos < 1)
			return EXIT_USAGE;
		subj[0] = pos[0];
		jsStreamConfig_Init(&cfg);
		cfg.Name = stream;
		cfg.Subjects = subj;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		if (npos > 1)
			cfg.Duplicates = (int64_t) number_arg("DUP_WINDOW_S", pos[1]) * 1000000000;
		if (npos > 2)
			set_limits(&cfg, pos + 2, npos - 2);
		s = js_AddStream(&si, js, &cfg, NULL, &ec);
		if (s != NATS_OK)
			die("create", s);
		jsStreamInfo_Destroy(si);
		return 0;
	}
	if (strcmp(cmd, "count") == 0)
	{
		cmd_count(js, stream, &o);
		goto done;
	}

	s = js_GetStreamInfo(&si, js, stream, NULL, &ec);
	if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr)
	{
		if (strcmp(cmd, "info") == 0)
			printf("null\n");
		return 0;
	}
	if (s != NATS_OK)
		die("stream info", s);

	if (strcmp(cmd, "update") == 0)
	{
		jsStreamInfo *nsi = NULL;

		set_limits(si->Config, pos, npos);
		s = js_UpdateStream(&nsi, js, si->Config, NULL, &ec);
		if (s != NATS_OK)
			die("update", s);
		jsStreamInfo_Destroy(nsi);
	}
	else if (strcmp(cmd, "info") == 0)
	{
		jsStreamConfig *c = si->Config;
		int			i;

		printf("{\"name\":\"%s\",\"subjects\":[", c->Name);
		for (i = 0; i < c->SubjectsLen; i++)
			printf("%s\"%s\"", i ? "," : "", c->Subjects[i]);
		printf("],\"storage\":\"%s\",\"replicas\":%lld,\"duplicate_window_s\":%lld,"
			   "\"max_age_s\":%lld,\"max_msg_size\":%lld,\"max_bytes\":%lld,"
			   "\"messages\":%llu,\"first_seq\":%llu,\"last_seq\":%llu}\n",
			   c->Storage == js_FileStorage ? "file" : "memory",
			   (long long) c->Replicas, (long long) (c->Duplicates / 1000000000),
			   (long long) (c->MaxAge / 1000000000),
			   (long long) c->MaxMsgSize, (long long) c->MaxBytes,
			   (unsigned long long) si->State.Msgs,
			   (unsigned long long) si->State.FirstSeq,
			   (unsigned long long) si->State.LastSeq);
	}
	else if (strcmp(cmd, "purge") == 0)
	{
		s = js_PurgeStream(js, stream, NULL, &ec);
		if (s != NATS_OK)
			die("purge", s);
	}
	else if (strcmp(cmd, "delete") == 0)
	{
		s = js_DeleteStream(js, stream, NULL, &ec);
		if (s != NATS_OK)
			die("delete", s);
	}
	else if (strcmp(cmd, "dump") == 0 || strcmp(cmd, "envelopes") == 0)
		cmd_dump(js, si, stream, cmd[0] == 'e', &o);
	else
	{
		fprintf(stderr, "natsdump: unknown command \"%s\"\n", cmd);
		return EXIT_USAGE;
	}

done:
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
	nats_Close();
	return 0;
}
