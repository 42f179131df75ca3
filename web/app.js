// The live page (GET /): filters, a live table, a per-job view with progress
// bars, the connection status, and a history pager, on rtevents.js.
//
// Everything the server sends is rendered with textContent, never as HTML.
// The filter lives in the URL (/?executionId=e1), so a view can be shared
// and a refresh keeps it; a refresh also loses nothing, since a filtered
// view hydrates from history before it goes live.
import { RtEvents } from '/rtevents.js';

const LIVE_ROWS_MAX = 500;
const HISTORY_PAGE = 50;
const FILTER_KEYS = ['executionId', 'batchId', 'jobId', 'organizationId', 'type'];
const FINAL = new Set(['job_completed', 'job_failed']);

const $ = (sel) => document.querySelector(sel);
const form = $('#filters');
const statusBox = $('#status');
const liveBody = $('#live tbody');
const historyBody = $('#history tbody');
const jobsList = $('#jobs');

// With rtevents.auth = token, the page is opened as /?token=...: the token
// goes to rtevents.js and to the history requests, and stays in the URL.
const TOKEN = new URLSearchParams(location.search).get('token');
const rt = new RtEvents({ token: TOKEN });
let sub = null;
let seen = new Set();       // ids shown in the live table
let jobs = new Map();       // "execution/job" -> {el, state, pct}
let liveCount = 0;

// ---- the filter, from and to the URL and the form ----

function filterFromUrl() {
  const q = new URLSearchParams(location.search);
  const f = {};
  for (const k of FILTER_KEYS) {
    const v = q.get(k);
    if (v) f[k] = k === 'type' ? v.split(',').filter(Boolean) : v;
  }
  return f;
}

function filterToQuery(f) {
  const q = new URLSearchParams();
  if (TOKEN) q.set('token', TOKEN);
  for (const k of FILTER_KEYS) {
    if (f[k] && (k !== 'type' || f[k].length)) q.set(k, k === 'type' ? f[k].join(',') : f[k]);
  }
  return q;
}

function filterFromForm() {
  const f = {};
  for (const k of FILTER_KEYS) {
    const v = form.elements[k].value.trim();
    if (v) f[k] = k === 'type' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  }
  return f;
}

function fillForm(f) {
  for (const k of FILTER_KEYS) {
    form.elements[k].value = f[k] ? (k === 'type' ? f[k].join(',') : f[k]) : '';
  }
}

// ---- rendering ----

function timeOf(ts) {
  if (!(ts instanceof Date) || isNaN(ts)) return '';
  return ts.toLocaleTimeString(undefined, { hour12: false }) + '.' +
    String(ts.getMilliseconds()).padStart(3, '0');
}

function eventRow(ev) {
  const tr = document.createElement('tr');
  tr.dataset.id = String(ev.id);
  const cells = [ev.id, timeOf(ev.ts), ev.type, ev.executionId ?? '', ev.jobId ?? '',
    JSON.stringify(ev.data)];
  cells.forEach((text, i) => {
    const td = document.createElement('td');
    td.textContent = String(text);
    if (i === 5) td.className = 'data';
    tr.appendChild(td);
  });
  return tr;
}

function progressOf(ev) {
  const d = ev.data ?? {};
  const pct = Number(d.pct ?? d.progressPercentage);
  return Number.isFinite(pct) ? Math.max(0, Math.min(100, pct)) : null;
}

// One card per job (or per execution for events without a job).
function updateJob(ev) {
  if (!ev.type.startsWith('job_') && !ev.jobId) return;
  const key = `${ev.executionId ?? ''}/${ev.jobId ?? ''}`;
  let job = jobs.get(key);
  if (!job) {
    const li = document.createElement('li');
    li.className = 'job';
    const name = document.createElement('div');
    name.className = 'name';
    name.textContent = ev.jobId ? `${ev.jobId}` : `${ev.executionId}`;
    if (ev.jobId && ev.executionId) name.title = `execution ${ev.executionId}`;
    const bar = document.createElement('progress');
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute('aria-label', `progress of ${name.textContent}`);
    const state = document.createElement('div');
    state.className = 'state';
    li.append(name, bar, state);
    jobsList.prepend(li);
    job = { el: li, bar, state, pct: 0, type: '' };
    jobs.set(key, job);
    $('#jobs-empty').hidden = true;
  }
  // a final state sticks: a late progress event does not undo it
  if (FINAL.has(job.type) && !FINAL.has(ev.type)) return;
  const pct = ev.type === 'job_completed' ? 100 : progressOf(ev);
  if (pct !== null) job.pct = pct;
  job.type = ev.type;
  job.el.dataset.state = ev.type;
  job.bar.value = job.pct;
  const label = { job_started: 'started', job_progress: `${job.pct}%`, job_completed: 'completed',
    job_failed: 'failed' }[ev.type] ?? ev.type;
  const err = ev.type === 'job_failed' && ev.data?.error ? `: ${ev.data.error}` : '';
  job.state.textContent = label + err;
}

