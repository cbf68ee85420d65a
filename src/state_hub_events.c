/*-------------------------------------------------------------------------
 *
 * state_hub_events.c
 *	  Module entry point: settings, transaction callbacks, shared memory
 *	  (when preloaded), and the SQL-callable ping().
 *
 * Publishing needs preloading (shared_preload_libraries): the queue to the
 * publisher process lives in shared memory and the publisher is a static
 * background worker.  Without it the library still loads (pending(),
 * stats() per backend, the settings), and publish() and emit() refuse.
 *
 * IDENTIFICATION
 *	  src/state_hub_events.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/jsonb.h"

#include "ping_request.h"
#include "publisher.h"
#include "queue.h"
#include "state_hub_events.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
she_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	she_stats_request_shmem();
	she_durable_request_shmem();
	she_queue_request_shmem();
	she_ping_request_shmem();
}

static void
she_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	she_stats_startup_shmem();
	she_durable_startup_shmem();
	she_queue_startup_shmem();
	she_ping_startup_shmem();
}

void
_PG_init(void)
{
	she_define_settings();
	she_buffer_init();
	she_ddl_guard_init();

	if (process_shared_preload_libraries_in_progress)
	{
		she_preloaded = true;
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = she_shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = she_shmem_startup;
		she_launcher_register();
		she_publisher_register();
	}
	else
		she_stats_init_local();
}
