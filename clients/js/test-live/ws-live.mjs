// test-live/ws-live.mjs: rtevents.js end to end against a running worker
// (not part of `npm test`, which needs no server).
//
//   RTEVENTS_URL=http://localhost:8787 node --experimental-websocket test-live/ws-live.mjs
//
// Events are published with psql: the PG* environment variables choose the
// database, RTEVENTS_PSQL replaces the command (default "psql -X -q -A -t").
// Checks, over a real WebSocket: history then live; a second subscription
// added to the open connection gets, in its own replay, the events the
// connection already had for the first; a reconnect while events are
// published loses and repeats nothing; the polling transport sees the same
// events.

import { execFile } from 'node:child_process';
import { RtEvents } from '../rtevents.js';

const url = process.env.RTEVENTS_URL;
if (!url) {
  console.error('set RTEVENTS_URL, e.g. http://localhost:8787');
  process.exit(2);
}
if (typeof WebSocket !== 'function') {
  console.error('no WebSocket: run with node --experimental-websocket (Node 20) or Node 22+');
  process.exit(2);
}
const [psql, ...psqlArgs] = (process.env.RTEVENTS_PSQL ?? 'psql -X -q -A -t').split(/\s+/);
const exec = `live-${process.pid}-${Date.now()}`;

function publish(from, to) {
  return sql(`SELECT count(rt_publish('job_progress', jsonb_build_object('i', g),
                 execution_id => '${exec}', job_id => 'j' || (g % 2))) FROM generate_series(${from}, ${to}) g`);
}

function sql(sql) {
  return new Promise((resolve, reject) => {
    execFile(psql, [...psqlArgs, '-v', 'ON_ERROR_STOP=1', '-c', sql], (err, out, errOut) => (err ? reject(new Error(errOut || err.message)) : resolve(out.trim())));
  });
}

async function until(what, cond, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function check(name, ids, n) {
  const bad = ids.some((id, i) => i > 0 && id <= ids[i - 1]);
  if (ids.length !== n || bad) throw new Error(`${name}: ${ids.length} events, expected ${n}${bad ? ', not ascending' : ''}: ${ids.join(',')}`);
  console.log(`ok  ${name}: ${n} events, ascending, no duplicate`);
}

const rt = new RtEvents({ url, transports: ['websocket'] });
rt.on('status', (s) => console.log(`    status ${s.status} ${s.transport}${s.error ? ' (' + s.error + ')' : ''}`));
rt.on('error', (e) => console.log(`    error ${e.code}: ${e.message}`));
try {
  await until('open', () => rt.status === 'open');
  await publish(1, 10); // history before anyone subscribes

  const all = [];
  const a = rt.subscribe({ executionId: exec }, { history: true, onEvent: (e) => all.push(e.id) });
  await until('a ready', () => a.ready);
  await until('history', () => all.length === 10);
  await publish(11, 20);
  await until('live', () => all.length === 20);
  check('history then live', all, 20);

  // Events 1..20 went out for a; b's replay brings its own copies of its
  // 10, in frames naming b alone.
  const odd = [];
  const b = rt.subscribe({ executionId: exec, jobId: 'j1' }, { history: true, onEvent: (e) => odd.push(e.id) });
  await until('b ready', () => b.ready);
  check('a subscription added to the open connection', odd, 10);

  // Reconnect while publishing: both resume from their own lastId.
  const publishing = publish(21, 60);
  await new Promise((r) => setTimeout(r, 5));
  rt.reconnect();
  await publishing;
  await until('after reconnect', () => all.length === 60 && odd.length === 30);
  check('across a reconnect (a)', all, 60);
  check('across a reconnect (b)', odd, 30);

  // The same events by polling the history API.
  const rtPoll = new RtEvents({ url, transports: ['poll'], pollInterval: 200 });
  const polled = [];
  rtPoll.subscribe({ executionId: exec }, { history: true, onEvent: (e) => polled.push(e.id) });
  await until('poll', () => polled.length === 60);
  await publish(61, 65);
  await until('poll live', () => polled.length === 65);
  check('polling', polled, 65);
  await until('websocket live', () => all.length === 65);
  if (polled.join() !== all.join()) throw new Error('polling saw other ids than the WebSocket');
  rtPoll.close();

  // Server-Sent Events: Node 20 has no EventSource; the "eventsource"
  // package stands in when it is installed.
  const ES = globalThis.EventSource ?? (await import('eventsource').then((m) => m.EventSource, () => null));
  if (ES) {
    const rtSse = new RtEvents({ url, transports: ['sse'], EventSource: ES });
    const streamed = [];
    rtSse.subscribe({ executionId: exec }, { history: true, onEvent: (e) => streamed.push(e.id) });
    await until('sse', () => streamed.length === 65);
    await publish(66, 70);
    await until('sse live', () => streamed.length === 70);
    check('server-sent events', streamed, 70);
    rtSse.close();
  } else console.log('--  server-sent events: skipped (no EventSource; npm install eventsource to run it)');

  // A cursor older than what cleanup deleted: gap, then the events kept.
  // The worker replays from its ring of the last 8,192 events while it
  // reaches back far enough (deleted rows included: nothing is missed then),
  // so filler events push the deleted ones out of it first.
  const gapExec = exec + '-gap';
  const gone = (await sql(`SELECT rt_publish('job_progress', '{}', execution_id => '${gapExec}', ttl => '1 millisecond') FROM generate_series(1, 3)`)).trim().split('\n').map(Number);
  // a cursor from before the deleted events: it missed them (history: true,
  // after 0, received nothing and missed nothing: no gap)
  const cursor = gone[0] - 1;
  await new Promise((r) => setTimeout(r, 50));
  await sql('SELECT rt_cleanup()');
  await sql(`SELECT rt_publish('job_completed', '{}', execution_id => '${gapExec}')`);
  await sql(`INSERT INTO execution_events (type, execution_id) SELECT 'filler', '${exec}-filler' FROM generate_series(1, 8300)`);
  const top = Number(await sql('SELECT max(id) FROM execution_events'));
  const streamed = async () => Number((await (await fetch(url + '/metrics')).text()).match(/^rtevents_last_event_id (\d+)/m)?.[1]);
  for (let i = 0; i < 200 && (await streamed()) < top; i++) await new Promise((r) => setTimeout(r, 50));
  for (const [name, options] of [['websocket', { transports: ['websocket'] }], ['sse', { transports: ['sse'], EventSource: ES }]]) {
    if (name === 'sse' && !ES) continue;
    const rtGap = new RtEvents({ url, ...options });
    const gaps = [], kept = [];
    rtGap.subscribe({ executionId: gapExec }, { after: cursor, onGap: (g) => gaps.push(g), onEvent: (e) => kept.push(e.type) });
    await until(`gap over ${name}`, () => gaps.length === 1 && kept.length === 1);
    if (!(gaps[0].after === cursor && gaps[0].oldest > gone[2]) || kept[0] !== 'job_completed') throw new Error(`gap over ${name}: ${JSON.stringify(gaps)} ${kept}`);
    console.log(`ok  gap over ${name}: ${JSON.stringify(gaps[0])}, then the event kept`);
    rtGap.close();
  }
  console.log('all live checks passed');
} catch (e) {
  console.error('FAILED:', e.message);
  process.exitCode = 1;
} finally {
  rt.close();
}
