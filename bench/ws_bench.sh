#!/usr/bin/env bash
# bench/ws_bench.sh: the WebSocket performance goals, measured.
#
#   sudo bench/ws_bench.sh [all | latency throughput memory index isolation floor nchan ...]
#
# Starts a private cluster (as postgres, in a mktemp -d, unix socket only for
# SQL) with rtevents preloaded, rtevents.max_connections = 20000, the worker
# on 127.0.0.1:$PORT, and removes it all on exit.  The client is
# bench/ws_bench.c (one epoll loop), on the same cores as the server.  Each
# scenario starts from a freshly restarted worker and prints one line:
# its name and the client's JSON result.
#
#   latency     SUBSCRIBERS (1000) clients of one execution while one session
#               publishes RATE (100) events/s for SECONDS_ (20) s, one
#               rt_publish per transaction: rt_publish-to-receipt p50/p99/max,
#               lost and out-of-order deliveries.  Goal p50 < 5 ms, p99 < 15 ms.
#   throughput  SUBSCRIBERS clients of one execution while PUBLISHERS (3) psql
#               sessions publish BATCH (500) events per transaction as fast as
#               they can, for TP_SECONDS (15) s: deliveries/s, the worker's CPU.
#               Goal >= 200k deliveries/s, the worker using about one core.
#               TP_RATE=<events/s>: one session publishing BATCH-event
#               transactions at that rate instead, to find the rate the
#               stream keeps up with (bounded latency) rather than a flood.
#   memory      IDLE_CONNS (10000) connections, welcomed and idle; then as many
#               each subscribed to an execution of its own: the worker's
#               VmRSS per connection.  Goal <= 6 kB per idle connection.
#   index       INDEX_EVENTS (20000) events, 100 per transaction, published to
#               one execution among 10 watched ones, then among INDEX_CONNS
#               (10000), each client watching one of its own: the
#               worker's CPU per 1,000 events.  Goal: about the same.
#   isolation   the latency run (ISO_SECONDS, 30, long) on a table holding
#               CATCHUP_BACK (100000) more events of that execution, without
#               and then with one more client that connects CATCHUP_DELAY (5)
#               s into the run with after = max(id) - CATCHUP_BACK and reads
#               its replay as fast as it can: the live clients' p50/p99 while
#               it catches up, and how long it takes.
#   floor       the latency run against bench/fanout_floor.c instead of the
#               worker: a WebSocket server that does nothing but stamp each
#               event and send() it to every client.  What any server gets
#               here with this client; the worker cannot do better.
#   nchan       the latency run against nginx's nchan module (Debian's
#               nginx-light and libnginx-mod-nchan, installed if missing),
#               one nginx worker, bench/nchan_pub.mjs publishing over HTTP:
#               the issue's point of comparison, on this machine and client.
#
# HEARTBEAT (e.g. 5s) sets rtevents.heartbeat, to see pings answered under load.
# PGBIN (/usr/lib/postgresql/15/bin) is the server to run, with rtevents
# installed in it; PORT (8792) and PGPORT_BENCH (5547) the worker's port and
# the cluster's.
# Needs the extension installed (make install); run as root, like
# bench/sse_latency.sh, since the cluster belongs to postgres.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pg_bin=${PGBIN:-/usr/lib/postgresql/15/bin}
subscribers=${SUBSCRIBERS:-1000}
rate=${RATE:-100}
seconds=${SECONDS_:-20}
publishers=${PUBLISHERS:-3}
batch=${BATCH:-500}
tp_seconds=${TP_SECONDS:-15}
idle_conns=${IDLE_CONNS:-10000}
index_events=${INDEX_EVENTS:-20000}
index_conns=${INDEX_CONNS:-10000}
catchup_back=${CATCHUP_BACK:-100000}
catchup_delay=${CATCHUP_DELAY:-5}
iso_seconds=${ISO_SECONDS:-30}
port=${PORT:-8792}
pgport=${PGPORT_BENCH:-5547}

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ] || [ "${scenarios[0]}" = all ]; then
	scenarios=(latency throughput memory index isolation)
fi
for s in "${scenarios[@]}"; do
	case $s in
		latency | throughput | memory | index | isolation | floor | nchan) ;;
		*) echo "usage: $0 [all | latency throughput memory index isolation floor nchan ...]" >&2; exit 2 ;;
	esac
done

