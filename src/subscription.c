/*-------------------------------------------------------------------------
 *
 * subscription.c
 *		Subscriptions, their index by routing key, and the per-client queues
 *		they fill: which client gets which event, and when.
 *
 * A client (an SSE stream, a WebSocket connection) holds subscriptions and
 * one queue of events and messages that its transport writes out.  A
 * subscription has a filter and a cursor: every matching event up to the
 * cursor is queued.  One that starts from a cursor first catches up: from
 * the live stream's ring when it still reaches back that far, else from the
 * table (replay.c) up to the ring's floor, then from the ring, and goes live
 * once the ring covers its cursor.  Live events are never queued for a
 * subscription still catching up: it reads them from the ring when it gets
 * there, so the switch to live has neither gap nor duplicate.
 *
 * Live subscriptions are indexed by one routing key (the first of
 * executionId, jobId, batchId, organizationId they name), so that an event
 * visits the subscriptions of its own keys and those that name no key, not
 * every subscription held: a publish to one execution among 10,000 watched
 * ones costs about what it costs among 10.
 *
 * Writes.  A client with something new to write is not asked for lws's
 * writable callback, which costs an epoll_ctl arming POLLOUT, a round of
 * epoll and another epoll_ctl disarming it: a fifth of the worker's time at
 * 1,000 clients of an event, where send() itself is most of the rest.  It
 * goes on the turn's write list instead, and at the end of the loop's turn
 * each client on it is served through lws's own POLLOUT handling
 * (rt_server_write_now), which calls the transport's writable callback when
 * lws's state allows writing, as a real POLLOUT would.  What the turn queued
 * for a client (the events of one read of the feed) goes out in one frame.
 * A client whose last write lws still holds in part waits for a real
 * POLLOUT, and so does what a frame could not take (rt_client_wrote).
 *
 * A client's queue has a byte budget, rtevents.max_client_buffer, and the
 * kernel holds at most RT_CLIENT_NOTSENT_LOWAT of it unsent: without that
 * bound send() goes on taking what a client that stopped reading cannot
 * receive (on loopback, up to tcp_wmem's 4 MB, autotuned), and neither the
 * budget nor the drop of a stalled client would ever come into play.  A live
 * subscription that a burst puts over it stops taking live events and
 * catches up from the ring as the queue drains, so a burst costs no more
 * memory; a client so slow that the ring moves past it is closed, and
 * resumes from its last id.  Nobody else waits for it.
 *
 * An event matching several live subscriptions of one client is queued once,
 * marked with every subscription it is for (a bit each), so that a client
 * never has to guess which of its subscriptions an event belongs to.  A
 * subscription catching up gets its own copies of what it catches up on,
 * even of events another subscription of the client had: its events must
 * come in its own ascending order, after those it has not had yet.
 *
 * Everything here runs inside libwebsockets callbacks: malloc, no
 * ereport(ERROR).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <libwebsockets.h>

#include "common/hashfn.h"
#include "utils/hsearch.h"

#include "rtevents.h"

#define RT_SUB_KEYS			4
#define RT_CLIENT_WRITE_USUAL	(256 * 1024)
#define RT_LAG_CHECK_EVERY		256		/* events between checks of stalled clients */
#define RT_CLIENT_NOTSENT_LOWAT	(128 * 1024)	/* bytes the kernel holds unsent */
#define RT_WRITES_BETWEEN_POLLS	32	/* about half a millisecond of send()s */
#define RT_ROUND_EVENTS_MAX		256 /* ids the stream may advance in a turn's writes */

typedef enum SubPhase
{
	SUB_CATCHING_UP,			/* behind; goes on as the queue drains */
	SUB_REPLAYING,				/* a page of the table is being read */
	SUB_LIVE
} SubPhase;

struct RtSub
{
	RtClient   *client;
	dlist_node	client_node;	/* in client->subs */
	dlist_node	index_node;		/* in its bucket, or the unkeyed list */
	dlist_node	lag_node;		/* in lagging_subs, while lagging */
	struct IndexBucket *bucket; /* NULL: indexed with no key */
	int			bit;			/* its number in its client: RtQueued.subs */
	char		name[RT_SUB_NAME_MAX + 1];
	RtRequest	req;			/* the filter */
	SubPhase	phase;
	int64		start;			/* the cursor it was opened with */
	int64		cursor;			/* every match in (start, cursor] is queued */
	int64		replayed;		/* queued before going live */
	RtReplay   *replay;
	int64		replay_upto;	/* where the running replay ends */
	bool		replay_cut;		/* rows of this page left for the next */
	bool		gap_checked;	/* the first table page asks about cleanup */
	bool		lagging;		/* fell out of live over the budget */
	bool		announced;		/* went live once: ops->live was called */
	bool		indexed;
};

