/*-------------------------------------------------------------------------
 *
 * rtevents.h
 *		Declarations shared by the modules of the rtevents extension.
 *
 * Each module owns one concern; this header is the list of what they offer
 * one another:
 *
 *	rtevents.c			_PG_init: wires GUCs, shared memory and background workers
 *	guc.c				the rtevents.* configuration parameters
 *	horizon.c			which event ids may still commit (publisher slots)
 *	event_json.c		the event as JSON, exactly as clients receive it
 *	publish.c			rt_publish() and the triggers that NOTIFY inserts
 *	cleanup_worker.c	the background worker that runs TTL cleanup
 *
 *-------------------------------------------------------------------------
 */
#ifndef RTEVENTS_H
#define RTEVENTS_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/*
 * NOTIFY refuses payloads of 8000 bytes or more (NOTIFY_PAYLOAD_MAX_LENGTH is
 * private to async.c); an event whose JSON would not fit is announced by a
 * reference instead and read from the table.
 */
#define RT_NOTIFY_PAYLOAD_MAX	7999

/* Bounds on what a caller may store; they also bound what the worker sends. */
#define RT_MAX_TYPE_LEN			200
#define RT_MAX_KEY_LEN			200

/* guc.c */
extern int	rt_port;
extern char *rt_listen_addresses;
extern char *rt_channel;
extern int	rt_default_ttl;
extern int	rt_cleanup_interval;
extern int	rt_cleanup_batch_size;
extern char *rt_database;

extern void rt_define_gucs(void);

/* horizon.c */
extern void rt_horizon_request_shmem(void);
extern void rt_horizon_init_shmem(void);
extern void rt_horizon_register_callbacks(void);
extern void rt_horizon_claim(Relation rel);
extern int64 rt_horizon_lowest_open_id(bool *any_open);

/* event_json.c */
typedef struct RtEvent
{
	int64		id;
	const char *type;
	TimestampTz ts;
	const char *execution_id;	/* routing keys: NULL when absent */
	const char *batch_id;
	const char *job_id;
	const char *organization_id;	/* uuid, as text */
	const char *data;			/* jsonb, as text */
} RtEvent;

extern void rt_event_append_json(StringInfo buf, const RtEvent *event);
extern void rt_event_from_tuple(RtEvent *event, HeapTuple tuple,
								TupleDesc tupdesc);

/* publish.c */
extern void rt_publish_register_callbacks(void);

/* cleanup_worker.c */
extern void rt_register_cleanup_worker(void);

#endif							/* RTEVENTS_H */
