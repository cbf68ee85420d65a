/*-------------------------------------------------------------------------
 *
 * ping.h
 *	  The facts ping() reports: gathered on a live connection, then
 *	  written as JSON.
 *
 * IDENTIFICATION
 *	  src/ping.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_PING_H
#define SHE_PING_H

#include "lib/stringinfo.h"
#include "nats_conn.h"

/* What one ping asks about (the asking session's settings). */
typedef struct ShePingAsk
{
	char		stream[256];
	bool		create_stream;
	int			want_dup_window_s;	/* what the asking mode asks for */
	bool		durable;
} ShePingAsk;

extern bool she_ping_gather(SheConn *c, const ShePingAsk *ask, StringInfo json,
							char *err, size_t errlen, bool *no_jetstream);

#endif							/* SHE_PING_H */
