// bench/nchan_pub.mjs: publishes EVENTS events at RATE a second to an nchan
// channel (bench/ws_bench.sh nchan), each body an rtevents events frame of
// the worker's size, stamped with the time it was sent, so that
// bench/ws_bench.c reads and times nchan's deliveries exactly as the
// worker's.  One keep-alive connection; each POST waits for the last.
//
//   node bench/nchan_pub.mjs EVENTS RATE PORT CHANNEL
import http from 'node:http';

const [events, rate, port] = process.argv.slice(2, 5).map(Number);
const channel = process.argv[5];
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// microseconds since the epoch: Date.now() has milliseconds only
const baseUs = BigInt(Date.now()) * 1000n;
const base = process.hrtime.bigint();
function nowIso() {
	const us = baseUs + (process.hrtime.bigint() - base) / 1000n;
	const secs = new Date(Number(us / 1000n)).toISOString().slice(0, 19);
	return `${secs}.${String(us % 1000000n).padStart(6, '0')}+00:00`;
}

function post(body) {
	return new Promise((resolve, reject) => {
		const req = http.request({
			agent, host: '127.0.0.1', port, path: `/pub/${channel}`, method: 'POST',
			headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
		}, (res) => { res.resume(); res.on('end', resolve); });
		req.on('error', reject);
		req.end(body);
	});
}

const start = Date.now();
for (let i = 1; i <= events; i++) {
	const wait = start + (i * 1000) / rate - Date.now();
	if (wait > 0)
		await new Promise((r) => setTimeout(r, wait));
	await post(JSON.stringify({
		op: 'events', subs: ['default'],
		events: [{ id: i, executionId: 'bench', type: 'job_progress', payload: { pct: i % 100 }, ts: nowIso() }],
	}));
}
agent.destroy();
