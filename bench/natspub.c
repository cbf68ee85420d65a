/*-------------------------------------------------------------------------
 *
 * natspub.c
 *	  The raw nats.c baseline for the benchmarks: publishes envelopes of the
 *	  extension's shape, with Nats-Msg-Id, to the same stream.
 *
 *	  natspub URL async N    N async publishes, then wait for every ack;
 *	                         prints "msgs_per_s <rate> seconds <s>
 *	                         maxrss_kb <peak resident memory>"
 *	  natspub URL rtt N [GAP_US]
 *	                         N synchronous publish+ack round trips (after
 *	                         100 warm-up), back to back or GAP_US apart (as
 *	                         one-client commits are); prints "rtt_p50_us <x>
 *	                         rtt_p99_us <y>"
 *
 * IDENTIFICATION
 *	  bench/natspub.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <uuid/uuid.h>

#include <nats/nats.h>

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a, y = *(const double *) b;

	return (x > y) - (x < y);
}

/* An envelope like the extension's (~300 bytes), with a fresh id. */
static int
make_msg(natsMsg **m, int i)
{
	char		id[37];
	char		body[512];
	uuid_t		u;
	int			len;

	uuid_generate_random(u);
	uuid_unparse_lower(u, id);
	len = snprintf(body, sizeof(body),
				   "{\"id\":\"%s\",\"type\":\"org.statehub.bench.raw\",\"version\":\"1.0\","
				   "\"timestamp\":\"2026-11-22T12:00:00.000000Z\",\"publisher\":\"state-hub\","
				   "\"attributes\":{\"id\": %d, \"payload\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}",
				   id, i);
	if (natsMsg_Create(m, "org.statehub.bench.raw", NULL, body, len) != NATS_OK)
		return -1;
	natsMsgHeader_Set(*m, "Nats-Msg-Id", id);
	natsMsgHeader_Set(*m, "Nats-Expected-Stream", "ACTIVITY_EVENTS");
	return 0;
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	int			n;
	int			i;

	if (argc < 4)
	{
		fprintf(stderr, "usage: natspub URL async|rtt N [GAP_US]\n");
		return 2;
	}
	n = atoi(argv[3]);
	if (natsConnection_ConnectTo(&nc, argv[1]) != NATS_OK ||
		natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
	{
		fprintf(stderr, "natspub: cannot connect: %s\n", nats_GetLastError(NULL));
		return 2;
	}

	if (strcmp(argv[2], "async") == 0)
	{
		jsPubOptions po;
		struct rusage ru;
		double		t0 = now_s(), t;

		for (i = 0; i < n; i++)
		{
			natsMsg    *m;

			if (make_msg(&m, i) != 0 || js_PublishMsgAsync(js, &m, NULL) != NATS_OK)
			{
				fprintf(stderr, "natspub: publish failed: %s\n", nats_GetLastError(NULL));
				return 1;
			}
		}
		jsPubOptions_Init(&po);
		po.MaxWait = 60000;
		if (js_PublishAsyncComplete(js, &po) != NATS_OK)
		{
			fprintf(stderr, "natspub: acks missing\n");
			return 1;
		}
		t = now_s() - t0;
		getrusage(RUSAGE_SELF, &ru);
		printf("msgs_per_s %.0f seconds %.3f maxrss_kb %ld\n", n / t, t, ru.ru_maxrss);
	}
	else
	{
		double	   *lat = calloc(n, sizeof(double));
		long		gap_us = argc > 4 ? atol(argv[4]) : 0;

		for (i = -100; i < n; i++)
		{
			natsMsg    *m;
			jsPubAck   *pa = NULL;
			double		t0;

			make_msg(&m, i);
			t0 = now_s();
			if (js_PublishMsg(&pa, js, m, NULL, NULL) != NATS_OK)
			{
				fprintf(stderr, "natspub: publish failed: %s\n", nats_GetLastError(NULL));
				return 1;
			}
			if (i >= 0)
				lat[i] = (now_s() - t0) * 1e6;
			jsPubAck_Destroy(pa);
			natsMsg_Destroy(m);
			if (gap_us > 0)
			{
				struct timespec gap = {gap_us / 1000000, (gap_us % 1000000) * 1000};

				nanosleep(&gap, NULL);
			}
		}
		qsort(lat, n, sizeof(double), cmp_double);
		printf("rtt_p50_us %.1f rtt_p99_us %.1f\n", lat[n / 2], lat[(int) (n * 0.99)]);
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return 0;
}
