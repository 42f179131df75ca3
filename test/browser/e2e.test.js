// End-to-end tests of the live page (GET /) and rtevents.js in a real
// browser: Debian's Chromium, driven by playwright-core (never a downloaded
// browser).  Run by test/t/060_browser.pl, which starts a cluster with the
// worker and passes RT_URL and the libpq PG* variables; events are
// published with psql, as an application would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const RT_URL = process.env.RT_URL;
assert.ok(RT_URL, 'RT_URL is set (run by test/t/060_browser.pl)');

let browser;
// execution ids of this run, so that a cluster used before does not matter
const RUN = Date.now().toString(36);
const exec = (name) => `e2e-${name}-${RUN}`;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
});

after(async () => {
  await browser?.close();
});

function psql(sql) {
  return execFileSync('psql', ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  }).trim();
}

// psql while the cluster may be restarting: try again for up to 60 s when
// it cannot connect (an error in the SQL is not retried).
async function psqlRetry(sql) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return psql(sql);
    } catch (err) {
      const cannotConnect = /connection to server|recovery mode|shutting down|starting up|terminating connection/
        .test(String(err.stderr));
      if (!cannotConnect || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

// The worker has no database session, so it is found as the postmaster's
// child titled "rtevents server" (PGDATA names the cluster).
function workerPid() {
  const postmaster = Number(readFileSync(`${process.env.PGDATA}/postmaster.pid`, 'utf8').split('\n')[0]);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('rtevents server')) {
        return Number(entry);
      }
    } catch {
      // gone meanwhile
    }
  }
  return 0;
}

function publish(type, data, executionId, jobId) {
  const job = jobId ? `, job_id => '${jobId}'` : '';
  return Number(psql(`SELECT rt_publish('${type}', '${JSON.stringify(data)}', execution_id => '${executionId}'${job})`));
}

async function openPage(query, { blockWebSocket = false } = {}) {
  const context = await browser.newContext();
  if (blockWebSocket) {
    // as a proxy that refuses upgrades would: the page must fall back to SSE
    await context.routeWebSocket(/\/ws/, (ws) => ws.close({ code: 1008, reason: 'blocked' }));
  }
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  // the worker asks for tokens (rtevents.auth = token): the page is opened
  // with one, as a deployment would hand it over
  const sep = query.includes('?') ? '&' : '?';
  await page.goto(`${RT_URL}/${query}${process.env.RT_TOKEN ? `${sep}token=${process.env.RT_TOKEN}` : ''}`);
  await page.waitForSelector('body[data-status="open"]', { timeout: 15_000 });
  return { page, context, errors };
}

async function rowIds(page) {
  return page.$$eval('#live tbody tr', (rows) => rows.map((r) => Number(r.dataset.id)));
}

async function waitForRows(page, ids, timeout = 15_000) {
  await page.waitForFunction(
    (want) => want.every((id) => document.querySelector(`#live tbody tr[data-id="${id}"]`)),
    ids, { timeout, polling: 50 });
}

test('the page shows events published from psql within a second', async () => {
  const { page, context, errors } = await openPage(`?executionId=${exec('live')}`);
  publish('job_started', {}, exec('live'), 'build');
  const start = Date.now();
  const id = publish('job_progress', { pct: 45 }, exec('live'), 'build');
  await waitForRows(page, [id], 1000);
  const elapsed = Date.now() - start;
  assert.ok(elapsed < 1000, `shown after ${elapsed} ms`);
  const cells = await page.$$eval(`#live tbody tr[data-id="${id}"] td`, (tds) => tds.map((td) => td.textContent));
  assert.equal(cells[2], 'job_progress');
  assert.equal(cells[3], exec('live'));
  assert.equal(cells[5], '{"pct":45}');
  assert.match(cells[1], /^\d\d:\d\d:\d\d\.\d{3}$/, 'ts shown as a time, parsed as a Date');
  const progress = await page.$eval('.job progress', (p) => p.value);
  assert.equal(progress, 45, 'the job card shows the progress');
  const done = publish('job_completed', {}, exec('live'), 'build');
  await waitForRows(page, [done]);
  await page.waitForFunction(() => document.querySelector('.job')?.dataset.state === 'job_completed');
  assert.equal(await page.$eval('.job progress', (p) => p.value), 100, 'completed is 100%');
  assert.deepEqual(errors, [], 'no page errors');
  await context.close();
});

test('a refresh hydrates from history: nothing lost, nothing twice', async () => {
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push(publish('job_progress', { pct: i * 20 }, exec('hydrate'), 'j'));
  const { page, context } = await openPage(`?executionId=${exec('hydrate')}`);
  await waitForRows(page, ids);
  await page.reload();
  await page.waitForSelector('body[data-status="open"]');
  const more = publish('job_progress', { pct: 100 }, exec('hydrate'), 'j');
  await waitForRows(page, [...ids, more]);
  const shown = await rowIds(page);
  assert.deepEqual([...shown].sort((a, b) => a - b), [...ids, more], 'every event once');
  await context.close();
});

