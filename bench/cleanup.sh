#!/usr/bin/env bash
# bench/cleanup.sh: what TTL cleanup of 1,000,000 expired rows costs, and what
# it does to concurrent publishing.
#
#   sudo bench/cleanup.sh                  (as root, or as the postgres OS user)
#
# The script starts a private, throw-away PostgreSQL 15 cluster (unix socket
# only, in a fresh mktemp -d directory), loads it, and runs three pgbench
# publishing runs (rt_publish with small random payloads):
#
#   baseline  publishing alone
#   A         publishing + one "SELECT rt_cleanup()" call: every batch in a
#             single transaction
#   B         publishing + "SELECT rt_cleanup(10000, 1)" repeated in autocommit
#             from one psql session until a call returns fewer than 10000 rows,
#             the way the background worker does it (one batch per transaction)
#
# Each run starts from the same freshly loaded table (TRUNCATE, 1M expired rows,
# 100k live rows, VACUUM ANALYZE, CHECKPOINT).  The cluster is stopped and
# removed on exit; nothing is written outside the temporary directory (set
# KEEP_WORKDIR=1 to keep its logs, RESULTS_DIR=dir to copy the table and logs).
#
# It needs the extension installed ("make && make install") and pgbench and
# pg_stat_statements from the same PostgreSQL 15 installation.  Run time with
# the defaults: about 2.5-3 minutes (three 1.1M-row loads of ~15 s, 20 + 45 + 45
# s of pgbench).
#
# Knobs (environment):
#   PGBIN=/usr/lib/postgresql/15/bin   BENCH_PORT=5544
#   EXPIRED_ROWS=1000000  LIVE_ROWS=100000
#   CLIENTS=4  THREADS=2  BASELINE_SECS=20  SCENARIO_SECS=45  CLEANUP_DELAY=3
#   BATCH=10000 (scenario B)  SAMPLE_INTERVAL=0.25 (pg_stat_activity sampling)
#
# Window metrics: the "cleanup window" runs from just before the first cleanup
# statement starts to just after the last one returns (server clock, the same
# host clock pgbench logs with).  TPS in the window counts the pgbench
# transactions that completed inside it; the latency percentiles are over the
# transactions that overlapped it at all, so a publish that stalled across the
# window's edge is counted.  The baseline "window" is the whole baseline run.
# Because commit-fsync latency (and so publish TPS) drifts from run to run on a
# VM disk, each scenario also reports the same run outside the window as an
# in-run control.
# WAL "in window" is the pg_current_wal_lsn() difference over the window, so it
# includes the publishers' WAL; WAL "from cleanup" is pg_stat_statements'
# wal_bytes of the rt_cleanup statements alone.

set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-5544}
EXPIRED_ROWS=${EXPIRED_ROWS:-1000000}
LIVE_ROWS=${LIVE_ROWS:-100000}
CLIENTS=${CLIENTS:-4}
THREADS=${THREADS:-2}
BASELINE_SECS=${BASELINE_SECS:-20}
SCENARIO_SECS=${SCENARIO_SECS:-45}
CLEANUP_DELAY=${CLEANUP_DELAY:-3}
BATCH=${BATCH:-10000}
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.25}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
RESULTS_DIR=${RESULTS_DIR:-}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------

[[ -x $PGBIN/postgres && -x $PGBIN/pgbench && -x $PGBIN/psql ]] \
	|| die "PostgreSQL binaries not found in $PGBIN"
PKGLIBDIR=$("$PGBIN/pg_config" --pkglibdir)
SHAREDIR=$("$PGBIN/pg_config" --sharedir)
[[ -f $PKGLIBDIR/rtevents.so && -f $SHAREDIR/extension/rtevents.control ]] \
	|| die "rtevents is not installed for $PGBIN (run: make && make install)"
[[ -f $PKGLIBDIR/pg_stat_statements.so ]] \
	|| die "pg_stat_statements is not installed for $PGBIN"
(( BATCH >= 1 )) || die "BATCH must be 1 or more"

