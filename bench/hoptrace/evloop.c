/*
 * bench/hoptrace/evloop.c: scratch prototype, not built by anything.
 * The raw JetStream publish+ack round trip when the requesting thread
 * reads the socket itself: nats.c's event-loop mode (no reader thread),
 * send-asap (the publish is written by the calling thread), the ack read
 * from a synchronous subscription on our own inbox after
 * natsConnection_ProcessReadEvent (no delivery thread).  Compare with
 * `bench/natspub URL rtt N GAP_US` on the same server and stream.
 *
 *   cc -O2 -o evloop evloop.c -lnats
 *   ./evloop URL N [GAP_US]   prints "evloop gap=<us> p50 <x> p99 <y>"
 *
 * Only what the measurement needs: no reconnect handling, the ack's body
 * is not parsed (a refusal would count as a round trip too).
 */
#include <nats/nats.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int	fd = -1;
static volatile bool want_r = false;
static volatile bool want_w = false;
static natsConnection *gnc;

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a, y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* the event-loop callbacks: remember the socket and the wanted events */
static natsStatus
attach_cb(void **ud, void *loop, natsConnection *nc, natsSock s)
{
	fd = s;
	gnc = nc;
	*ud = NULL;
	want_r = true;
	return NATS_OK;
}

static natsStatus
read_cb(void *ud, bool add)
{
	want_r = add;
	return NATS_OK;
}

static natsStatus
write_cb(void *ud, bool add)
{
	want_w = add;
	return NATS_OK;
}

static natsStatus
detach_cb(void *ud)
{
	fd = -1;
	return NATS_OK;
}

/* wait for the socket once and let nats.c process what it can */
static void
pump(int timeout_ms)
{
	struct pollfd p = {fd, (short) ((want_r ? POLLIN : 0) | (want_w ? POLLOUT : 0)), 0};

	if (poll(&p, 1, timeout_ms) > 0)
	{
		if (p.revents & POLLOUT)
			natsConnection_ProcessWriteEvent(gnc);
		if (p.revents & POLLIN)
			natsConnection_ProcessReadEvent(gnc);
	}
}

int
main(int argc, char **argv)
{
	natsOptions *o;
	natsConnection *nc;
	natsSubscription *sub;
	int			n = argc > 2 ? atoi(argv[2]) : 1000;
	int			gap = argc > 3 ? atoi(argv[3]) : 0;
	double	   *lat = calloc(n, sizeof(double));
	int			i;

	natsOptions_Create(&o);
	natsOptions_SetURL(o, argv[1]);
	natsOptions_SetEventLoop(o, (void *) 1, attach_cb, read_cb, write_cb, detach_cb);
	natsOptions_SetSendAsap(o, true);
	if (natsConnection_Connect(&nc, o) != NATS_OK)
	{
		fprintf(stderr, "evloop: cannot connect: %s\n", nats_GetLastError(NULL));
		return 2;
	}
	natsConnection_SubscribeSync(&sub, nc, "_EVL.x.*");
	for (i = -100; i < n; i++)
	{
		char		id[64], rep[64];
		natsMsg    *m, *r = NULL;
		double		t0;

		snprintf(id, sizeof(id), "evl-%ld-%d", (long) time(NULL), i);
		snprintf(rep, sizeof(rep), "_EVL.x.%d", i + 1000);
		natsMsg_Create(&m, "org.statehub.bench.raw", rep, "hello world payload", 19);
		natsMsgHeader_Set(m, "Nats-Msg-Id", id);
		t0 = now_us();
		natsConnection_PublishMsg(nc, m);
		natsConnection_ProcessWriteEvent(nc);
		for (;;)
		{
			int			pm = 0, pb = 0;

			natsSubscription_GetPending(sub, &pm, &pb);
			if (pm == 0)
			{
				pump(1000);
				continue;
			}
			if (natsSubscription_NextMsg(&r, sub, 1) != NATS_OK)
				continue;
			if (strcmp(natsMsg_GetSubject(r), rep) == 0)
				break;
			natsMsg_Destroy(r);
			r = NULL;
		}
		if (i >= 0)
			lat[i] = now_us() - t0;
		natsMsg_Destroy(r);
		natsMsg_Destroy(m);
		if (gap > 0)
		{
			struct timespec g = {gap / 1000000, (gap % 1000000) * 1000L};

			nanosleep(&g, NULL);
		}
	}
	qsort(lat, n, sizeof(double), cmp);
	printf("evloop gap=%d p50 %.1f p99 %.1f\n", gap, lat[n / 2], lat[(int) (n * 0.99)]);
	return 0;
}
