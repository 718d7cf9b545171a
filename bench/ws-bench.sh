#!/usr/bin/env bash
# WebSocket agents benchmark: N browser-like agents over WSS registered through the bridge,
# memory per registered agent, and a reconnect storm of all N at once.
# Usage: make bench-ws (and part of `make bench`), or bash bench/ws-bench.sh after `make build`.
#
# 1. Builds the load client bench/wsload into OUT and has it write a self-signed certificate for
#    127.0.0.1 and an HS256 secret there; bench/gen-users writes a users file of the N agents
#    (a0000001..). The gateway runs on bench/dualgate-ws.yaml copied into OUT: HTTPS (TLS files
#    mode) on 127.0.0.1:19080, JWT HS256 with that secret, keepalive pings every 25 s, and
#    per-IP WebSocket limits sized for 50 agents per source address.
# 2. wsload (all on loopback; agents spread over SRC_COUNT source addresses 127.0.1.1..):
#      fill    N agents connect (TLS, upgrade with subprotocol sip and a bearer JWT each) and
#              REGISTER, at most CONC at once, each must get its 200
#      idle    IDLE seconds registered; the agents answer the gateway's pings and OPTIONS
#      memory  the gateway's VmRSS (after a forced GC, settled) minus the same before any agent,
#              per agent; Go heap and stacks from /metrics; heap profiles kept
#      storm   all N sockets closed at once, then all N reconnect and re-register, at most
#              STORM_CONC in progress at once (default 0 = all N at the same instant, as after a
#              gateway restart; the gateway's handshake admission absorbs it, web/handshake.go):
#              wall time, latency, failures, CPU; the gateway's sockets and bindings must come
#              back to exactly N
# 3. Summary (also OUT/SUMMARY); exit 1 if any registration failed or a socket was lost.
# The gateway and wsload run under timeout(1) and are stopped by their PIDs on exit (also on
# Ctrl-C). See bench/README.md, "WebSocket agents benchmark".
#
# Environment:
#   N=10000          agents
#   SRC_COUNT=200    loopback source addresses the agents are spread over (limits are per IP)
#   CONC=200         agents connecting at once in the fill
#   STORM_CONC=0     agents reconnecting at once in the storm; 0 = all N at the same instant
#   IDLE=30          seconds registered and idle before the memory sample (at least the 25 s
#                    ping interval, so every socket sees a keepalive)
#   SETTLE=5         seconds after a phase before memory is sampled
#   TIMEOUT=30       seconds one agent's connect + register may take
#   GOAL_KIB=40      RSS per agent goal
#   DUALGATE=bin/dualgate  GO=go
#   WS_CONFIG=bench/dualgate-ws.yaml   the gateway's config (copied into OUT, ports shifted)
#   PORT_OFFSET=0    shift every port (TCP 19080 HTTPS, 19081 pprof; UDP 19060) by N
#   OUT=bench/results/<time>-ws   raw output
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

N=${N:-10000}
SRC_COUNT=${SRC_COUNT:-200}
CONC=${CONC:-200}
STORM_CONC=${STORM_CONC:-0}
IDLE=${IDLE:-30}
SETTLE=${SETTLE:-5}
TIMEOUT=${TIMEOUT:-30}
GOAL_KIB=${GOAL_KIB:-40}
DUALGATE=${DUALGATE:-$ROOT/bin/dualgate}
GO=${GO:-go}
OUT=${OUT:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-ws}
WS_CONFIG=${WS_CONFIG:-$BENCH_DIR/dualgate-ws.yaml}
PORT_OFFSET=${PORT_OFFSET:-0}

for v in N SRC_COUNT CONC IDLE SETTLE TIMEOUT GOAL_KIB; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $STORM_CONC =~ ^[0-9]+$ ]] || die "STORM_CONC must be a non-negative integer"
[[ $PORT_OFFSET =~ ^[0-9]+$ && $PORT_OFFSET -lt 40000 ]] || die "PORT_OFFSET must be an integer below 40000"
(( N <= 60000 )) || die "N must be at most 60000"
(( SRC_COUNT <= 250 )) || die "SRC_COUNT must be at most 250 (127.0.1.1..127.0.1.250)"
(( IDLE <= 300 && SETTLE <= 60 && TIMEOUT <= 120 )) || die "IDLE at most 300, SETTLE at most 60, TIMEOUT at most 120"
HTTP_PORT=$(( 19080 + PORT_OFFSET ))
PPROF_PORT=$(( 19081 + PORT_OFFSET ))
SIP_PORT=$(( 19060 + PORT_OFFSET ))

