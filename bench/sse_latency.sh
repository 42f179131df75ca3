#!/usr/bin/env bash
# bench/sse_latency.sh: SSE delivery latency, rt_publish to receipt, for
# SUBSCRIBERS subscribers of one execution while one session publishes RATE
# events/s for SECONDS seconds (one rt_publish per transaction).
#
#   sudo bench/sse_latency.sh            SUBSCRIBERS=1000 RATE=100 SECONDS_=20
#
# Starts a private cluster (as postgres, in a mktemp -d, unix socket only for
# SQL), the worker on 127.0.0.1:$PORT, and removes it all on exit.  The
# client is bench/sse_client.c (one epoll loop; CLIENT=node for the Node
# one), on the same 2 cores as the server.  Needs the extension installed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pg_bin=/usr/lib/postgresql/15/bin
subscribers=${SUBSCRIBERS:-1000}
rate=${RATE:-100}
seconds=${SECONDS_:-20}
port=${PORT:-8791}
pgport=${PGPORT_BENCH:-5546}
events=$((rate * seconds))

dir=$(mktemp -d /tmp/rtevents-sse-bench.XXXXXX)
chown postgres "$dir"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() { as_pg "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

as_pg "$pg_bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
port = $pgport
unix_socket_directories = '$dir'
shared_preload_libraries = 'rtevents'
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.cleanup_interval = 0
rtevents.auth = none
CONF
as_pg "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
psql=("$pg_bin/psql" -X -q -h "$dir" -p "$pgport" -U postgres -d postgres)
"${psql[@]}" -c 'CREATE EXTENSION rtevents'
for _ in $(seq 1 100); do
	[ "$(curl -s "http://127.0.0.1:$port/healthz")" = ok ] && break
	sleep 0.1
done

ulimit -n 65536 2>/dev/null || true
out=$(mktemp)
if [ "${CLIENT:-c}" = node ]; then
	node "$here/sse_latency.mjs" "$port" "$subscribers" "$events" >"$out" &
else
	cc -O2 -Wall -Wextra -o "$dir/sse_client" "$here/sse_client.c"
	"$dir/sse_client" "$port" "$subscribers" "$events" \
		'/api/events/stream?executionId=bench' >"$out" &
fi
client=$!
sleep 1
until grep -q ready "$out"; do sleep 0.2; done

# One publisher at RATE/s: each statement its own transaction.
start=$(date +%s.%N)
{
	for ((i = 0; i < events; i++)); do
		echo "SELECT rt_publish('job_progress', '{\"pct\": $((i % 100))}', execution_id => 'bench');"
		echo "SELECT pg_sleep(greatest(0, $start + ($i + 1) / $rate.0 - extract(epoch from clock_timestamp())));"
	done
} | "${psql[@]}" -A -t >/dev/null
wait "$client"
tail -n 1 "$out"
rm -f "$out"