# Server commands run as the postgres OS user: initdb refuses root.
if [[ $(id -u) -eq 0 ]]; then
	id postgres >/dev/null 2>&1 || die "no postgres OS user"
	AS_PG=(runuser -u postgres --)
elif [[ $(id -un) == postgres ]]; then
	AS_PG=()
else
	die "run as root or as the postgres OS user"
fi

# ---------------------------------------------------------------------------
# Private cluster, removed on exit
# ---------------------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rtevents-bench.XXXXXX")
DATA=$WORK/data

cleanup_on_exit() {
	local rc=$?
	set +e
	# Only this shell's own background jobs still running (pgbench, sampler).
	for pid in $(jobs -p); do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	done
	if [[ -f $DATA/postmaster.pid ]]; then
		"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
	fi
	if [[ -n $RESULTS_DIR ]]; then
		mkdir -p "$RESULTS_DIR" && cp -r "$WORK"/*.log "$WORK"/*.md "$RESULTS_DIR"/ 2>/dev/null
		log "results and logs copied to $RESULTS_DIR"
	fi
	if [[ $KEEP_WORKDIR == 1 ]]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup_on_exit EXIT
trap 'exit 130' INT TERM

chown postgres: "$WORK"
chmod 700 "$WORK"

log "initdb in $DATA (port $PORT, socket in $WORK)"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 \
	|| { cat "$WORK/initdb.log" >&2; die "initdb failed"; }

cat >>"$DATA/postgresql.conf" <<EOF

# ---- rtevents cleanup benchmark ----
port = $PORT
listen_addresses = ''				# unix socket only
unix_socket_directories = '$WORK'
max_connections = 50
shared_buffers = 1GB				# 2 cores / 24 GiB box
effective_cache_size = 16GB
maintenance_work_mem = 512MB
max_wal_size = 4GB
checkpoint_timeout = 30min			# the script checkpoints before each run
synchronous_commit = on
shared_preload_libraries = 'rtevents,pg_stat_statements'
rtevents.cleanup_interval = 0		# no worker cleanup: the script drives it
pg_stat_statements.track = top		# a top-level call counts its nested statements
# Observability: autovacuum, checkpoints and lock waits land in server.log.
logging_collector = off
log_line_prefix = '%n %m [%p] %b '		# %n (epoch) first: the script reads it
log_autovacuum_min_duration = 0
log_checkpoints = on
log_lock_waits = on
deadlock_timeout = 100ms			# so lock waits of 100 ms or more are logged
EOF

"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 60 start >/dev/null \
	|| { tail -n 30 "$WORK/server.log" >&2; die "server did not start"; }

export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGSERVICE PGOPTIONS PGPASSWORD || true
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)

"${PSQL[@]}" -c "CREATE EXTENSION rtevents" -c "CREATE EXTENSION pg_stat_statements"
log "server up: $("${PSQL[@]}" -Atc "SELECT version()" | cut -d, -f1), rtevents $("${PSQL[@]}" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'rtevents'")"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

q() { "${PSQL[@]}" -At -c "$1"; }		# one value
now_epoch() { q "SELECT extract(epoch FROM clock_timestamp())"; }

# Fresh table: EXPIRED_ROWS rows that expired 1-2 days ago, expires_at rising
# with id as real TTL'd events do, then LIVE_ROWS rows under the default TTL.
reset_data() {
	local t0=$SECONDS
	"${PSQL[@]}" >/dev/null <<-EOF
		TRUNCATE execution_events;
		INSERT INTO execution_events(type, data, execution_id, job_id, expires_at)
		SELECT 'job_progress', jsonb_build_object('pct', g % 100), 'e' || (g % 1000), 'j' || g % 5000,
		       now() - interval '2 days' + (g * (interval '1 day' / $EXPIRED_ROWS))
		FROM generate_series(1, $EXPIRED_ROWS) g;
		INSERT INTO execution_events(type, data, execution_id, job_id)
		SELECT 'job_progress', jsonb_build_object('pct', g % 100), 'e' || (g % 1000), 'j' || g % 5000
		FROM generate_series(1, $LIVE_ROWS) g;
		VACUUM ANALYZE execution_events;
		CHECKPOINT;
		SELECT pg_stat_statements_reset();
	EOF
	log "loaded $EXPIRED_ROWS expired + $LIVE_ROWS live rows in $((SECONDS - t0)) s ($(q "SELECT pg_size_pretty(pg_total_relation_size('execution_events'))") with indexes)"
}

# The publishing workload: one rt_publish per transaction, small random payload.
cat >"$WORK/publish.sql" <<'EOF'
\set pct random(0, 100)
\set step random(1, 50)
\set e random(1, 1000)
\set j random(1, 5000)
SELECT rt_publish('job_progress', jsonb_build_object('pct', :pct::int, 'step', :step::int, 'msg', 'step ' || :step || ' of 50'), execution_id => 'e' || :e, job_id => 'j' || :j);
EOF

# pg_stat_activity sampler: what the active backends wait on, every
# SAMPLE_INTERVAL seconds, into $1 (epoch|role|wait_event_type|wait_event).
cat >"$WORK/sampler.sql" <<EOF
SELECT extract(epoch FROM clock_timestamp()),
       CASE WHEN backend_type <> 'client backend' THEN backend_type
            WHEN query ~ '^SELECT rt_cleanup' THEN 'cleanup'
            WHEN query ~ 'rt_publish' THEN 'publish'
            ELSE 'other' END,
       coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-')
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND (state = 'active' OR backend_type = 'autovacuum worker')
\watch $SAMPLE_INTERVAL
EOF
start_sampler() {
	"${PSQL[@]}" -At -F'|' -f "$WORK/sampler.sql" >"$1" 2>/dev/null &
	SAMPLER_PID=$!
}
stop_sampler() {
	kill "$SAMPLER_PID" 2>/dev/null || true
	wait "$SAMPLER_PID" 2>/dev/null || true
}

# Start pgbench for $2 seconds in the background, per-transaction log under
# prefix $1.  -n: the pgbench_* tables do not exist, nothing to vacuum.
start_pgbench() {
	"$PGBIN/pgbench" -n -M prepared -f "$WORK/publish.sql" -c "$CLIENTS" -j "$THREADS" \
		-T "$2" -l --log-prefix="$1" >"$1.out" 2>&1 &
	PGBENCH_PID=$!
}
wait_pgbench() {
	wait "$PGBENCH_PID" || { cat "$1.out" >&2; die "pgbench failed"; }
	grep -q '^number of transactions actually processed' "$1.out" \
		|| { cat "$1.out" >&2; die "pgbench reported no result"; }
}

# Latency/TPS from pgbench's per-transaction logs ("client txno latency_us
# script epoch_s epoch_us"), either inside the window [t0, t1] (mode "in") or
# in the rest of the same run (mode "out", the in-run control).  Prints:
#   txns tps p50_ms p99_ms max_ms
# where txns are those overlapping the window (in) or not (out) and carry the
# latency figures, and tps counts completions inside (in) or outside (out).
window_stats() {		# prefix t0 t1 mode
	local prefix=$1 t0=$2 t1=$3 mode=$4 done_dur
	done_dur=$(cat "$prefix".[0-9]* | awk -v t0="$t0" -v t1="$t1" -v mode="$mode" -v lat="$prefix.lat" '
		{ end = $5 + $6 / 1e6; start = end - $3 / 1e6
		  if (NR == 1 || start < lo) lo = start; if (NR == 1 || end > hi) hi = end
		  ov = (start < t1 && end > t0); inw = (end >= t0 && end <= t1)
		  if (mode == "in" ? ov : !ov) print $3 / 1000.0 > lat
		  if (mode == "in" ? inw : !inw) done++ }
		END { close(lat); printf "%d %.6f\n", done, (mode == "in" ? t1 - t0 : (hi - lo) - (t1 - t0)) }')
	touch "$prefix.lat"
	sort -n "$prefix.lat" | awk -v dd="$done_dur" '
		{ v[NR] = $1 }
		END {
			split(dd, f, " "); n = NR
			if (n == 0 || f[2] <= 0) { print 0, "n/a", "n/a", "n/a", "n/a"; exit }
			i50 = int(0.50 * n); if (i50 < 0.50 * n) i50++
			i99 = int(0.99 * n); if (i99 < 0.99 * n) i99++
			printf "%d %.0f %.2f %.2f %.1f\n", n, f[1] / f[2], v[i50], v[i99], v[n]
		}'
	rm -f "$prefix.lat"
}

# First and last transaction times of a pgbench run (epoch seconds).
run_bounds() {
	cat "$1".[0-9]* | awk '
		{ end = $5 + $6 / 1e6; start = end - $3 / 1e6
		  if (NR == 1 || start < lo) lo = start; if (NR == 1 || end > hi) hi = end }
		END { printf "%.6f %.6f\n", lo, hi }'
}

# Sampled wait events of role $2 within [t0, t1]: "event pct%, ..." (top 4).
wait_profile() {		# file role t0 t1
	awk -F'|' -v role="$2" -v t0="$3" -v t1="$4" '
		$1 >= t0 && $1 <= t1 && $2 == role { n++; c[$3 ":" $4]++ }
		END { for (k in c) printf "%d %s\n", c[k], k; print n + 0, "TOTAL" }' "$1" \
	| sort -rn | awk '
		$2 == "TOTAL" { total = $1; next }
		{ k[++m] = $2; v[m] = $1 }
		END { if (!total) { print "no samples"; exit }
		      for (i = 1; i <= m && i <= 4; i++) printf "%s%s %.0f%%", (i > 1 ? ", " : ""), k[i], 100 * v[i] / total
		      printf " (%d samples)\n", total }'
}

# Lock waits and checkpoints the server logged in [t0, t1] (field 1 of a log
# line is its epoch time): "lockwaits=N checkpoints=N".
log_events() {		# t0 t1
	awk -v t0="$1" -v t1="$2" '
		/^[0-9]+\.[0-9]+ / && $1 >= t0 && $1 <= t1 {
			if ($0 ~ /still waiting for/) lw++
			if ($0 ~ /checkpoint starting/) cp++ }
		END { printf "lockwaits=%d checkpoints=%d\n", lw, cp }' "$WORK/server.log"
}

# Autovacuums of execution_events that ended in [from, to], with how long each
# overlapped the cleanup window [t0, t1] (start = logged end - elapsed):
# "<elapsed> s, <MB> MB WAL, <s> s in window; ..." or "none".
autovacuums() {		# from to t0 t1
	awk -v from="$1" -v to="$2" -v t0="$3" -v t1="$4" '
		function flush() {
			if (av && end >= from && end <= to) {
				start = end - el; lo = (start > t0 ? start : t0); hi = (end < t1 ? end : t1)
				out = out sprintf("%s%.1f s, %.1f MB WAL, %.1f s in window", (out == "" ? "" : "; "),
				                  el, wal / 1048576, (hi > lo ? hi - lo : 0))
			}
			av = 0
		}
		/^[0-9]+\.[0-9]+ / { flush()
			if ($0 ~ /automatic vacuum of table "postgres\.public\.execution_events"/) { av = 1; end = $1; el = 0; wal = 0 }
			next }
		av && /WAL usage:/ { for (i = 1; i <= NF; i++) if ($i ~ /^bytes/) wal = $(i - 1) }
		av && /elapsed:/ { for (i = 1; i <= NF; i++) if ($i == "elapsed:") el = $(i + 1) }
		END { flush(); print (out == "" ? "none" : out) }' "$WORK/server.log"
}

# The batch DELETE plans auto_explain logged in [t0, t1], as counts of plan
# shapes: "<n>x Delete > Hash Semi Join > Seq Scan > ...".
plan_shapes() {		# t0 t1
	awk -v t0="$1" -v t1="$2" '
		function flush() { if (sig != "") shapes[sig]++; sig = "" }
		/^[0-9]+\.[0-9]+ / { flush()
			entry = ($0 ~ /duration: .* plan:/) && $1 >= t0 && $1 <= t1; cap = 0; next }
		entry && /Delete on/ { cap = 1 }
		entry && cap && /(->|Delete on)/ {
			node = $0; sub(/^[ \t]*(->)?[ \t]*/, "", node); sub(/  \(cost.*/, "", node)
			sub(/ (on|using) .*/, "", node)
			sig = sig (sig == "" ? "" : " > ") node }
		END { flush(); for (k in shapes) printf "%dx %s\n", shapes[k], k }' "$WORK/server.log"
}