/* A bucket of the index: the live subscriptions of one routing key value. */
typedef struct IndexBucket
{
	uint64		key;			/* hash of the key's kind and value */
	dlist_head	subs;
} IndexBucket;

/* The order in which a subscription's keys are tried for its index entry. */
static const int index_order[RT_SUB_KEYS] = {0, 2, 1, 3};

static HTAB *index_table = NULL;
static dlist_head unkeyed_subs = DLIST_STATIC_INIT(unkeyed_subs);
static dlist_head lagging_subs = DLIST_STATIC_INIT(lagging_subs);
static dlist_head all_clients = DLIST_STATIC_INIT(all_clients);
static dlist_head flush_pending = DLIST_STATIC_INIT(flush_pending);
static dlist_head write_list = DLIST_STATIC_INIT(write_list);
static lws_sorted_usec_list_t flush_timer;
static lws_sorted_usec_list_t expiry_timer;
static bool flush_scheduled = false;
static int	nsubs = 0;
static uint64 events_out = 0;
static uint64 clients_dropped = 0;
static uint64 lag_check_count = 0;

static void sub_catch_up(RtSub *s);
static void on_live_event(RtStreamEvent *ev);

/* ---- tokens that expire ---- */

/*
 * Once a second: a client whose token has expired is closed (its transport
 * says why), so that a token's exp bounds what its holder sees.  One pass
 * over the clients a second costs little next to their traffic.
 */
static void
expiry_check(lws_sorted_usec_list_t *sul)
{
	int64		now = (int64) time(NULL);
	dlist_iter	iter;

	dlist_foreach(iter, &all_clients)
	{
		RtClient   *c = dlist_container(RtClient, node, iter.cur);

		/* the leeway verification allows, or a reconnect would loop */
		if (c->expires == 0 || now < c->expires + RT_AUTH_LEEWAY || c->closing)
			continue;
		c->expires = 0;			/* once */
		if (c->ops->expired != NULL)
			c->ops->expired(c);
		else
			rt_client_give_up(c);
	}
	rt_server_schedule(&expiry_timer, expiry_check,
					   LWS_US_PER_SEC);
}

/* ---- the index ---- */

/* dynahash's own allocator pallocs, which may not fail softly here. */
static void *
index_alloc(Size size)
{
	return malloc(size);
}

/*
 * At worker start, outside the loop (hash_create may ereport).  The
 * directory is fixed in size: dynahash can only grow a directory it
 * palloc'd, and 256k buckets hold many more subscriptions than a worker's
 * descriptors allow.
 */
void
rt_subscriptions_init(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(IndexBucket);
	ctl.alloc = index_alloc;
	ctl.dsize = ctl.max_dsize = 1024;
	index_table = hash_create("rtevents subscription index", 1024, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_ALLOC | HASH_DIRSIZE);
	rt_stream_set_listener(on_live_event);
	expiry_check(&expiry_timer);
}

/*
 * The index key of a routing key value.  organizationId compares without
 * case (it is a UUID), so it is hashed in lower case.  Two values may share
 * a key: the full filter is checked anyway.
 */
static uint64
index_key(int kind, const char *value)
{
	char		lower[RT_MAX_KEY_LEN + 1];
	size_t		len = strlen(value);

	if (kind == 3 && len <= RT_MAX_KEY_LEN)
	{
		for (size_t i = 0; i < len; i++)
			lower[i] = (char) tolower((unsigned char) value[i]);
		value = lower;
	}
	return hash_bytes_extended((const unsigned char *) value, (int) len,
							   (uint64) kind);
}