function onEvent(ev) {
  if (seen.has(ev.id)) return;       // rtevents.js already dedups; the table must never repeat
  seen.add(ev.id);
  liveBody.prepend(eventRow(ev));
  while (liveBody.rows.length > LIVE_ROWS_MAX) liveBody.deleteRow(liveBody.rows.length - 1);
  liveCount++;
  $('#live-count').textContent = `(${liveCount})`;
  updateJob(ev);
}

function onStatus(s) {
  statusBox.dataset.status = s.status;
  document.body.dataset.status = s.status;
  let text = s.status;
  if (s.transport && s.status === 'open') text += ` (${s.transport})`;
  if (s.attempt && s.status !== 'open') text += `, attempt ${s.attempt}`;
  $('#status-text').textContent = text;
  $('#reconnect').hidden = !(s.status === 'offline' || s.status === 'reconnecting');
}

// ---- subscribing ----

function start(filter) {
  if (sub) sub.unsubscribe();
  seen = new Set();
  jobs = new Map();
  liveCount = 0;
  liveBody.replaceChildren();
  jobsList.replaceChildren();
  $('#jobs-empty').hidden = false;
  $('#live-count').textContent = '';
  // A filtered view hydrates from history, then goes live; the unfiltered
  // one starts live (all history would be too much), the pager has the rest.
  const hydrate = Object.keys(filter).length > 0;
  sub = rt.subscribe(filter, { history: hydrate, onEvent });
  loadHistory(filter, 0, []);
}

// ---- history pager: ascending pages chained by "next" ----

let historyCursor = 0;
let historyBack = [];
let historyNext = null;

async function loadHistory(filter, after, back) {
  const q = filterToQuery(filter);
  q.delete('token');                  // a header, not the URL, where it can be
  q.set('limit', String(HISTORY_PAGE));
  if (after) q.set('after', String(after));
  $('#history-info').textContent = 'loading…';
  try {
    const res = await fetch(`/api/events?${q}`,
      TOKEN ? { headers: { authorization: `Bearer ${TOKEN}` } } : undefined);
    const body = await res.json();
    if (!res.ok) throw new Error(body.message ?? res.statusText);
    historyCursor = after;
    historyBack = back;
    historyNext = body.next;
    historyBody.replaceChildren(...body.events.map((e) => eventRow({ ...e, ts: new Date(e.ts) })));
    $('#history-info').textContent = body.events.length
      ? `ids ${body.events[0].id}–${body.events[body.events.length - 1].id}` : 'no events';
  } catch (err) {
    $('#history-info').textContent = `history unavailable: ${err.message}`;
  }
  $('#history-prev').disabled = historyBack.length === 0;
  $('#history-next').disabled = historyNext === null;
}

$('#history-first').addEventListener('click', () => loadHistory(filterFromUrl(), 0, []));
$('#history-next').addEventListener('click', () => {
  if (historyNext !== null) loadHistory(filterFromUrl(), historyNext, [...historyBack, historyCursor]);
});
$('#history-prev').addEventListener('click', () => {
  const back = [...historyBack];
  const to = back.pop();
  if (to !== undefined) loadHistory(filterFromUrl(), to, back);
});

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const f = filterFromForm();
  const q = filterToQuery(f).toString();
  history.replaceState(null, '', q ? `/?${q}` : '/');
  start(f);
});
$('#clear').addEventListener('click', () => {
  fillForm({});
  const q = filterToQuery({}).toString();   // the token, if any, stays
  history.replaceState(null, '', q ? `/?${q}` : '/');
  start({});
});
$('#reconnect').addEventListener('click', () => rt.reconnect());

rt.on('status', onStatus);
onStatus({ status: rt.status ?? 'connecting' });
const initial = filterFromUrl();
fillForm(initial);
start(initial);
