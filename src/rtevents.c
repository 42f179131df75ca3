/*-------------------------------------------------------------------------
 *
 * rtevents.c
 *		Module entry: wires the GUCs, shared memory and background workers.
 *
 * Loaded through shared_preload_libraries, rtevents reserves its shared
 * memory and registers its background workers.  Loaded on demand (CREATE
 * EXTENSION without preloading), it offers publishing and history from SQL
 * only: there are no horizon slots and no worker to read them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"

#include "rtevents.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
rtevents_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	rt_horizon_request_shmem();
	rt_conn_request_shmem();
}

static void
rtevents_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	rt_horizon_init_shmem();
	rt_conn_init_shmem();
}

void
_PG_init(void)
{
	rt_define_gucs();
	rt_horizon_register_callbacks();
	rt_publish_register_callbacks();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rtevents_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rtevents_shmem_startup;

	rt_register_cleanup_worker();
	rt_register_server_worker();
}