/* Live subscriptions are in the index; false when out of memory. */
static bool
index_add(RtSub *s)
{
	if (s->indexed)
		return true;
	s->bucket = NULL;
	for (int i = 0; i < RT_SUB_KEYS; i++)
	{
		int			kind = index_order[i];
		uint64		key;
		bool		found;
		IndexBucket *b;

		if (s->req.keys[kind] == NULL)
			continue;
		key = index_key(kind, s->req.keys[kind]);
		b = hash_search(index_table, &key, HASH_ENTER_NULL, &found);
		if (b == NULL)
			return false;
		if (!found)
			dlist_init(&b->subs);
		dlist_push_tail(&b->subs, &s->index_node);
		s->bucket = b;
		s->indexed = true;
		return true;
	}
	dlist_push_tail(&unkeyed_subs, &s->index_node);
	s->indexed = true;
	return true;
}

static void
index_remove(RtSub *s)
{
	if (!s->indexed)
		return;
	dlist_delete(&s->index_node);
	if (s->bucket != NULL && dlist_is_empty(&s->bucket->subs))
		hash_search(index_table, &s->bucket->key, HASH_REMOVE, NULL);
	s->bucket = NULL;
	s->indexed = false;
}

/* ---- the client's queue ---- */

static size_t
budget(void)
{
	return (size_t) rt_max_client_buffer * 1024;
}

static bool
has_room(const RtClient *c)
{
	return c->queued_bytes < budget() / 2;
}

/* To be written at the end of this turn (see the file header). */
static void
want_write(RtClient *c)
{
	if (c->write_pending || c->closing)
		return;
	if (lws_partial_buffered(c->wsi))
	{
		/* the socket is full: lws asks for POLLOUT itself, wait for it */
		lws_callback_on_writable(c->wsi);
		return;
	}
	c->write_pending = true;
	dlist_push_tail(&write_list, &c->write_node);
}

/*
 * The main loop, at the end of each turn, outside lws's callbacks.  Clients
 * that something written here puts on the list again (a catch-up refilling
 * its queue, an event heard of by between()) are left for the next turn, so
 * that none takes more than its frame's turn; the loop does not wait for
 * anything while the list holds some (rt_clients_to_write).
 *
 * between() runs every RT_WRITES_BETWEEN_POLLS clients: the worker's LISTEN
 * feed, whose news would otherwise wait for the end of this turn's writes
 * (see rt_feed_poll).  What it queues for a client still on the list goes
 * into that client's frame in this turn.  Once the stream has advanced by
 * RT_ROUND_EVENTS_MAX during the turn, between() waits for the next: a
 * flood then advances the stream about as fast as clients are written,
 * rather than running ahead of the writes, over the clients' budgets, and
 * sending them all to catch up from the ring and the table.
 */
void
rt_clients_write(void (*between) (void))
{
	int			n = 0;
	int			written = 0;
	int64		stream_at = rt_stream_last_id();
	dlist_iter	iter;

	dlist_foreach(iter, &write_list)
		n++;
	while (n-- > 0 && !dlist_is_empty(&write_list))
	{
		RtClient   *c = dlist_container(RtClient, write_node,
										dlist_pop_head_node(&write_list));

		c->write_pending = false;
		/* may close the connection, and release c, before it returns */
		rt_server_write_now(c->wsi);
		if (between != NULL && ++written % RT_WRITES_BETWEEN_POLLS == 0)
		{
			between();
			if (rt_stream_last_id() - stream_at >= RT_ROUND_EVENTS_MAX)
				between = NULL;
		}
	}
}

bool
rt_clients_to_write(void)
{
	return !dlist_is_empty(&write_list);
}

static void
flush_due(lws_sorted_usec_list_t *sul)
{
	dlist_mutable_iter iter;

	flush_scheduled = false;
	dlist_foreach_modify(iter, &flush_pending)
	{
		RtClient   *c = dlist_container(RtClient, flush_node, iter.cur);

		dlist_delete(&c->flush_node);
		c->flush_pending = false;
		want_write(c);
	}
}

/*
 * Something was queued.  With rtevents.batch_ms, writes wait that long so
 * that what arrives meanwhile goes out in the same frame; without it, at
 * the end of the turn, and a client whose socket is busy still gets
 * everything queued meanwhile in one frame when it drains.
 */
