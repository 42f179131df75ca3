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
	RtReplayRowFn on_row;
	RtReplayDoneFn on_done;
	char	   *keys[5];		/* execution, batch, job, organization, types */
	int64		after;			/* the last id handed to the owner */
	int64		upto;			/* the replay ends here */
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
	for (size_t i = 0; i < lengthof(r->keys); i++)
		free(r->keys[i]);
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
 * the filter (NULL keys match anything; types is a Postgres array literal or
 * NULL).  on_done says whether there may be more.  Returns NULL when out of
 * memory.
 */
RtReplay *
rt_replay_start(const char *const keys[5], int64 after, int64 upto,
				void *owner, RtReplayRowFn on_row, RtReplayDoneFn on_done)
{
	RtReplay   *r = calloc(1, sizeof(RtReplay));

	if (r == NULL)
		return NULL;
	for (size_t i = 0; i < lengthof(r->keys); i++)
	{
		if (keys[i] == NULL)
			continue;
		r->keys[i] = strdup(keys[i]);
		if (r->keys[i] == NULL)
		{
			replay_free(r);
			return NULL;
		}
	}
	r->owner = owner;
	r->on_row = on_row;
	r->on_done = on_done;
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
 * The feed is idle: the parameters of the next page to run, if any.
 * params[] receives 8 strings (or NULLs) in the order of the feed's replay
 * query; buf holds the numbers.
 */
bool
rt_replay_next_page(const char *params[8], char buf[3][24])
{
	RtReplay   *r = queue_head;

	if (r == NULL || running != NULL)
		return false;
	queue_head = r->next;
	if (queue_head == NULL)
		queue_tail = NULL;

	for (int i = 0; i < 5; i++)
		params[i] = r->keys[i];
	snprintf(buf[0], 24, INT64_FORMAT, r->after);
	snprintf(buf[1], 24, "%d", RT_REPLAY_PAGE);
	snprintf(buf[2], 24, INT64_FORMAT, r->upto);
	params[5] = buf[0];
	params[6] = buf[1];
	params[7] = buf[2];
	r->running = true;
	running = r;
	replay_pages++;
	return true;
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
	running->on_row(running->owner, ev);
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
		r->on_done(r->owner, ok, ok && r->rows == RT_REPLAY_PAGE && r->after < r->upto);
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