for t in timeout ss ps awk curl sed; do command -v "$t" >/dev/null || die "$t not found"; done
command -v "$GO" >/dev/null || die "$GO not found: bench/wsload needs the Go toolchain"
[[ -x $DUALGATE ]] || die "$DUALGATE not built: run 'make build' (make bench-ws does it)"
udp_port_busy "$SIP_PORT" && die "UDP port $SIP_PORT is in use; the bench needs UDP $SIP_PORT and TCP $HTTP_PORT, $PPROF_PORT (PORT_OFFSET=N shifts them)"
for p in "$HTTP_PORT" "$PPROF_PORT"; do
  ss -Htln "sport = :$p" | grep -q . && die "TCP port $p is in use (ss -tlnp 'sport = :$p'); PORT_OFFSET=N shifts the bench's ports"
done

# One descriptor per socket in the gateway and in wsload (each its own process): raise the
# soft limit to the hard one.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]]; then ulimit -Sn 1048576 2>/dev/null || true; else ulimit -Sn "$hard" 2>/dev/null || true; fi
NOFILE=$(ulimit -Sn)
[[ $NOFILE == unlimited || $NOFILE -ge $(( N + 1000 )) ]] \
  || die "open files limit is $NOFILE (hard $hard): N=$N sockets need at least $(( N + 1000 )); raise the hard limit or lower N"

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

# ---------------------------------------------------------------- client, keys, users, config
WSLOAD=$OUT/wsload
(cd "$ROOT" && timeout 300 "$GO" build -o "$WSLOAD" ./bench/wsload) || die "could not build bench/wsload"
"$WSLOAD" -gen "$OUT" || die "wsload -gen failed"
(cd "$ROOT" && timeout 120 "$GO" run ./bench/gen-users -n "$N" -prefix a -realm dualgate \
  -password "bench-$RANDOM$RANDOM" -users "$OUT/ws-users.yaml") || die "bench/gen-users failed"
{ sed "s/127\.0\.0\.1:19080/127.0.0.1:$HTTP_PORT/; s/udp:127\.0\.0\.1:19060/udp:127.0.0.1:$SIP_PORT/; s/127\.0\.0\.2:19070/127.0.0.2:$(( 19070 + PORT_OFFSET ))/; s/ephemeral_secret: true/secret_file: jwt.secret/" \
  "$WS_CONFIG"; echo "users_file: ws-users.yaml"; } >"$OUT/dualgate-ws.yaml"
grep -q 'secret_file: jwt.secret' "$OUT/dualgate-ws.yaml" || die "could not set http.jwt.secret_file in $OUT/dualgate-ws.yaml"
"$DUALGATE" check -config "$OUT/dualgate-ws.yaml" >"$OUT/dualgate-check.log" 2>&1 \
  || die "dualgate rejects $OUT/dualgate-ws.yaml: $(tail -3 "$OUT/dualgate-check.log")"

# ---------------------------------------------------------------- processes
GW_PID="" GW_TO="" WL_PID=""
cleanup() {
  [[ -n $WL_PID ]] && { kill -TERM "$WL_PID" 2>/dev/null; wait "$WL_PID" 2>/dev/null; }
  [[ -n $GW_PID ]] && stop_pid "$GW_PID" dualgate "$GW_TO"
  GW_PID=""
}
trap cleanup EXIT
trap 'echo "interrupted: stopping what this run started"; exit 130' INT TERM

echo "dualgate WebSocket agents bench: N=$N agents over WSS from $SRC_COUNT source addresses, fill concurrency $CONC, storm concurrency ${STORM_CONC/#0/all}; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), open files limit $NOFILE (hard $hard)"
echo "raw output: $OUT"
awk '{exit !($1 > 1)}' /proc/loadavg && note "load average above 1: something else is running, the figures will be lower"

DEADLINE=$(( 60 + N / 50 + IDLE + 4 * SETTLE + 2 * TIMEOUT + 120 ))   # wsload's own bound, seconds
spawn_bounded $(( DEADLINE + 120 )) "$OUT/dualgate.log" "$DUALGATE" -config "$OUT/dualgate-ws.yaml" -pprof "127.0.0.1:$PPROF_PORT" \
  || { echo "could not start dualgate:"; tail -20 "$OUT/dualgate.log"; exit 1; }
GW_PID=$SPAWN_PID GW_TO=$SPAWN_TO
up=0
for _ in $(seq 1 300); do
  [[ -d /proc/$GW_PID ]] || break
  curl -sf -m 2 --cacert "$OUT/cert.pem" -o /dev/null "https://127.0.0.1:$HTTP_PORT/readyz" && { up=1; break; }
  sleep 0.1
done
[[ $up == 1 ]] || { echo "dualgate did not come up on https://127.0.0.1:$HTTP_PORT; log:"; tail -20 "$OUT/dualgate.log"; exit 1; }
note "dualgate pid $GW_PID (HTTPS 127.0.0.1:$HTTP_PORT, pprof 127.0.0.1:$PPROF_PORT), log $OUT/dualgate.log"