static void
client_wake(RtClient *c)
{
	if (rt_batch_ms <= 0)
	{
		want_write(c);
		return;
	}
	if (c->flush_pending)
		return;
	c->flush_pending = true;
	dlist_push_tail(&flush_pending, &c->flush_node);
	if (!flush_scheduled)
	{
		rt_server_schedule(&flush_timer, flush_due,
						   (lws_usec_t) rt_batch_ms * LWS_US_PER_MS);
		flush_scheduled = true;
	}
}

static RtQueued *
queue_at(const RtClient *c, int i)
{
	return &c->queue[(c->queue_head + i) % c->queue_cap];
}

static bool
queue_push(RtClient *c, RtStreamEvent *ev, uint64 subs)
{
	if (c->queue_len == c->queue_cap)
	{
		int			cap = c->queue_cap ? c->queue_cap * 2 : 16;
		RtQueued   *q = malloc(sizeof(RtQueued) * cap);

		if (q == NULL)
			return false;
		for (int i = 0; i < c->queue_len; i++)
			q[i] = *queue_at(c, i);
		free(c->queue);
		c->queue = q;
		c->queue_cap = cap;
		c->queue_head = 0;
	}
	rt_stream_event_retain(ev);
	c->queue_len++;
	queue_at(c, c->queue_len - 1)->ev = ev;
	queue_at(c, c->queue_len - 1)->subs = subs;
	c->queued_bytes += ev->json_len;
	rt_conn_set_queued(c->conn, (int64) c->queued_bytes);
	return true;
}

/*
 * Too far behind, or out of memory: close; the client resumes.  Not through
 * a write, which a client that stopped reading would never allow.
 */
void
rt_client_give_up(RtClient *c)
{
	if (c->closing)
		return;
	c->closing = true;
	clients_dropped++;
	rt_server_close_soon(c->wsi);
}

/*
 * A protocol message, written as it is after what is queued before it.
 * Messages are small and answer the client or mark its subscriptions; one
 * that would put the queue past twice the budget means a client that sends
 * and does not read, and closes it.
 */
bool
rt_client_queue_message(RtClient *c, const char *msg)
{
	RtStreamEvent *m;

	if (c->closing)
		return false;
	if (c->queued_bytes > 2 * budget() ||
		(m = rt_stream_event_new(0, NULL, NULL, NULL, NULL, NULL, msg)) == NULL)
	{
		rt_client_give_up(c);
		return false;
	}
	m->message = true;
	if (!queue_push(c, m, 0))
	{
		rt_stream_event_release(m);
		rt_client_give_up(c);
		return false;
	}
	rt_stream_event_release(m);
	client_wake(c);
	return true;
}

static void
queue_pop(RtClient *c)
{
	RtStreamEvent *ev = c->queue[c->queue_head].ev;

	Assert(c->queue_len > 0);
	c->queue_head = (c->queue_head + 1) % c->queue_cap;
	c->queue_len--;
	c->queued_bytes -= ev->json_len;
	rt_stream_event_release(ev);
}

/*
 * What the transport writes next, or NULL.  Events left for no subscription
 * (all those they were for have been closed) are dropped on the way.
 */
const RtQueued *
rt_client_head(RtClient *c)
{
	while (c->queue_len > 0)
	{
		RtQueued   *q = queue_at(c, 0);

		if (q->ev->message || q->subs != 0)
			return q;
		queue_pop(c);
	}
	return NULL;
}

/* The transport wrote the head of the queue. */
void
rt_client_pop(RtClient *c)
{
	if (!c->queue[c->queue_head].ev->message)
		events_out++;
	queue_pop(c);
}

/* The name of the client's subscription numbered bit, or NULL. */
const char *
rt_client_sub_name(RtClient *c, int bit)
{
	dlist_iter	iter;

	dlist_foreach(iter, &c->subs)
	{
		RtSub	   *s = dlist_container(RtSub, client_node, iter.cur);

		if (s->bit == bit)
			return s->name;
	}
	return NULL;
}

/*
 * After a write: subscriptions that are behind go on as the queue drains,
 * and the transport is called again while anything is left.
 */
void
rt_client_wrote(RtClient *c)
{
	dlist_mutable_iter iter;

	rt_conn_set(c->conn, c->nsubs, (int64) c->queued_bytes);
	dlist_foreach_modify(iter, &c->subs)
	{
		RtSub	   *s = dlist_container(RtSub, client_node, iter.cur);

		if (c->closing || !has_room(c))
			break;
		if (s->phase == SUB_CATCHING_UP)
			sub_catch_up(s);
	}
	if (c->queue_len > 0 && !c->closing)
		lws_callback_on_writable(c->wsi);
}

