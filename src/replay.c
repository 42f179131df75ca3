/*-------------------------------------------------------------------------
 *
 * replay.c
 *		Catching clients up from the table, a page at a time.
 *
 * A client resuming from an id the live stream's ring no longer holds
 * reads the events it missed from the table, up to the ring's floor (the
 * ring covers the rest).  A replay is one page of at most RT_REPLAY_PAGE
 * events, run on the feed's connection in the gaps between its reads of new
 * events; the client asks for the next page when it has sent the last one
 * on, so pages of different clients take turns, a client 100,000 events
 * behind costs the others one page's query at a time, a client that reads
 * slowly is not fed faster than it reads, and live reads always go first.
 *
 * Everything here runs inside the event loop: malloc, no errors.  A replay
 * belongs to its client, which may cancel it at any time (it hung up); a
 * page already running then finishes and its rows are dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "rtevents.h"

#define RT_REPLAY_PAGE	500

struct RtReplay
{
	RtReplay   *next;			/* in the waiting queue */
	void	   *owner;
	RtReplayHooks hooks;
	const RtRequest *req;		/* the owner's filter, alive while this is */
	int64		after;			/* the last id handed to the owner */
	int64		upto;			/* the replay ends here */
	int			limit;			/* rows in the page, at most */
	int			offset;
	int			rows;			/* rows of the page so far */
	bool		running;		/* a page of it is on the connection */
	bool		cancelled;
};

/* Replays waiting for their next page, first in line first. */
static RtReplay *queue_head = NULL;
static RtReplay *queue_tail = NULL;
static RtReplay *running = NULL;
static uint64 replay_pages = 0;

static void
replay_free(RtReplay *r)
{
	free(r);
}

static void
enqueue(RtReplay *r)
{
	r->next = NULL;
	if (queue_tail)
		queue_tail->next = r;
	else
		queue_head = r;
	queue_tail = r;
}

/*
 * Queue a page: the first RT_REPLAY_PAGE events in (after, upto] that match
 * req's filter.  on_done says whether there may be more.  Returns NULL when
 * out of memory.  req must outlive the replay (cancel it first).
 */
RtReplay *
rt_replay_start(const RtRequest *req, int64 after, int64 upto,
				void *owner, const RtReplayHooks *hooks)
{
	return rt_replay_query(req, after, upto, RT_REPLAY_PAGE, 0, owner, hooks);
}

/*
 * The general form, for the history API too: limit rows, skipping offset,
 * with req's since and until.
 */
RtReplay *
rt_replay_query(const RtRequest *req, int64 after, int64 upto, int limit,
				int offset, void *owner, const RtReplayHooks *hooks)
{
	RtReplay   *r = calloc(1, sizeof(RtReplay));

	if (r == NULL)
		return NULL;
	r->req = req;
	r->limit = limit;
	r->offset = offset;
	r->owner = owner;
	r->hooks = *hooks;
	r->after = after;
	r->upto = upto;
	enqueue(r);
	rt_feed_kick();
	return r;
}

/* The owner goes away: no more calls to it. */
void
rt_replay_cancel(RtReplay *r)
{
	RtReplay  **p;

	if (r == NULL)
		return;
	if (r->running)
	{
		r->cancelled = true;	/* freed when its page is done */
		return;
	}
	for (p = &queue_head; *p != NULL; p = &(*p)->next)
	{
		if (*p == r)
		{
			*p = r->next;
			if (queue_tail == r)
			{
				queue_tail = NULL;
				for (RtReplay *q = queue_head; q != NULL; q = q->next)
					queue_tail = q;
			}
			break;
		}
	}
	replay_free(r);
}

/*
 * The feed is idle: the parameters of the next page to run, if any, in the
 * order of the feed's replay query (listen_feed.c): the four keys, types,
 * after, since, until, limit, offset, upto, and whether to ask about
 * cleanup (a gap).  buf holds the numbers.
 */
bool
rt_replay_next_page(const char *params[RT_REPLAY_PARAMS], char buf[4][24])
{
	RtReplay   *r = queue_head;

	if (r == NULL || running != NULL)
		return false;
	queue_head = r->next;
	if (queue_head == NULL)
		queue_tail = NULL;

	for (int i = 0; i < 4; i++)
		params[i] = r->req->keys[i];
	params[4] = r->req->types_literal;
	snprintf(buf[0], 24, INT64_FORMAT, r->after);
	params[5] = (r->after >= 0) ? buf[0] : NULL;
	params[6] = r->req->since;
	params[7] = r->req->until;
	snprintf(buf[1], 24, "%d", r->limit);
	params[8] = buf[1];
	snprintf(buf[2], 24, "%d", r->offset);
	params[9] = buf[2];
	snprintf(buf[3], 24, INT64_FORMAT, r->upto);
	params[10] = buf[3];
	params[11] = r->hooks.on_gap != NULL ? "true" : "false";
	r->running = true;
	running = r;
	replay_pages++;
	return true;
}

/* The running page found that cleanup deleted events past its cursor. */
void
rt_replay_gap(int64 oldest)
{
	if (running == NULL || running->cancelled || running->hooks.on_gap == NULL)
		return;
	running->hooks.on_gap(running->owner, oldest);
}

/* A row of the running page; takes over the reference to ev. */
void
rt_replay_row(RtStreamEvent *ev)
{
	if (running == NULL || running->cancelled || ev->id <= running->after)
	{
		rt_stream_event_release(ev);
		return;
	}
	running->after = ev->id;
	running->rows++;
	running->hooks.on_row(running->owner, ev);
}

/* The running page is over, or failed. */
void
rt_replay_page_done(bool ok)
{
	RtReplay   *r = running;

	if (r == NULL)
		return;
	running = NULL;
	r->running = false;
	if (!r->cancelled)
		r->hooks.on_done(r->owner, ok, ok && r->rows == r->limit && r->after < r->upto);
	replay_free(r);
}

/* The connection was lost with a page running: run it again, first. */
void
rt_replay_page_lost(void)
{
	RtReplay   *r = running;

	if (r == NULL)
		return;
	running = NULL;
	r->running = false;
	if (r->cancelled)
	{
		replay_free(r);
		return;
	}
	r->next = queue_head;
	queue_head = r;
	if (queue_tail == NULL)
		queue_tail = r;
}

bool
rt_replay_waiting(void)
{
	return queue_head != NULL;
}

uint64
rt_replay_pages(void)
{
	return replay_pages;
}