# 10,000 clients need 10,000 descriptors on each side; the worker raises its
# soft limit to the hard one it inherits from here.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d /tmp/rtevents-ws-bench.XXXXXX)
chown postgres "$dir"
as_pg() { runuser -u postgres -- "$@"; }
background=()
cleanup() {
	for p in "${background[@]}"; do kill "$p" 2>/dev/null || true; done
	as_pg "$pg_bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 1" INT TERM

as_pg "$pg_bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
port = $pgport
unix_socket_directories = '$dir'
shared_preload_libraries = 'rtevents'
rtevents.listen_addresses = '127.0.0.1'
rtevents.port = $port
rtevents.max_connections = 20000
rtevents.cleanup_interval = 0
rtevents.auth = none
CONF
[ -n "${HEARTBEAT:-}" ] && echo "rtevents.heartbeat = '$HEARTBEAT'" >>"$dir/data/postgresql.conf"
psql=("$pg_bin/psql" -X -q -A -t -h "$dir" -p "$pgport" -U postgres -d postgres)

wait_healthy() {
	for _ in $(seq 1 200); do
		[ "$(curl -s "http://127.0.0.1:$port/healthz")" = ok ] && return 0
		sleep 0.1
	done
	echo "ws_bench.sh: the worker never became healthy; see $dir/server.log" >&2
	tail -n 20 "$dir/server.log" >&2
	exit 1
}

# A fresh worker for each scenario: its memory and CPU are then its own.
pids=
restart() {
	as_pg "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w restart >/dev/null
	say_lib
	wait_healthy
	local pm worker feed
	pm=$(head -n 1 "$dir/data/postmaster.pid")
	worker=$(ps -o pid=,args= --ppid "$pm" | awk '/rtevents server/ { print $1 }')
	feed=$("${psql[@]}" -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'rtevents feed'")
	[ -n "$worker" ] || { echo "ws_bench.sh: no rtevents server process" >&2; exit 1; }
	pids="$worker${feed:+,$feed}"
}

as_pg "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
"${psql[@]}" -c 'CREATE EXTENSION rtevents'
wait_healthy
cc -O2 -Wall -Wextra -o "$dir/ws_bench" "$here/ws_bench.c"
# What was measured, and whether anything else was using the cores: said
# again whenever a restart loads a different rtevents.so.
lib=$("$pg_bin/pg_config" --pkglibdir)/rtevents.so
lib_said=
say_lib() {
	local id
	id="rtevents.so $(date -u -r "$lib" +%FT%TZ) md5 $(md5sum <"$lib" | cut -c1-12)"
	[ "$id" = "$lib_said" ] && return
	lib_said=$id
	echo "# $(date -u +%FT%TZ) $id, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

# Runs ws_bench in the background; returns once its clients are ready.
client_out=
client_pid=
start_client() {
	client_out=$(mktemp -p "$dir")
	"$dir/ws_bench" "$@" >"$client_out" &
	client_pid=$!
	background+=("$client_pid")
	until grep -q ready "$client_out"; do
		kill -0 "$client_pid" 2>/dev/null || { echo "ws_bench.sh: ws_bench $1 failed" >&2; exit 1; }
		sleep 0.2
	done
}
finish_client() {
	wait "$client_pid"
	echo "$1: $(tail -n 1 "$client_out")"
}

# SQL for one session publishing $1 events to execution $3 at $2 a second,
# $4 (1) per transaction; one rt_publish per transaction is what
# sse_latency.sh does.  The schedule starts when the script is written.
paced_sql() {
	local events=$1 rate=$2 exec=$3 batch=${4:-1} start
	start=$(date +%s.%N)
	for ((i = 0; i < events / batch; i++)); do
		if [ "$batch" = 1 ]; then
			echo "SELECT rt_publish('job_progress', '{\"pct\": $((i % 100))}', execution_id => '$exec');"
		else
			echo "SELECT count(rt_publish('t', '{\"i\":1}', execution_id => '$exec')) FROM generate_series(1, $batch);"
		fi
		echo "SELECT pg_sleep(greatest(0, $start + ($i + 1) * $batch / $rate.0 - extract(epoch from clock_timestamp())));"
	done
}
publish_paced() {
	paced_sql "$@" >"$dir/paced.sql"
	"${psql[@]}" -f "$dir/paced.sql" >/dev/null
}

scenario_latency() {
	restart
	start_client latency "$port" "$pids" "$subscribers" "$((rate * seconds))" \
		'/ws?executionId=bench'
	publish_paced "$((rate * seconds))" "$rate" bench
	finish_client latency
}

scenario_throughput() {
	local pub=()
	restart
	for ((i = 0; i < 20000; i++)); do
		echo "SELECT count(rt_publish('t', '{\"i\":1}', execution_id => 'bench')) FROM generate_series(1, $batch);"
	done >"$dir/burst.sql"
	start_client throughput "$port" "$pids" "$subscribers" "$tp_seconds" \
		'/ws?executionId=bench'
	if [ -n "${TP_RATE:-}" ]; then
		# one paced session instead: what rate the stream keeps up with
		paced_sql "$((TP_RATE * (tp_seconds + 30)))" "$TP_RATE" bench "$batch" >"$dir/paced.sql"
		"${psql[@]}" -f "$dir/paced.sql" >/dev/null &
		pub+=($!)
	else
		for ((p = 0; p < publishers; p++)); do
			"${psql[@]}" -f "$dir/burst.sql" >/dev/null 2>&1 &
			pub+=($!)
		done
	fi
	background+=("${pub[@]}")
	finish_client "throughput${TP_RATE:+ at $TP_RATE events/s}"
	for p in "${pub[@]}"; do kill "$p" 2>/dev/null || true; done
	wait "${pub[@]}" 2>/dev/null || true
}

scenario_memory() {
	restart
	start_client idle "$port" "$pids" "$idle_conns" /ws - "${HOLD:-0}"
	finish_client "memory idle"
	restart
	start_client idle "$port" "$pids" "$idle_conns" /ws 'mem%d' "${HOLD:-0}"
	finish_client "memory subscribed"
}

scenario_index() {
	for ((i = 0; i < index_events / 100; i++)); do
		echo "SELECT count(rt_publish('t', '{\"i\":1}', execution_id => 'x0')) FROM generate_series(1, 100);"
	done >"$dir/index.sql"
	for n in 10 "$index_conns"; do
		restart
		start_client index "$port" "$pids" "$n" "$index_events" 'x%d'
		"${psql[@]}" -f "$dir/index.sql" >/dev/null
		finish_client "index among $n"
	done
}

# Until the worker's stream has reached the table's newest id.
wait_caught_up() {
	local max
	max=$("${psql[@]}" -c 'SELECT coalesce(max(id), 0) FROM execution_events')
	until [ "$(curl -s "http://127.0.0.1:$port/metrics" |
		awk '/^rtevents_last_event_id / { print $2 }')" -ge "$max" ]; do
		sleep 0.2
	done
}

scenario_isolation() {
	local max events=$((rate * iso_seconds))
	restart
	"${psql[@]}" -c "INSERT INTO execution_events (type, execution_id, data)
		SELECT 'prep', 'bench', jsonb_build_object('i', g) FROM generate_series(1, $catchup_back) g"
	# live clients opened before the worker has read the insert would get
	# its tail as live events
	wait_caught_up
	start_client latency "$port" "$pids" "$subscribers" "$events" '/ws?executionId=bench'
	publish_paced "$events" "$rate" bench
	finish_client "isolation without catch-up"
	restart
	max=$("${psql[@]}" -c 'SELECT max(id) FROM execution_events')
	start_client latency "$port" "$pids" "$subscribers" "$events" '/ws?executionId=bench' \
		"/ws?executionId=bench&after=$((max - catchup_back))" "$catchup_delay"
	publish_paced "$events" "$rate" bench
	finish_client "isolation with catch-up"
}

scenario_floor() {
	local floor_pid
	cc -O2 -Wall -Wextra -o "$dir/fanout_floor" "$here/fanout_floor.c"
	"$dir/fanout_floor" "$((port + 2))" "$subscribers" "$((rate * seconds))" "$rate" \
		>"$dir/floor.out" 2>/dev/null &
	floor_pid=$!
	background+=("$floor_pid")
	sleep 0.2
	# another server: ready once upgraded, no welcome to wait for
	export WS_BENCH_READY_ON_OPEN=1
	start_client latency "$((port + 2))" "$floor_pid" "$subscribers" "$((rate * seconds))" /ws
	finish_client "floor"
	unset WS_BENCH_READY_ON_OPEN
	wait "$floor_pid" || true
	echo "floor server: $(cat "$dir/floor.out")"
}

scenario_nchan() {
	local master worker
	if [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			nginx-light libnginx-mod-nchan >/dev/null
		# Debian starts its own nginx on port 80; this run needs none
		systemctl disable --now nginx >/dev/null 2>&1 || true
	fi
	mkdir -p "$dir/nginx"
	cat >"$dir/nginx/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 20000; use epoll; }
http {
	access_log off;
	client_body_temp_path $dir/nginx/body;
	server {
		listen 127.0.0.1:$((port + 3));
		location ~ ^/sub/(\w+)\$ { nchan_subscriber websocket; nchan_channel_id \$1; }
		location ~ ^/pub/(\w+)\$ { nchan_publisher; nchan_channel_id \$1; }
	}
}
NGINX
	nginx -c "$dir/nginx/nginx.conf"
	master=$(cat "$dir/nginx/nginx.pid")
	background+=("$master")
	worker=$(pgrep -P "$master" | head -n 1)
	export WS_BENCH_READY_ON_OPEN=1
	start_client latency "$((port + 3))" "$worker" "$subscribers" "$((rate * seconds))" /sub/bench
	node "$here/nchan_pub.mjs" "$((rate * seconds))" "$rate" "$((port + 3))" bench
	finish_client "nchan"
	unset WS_BENCH_READY_ON_OPEN
	kill "$master"
}

for s in "${scenarios[@]}"; do
	"scenario_$s"
done