/*
 * The one buffer the transports build writes in: the loop is single-threaded
 * and lws copies what the socket does not take.  It grows for a big event
 * and goes back to its usual size afterwards.
 */
uint8_t *
rt_client_write_buffer(size_t size)
{
	static uint8_t *buf = NULL;
	static size_t cap = 0;

	if (size > cap || (cap > RT_CLIENT_WRITE_USUAL && size < cap / 4))
	{
		uint8_t    *grown = realloc(buf, Max(size, RT_CLIENT_WRITE_USUAL / 4));

		if (grown == NULL)
			return NULL;
		buf = grown;
		cap = Max(size, RT_CLIENT_WRITE_USUAL / 4);
	}
	return buf;
}

/* ---- offering events to subscriptions ---- */

static void
set_lagging(RtSub *s, bool lagging)
{
	if (s->lagging == lagging)
		return;
	s->lagging = lagging;
	if (lagging)
		dlist_push_tail(&lagging_subs, &s->lag_node);
	else
		dlist_delete(&s->lag_node);
}

/*
 * Queue ev for s if s wants it: as a new entry, or as one more subscription
 * of the entry just queued (another subscription of the client took the
 * same live event a moment ago).  False when it wants it but the queue is
 * over budget: s then catches up from the ring as the queue drains, from
 * its cursor, which ev has not passed.
 */
static bool
offer(RtSub *s, RtStreamEvent *ev)
{
	RtClient   *c = s->client;
	RtQueued   *tail = c->queue_len > 0 ? queue_at(c, c->queue_len - 1) : NULL;

	if (ev->id <= s->cursor || !rt_request_matches(&s->req, &ev->keys))
		return true;
	if (tail != NULL && tail->ev == ev)
		tail->subs |= UINT64CONST(1) << s->bit;
	/* Over budget; though one event bigger than it may go alone. */
	else if ((c->queue_len > 0 && c->queued_bytes + ev->json_len > budget()) ||
			 !queue_push(c, ev, UINT64CONST(1) << s->bit))
	{
		if (s->phase == SUB_LIVE)
		{
			index_remove(s);
			s->phase = SUB_CATCHING_UP;
			set_lagging(s, true);
		}
		return false;
	}
	if (s->phase != SUB_LIVE)
		s->replayed++;
	client_wake(c);
	s->cursor = ev->id;
	return true;
}

/* ---- catching up ---- */

static void
go_live(RtSub *s)
{
	s->cursor = Max(s->cursor, rt_stream_last_id());
	if (!index_add(s))
	{
		rt_client_give_up(s->client);
		return;
	}
	set_lagging(s, false);
	s->phase = SUB_LIVE;
	if (!s->announced)
	{
		s->announced = true;
		if (s->client->ops->live != NULL)
			s->client->ops->live(s->client, s, s->replayed);
	}
}

/* A row of a replay page: queued, or left for the next page when full. */
static void
replay_row(void *owner, RtStreamEvent *ev)
{
	RtSub	   *s = owner;
	RtClient   *c = s->client;

	if (s->replay_cut ||
		(c->queue_len > 0 && c->queued_bytes + ev->json_len > budget()))
		s->replay_cut = true;	/* this row and the rest: the next page */
	else if (!offer(s, ev))
		s->replay_cut = true;	/* out of memory */
	rt_stream_event_release(ev);
}

/* Cleanup deleted events past the cursor: the client must know. */
static void
replay_gap(void *owner, int64 oldest)
{
	RtSub	   *s = owner;

	if (s->client->ops->gap != NULL)
		s->client->ops->gap(s->client, s, s->cursor, oldest);
}

static void
replay_done(void *owner, bool ok, bool more)
{
	RtSub	   *s = owner;

	s->replay = NULL;
	if (!ok)
	{
		rt_client_give_up(s->client);
		return;
	}
	/* Every match up to the replay's end is queued, unless rows were left. */
	if (!more && !s->replay_cut)
		s->cursor = Max(s->cursor, s->replay_upto);
	s->replay_cut = false;
	s->phase = SUB_CATCHING_UP;
	if (has_room(s->client))
		sub_catch_up(s);
}

