/*-------------------------------------------------------------------------
 *
 * sequencer.c
 *		Turns the LISTEN feed into one ascending, gap-free stream of ids.
 *
 * Notifications arrive in commit order, which is not id order, and say
 * nothing about ids that were rolled back.  The sequencer keeps one number,
 * "decided": every id at or below it has been delivered or will never
 * commit.  It advances by reading the table, never by trusting the order of
 * notifications:
 *
 *	1. A notification only raises "announced", the highest id known to be
 *	   drawn (the event's id, or a reference's upper end).
 *	2. While announced > decided, the feed asks for the rows in (decided,
 *	   announced] with rt_read_events() (feed_read.c), which reads the
 *	   horizon (horizon.c: the lowest id an open publishing transaction may
 *	   still commit) first and the rows with a later snapshot, so that the
 *	   read sees every transaction that had released its slot.
 *	3. Walking the rows in id order, a row goes out when every id between it
 *	   and the last one delivered is either returned or below the horizon
 *	   (decided as never to commit).  The first missing id at or above the
 *	   horizon stops the walk: a transaction holding it is still open.
 *
 * When the walk stops short, the open transaction will either commit, which
 * announces it, or roll back, which announces nothing; so the feed polls the
 * horizon on a short timer while anything is held back.
 *
 * The announced value is read before the horizon, and any id at or below it
 * was drawn before the horizon was read, so a transaction that had not yet
 * claimed its slot can only draw higher ids.  That is why the rows asked for
 * never go beyond "announced".
 *
 * Nothing here allocates or can fail; it is safe inside any callback.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "rtevents.h"

void
rt_sequencer_init(RtSequencer *seq, int64 decided)
{
	seq->decided = decided;
	seq->announced = decided;
	seq->horizon = PG_INT64_MAX;
	seq->walk_next = decided + 1;
}

/*
 * Read an unsigned decimal id at *p, advancing it.  Ids are positive; the
 * bound keeps an absurd value from overflowing.
 */
static bool
parse_id(const char **p, int64 *id)
{
	int64		value = 0;
	const char *s = *p;

	if (!isdigit((unsigned char) *s))
		return false;
	while (isdigit((unsigned char) *s))
	{
		if (value > (PG_INT64_MAX - 9) / 10)
			return false;
		value = value * 10 + (*s - '0');
		s++;
	}
	*p = s;
	*id = value;
	return true;
}

/*
 * The highest id a notification payload announces: an event from
 * rt_publish starts {"id":N, and a reference is {"ref":{"from":F,"to":T,...
 * (publish.c writes both).  Returns false for anything else.
 */
bool
rt_payload_highest_id(const char *payload, int64 *id)
{
	static const char event_prefix[] = "{\"id\":";
	static const char ref_prefix[] = "{\"ref\":{\"from\":";
	const char *p;
	int64		from;

	if (strncmp(payload, event_prefix, sizeof(event_prefix) - 1) == 0)
	{
		p = payload + sizeof(event_prefix) - 1;
		return parse_id(&p, id);
	}
	if (strncmp(payload, ref_prefix, sizeof(ref_prefix) - 1) == 0)
	{
		p = payload + sizeof(ref_prefix) - 1;
		if (!parse_id(&p, &from) || strncmp(p, ",\"to\":", 6) != 0)
			return false;
		p += 6;
		return parse_id(&p, id) && *id >= from;
	}
	return false;
}

void
rt_sequencer_announce(RtSequencer *seq, int64 id)
{
	if (id > seq->announced)
		seq->announced = id;
}

/*
 * Whether the table should be read, and which range: (*after, *upto].  The
 * range is fixed before the horizon is read.
 */
bool
rt_sequencer_next_read(RtSequencer *seq, int64 *after, int64 *upto)
{
	if (seq->announced <= seq->decided)
		return false;
	seq->horizon = 0;			/* nothing is decided until it is read */
	seq->walk_next = seq->decided + 1;
	*after = seq->decided;
	*upto = seq->announced;
	return true;
}

/* The horizon the read found, before its rows (PG_INT64_MAX: none open). */
void
rt_sequencer_read_horizon(RtSequencer *seq, int64 horizon)
{
	seq->horizon = horizon;
}

/*
 * A row of the range read, in ascending id order.  True when it may be
 * delivered now; false when an id before it may still commit, in which case
 * every later row of this read is held back too.
 */
bool
rt_sequencer_accept(RtSequencer *seq, int64 id)
{
	if (id < seq->walk_next)
		return false;			/* already delivered: never twice */
	if (id > seq->walk_next && id - 1 >= seq->horizon)
		return false;			/* a gap an open transaction may fill */
	seq->decided = id;
	seq->walk_next = id + 1;
	return true;
}

/*
 * The read is complete up to upto (the range's end, or the last row's id
 * when the read was cut short by a row limit): ids after the last row
 * delivered, up to upto and below the horizon, will never commit.  (When
 * the walk stopped at a gap, that gap is at or above the horizon, so this
 * cannot step over it.)
 */
void
rt_sequencer_read_done(RtSequencer *seq, int64 upto)
{
	int64		limit = Min(upto, seq->horizon - 1);

	if (limit > seq->decided)
		seq->decided = limit;
}

/* Whether anything announced is still held back. */
bool
rt_sequencer_behind(const RtSequencer *seq)
{
	return seq->announced > seq->decided;
}