test('the worker killed mid-stream: reconnecting, then caught up with no gap or duplicate', async () => {
  const { page, context } = await openPage(`?executionId=${exec('kill')}`);
  const ids = [];
  for (let i = 0; i < 10; i++) ids.push(publish('job_progress', { i }, exec('kill'), 'k'));
  await waitForRows(page, ids);

  const pid = workerPid();
  assert.ok(pid > 0, 'found the worker');
  process.kill(pid, 'SIGKILL');   // the postmaster restarts the cluster
  await page.waitForSelector('body:not([data-status="open"])', { timeout: 10_000 });
  const shownStatus = await page.$eval('#status-text', (el) => el.textContent);
  assert.match(shownStatus, /reconnecting|connecting|offline/, `status shows ${shownStatus}`);

  // published while the page is away, as soon as the cluster takes them
  for (let i = 0; i < 10; i++) {
    ids.push(Number(await psqlRetry(`SELECT rt_publish('job_progress', '{"after":${i}}', execution_id => '${exec('kill')}', job_id => 'k')`)));
  }
  await page.waitForSelector('body[data-status="open"]', { timeout: 60_000 });
  await waitForRows(page, ids, 30_000);
  const shown = await rowIds(page);
  const stored = psql(`SELECT string_agg(id::text, ',' ORDER BY id) FROM execution_events WHERE execution_id = '${exec('kill')}'`)
    .split(',').map(Number);
  assert.deepEqual([...shown].sort((a, b) => a - b), stored, 'exactly the stored events, each once');
  await context.close();
});

test('with WebSocket blocked the page still receives, over SSE', async () => {
  const { page, context } = await openPage(`?executionId=${exec('sse')}`, { blockWebSocket: true });
  const id = publish('job_progress', { pct: 10 }, exec('sse'), 'j');
  await waitForRows(page, [id]);
  assert.match(await page.$eval('#status-text', (el) => el.textContent), /sse/);
  await context.close();
});

test('two tabs both update', async () => {
  const a = await openPage(`?executionId=${exec('tabs')}`);
  const b = await openPage(`?executionId=${exec('tabs')}`);
  const id = publish('job_started', {}, exec('tabs'), 't');
  await Promise.all([waitForRows(a.page, [id]), waitForRows(b.page, [id])]);
  await a.context.close();
  await b.context.close();
});

test('the filter form, the history pager, and the status dot', async () => {
  const ex = exec('form');
  const other = exec('form-other');
  const ids = [];
  for (let i = 0; i < 60; i++) ids.push(publish('job_progress', { pct: i }, ex, 'f'));
  publish('job_progress', { pct: 1 }, other, 'f');
  const { page, context } = await openPage('');
  assert.equal(await page.$eval('#status', (s) => s.dataset.status), 'open', 'the dot says open');

  // filter by execution with the form: the URL follows, the table hydrates
  await page.fill('input[name="executionId"]', ex);
  await page.press('input[name="executionId"]', 'Enter');     // keyboard, no mouse
  await waitForRows(page, ids);
  assert.match(page.url(), new RegExp(`executionId=${ex}`));
  const shown = await rowIds(page);
  assert.equal(shown.length, 60, 'only that execution');
  const label = await page.$eval('input[name="executionId"]', (i) => i.closest('label').textContent.trim());
  assert.equal(label, 'Execution', 'inputs are labelled');

  // the pager: 50 a page, ascending, next and previous
  await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 50);
  const first = await page.$$eval('#history tbody tr', (r) => r.map((x) => Number(x.dataset.id)));
  assert.deepEqual(first, ids.slice(0, 50));
  await page.click('#history-next');
  await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 10);
  const second = await page.$$eval('#history tbody tr', (r) => r.map((x) => Number(x.dataset.id)));
  assert.deepEqual(second, ids.slice(50));
  await page.click('#history-prev');
  await page.waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 50);
  await context.close();
});

test('job cards: progressPercentage too, a failure with its error; text contrast at least 4.5:1', async () => {
  const ex = exec('cards');
  const { page, context } = await openPage(`?executionId=${ex}`);
  publish('job_progress', { progressPercentage: 70 }, ex, 'alt');
  const failed = publish('job_failed', { error: 'exit status 1' }, ex, 'bad');
  await waitForRows(page, [failed]);
  const cards = await page.$$eval('.job', (els) => els.map((e) => ({
    name: e.querySelector('.name').textContent, value: e.querySelector('progress').value,
    state: e.dataset.state, text: e.querySelector('.state').textContent })));
  const alt = cards.find((c) => c.name === 'alt');
  const bad = cards.find((c) => c.name === 'bad');
  assert.equal(alt.value, 70, 'progressPercentage drives the bar');
  assert.equal(bad.state, 'job_failed');
  assert.equal(bad.text, 'failed: exit status 1');

  // WCAG contrast of the text the page shows, against its background
  const ratios = await page.evaluate(() => {
    const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const bg = rgb(getComputedStyle(document.body).backgroundColor);
    return ['#status-text', 'label', 'td', 'th', '.job .state', 'h2'].map((sel) => {
      const fg = rgb(getComputedStyle(document.querySelector(sel)).color);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      return [sel, (a + 0.05) / (b + 0.05)];
    });
  });
  for (const [sel, ratio] of ratios) assert.ok(ratio >= 4.5, `${sel}: contrast ${ratio.toFixed(2)}`);
  await context.close();
});

test('a screenshot of the live page is not blank', async () => {
  const { page, context } = await openPage(`?executionId=${exec('live')}`);
  await page.waitForSelector('#live tbody tr');
  const png = await page.screenshot({ fullPage: true, path: process.env.SCREENSHOT });
  // Count the pixels that differ from the background, in the browser itself.
  const check = await browser.newPage();
  const share = await check.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    const [r0, g0, b0] = px;
    let differ = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (Math.abs(px[i] - r0) + Math.abs(px[i + 1] - g0) + Math.abs(px[i + 2] - b0) > 30) differ++;
    }
    return differ / (px.length / 4);
  }, png.toString('base64'));
  assert.ok(share > 0.01, `${(share * 100).toFixed(1)}% of the pixels are not background`);
  await check.close();
  await context.close();
});
