/*-------------------------------------------------------------------------
 *
 * cleanup_worker.c
 *		The background worker that deletes expired events.
 *
 * Every rtevents.cleanup_interval it calls rt_cleanup() in rtevents.database,
 * one batch of rtevents.cleanup_batch_size rows per transaction, so that no
 * transaction holds its row locks, snapshot or WAL for long and vacuum can
 * follow behind it.  Publishers are never blocked: deleting old rows does
 * not conflict with inserting new ones.
 *
 * Cleanup writes, so it is primary-only: the worker starts once recovery has
 * finished, which on a standby means at promotion.  It lives apart from the
 * worker that serves clients because rt_cleanup() runs through SPI and would
 * stall an event loop that must never block.
 *
 * An error in one run (the extension dropped, a lock timeout) is reported
 * and the worker goes on to the next interval rather than restarting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "rtevents.h"

PGDLLEXPORT void rt_cleanup_worker_main(Datum main_arg);

void
rt_register_cleanup_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 10;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "rtevents");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "rt_cleanup_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "rtevents cleanup");
	snprintf(worker.bgw_type, BGW_MAXLEN, "rtevents cleanup");
	RegisterBackgroundWorker(&worker);
}

/*
 * One batch in its own transaction.  Returns the rows deleted, or -1 when
 * the extension is not installed in this database.
 */
static int64
cleanup_one_batch(void)
{
	int64		deleted = -1;
	int			ret;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "SELECT rt_cleanup()");

	/* The extension's schema is the DBA's choice at CREATE EXTENSION. */
	ret = SPI_execute("SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension e"
					  " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					  " WHERE e.extname = 'rtevents'", true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "looking up the rtevents extension failed: %s",
			 SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		char	   *sql = psprintf("SELECT %s.rt_cleanup($1, 1)",
								   SPI_getvalue(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1));
		Oid			argtypes[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(rt_cleanup_batch_size)};
		bool		isnull;

		ret = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 1);
		if (ret != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "rt_cleanup() failed: %s", SPI_result_code_string(ret));
		deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return deleted;
}

/* Delete everything expired, batch by batch, unless asked to stop. */
static void
cleanup_run(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int64 total = 0;

	PG_TRY();
	{
		for (;;)
		{
			int64		deleted = cleanup_one_batch();

			if (deleted < 0)
			{
				ereport(DEBUG1,
						(errmsg("rtevents cleanup: extension rtevents is not installed in database \"%s\"",
								rt_database)));
				break;
			}
			total += deleted;
			if (deleted < rt_cleanup_batch_size)
				break;
			CHECK_FOR_INTERRUPTS();
			if (ShutdownRequestPending)
				break;
		}
		if (total > 0)
			ereport(DEBUG1,
					(errmsg("rtevents cleanup: deleted " INT64_FORMAT " expired events",
							total)));
	}
	PG_CATCH();
	{
		/* Report, roll back, and wait for the next interval. */
		MemoryContextSwitchTo(cxt);
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortCurrentTransaction();
		FlushErrorState();
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
}

void
rt_cleanup_worker_main(Datum main_arg)
{
	TimestampTz last_run = 0;	/* run at once after start */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(rt_database, NULL, 0);

	ereport(LOG,
			(errmsg("rtevents cleanup worker started in database \"%s\"",
					rt_database)));

	for (;;)
	{
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
		long		timeout = -1;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* Measured from the last run, so a reload neither skips nor repeats one. */
		if (rt_cleanup_interval > 0)
		{
			TimestampTz next_run = TimestampTzPlusMilliseconds(last_run,
															   rt_cleanup_interval * 1000);

			if (GetCurrentTimestamp() >= next_run)
			{
				cleanup_run();
				last_run = GetCurrentTimestamp();
				next_run = TimestampTzPlusMilliseconds(last_run,
													   rt_cleanup_interval * 1000);
			}
			timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_run);
			events |= WL_TIMEOUT;
		}

		(void) WaitLatch(MyLatch, events, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
