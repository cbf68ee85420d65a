/*-------------------------------------------------------------------------
 *
 * ping_request.h
 *	  ping() asked of the publisher through shared memory.
 *
 * IDENTIFICATION
 *	  src/ping_request.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_PING_REQUEST_H
#define SHE_PING_REQUEST_H

#include "nats_conn.h"

extern void she_ping_request_shmem(void);
extern void she_ping_startup_shmem(void);
extern void she_ping_answer(SheConn *c);

#endif							/* SHE_PING_REQUEST_H */
