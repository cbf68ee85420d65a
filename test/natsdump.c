/*-------------------------------------------------------------------------
 *
 * natsdump.c
 *	  Test and demo helper built on nats.c: reads a JetStream stream back,
 *	  one JSON line per message, or manages the stream.
 *
 *	  natsdump URL dump STREAM [FROM_SEQ]   messages with seq, subject, headers, body
 *	  natsdump URL info STREAM              the stream's config and state as JSON
 *	  natsdump URL purge STREAM             remove every message
 *	  natsdump URL delete STREAM            delete the stream
 *	  natsdump URL create STREAM SUBJECT [DUP_WINDOW_S]  create a stream
 *	  natsdump URL follow STREAM SECONDS    print messages as they arrive
 *	  natsdump URL envelopes STREAM [FROM_SEQ]  one line per message:
 *											{"Nats-Msg-Id": ..., "envelope": <body>}
 *
 *	  Credentials come from the environment: NATS_TOKEN, NATS_USER and
 *	  NATS_PASSWORD, NATS_CA (turns TLS on), NATS_CERT and NATS_KEY, NATS_CREDS;
 *	  NATS_TLS_FIRST=1 starts TLS before the server's INFO.
 *
 *	  Exit status 2 with the error on stderr when NATS cannot be used; a
 *	  missing stream on dump/info prints nothing (info prints null).
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

#include <nats/nats.h>

#include "compat.h"

static void
die(const char *what, natsStatus s)
{
	const char *t = nats_GetLastError(NULL);

	fprintf(stderr, "natsdump: %s: %s\n", what, t ? t : natsStatus_GetText(s));
	exit(2);
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
	printf(",\"raw\":");
	put_json_string(body ? body : "", body ? blen : 0);
	printf("}\n");
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

	if (argc < 4)
	{
		fprintf(stderr, "usage: natsdump URL dump|info|purge|delete|create|follow STREAM [...]\n");
		return 2;
	}
	cmd = argv[2];
	stream = argv[3];

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
	s = natsConnection_JetStream(&js, nc, NULL);
	if (s != NATS_OK)
		die("jetstream", s);

	if (strcmp(cmd, "create") == 0)
	{
		jsStreamConfig cfg;
		const char *subj[1];

		if (argc < 5)
			return 2;
		subj[0] = argv[4];
		jsStreamConfig_Init(&cfg);
		cfg.Name = stream;
		cfg.Subjects = subj;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		if (argc > 5)
			cfg.Duplicates = (int64_t) atoll(argv[5]) * 1000000000;
		s = js_AddStream(&si, js, &cfg, NULL, &ec);
		if (s != NATS_OK)
			die("create", s);
		jsStreamInfo_Destroy(si);
		return 0;
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

	if (strcmp(cmd, "info") == 0)
	{
		jsStreamConfig *c = si->Config;
		int			i;

		printf("{\"name\":\"%s\",\"subjects\":[", c->Name);
		for (i = 0; i < c->SubjectsLen; i++)
			printf("%s\"%s\"", i ? "," : "", c->Subjects[i]);
		printf("],\"storage\":\"%s\",\"replicas\":%lld,\"duplicate_window_s\":%lld,"
			   "\"max_age_s\":%lld,\"messages\":%llu,\"first_seq\":%llu,\"last_seq\":%llu}\n",
			   c->Storage == js_FileStorage ? "file" : "memory",
			   (long long) c->Replicas, (long long) (c->Duplicates / 1000000000),
			   (long long) (c->MaxAge / 1000000000),
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
	{
		uint64_t	seq = (argc > 4) ? strtoull(argv[4], NULL, 10) : si->State.FirstSeq;
		uint64_t	last = si->State.LastSeq;

		if (seq < si->State.FirstSeq)
			seq = si->State.FirstSeq;
		if (seq <= last && si->Config->SubjectsLen == 1)
		{
			/* an ordered consumer streams them: one request, not one per message */
			natsSubscription *sub = NULL;
			jsSubOptions so;

			jsSubOptions_Init(&so);
			so.Stream = stream;
			so.Ordered = true;
			so.Config.DeliverPolicy = js_DeliverByStartSequence;
			so.Config.OptStartSeq = seq;
			s = js_SubscribeSync(&sub, js, si->Config->Subjects[0], NULL, &so, &ec);
			if (s != NATS_OK)
				die("subscribe", s);
			while (seq <= last)
			{
				natsMsg    *m = NULL;
				jsMsgMetaData *meta = NULL;

				s = natsSubscription_NextMsg(&m, sub, 5000);
				if (s != NATS_OK)
					die("next message", s);
				if (natsMsg_GetMetaData(&meta, m) == NATS_OK)
				{
					seq = meta->Sequence.Stream;
					if (cmd[0] == 'e')
						print_envelope(m);
					else
						print_msg(m, seq);
					seq++;
					jsMsgMetaData_Destroy(meta);
				}
				natsMsg_Destroy(m);
			}
			natsSubscription_Unsubscribe(sub);
			natsSubscription_Destroy(sub);
		}
		for (; seq > 0 && seq <= last; seq++)
		{
			natsMsg    *m = NULL;

			s = js_GetMsg(&m, js, stream, seq, NULL, &ec);
			if (s == NATS_NOT_FOUND)
				continue;		/* deleted */
			if (s != NATS_OK)
				die("get message", s);
			if (cmd[0] == 'e')
				print_envelope(m);
			else
				print_msg(m, seq);
			natsMsg_Destroy(m);
		}
	}
	else if (strcmp(cmd, "follow") == 0)
	{
		/* Poll by sequence until SECONDS have passed without a new message. */
		int			idle_limit = (argc > 4) ? atoi(argv[4]) : 5;
		uint64_t	seq = si->State.LastSeq + 1;
		time_t		last_seen = time(NULL);

		setvbuf(stdout, NULL, _IOLBF, 0);
		while (time(NULL) - last_seen < idle_limit)
		{
			natsMsg    *m = NULL;

			s = js_GetMsg(&m, js, stream, seq, NULL, &ec);
			if (s == NATS_OK)
			{
				print_msg(m, seq);
				natsMsg_Destroy(m);
				seq++;
				last_seen = time(NULL);
			}
			else
				nats_Sleep(50);
		}
	}
	else
	{
		fprintf(stderr, "natsdump: unknown command \"%s\"\n", cmd);
		return 2;
	}

	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
	nats_Close();
	return 0;
}
