/*-------------------------------------------------------------------------
 *
 * stream.c
 *		The live stream: every event the sequencer lets out, in id order,
 *		handed to the transports and kept in a ring for clients catching up.
 *
 * The ring holds the most recent RT_STREAM_RING events, or fewer when they
 * add up to more than RT_STREAM_RING_BYTES of JSON, so that big events
 * cannot make the worker grow without bound.  A client resuming
 * from an id the ring still covers catches up from memory, with no query;
 * one further behind reads the table up to the ring's oldest event first
 * (replay), then the ring, then goes live.  Events are malloc'd once and
 * shared by the ring and the transports' queues through a reference count,
 * so fan-out to many clients copies nothing.
 *
 * This runs inside the event loop: malloc, never palloc, and no errors.
 * An event that cannot be allocated is counted as dropped and breaks the
 * stream (rt_stream_broken), which the transports turn into a close with
 * "please resume", since a silent gap would break the delivery guarantee.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "rtevents.h"

#define RT_STREAM_RING			8192
#define RT_STREAM_RING_BYTES	(64 * 1024 * 1024)

typedef struct Stream
{
	RtStreamEvent *ring[RT_STREAM_RING];
	uint64		head;			/* ring slots used so far, ever */
	uint64		tail;			/* the oldest slot still held */
	size_t		bytes;			/* JSON held by the ring */
	int64		last_id;		/* the last event let out, or the start */
	int64		floor;			/* the ring holds every event after this id */
	bool		started;		/* rt_stream_start was called: ids are known */
	uint64		delivered;
	uint64		dropped;
	RtStreamListener listener;
} Stream;

static Stream stream;

static char *
dup_or_null(const char *s, bool *failed)
{
	char	   *copy;

	if (s == NULL)
		return NULL;
	copy = strdup(s);
	if (copy == NULL)
		*failed = true;
	return copy;
}

RtStreamEvent *
rt_stream_event_new(int64 id, const char *type, const char *execution_id,
					const char *batch_id, const char *job_id,
					const char *organization_id, const char *json)
{
	RtStreamEvent *ev = calloc(1, sizeof(RtStreamEvent));
	bool		failed = false;

	if (ev == NULL)
		return NULL;
	ev->refcount = 1;
	ev->id = id;
	ev->keys.type = dup_or_null(type, &failed);
	ev->keys.execution_id = dup_or_null(execution_id, &failed);
	ev->keys.batch_id = dup_or_null(batch_id, &failed);
	ev->keys.job_id = dup_or_null(job_id, &failed);
	ev->keys.organization_id = dup_or_null(organization_id, &failed);
	ev->json = dup_or_null(json, &failed);
	ev->json_len = json ? strlen(json) : 0;
	if (failed || ev->json == NULL)
	{
		rt_stream_event_release(ev);
		return NULL;
	}
	return ev;
}

void
rt_stream_event_retain(RtStreamEvent *ev)
{
	ev->refcount++;
}

void
rt_stream_event_release(RtStreamEvent *ev)
{
	if (ev == NULL || --ev->refcount > 0)
		return;
	free((char *) ev->keys.type);
	free((char *) ev->keys.execution_id);
	free((char *) ev->keys.batch_id);
	free((char *) ev->keys.job_id);
	free((char *) ev->keys.organization_id);
	free(ev->json);
	free(ev);
}

static void
evict_oldest(void)
{
	RtStreamEvent **slot = &stream.ring[stream.tail % RT_STREAM_RING];

	stream.floor = (*slot)->id;
	stream.bytes -= (*slot)->json_len;
	rt_stream_event_release(*slot);
	*slot = NULL;
	stream.tail++;
}

/* Where the live stream starts: ids at or below are history. */
void
rt_stream_start(int64 last_id)
{
	stream.last_id = last_id;
	stream.floor = last_id;
	stream.started = true;
}

bool
rt_stream_started(void)
{
	return stream.started;
}

void
rt_stream_set_listener(RtStreamListener listener)
{
	stream.listener = listener;
}

/*
 * The sequencer lets an event out.  Takes over the caller's reference.
 */
void
rt_stream_deliver(RtStreamEvent *ev)
{
	RtStreamEvent **slot = &stream.ring[stream.head % RT_STREAM_RING];

	Assert(ev->id > stream.last_id);
	if (stream.head - stream.tail == RT_STREAM_RING)
		evict_oldest();
	*slot = ev;
	stream.head++;
	stream.bytes += ev->json_len;
	while (stream.bytes > RT_STREAM_RING_BYTES && stream.head - stream.tail > 1)
		evict_oldest();
	stream.last_id = ev->id;
	stream.delivered++;
	if (stream.listener)
		stream.listener(ev);
}

/* An event could not be built: the stream has a hole at this id. */
void
rt_stream_drop(int64 id)
{
	stream.dropped++;
	stream.last_id = id;
	stream.floor = id;			/* catching up across the hole needs the table */
	if (stream.listener)
		stream.listener(NULL);
}

int64
rt_stream_last_id(void)
{
	return stream.last_id;
}

/*
 * The ring's events with id > after, oldest first, for a client catching
 * up: sets *first to the index to pass to rt_stream_ring_at and returns how
 * many there are; returns -1 when the ring no longer reaches back to after
 * (the client must replay from the table up to rt_stream_ring_floor()).
 */
int64
rt_stream_ring_after(int64 after, uint64 *first)
{
	uint64		lo = stream.tail;
	uint64		hi = stream.head;

	if (after < stream.floor)
		return -1;
	/* Binary search: the first event with id > after. */
	while (lo < hi)
	{
		uint64		mid = lo + (hi - lo) / 2;

		if (stream.ring[mid % RT_STREAM_RING]->id <= after)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	return (int64) (stream.head - lo);
}

/* The event at a ring index from rt_stream_ring_after, or NULL if evicted. */
RtStreamEvent *
rt_stream_ring_at(uint64 index)
{
	if (index >= stream.head || index < stream.tail)
		return NULL;
	return stream.ring[index % RT_STREAM_RING];
}

/* Every event after this id is in the ring; replay the table up to it. */
int64
rt_stream_ring_floor(void)
{
	return stream.floor;
}

uint64
rt_stream_delivered(void)
{
	return stream.delivered;
}

uint64
rt_stream_dropped(void)
{
	return stream.dropped;
}