t_start=$(cpu_ticks "$GW_PID")
timeout -k 5 $(( DEADLINE + 30 )) "$WSLOAD" -url "wss://127.0.0.1:$HTTP_PORT/ws" -ca "$OUT/cert.pem" -secret "$OUT/jwt.secret" \
  -n "$N" -prefix a -src 127.0.1.1 -src-count "$SRC_COUNT" -conc "$CONC" -storm-conc "$STORM_CONC" \
  -timeout "${TIMEOUT}s" -idle "${IDLE}s" -settle "${SETTLE}s" -deadline "${DEADLINE}s" \
  -pid "$GW_PID" -metrics "https://127.0.0.1:$HTTP_PORT/metrics" -gc "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1" \
  -out "$OUT" >"$OUT/wsload.out" 2>"$OUT/wsload.err" </dev/null &
WL_PID=$!
tail -n +1 -f --pid="$WL_PID" "$OUT/wsload.out" 2>/dev/null | sed 's/^/  /' &
TAIL_PID=$!
wait "$WL_PID"; rc=$?
WL_PID=""
wait "$TAIL_PID" 2>/dev/null
t_end=$(cpu_ticks "$GW_PID")
[[ -s $OUT/wsload.err ]] && { echo "wsload stderr (first lines, all in $OUT/wsload.err):"; head -5 "$OUT/wsload.err" | sed 's/^/  /'; }
mkdir -p "$OUT/pprof"
curl -sf -m 20 --cacert "$OUT/cert.pem" -o "$OUT/metrics-end.txt" "https://127.0.0.1:$HTTP_PORT/metrics" || true
if [[ -s $OUT/heap-agents.pprof ]] && "$GO" tool pprof -h >/dev/null 2>&1; then
  "$GO" tool pprof -sample_index=inuse_space -top -nodecount=30 "$OUT/heap-agents.pprof" >"$OUT/pprof/heap-agents-top.txt" 2>&1
  "$GO" tool pprof -sample_index=inuse_space -top -nodecount=25 -diff_base "$OUT/heap-base.pprof" \
    "$OUT/heap-agents.pprof" >"$OUT/pprof/heap-agents-diff-top.txt" 2>&1
  "$GO" tool pprof -sample_index=inuse_space -top -cum -nodecount=40 -diff_base "$OUT/heap-base.pprof" \
    "$OUT/heap-agents.pprof" >"$OUT/pprof/heap-agents-diff-cum.txt" 2>&1
  curl -sf -m 20 -o "$OUT/pprof/goroutine.txt" "http://127.0.0.1:$PPROF_PORT/debug/pprof/goroutine?debug=1" || true
fi
stop_pid "$GW_PID" dualgate "$GW_TO"; GW_PID=""

# ---------------------------------------------------------------- summary
W=$OUT/wsload.out
kv() { # LINE-PREFIX KEY [NTH]: value of KEY= on the first line starting with LINE-PREFIX
  awk -v p="$1" -v k="$2" -v nth="${3:-1}" 'index($0, p) == 1 { c=0; for (i=1; i<=NF; i++) if (index($i, k"=") == 1) { c++; if (c == nth) { print substr($i, length(k)+2); exit } } }' "$W"
}
fill_ok=$(kv FILL ok); fill_failed=$(kv FILL failed); fill_wall=$(kv FILL wall_s); fill_rate=$(kv FILL rate_per_s)
fill_p50=$(kv FILL p50); fill_p99=$(kv FILL p99)
st_ok=$(kv STORM ok); st_failed=$(kv STORM failed); st_wall=$(kv STORM wall_s); st_rate=$(kv STORM rate_per_s)
st_p50=$(kv STORM p50); st_p99=$(kv STORM p99); st_max=$(kv STORM max); st_r50=$(kv STORM p50 2); st_r99=$(kv STORM p99 2)
st_why=$(kv STORM failures); fill_why=$(kv FILL failures)
fill_cpu=$(kv "CPU fill" gateway_s); fill_us=$(kv "CPU fill" gateway_us_per_agent); fill_ccpu=$(kv "CPU fill" client_s)
st_cpu=$(kv "CPU storm" gateway_s); st_us=$(kv "CPU storm" gateway_us_per_agent); st_ccpu=$(kv "CPU storm" client_s)
rss_base=$(kv "MEM base" rss_kb); rss_ag=$(kv "MEM agents" rss_kb); rss_st=$(kv "MEM after-storm" rss_kb)
per=$(kv PER_AGENT rss_kib); heap_per=$(kv PER_AGENT heap_inuse_kib); stack_per=$(kv PER_AGENT stack_kib); gor_per=$(kv PER_AGENT goroutines)
per_st=$(kv PER_AGENT_AFTER_STORM rss_kib); heap_st=$(kv PER_AGENT_AFTER_STORM heap_inuse_kib)
pings=$(kv IDLE pings_answered); lost=$(kv RESULT idle_lost)
cpu_s=$(awk -v a="${t_start:-0}" -v b="${t_end:-0}" -v hz="$HZ" 'BEGIN{printf "%.1f", (b-a)/hz}')
mb() { awk -v k="$1" 'BEGIN{ if (k == "") print "na"; else printf "%.1f", k/1024 }'; }

