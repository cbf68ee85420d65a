/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  What differs between the PostgreSQL and nats.c versions the extension
 *	  is built against, in one place.
 *
 * The extension builds on PostgreSQL 15 to 18 and nats.c 3.4 (Debian
 * bookworm) to 3.14 (sid) without a version test in any other file: the C
 * code calls the helpers below, and a helper does what the version at hand
 * allows.
 *
 * PostgreSQL:
 *	- 17 replaced PGPROC.pgprocno with the backend's ProcNumber
 *	  (MyProcNumber): she_my_proc_number() is the index of the backend's
 *	  PGPROC either way (the queue's wait slots are indexed by it).
 *	- PGPROC.xid (cleared by ProcArrayEndTransaction when the transaction
 *	  becomes visible) is read through she_proc_xid(), the one place to
 *	  change should a version move it.
 *	- 18 made the postmaster's BackgroundWorkerList a dlist:
 *	  she_bgworker_registered() walks it either way.
 *	Other differences between 15 and 18 are in the tests (see the README's
 *	compatibility table).
 *
 * nats.c:
 *	- 3.9 can do the TLS handshake before the server's INFO
 *	  (natsOptions_TLSHandshakeFirst), which a nats-server 2.10 or later
 *	  configured with tls { handshake_first: true } requires.
 *	- 3.14 reports the connected server's name (natsConnection_
 *	  GetConnectedServerName); older versions only its generated id.
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef STATE_HUB_EVENTS_COMPAT_H
#define STATE_HUB_EVENTS_COMPAT_H

#include <nats/nats.h>

#ifdef PG_VERSION_NUM			/* the server's part: after postgres.h */
#include "lib/ilist.h"
#include "postmaster/bgworker_internals.h"
#include "storage/proc.h"

/* the index of this backend's PGPROC (MyProc must be set) */
#if PG_VERSION_NUM >= 170000
#define she_my_proc_number()	((int) MyProcNumber)
#else
#define she_my_proc_number()	(MyProc->pgprocno)
#endif

/*
 * The top-level xid of the transaction the PGPROC at index procno runs, as
 * the proc array knows it: InvalidTransactionId once it has ended.  Read
 * without a lock (a 4-byte aligned value); the caller places the barriers.
 */
static inline TransactionId
she_proc_xid(int procno)
{
	return ((volatile PGPROC *) &ProcGlobal->allProcs[procno])->xid;
}

/* does role own database dboid (a superuser owns everything)? */
#if PG_VERSION_NUM >= 160000
#define she_database_ownercheck(dboid, role) \
	object_ownercheck(DatabaseRelationId, (dboid), (role))
#else
#define she_database_ownercheck(dboid, role) pg_database_ownercheck((dboid), (role))
#endif

/*
 * A check hook's extra: GUC frees it with free() before 16, with pfree()
 * (guc_free, GUCMemoryContext) from 16 on, so it must come from guc_malloc.
 */
#if PG_VERSION_NUM >= 160000
#define she_guc_malloc(size) guc_malloc(LOG, (size))
#else
#define she_guc_malloc(size) malloc(size)
#endif

/* does role own relation relid (a superuser owns everything)? */
#if PG_VERSION_NUM >= 160000
#define she_rel_ownercheck(relid, role) \
	object_ownercheck(RelationRelationId, (relid), (role))
#else
#define she_rel_ownercheck(relid, role) pg_class_ownercheck((relid), (role))
#endif

/*
 * Is a background worker with this library and function registered?  The
 * postmaster's list is an slist up to 17, a dlist from 18.  Postmaster only.
 */
static inline bool
she_bgworker_registered(const char *library, const char *function)
{
#if PG_VERSION_NUM >= 180000
	dlist_iter	iter;

	dlist_foreach(iter, &BackgroundWorkerList)
	{
		RegisteredBgWorker *rw = dlist_container(RegisteredBgWorker, rw_lnode, iter.cur);
#else
	slist_iter	iter;

	slist_foreach(iter, &BackgroundWorkerList)
	{
		RegisteredBgWorker *rw = slist_container(RegisteredBgWorker, rw_lnode, iter.cur);
#endif

		if (strcmp(rw->rw_worker.bgw_function_name, function) == 0 &&
			strcmp(rw->rw_worker.bgw_library_name, library) == 0)
			return true;
	}
	return false;
}
#endif							/* PG_VERSION_NUM */

/* true when the nats.c headers are version major.minor or newer */
#define SHE_NATS_AT_LEAST(major, minor) \
	(NATS_VERSION_NUMBER >= (((major) << 16) | ((minor) << 8)))

#define SHE_HAVE_TLS_HANDSHAKE_FIRST	SHE_NATS_AT_LEAST(3, 9)
#define SHE_HAVE_SERVER_NAME			SHE_NATS_AT_LEAST(3, 14)

/*
 * Ask for the TLS handshake before the server's INFO.  Callers check
 * SHE_HAVE_TLS_HANDSHAKE_FIRST first (the setting's check hook refuses
 * "on" without it); here it only keeps old headers compiling.
 */
static inline natsStatus
she_nats_tls_handshake_first(natsOptions *opts)
{
#if SHE_HAVE_TLS_HANDSHAKE_FIRST
	return natsOptions_TLSHandshakeFirst(opts);
#else
	return NATS_ILLEGAL_STATE;
#endif
}

/*
 * Copy the connected server's name (server_name in its INFO) to buf; an
 * empty string when nats.c cannot tell.
 */
static inline void
she_nats_server_name(natsConnection *nc, char *buf, size_t len)
{
	buf[0] = '\0';
#if SHE_HAVE_SERVER_NAME
	if (natsConnection_GetConnectedServerName(nc, buf, len) != NATS_OK)
		buf[0] = '\0';
#endif
}

#endif							/* STATE_HUB_EVENTS_COMPAT_H */