/*
 * From the cursor towards live, as far as the queue allows: a page of the
 * table while the ring does not reach back to the cursor, then the ring.
 * Called again as the queue drains (rt_client_wrote).
 */
static void
sub_catch_up(RtSub *s)
{
	RtClient   *c = s->client;
	uint64		first;
	int64		n = rt_stream_ring_after(s->cursor, &first);
	int64		i;

	if (n < 0 && s->lagging)
	{
		rt_client_give_up(c);	/* so slow that the ring has moved past it */
		return;
	}
	if (n < 0)
	{
		RtReplayHooks hooks = {replay_row, replay_done, NULL};

		/*
		 * Only a cursor that received something can have missed what
		 * cleanup deleted after it; after=0 asks for whatever is kept.
		 */
		if (!s->gap_checked && s->cursor > 0)
			hooks.on_gap = replay_gap;
		s->gap_checked = true;
		s->phase = SUB_REPLAYING;
		s->replay_upto = rt_stream_ring_floor();
		s->replay = rt_replay_start(&s->req, s->cursor, s->replay_upto,
									s, &hooks);
		if (s->replay == NULL)
			rt_client_give_up(c);
		return;
	}
	for (i = 0; i < n && !c->closing && has_room(c); i++)
	{
		RtStreamEvent *ev = rt_stream_ring_at(first + i);

		if (ev == NULL || !offer(s, ev))
			break;
		s->cursor = Max(s->cursor, ev->id); /* past events it does not want */
	}
	if (i == n && !c->closing)
		go_live(s);
}

/* ---- the live stream ---- */

static void
offer_live(RtSub *s, RtStreamEvent *ev)
{
	if (s->phase == SUB_LIVE && !s->client->closing)
		(void) offer(s, ev);
}

static void
on_live_event(RtStreamEvent *ev)
{
	const char *evkeys[RT_SUB_KEYS];
	dlist_mutable_iter iter;

	/*
	 * A stalled client's memory is bounded by its budget; it goes once the
	 * ring has passed it.  A lagging client that still reads finds that out
	 * itself as it catches up, so the check of the stalled ones need not
	 * run for every event.
	 */
	if (++lag_check_count % RT_LAG_CHECK_EVERY == 0)
	{
		dlist_foreach_modify(iter, &lagging_subs)
		{
			RtSub	   *s = dlist_container(RtSub, lag_node, iter.cur);

			if (s->cursor < rt_stream_ring_floor())
				rt_client_give_up(s->client);
		}
	}

	if (ev == NULL)
	{
		/* A hole in the stream: live clients resume from the table. */
		dlist_foreach_modify(iter, &all_clients)
		{
			RtClient   *c = dlist_container(RtClient, node, iter.cur);
			dlist_iter	siter;

			dlist_foreach(siter, &c->subs)
			{
				if (dlist_container(RtSub, client_node, siter.cur)->phase == SUB_LIVE)
				{
					rt_client_give_up(c);
					break;
				}
			}
		}
		return;
	}

	evkeys[0] = ev->keys.execution_id;
	evkeys[1] = ev->keys.batch_id;
	evkeys[2] = ev->keys.job_id;
	evkeys[3] = ev->keys.organization_id;
	for (int kind = 0; kind < RT_SUB_KEYS; kind++)
	{
		uint64		key;
		IndexBucket *b;

		if (evkeys[kind] == NULL)
			continue;
		key = index_key(kind, evkeys[kind]);
		b = hash_search(index_table, &key, HASH_FIND, NULL);
		if (b == NULL)
			continue;
		/*
		 * offer() may take a subscription out of the bucket, even the last
		 * (dynahash keeps a removed entry's memory, and nothing enters the
		 * index meanwhile).
		 */
		dlist_foreach_modify(iter, &b->subs)
			offer_live(dlist_container(RtSub, index_node, iter.cur), ev);
	}
	dlist_foreach_modify(iter, &unkeyed_subs)
		offer_live(dlist_container(RtSub, index_node, iter.cur), ev);
}

/* ---- clients and subscriptions ---- */

/*
 * A new client takes a slot of rtevents_connections; false when they are
 * all taken (rtevents.max_connections): the transport refuses the client.
 */