echo
row='%-6s %6s %6s %7s %8s %8s %8s %8s %6s %7s %6s  %s\n'
printf "$row" phase ok failed wall_s agents/s p50ms p99ms maxms gw_cpu gw_us/a cl_cpu failures
printf "$row" fill "${fill_ok:-na}" "${fill_failed:-na}" "${fill_wall:-na}" "${fill_rate:-na}" "${fill_p50:-na}" "${fill_p99:-na}" "$(kv FILL max)" "${fill_cpu:-na}" "${fill_us:-na}" "${fill_ccpu:-na}" "${fill_why:-na}"
printf "$row" storm "${st_ok:-na}" "${st_failed:-na}" "${st_wall:-na}" "${st_rate:-na}" "${st_p50:-na}" "${st_p99:-na}" "${st_max:-na}" "${st_cpu:-na}" "${st_us:-na}" "${st_ccpu:-na}" "${st_why:-na}"
echo
{
  echo "RESULT ws agents=$N registered=${fill_ok:-na} rss_mb before=$(mb "$rss_base") with_agents=$(mb "$rss_ag") after_storm=$(mb "$rss_st") rss_kib_per_agent=${per:-na} after_storm=${per_st:-na} heap_inuse_kib_per_agent=${heap_per:-na} after_storm=${heap_st:-na} stack_kib_per_agent=${stack_per:-na} goroutines_per_agent=${gor_per:-na} pings_answered=${pings:-na} sockets_lost=${lost:-na} gateway_cpu_s=$cpu_s"
  echo "RESULT ws fill agents=${fill_ok:-na} failed=${fill_failed:-na} wall_s=${fill_wall:-na} agents_per_s=${fill_rate:-na} connect_register_ms p50=${fill_p50:-na} p99=${fill_p99:-na} concurrency=$CONC gateway_cpu_s=${fill_cpu:-na} gateway_cpu_us_per_agent=${fill_us:-na} client_cpu_s=${fill_ccpu:-na}"
  echo "RESULT ws storm agents=${st_ok:-na} failed=${st_failed:-na} wall_s=${st_wall:-na} agents_per_s=${st_rate:-na} connect_register_ms p50=${st_p50:-na} p99=${st_p99:-na} max=${st_max:-na} register_only_ms p50=${st_r50:-na} p99=${st_r99:-na} concurrency=${STORM_CONC/#0/all} gateway_cpu_s=${st_cpu:-na} gateway_cpu_us_per_agent=${st_us:-na} client_cpu_s=${st_ccpu:-na}"
  awk -v p="${per:-}" -v g="$GOAL_KIB" 'BEGIN{ if (p == "") print "GOAL rss per agent: na"; else printf "GOAL rss_kib_per_agent=%s goal<%d %s\n", p, g, (p+0 < g ? "met" : "MISSED") }'
  if [[ -n ${st_failed:-} && $st_failed == 0 && -n ${fill_failed:-} && $fill_failed == 0 ]]; then
    echo "GOAL storm of ${st_ok} reconnections without a failed registration: met"
  else
    echo "GOAL storm without a failed registration: MISSED (fill failed=${fill_failed:-na}, storm failed=${st_failed:-na}: ${st_why:-na})"
  fi
  echo "PUBLISHED (not measured here) Kamailio: about 4.5 KB per TCP connection plus about 61 KB per TLS connection"
  grep -E '^(GATEWAY|MISMATCH|DEADLINE)' "$W"
} | tee "$OUT/SUMMARY"
if [[ -s $OUT/pprof/heap-agents-top.txt ]]; then
  echo
  echo "gateway heap in use with the agents, by allocation site (top 10 of $(awk '/^MEM agents/ { for (i=1; i<=NF; i++) if ($i ~ /^heap_inuse_mb=/) print substr($i, 15) }' "$W") MB; $OUT/pprof/):"
  grep -E '^ +-?[0-9.]+[kMG]?B ' "$OUT/pprof/heap-agents-top.txt" | head -10 | sed 's/^/  /'
fi
exit $(( rc == 0 ? 0 : 1 ))
