// bench/sse_latency.mjs: end-to-end latency of SSE delivery, rt_publish to
// receipt, for N subscribers of one execution.  Run by bench/sse_latency.sh.
//
//   node bench/sse_latency.mjs <port> <subscribers> <expected-events>
//
// Each event's "ts" is clock_timestamp() at insert; receipt time minus ts is
// the latency (same machine, same clock).  Also checks that every subscriber
// got every event exactly once, in ascending id.  Prints one JSON line.
import http from 'node:http';

const [port, subscribers, expected] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const latencies = [];
const streams = [];
let opened = 0;

function open(i) {
	return new Promise((resolve, reject) => {
		const s = { ids: [], buf: '' };
		const req = http.get({ host: '127.0.0.1', port, agent,
			path: '/api/events/stream?executionId=bench' }, (res) => {
			res.setEncoding('utf8');
			res.on('data', (chunk) => {
				s.buf += chunk;
				let end;
				while ((end = s.buf.indexOf('\n\n')) >= 0) {
					const block = s.buf.slice(0, end);
					s.buf = s.buf.slice(end + 2);
					const data = block.split('\n').find((l) => l.startsWith('data: '));
					if (!data) continue;
					const ev = JSON.parse(data.slice(6));
					latencies.push(Date.now() - Date.parse(ev.ts));
					s.ids.push(ev.id);
				}
				if (!s.ready && s.buf.length === 0) { s.ready = true; resolve(); }
			});
			if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
		});
		req.on('error', reject);
		s.req = req;
		streams.push(s);
	});
}

for (let i = 0; i < subscribers; i += 100)
	await Promise.all(Array.from({ length: Math.min(100, subscribers - i) }, (_, k) => open(i + k)));
opened = streams.length;
process.stdout.write(JSON.stringify({ ready: opened }) + '\n');

const deadline = Date.now() + 120000;
await new Promise((resolve) => {
	const t = setInterval(() => {
		const done = streams.every((s) => s.ids.length >= expected);
		if (done || Date.now() > deadline) { clearInterval(t); resolve(); }
	}, 100);
});

let lost = 0, dup = 0, disorder = 0;
for (const s of streams) {
	lost += Math.max(0, expected - new Set(s.ids).size);
	dup += s.ids.length - new Set(s.ids).size;
	for (let i = 1; i < s.ids.length; i++) if (s.ids[i] <= s.ids[i - 1]) disorder++;
	s.req.destroy();
}
latencies.sort((a, b) => a - b);
const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
process.stdout.write(JSON.stringify({
	subscribers: opened, deliveries: latencies.length, lost, duplicates: dup, out_of_order: disorder,
	p50_ms: q(0.5), p99_ms: q(0.99), max_ms: latencies[latencies.length - 1],
}) + '\n');
process.exit(0);
