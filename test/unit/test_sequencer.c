/*-------------------------------------------------------------------------
 *
 * test_sequencer.c
 *		Unit and model tests of sequencer.c, printed as TAP.
 *
 * The model test plays publishers against the sequencer at random: they
 * claim horizon slots, draw ids, commit or roll back in any order, and the
 * feed reads the horizon, then (some steps later, while others commit) the
 * table.  Whatever the interleaving, the ids delivered must be exactly the
 * committed ids, ascending, each once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "rtevents.h"

static int	tests_run = 0;
static int	tests_failed = 0;

static void
ok(bool cond, const char *name)
{
	tests_run++;
	if (!cond)
		tests_failed++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tests_run, name);
}

/* ---- payloads ---- */

static void
test_payloads(void)
{
	int64		id = 0;

	ok(rt_payload_highest_id("{\"id\":42,\"type\":\"x\"}", &id) && id == 42,
	   "event payload names its id");
	ok(rt_payload_highest_id("{\"ref\":{\"from\":5,\"to\":9,\"count\":5}}", &id) && id == 9,
	   "reference names its upper end");
	ok(!rt_payload_highest_id("{\"ref\":{\"from\":9,\"to\":5,\"count\":5}}", &id),
	   "reversed reference refused");
	ok(!rt_payload_highest_id("{\"id\":-1}", &id), "negative id refused");
	ok(!rt_payload_highest_id("{\"id\":99999999999999999999}", &id), "overflowing id refused");
	ok(!rt_payload_highest_id("hello", &id), "foreign payload refused");
	ok(!rt_payload_highest_id("", &id), "empty payload refused");
}

/* ---- scenarios ---- */

static void
test_scenarios(void)
{
	RtSequencer seq;
	int64		after,
				upto;

	/* 11 commits before 10; 10's transaction is still open (horizon 10). */
	rt_sequencer_init(&seq, 9);
	rt_sequencer_announce(&seq, 11);
	ok(rt_sequencer_next_read(&seq, &after, &upto) && after == 9 && upto == 11,
	   "announced beyond decided: read (9, 11]");
	rt_sequencer_read_horizon(&seq, 10);
	ok(!rt_sequencer_accept(&seq, 11), "11 waits while 10 may commit");
	rt_sequencer_read_done(&seq, upto);
	ok(seq.decided == 9 && rt_sequencer_behind(&seq), "still behind at 9");

	/* 10 commits: both go, in order. */
	rt_sequencer_announce(&seq, 10);
	ok(rt_sequencer_next_read(&seq, &after, &upto), "read again");
	rt_sequencer_read_horizon(&seq, PG_INT64_MAX);
	ok(rt_sequencer_accept(&seq, 10) && rt_sequencer_accept(&seq, 11),
	   "10 then 11 delivered");
	rt_sequencer_read_done(&seq, upto);
	ok(seq.decided == 11 && !rt_sequencer_behind(&seq), "caught up at 11");

	/* 12 rolled back, 13 committed: the horizon has passed 12. */
	rt_sequencer_announce(&seq, 13);
	ok(rt_sequencer_next_read(&seq, &after, &upto), "read (11, 13]");
	rt_sequencer_read_horizon(&seq, PG_INT64_MAX);
	ok(rt_sequencer_accept(&seq, 13), "13 delivered over the rolled-back 12");
	ok(!rt_sequencer_accept(&seq, 13), "never twice");
	rt_sequencer_read_done(&seq, upto);
	ok(seq.decided == 13, "decided 13");

	/* A read that finds nothing below the horizon decides the range. */
	rt_sequencer_announce(&seq, 20);
	ok(rt_sequencer_next_read(&seq, &after, &upto), "read (13, 20]");
	rt_sequencer_read_horizon(&seq, 18);
	rt_sequencer_read_done(&seq, upto);
	ok(seq.decided == 17, "empty read: decided up to the horizon");
}

/* ---- the model ---- */

#define MAX_TXNS	64
#define MAX_IDS		20000

typedef struct ModelTxn
{
	bool		open;
	int64		claim;			/* PG_INT64_MAX when not claimed */
	int64		first_id;
	int64		max_id;
	int			nids;
} ModelTxn;

typedef struct Model
{
	int64		last_drawn;
	ModelTxn	txns[MAX_TXNS];
	bool		committed[MAX_IDS];
	int			owner[MAX_IDS];	/* which transaction drew each id */
	int64		notify_queue[MAX_IDS];
	int			nqueued;
	int64		delivered[MAX_IDS];
	int			ndelivered;
	int			ncommitted;
	int			read_phase;		/* 0 none, 1 range fixed, 2 horizon read */
	int64		read_after;
	int64		read_upto;
	int			row_limit;
} Model;

static int64
model_horizon(Model *m)
{
	int64		h = PG_INT64_MAX;

	for (int i = 0; i < MAX_TXNS; i++)
		if (m->txns[i].open && m->txns[i].claim < h)
			h = m->txns[i].claim;
	return h;
}