declare -A R		# results: R[scenario.metric]

# Record the publishing figures of scenario $1 over [t0, t1]; the run
# (reload excluded) began at $5.
record_window() {		# scenario prefix t0 t1 run_start
	local s=$1
	read -r "R[$s.overlap]" "R[$s.tps]" "R[$s.p50]" "R[$s.p99]" "R[$s.max]" < <(window_stats "$2" "$3" "$4" in)
	read -r "R[$s.o_txns]" "R[$s.o_tps]" "R[$s.o_p50]" "R[$s.o_p99]" "R[$s.o_max]" < <(window_stats "$2" "$3" "$4" out)
	R[$s.run_tps]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$2.out" | head -n1)
	R[$s.run_tps]=$(printf '%.0f' "${R[$s.run_tps]:-0}")
	R[$s.waits]=$(wait_profile "$WORK/samples_$s.log" publish "$3" "$4")
	R[$s.logev]=$(log_events "$3" "$4")
	R[$s.autovac]=$(autovacuums "$5" "$(now_epoch)" "$3" "$4")
}

# pg_stat_statements figures of the rt_cleanup statements since the last reset.
record_cleanup_stats() {		# scenario
	local s=$1
	read -r "R[$s.pss_calls]" "R[$s.pss_wal]" "R[$s.pss_fpi]" "R[$s.pss_hit]" "R[$s.pss_read]" < <(q "
		SELECT sum(calls), sum(wal_bytes), sum(wal_fpi),
		       sum(shared_blks_hit), sum(shared_blks_read)
		FROM pg_stat_statements WHERE query ~ '^SELECT rt_cleanup'" | tr '|' ' ')
	R[$s.dead]=$(q "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'execution_events'")
	R[$s.left]=$(q "SELECT count(*) FROM execution_events WHERE expires_at <= now()")
}

# ---------------------------------------------------------------------------
# Baseline: publishing alone
# ---------------------------------------------------------------------------

log "== baseline: pgbench $CLIENTS clients / $THREADS threads, ${BASELINE_SECS} s"
reset_data
run_start=$(now_epoch)
start_sampler "$WORK/samples_base.log"
start_pgbench "$WORK/pgb_base" "$BASELINE_SECS"
lsn0=$(q "SELECT pg_current_wal_lsn()")
wait_pgbench "$WORK/pgb_base"
R[base.wal]=$(q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
stop_sampler
read -r bt0 bt1 < <(run_bounds "$WORK/pgb_base")
record_window base "$WORK/pgb_base" "$bt0" "$bt1" "$run_start"
log "baseline: ${R[base.tps]} tps, p50 ${R[base.p50]} ms, p99 ${R[base.p99]} ms, max ${R[base.max]} ms"

# ---------------------------------------------------------------------------
# Scenario A: one rt_cleanup() call, all batches in one transaction
# ---------------------------------------------------------------------------

log "== scenario A: SELECT rt_cleanup() after ${CLEANUP_DELAY} s of a ${SCENARIO_SECS} s pgbench run"
reset_data
run_start=$(now_epoch)
start_sampler "$WORK/samples_A.log"
start_pgbench "$WORK/pgb_A" "$SCENARIO_SECS"
sleep "$CLEANUP_DELAY"
# auto_explain (this session only, no ANALYZE: no timing overhead) logs the
# plan of each batch DELETE so the plan shape can be checked afterwards.
"${PSQL[@]}" -At -F' ' >"$WORK/cleanup_A.log" <<-'EOF'
	LOAD 'auto_explain';
	SET auto_explain.log_min_duration = 0;
	SET auto_explain.log_nested_statements = on;
	SELECT pg_current_wal_lsn() AS lsn0, extract(epoch FROM clock_timestamp()) AS t0 \gset
	SELECT rt_cleanup() AS n \gset
	SELECT :t0, extract(epoch FROM clock_timestamp()), :n, pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn0');
EOF
read -r "R[A.t0]" "R[A.t1]" "R[A.rows]" "R[A.wal]" <"$WORK/cleanup_A.log"
[[ -n ${R[A.wal]:-} ]] || die "scenario A: no result from rt_cleanup() (see $WORK/cleanup_A.log)"
log "A: rt_cleanup() deleted ${R[A.rows]} rows; waiting for pgbench to finish"
wait_pgbench "$WORK/pgb_A"
stop_sampler
record_window A "$WORK/pgb_A" "${R[A.t0]}" "${R[A.t1]}" "$run_start"
record_cleanup_stats A
# rt_cleanup() stops after the first batch short of 10000 rows (possibly empty).
R[A.batches]=$(( ${R[A.rows]} / 10000 + 1 ))
read -r _ pgb_last < <(run_bounds "$WORK/pgb_A")
R[A.covered]=$(awk -v a="$pgb_last" -v b="${R[A.t1]}" 'BEGIN { print (a >= b ? "yes" : "NO") }')
# The plan of the first batch DELETE, from the auto_explain log.
awk '/^[0-9]+\.[0-9]+ / { if (buf != "") { printf "%s", buf; exit }
                               entry = ($0 ~ /duration: .* plan:/); cap = 0; next }
     entry && /Delete on/ { cap = 1 }
     entry && cap { buf = buf $0 "\n" }' "$WORK/server.log" >"$WORK/plan_A.log" || true
log "A: ${R[A.rows]} rows in $(awk -v a="${R[A.t0]}" -v b="${R[A.t1]}" 'BEGIN { printf "%.1f", b - a }') s; publishers: ${R[A.tps]} tps, p99 ${R[A.p99]} ms, max ${R[A.max]} ms"

# ---------------------------------------------------------------------------
# Scenario B: rt_cleanup(BATCH, 1) per transaction, like the worker
# ---------------------------------------------------------------------------

# One psql session in autocommit: each call its own transaction.  psql has no
# loops, so the script holds enough guarded copies of the step for every batch
# plus a margin; each prints "batch <i> <rows> <ms>".
MAX_CALLS=$(( EXPIRED_ROWS / BATCH + 50 ))
{
	echo "LOAD 'auto_explain';"
	echo "SET auto_explain.log_min_duration = 0;"
	echo "SET auto_explain.log_nested_statements = on;"
	echo "SELECT pg_current_wal_lsn() AS lsn0, extract(epoch FROM clock_timestamp()) AS t0 \\gset"
	echo "\\set more true"
	echo "\\set total 0"
	echo "\\set calls 0"
	for ((i = 0; i < MAX_CALLS; i++)); do
		cat <<-EOF
			\\if :more
			SELECT clock_timestamp() AS b0 \\gset
			SELECT rt_cleanup($BATCH, 1) AS n \\gset
			SELECT :total + :n AS total, :calls + 1 AS calls, :n >= $BATCH AS more,
			       round(1000 * extract(epoch FROM clock_timestamp() - :'b0'::timestamptz), 1) AS ms \\gset
			\\echo batch :calls :n :ms
			\\endif
		EOF
	done
	echo "\\echo result :t0 :total :calls :more"
	echo "SELECT 'end', extract(epoch FROM clock_timestamp()), pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn0');"
} >"$WORK/cleanup_B.sql"

log "== scenario B: SELECT rt_cleanup($BATCH, 1) per transaction after ${CLEANUP_DELAY} s of a ${SCENARIO_SECS} s pgbench run"
reset_data
run_start=$(now_epoch)
start_sampler "$WORK/samples_B.log"
start_pgbench "$WORK/pgb_B" "$SCENARIO_SECS"
sleep "$CLEANUP_DELAY"
"${PSQL[@]}" -At -F' ' -f "$WORK/cleanup_B.sql" >"$WORK/cleanup_B.log"
read -r _ "R[B.t0]" "R[B.rows]" "R[B.batches]" more < <(grep '^result ' "$WORK/cleanup_B.log")
read -r _ "R[B.t1]" "R[B.wal]" < <(grep '^end ' "$WORK/cleanup_B.log")
[[ -n ${R[B.wal]:-} ]] || die "scenario B: no result (see $WORK/cleanup_B.log)"
[[ $more == f* ]] || log "WARNING: scenario B stopped after $MAX_CALLS calls with rows left"
log "B: ${R[B.rows]} rows in ${R[B.batches]} transactions; waiting for pgbench to finish"
wait_pgbench "$WORK/pgb_B"
stop_sampler
record_window B "$WORK/pgb_B" "${R[B.t0]}" "${R[B.t1]}" "$run_start"
record_cleanup_stats B
read -r _ pgb_last < <(run_bounds "$WORK/pgb_B")
R[B.covered]=$(awk -v a="$pgb_last" -v b="${R[B.t1]}" 'BEGIN { print (a >= b ? "yes" : "NO") }')
# Per-batch latency of the cleanup calls: p50 / max and first / last.
awk '$1 == "batch" { print $4 }' "$WORK/cleanup_B.log" >"$WORK/batch_ms_B.log"
R[B.bfirst]=$(head -n1 "$WORK/batch_ms_B.log")
R[B.blast]=$(tail -n1 "$WORK/batch_ms_B.log")
read -r "R[B.bp50]" "R[B.bmax]" < <(sort -n "$WORK/batch_ms_B.log" \
	| awk '{ v[NR] = $1 } END { i = int(0.5 * NR); if (i < 0.5 * NR) i++; print v[i], v[NR] }')
log "B: ${R[B.rows]} rows in $(awk -v a="${R[B.t0]}" -v b="${R[B.t1]}" 'BEGIN { printf "%.1f", b - a }') s; publishers: ${R[B.tps]} tps, p99 ${R[B.p99]} ms, max ${R[B.max]} ms"

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
pct() { awk -v x="$1" -v base="$2" 'BEGIN { if (base > 0) printf "%+.0f%%", 100 * (x - base) / base; else print "n/a" }'; }

{
	echo "## rtevents TTL cleanup benchmark"
	echo
	echo "$(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $("${PSQL[@]}" -Atc 'SHOW server_version'); shared_buffers=1GB, max_wal_size=4GB, synchronous_commit=on, autovacuum on (defaults)."
	echo "Table per run: $EXPIRED_ROWS expired + $LIVE_ROWS live rows (VACUUM ANALYZE, CHECKPOINT before each run)."
	echo "Publishers: pgbench -M prepared -c $CLIENTS -j $THREADS, one rt_publish() per transaction; baseline ${BASELINE_SECS} s, scenarios ${SCENARIO_SECS} s with cleanup started after ${CLEANUP_DELAY} s."
	echo
	echo "| | baseline (no cleanup) | A: one \`rt_cleanup()\` call | B: \`rt_cleanup($BATCH, 1)\` per txn |"
	echo "|---|---:|---:|---:|"
	echo "| rows deleted | - | ${R[A.rows]} | ${R[B.rows]} |"
	echo "| cleanup transactions (batches) | - | 1 (${R[A.batches]}) | ${R[B.batches]} (${R[B.batches]}) |"
	echo "| cleanup duration (s) | - | $(secs "${R[A.t0]}" "${R[A.t1]}") | $(secs "${R[B.t0]}" "${R[B.t1]}") |"
	echo "| rows/s | - | $(rate "${R[A.rows]}" "${R[A.t0]}" "${R[A.t1]}") | $(rate "${R[B.rows]}" "${R[B.t0]}" "${R[B.t1]}") |"
	echo "| per-batch ms: p50 / max (first, last) | - | - | ${R[B.bp50]} / ${R[B.bmax]} (${R[B.bfirst]}, ${R[B.blast]}) |"
	echo "| WAL from cleanup statements (MB) | - | $(mb "${R[A.pss_wal]}") | $(mb "${R[B.pss_wal]}") |"
	echo "| … of which full-page images | - | ${R[A.pss_fpi]} | ${R[B.pss_fpi]} |"
	echo "| WAL in window, all backends (MB) | $(mb "${R[base.wal]}") (whole run) | $(mb "${R[A.wal]}") | $(mb "${R[B.wal]}") |"
	echo "| shared buffers hit / read by cleanup | - | ${R[A.pss_hit]} / ${R[A.pss_read]} | ${R[B.pss_hit]} / ${R[B.pss_read]} |"
	echo "| publish TPS in window (vs baseline) | ${R[base.tps]} | ${R[A.tps]} ($(pct "${R[A.tps]}" "${R[base.tps]}")) | ${R[B.tps]} ($(pct "${R[B.tps]}" "${R[base.tps]}")) |"
	echo "| publish latency p50 ms | ${R[base.p50]} | ${R[A.p50]} | ${R[B.p50]} |"
	echo "| publish latency p99 ms | ${R[base.p99]} | ${R[A.p99]} | ${R[B.p99]} |"
	echo "| publish latency max ms | ${R[base.max]} | ${R[A.max]} | ${R[B.max]} |"
	echo "| publish txns overlapping window | ${R[base.overlap]} | ${R[A.overlap]} | ${R[B.overlap]} |"
	echo "| same run outside the window: TPS | - | ${R[A.o_tps]} | ${R[B.o_tps]} |"
	echo "| same run outside the window: p50 / p99 / max ms | - | ${R[A.o_p50]} / ${R[A.o_p99]} / ${R[A.o_max]} | ${R[B.o_p50]} / ${R[B.o_p99]} / ${R[B.o_max]} |"
	echo "| window TPS vs same run outside it | - | $(pct "${R[A.tps]}" "${R[A.o_tps]}") | $(pct "${R[B.tps]}" "${R[B.o_tps]}") |"
	echo "| publish TPS, whole pgbench run | ${R[base.run_tps]} | ${R[A.run_tps]} | ${R[B.run_tps]} |"
	echo "| pgbench covered whole window | yes | ${R[A.covered]} | ${R[B.covered]} |"
	echo "| server log in window | ${R[base.logev]} | ${R[A.logev]} | ${R[B.logev]} |"
	echo "| autovacuum of the table during the run | ${R[base.autovac]} | ${R[A.autovac]} | ${R[B.autovac]} |"
	echo "| n_dead_tup after run / expired rows left | - | ${R[A.dead]} / ${R[A.left]} | ${R[B.dead]} / ${R[B.left]} |"
	echo
	echo "Publisher wait events sampled every ${SAMPLE_INTERVAL} s in the window (CPU = active, no wait event):"
	echo
	echo "- baseline: ${R[base.waits]}"
	echo "- A: ${R[A.waits]}"
	echo "- B: ${R[B.waits]}"
	echo
	echo "Cleanup backend wait events: A: $(wait_profile "$WORK/samples_A.log" cleanup "${R[A.t0]}" "${R[A.t1]}"); B: $(wait_profile "$WORK/samples_B.log" cleanup "${R[B.t0]}" "${R[B.t1]}")"
	echo
	echo "Batch DELETE plan shapes (auto_explain): A: $(plan_shapes "${R[A.t0]}" "${R[A.t1]}" | paste -sd';'); B: $(plan_shapes "${R[B.t0]}" "${R[B.t1]}" | paste -sd';')"
	echo
	echo "Plan of a cleanup batch DELETE (auto_explain, scenario A, first batch):"
	echo
	echo '```'
	sed 's/^[[:space:]]*$//' "$WORK/plan_A.log"
	echo '```'
} | tee "$WORK/results.md"

grep -Eh 'automatic (vacuum|analyze) of table "postgres\.public\.execution_events"|still waiting for|checkpoint (starting|complete)' "$WORK/server.log" \
	| sed 's/^/  server.log: /' | cut -c1-200 >&2 || true
log "done in ${SECONDS} s"