bool
rt_client_init(RtClient *c, struct lws *wsi, const RtClientOps *ops,
			   RtConnTransport transport)
{
	char		peer[64];

	memset(c, 0, sizeof(*c));
	if (lws_get_peer_simple(wsi, peer, sizeof(peer)) == NULL)
		peer[0] = '\0';
	c->conn = rt_conn_acquire(transport, peer);
	if (c->conn < 0)
		return false;
	c->wsi = wsi;
	c->ops = ops;
	dlist_init(&c->subs);
	dlist_push_tail(&all_clients, &c->node);

	/* see the file header; a socket that refuses keeps the old behaviour */
	{
		int			lowat = RT_CLIENT_NOTSENT_LOWAT;

		(void) setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP,
						  TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
	}
	return true;
}

/* The connection is gone: its subscriptions, queue and replays go too. */
void
rt_client_release(RtClient *c)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &c->subs)
		rt_sub_close(dlist_container(RtSub, client_node, iter.cur));
	while (c->queue_len > 0)
		queue_pop(c);
	free(c->queue);
	c->queue = NULL;
	if (c->flush_pending)
		dlist_delete(&c->flush_node);
	if (c->write_pending)
		dlist_delete(&c->write_node);
	dlist_delete(&c->node);
	rt_conn_release(c->conn);
}

/*
 * Open a subscription: req (taken over, freed with the subscription) is its
 * filter; with has_after it first catches up from after, else it starts
 * live.  NULL when out of memory (req is freed).
 */
RtSub *
rt_sub_open(RtClient *c, const char *name, RtRequest *req, bool has_after,
			int64 after)
{
	RtSub	   *s = NULL;
	int			bit = 0;

	while (bit < RT_SUB_MAX && (c->sub_bits & (UINT64CONST(1) << bit)) != 0)
		bit++;
	if (bit == RT_SUB_MAX || (s = calloc(1, sizeof(RtSub))) == NULL)
	{
		rt_request_free(req);
		return NULL;
	}
	s->client = c;
	s->bit = bit;
	c->sub_bits |= UINT64CONST(1) << bit;
	strlcpy(s->name, name, sizeof(s->name));
	s->req = *req;
	memset(req, 0, sizeof(*req));
	dlist_push_tail(&c->subs, &s->client_node);
	c->nsubs++;
	nsubs++;
	rt_conn_set(c->conn, c->nsubs, (int64) c->queued_bytes);

	if (has_after && after < rt_stream_last_id())
	{
		s->start = s->cursor = after;
		s->phase = SUB_CATCHING_UP;
		sub_catch_up(s);
	}
	else
	{
		/* A cursor ahead of the stream waits for it: ids only grow. */
		s->start = s->cursor = has_after ? after : rt_stream_last_id();
		s->phase = SUB_CATCHING_UP;
		go_live(s);
	}
	return s;
}

void
rt_sub_close(RtSub *s)
{
	RtClient   *c = s->client;
	uint64		bit = UINT64CONST(1) << s->bit;

	rt_replay_cancel(s->replay);
	index_remove(s);
	set_lagging(s, false);
	/* Its number may be taken again: what is queued is no longer for it. */
	for (int i = 0; i < c->queue_len; i++)
		queue_at(c, i)->subs &= ~bit;
	c->sub_bits &= ~bit;
	dlist_delete(&s->client_node);
	c->nsubs--;
	nsubs--;
	rt_conn_set(c->conn, c->nsubs, (int64) c->queued_bytes);
	rt_request_free(&s->req);
	free(s);
}

RtSub *
rt_client_find_sub(RtClient *c, const char *name)
{
	dlist_iter	iter;

	dlist_foreach(iter, &c->subs)
	{
		RtSub	   *s = dlist_container(RtSub, client_node, iter.cur);

		if (strcmp(s->name, name) == 0)
			return s;
	}
	return NULL;
}

const char *
rt_sub_name(const RtSub *s)
{
	return s->name;
}

/* Every match up to here is queued for the subscription's client. */
int64
rt_sub_cursor(const RtSub *s)
{
	return s->cursor;
}

int
rt_subscriptions(void)
{
	return nsubs;
}

uint64
rt_events_out(void)
{
	return events_out;
}

uint64
rt_clients_dropped(void)
{
	return clients_dropped;
}