/* Notifications announce; the next read's range is fixed. */
static void
model_feed_begin(Model *m, RtSequencer *seq)
{
	for (int i = 0; i < m->nqueued; i++)
		rt_sequencer_announce(seq, m->notify_queue[i]);
	m->nqueued = 0;
	if (m->read_phase == 0 &&
		rt_sequencer_next_read(seq, &m->read_after, &m->read_upto))
		m->read_phase = 1;
}

/* rt_read_events reads the horizon ... */
static void
model_feed_horizon(Model *m, RtSequencer *seq)
{
	if (m->read_phase != 1)
		return;
	rt_sequencer_read_horizon(seq, model_horizon(m));
	m->read_phase = 2;
}

/* ... and, later, the table: its snapshot sees whatever committed meanwhile. */
static void
model_feed_finish(Model *m, RtSequencer *seq)
{
	int			rows = 0;
	int64		upto = m->read_upto;

	if (m->read_phase != 2)
		return;
	m->read_phase = 0;
	for (int64 id = m->read_after + 1; id <= m->read_upto; id++)
	{
		if (!m->committed[id])
			continue;
		if (rows == m->row_limit)
		{
			upto = id - 1;		/* cut short: done only up to the last row */
			break;
		}
		rows++;
		if (rt_sequencer_accept(seq, id))
			m->delivered[m->ndelivered++] = id;
	}
	rt_sequencer_read_done(seq, upto);
}

static bool
model_run(unsigned int seed, int steps)
{
	static Model m;
	RtSequencer seq;

	memset(&m, 0, sizeof(m));
	srandom(seed);
	m.row_limit = 1 + random() % 8;
	rt_sequencer_init(&seq, 0);

	for (int step = 0; step < steps && m.last_drawn < MAX_IDS - 100; step++)
	{
		ModelTxn   *t = &m.txns[random() % MAX_TXNS];

		switch (random() % 7)
		{
			case 0:				/* a publisher begins and claims */
				if (!t->open)
				{
					memset(t, 0, sizeof(*t));
					t->open = true;
					t->claim = m.last_drawn + 1;
				}
				break;
			case 1:				/* an open publisher draws an id */
				if (t->open)
				{
					int64		id = ++m.last_drawn;

					if (t->nids++ == 0)
						t->first_id = id;
					t->max_id = id;
					m.owner[id] = (int) (t - m.txns);
				}
				break;
			case 2:				/* commit: visible, then announced, then released */
				if (t->open)
				{
					for (int64 id = t->first_id; t->nids > 0 && id <= t->max_id; id++)
						if (m.owner[id] == (int) (t - m.txns))
						{
							m.committed[id] = true;
							m.ncommitted++;
						}
					if (t->nids > 0)
						m.notify_queue[m.nqueued++] = t->max_id;
					t->open = false;
				}
				break;
			case 3:				/* rollback: nothing visible, nothing announced */
				if (t->open)
					t->open = false;
				break;
			case 4:
				model_feed_begin(&m, &seq);
				break;
			case 5:
				model_feed_horizon(&m, &seq);
				break;
			case 6:
				model_feed_finish(&m, &seq);
				break;
		}
	}

	/* Everyone finishes; the feed catches up. */
	for (int i = 0; i < MAX_TXNS; i++)
		m.txns[i].open = false;
	for (int round = 0; round < 100000; round++)
	{
		model_feed_begin(&m, &seq);
		model_feed_horizon(&m, &seq);
		model_feed_finish(&m, &seq);
		if (!rt_sequencer_behind(&seq) && m.nqueued == 0)
			break;
	}

	/* Exactly the committed ids, ascending, each once. */
	{
		int			k = 0;

		for (int64 id = 1; id <= m.last_drawn; id++)
			if (m.committed[id])
			{
				if (k >= m.ndelivered || m.delivered[k] != id)
				{
					printf("# seed %u: expected id " INT64_FORMAT " at position %d, got " INT64_FORMAT "\n",
						   seed, id, k, k < m.ndelivered ? m.delivered[k] : -1);
					return false;
				}
				k++;
			}
		if (k != m.ndelivered)
		{
			printf("# seed %u: %d extra deliveries\n", seed, m.ndelivered - k);
			return false;
		}
	}
	return true;
}

int
main(int argc, char **argv)
{
	int			seeds = argc > 1 ? atoi(argv[1]) : 2000;
	int			failed_seeds = 0;

	test_payloads();
	test_scenarios();
	for (int s = 1; s <= seeds; s++)
		if (!model_run((unsigned int) s, 3000))
			failed_seeds++;
	ok(failed_seeds == 0,
	   "model: committed ids delivered exactly once, ascending, over random interleavings");
	printf("1..%d\n", tests_run);
	return tests_failed == 0 ? 0 : 1;
}
