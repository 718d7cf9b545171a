#!/usr/bin/env bash
# Registration benchmark: dualgate's registrar beside Kamailio 5.6's, in one run.
# Usage: make bench-register   (or: bash bench/register-bench.sh after `make build`)
#
# 1. bench/gen-users writes a users file of USERS users (u0000001.., realm dualgate, password
#    bench-secret, sip_ha1_md5 only) into OUT.
# 2. For each mode, dualgate then Kamailio (if installed): a fresh process on
#    127.0.0.1:17060/UDP and a ladder of REGISTER rates (SECS seconds each, sipp on
#    127.0.0.1:17080), stopped at the first step that is not clean:
#      noauth  no digest: dualgate trusts 127.0.0.1 (sip.trusted), Kamailio saves at once
#      auth    REGISTER -> 401 -> REGISTER with MD5 digest (qop=auth) -> 200
#    With PROFILE=1 dualgate's highest clean step of each mode is run once more with a 10 s
#    CPU profile from its pprof endpoint (go tool pprof -top).
# 3. memory: a fresh process of each proxy (noauth), MEM_COUNT registrations of distinct users
#    (Expires 3600), and its memory before and after: bytes per binding.
# Everything is loopback, bounded by sipp -m and timeout(1), and stopped by PID on exit (also
# on Ctrl-C). See bench/README.md, "Registration benchmark", for how to read the output.
#
# Environment:
#   USERS=100000         users in the generated users file (AORs u0000001..)
#   RATES="2000 4000 6000 7000 ... 14000 16000"   noauth ladder, REGISTER/s, ascending
#   AUTH_RATES="1000 2000 3000 3500 ... 7000 8000"  auth ladder, registrations/s
#   SECS=10              seconds per step (RATE x SECS registrations; users taken in turn, so
#                        past USERS they are refreshes of existing bindings)
#   MODES="noauth auth memory"    what to run
#   PROXIES="dualgate kamailio"   which registrars, in order
#   KAM_AUTH=1           also the auth ladder for Kamailio (fixed password, no user lookup)
#   MEM_COUNT=$USERS     registrations of the memory run (distinct users, at most USERS)
#   MEM_RATE=auto        their rate: half the lower max clean noauth rate, 1000..5000
#   SETTLE=40            seconds between the end of the fill and the settled memory sample
#                        (dualgate keeps each UDP server transaction 32 s, Timer J)
#   PROFILE=1            pprof CPU profile of dualgate at its max clean rate (0: none)
#   MAX_RETRANS_PCT=0.1  retransmissions allowed in a clean step, % of registrations
#   RETRY=1              a ladder step that is not clean is run again up to RETRY times (same
#                        rate) before it counts as the limit; 0: never
#   KAMAILIO=/usr/sbin/kamailio  KAM_CHILDREN=4   DUALGATE=bin/dualgate  GO=go
#   PORT_OFFSET=0        shift every port (UDP 17060, 17080; TCP 17090, 17091) by N
#   OUT=bench/results/<time>-register   raw output
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

USERS=${USERS:-100000}
RATES=${RATES:-"2000 4000 6000 7000 8000 9000 10000 11000 12000 13000 14000 16000"}
AUTH_RATES=${AUTH_RATES:-"1000 2000 3000 3500 4000 4500 5000 6000 7000 8000"}
SECS=${SECS:-10}
MODES=${MODES:-"noauth auth memory"}
PROXIES=${PROXIES:-"dualgate kamailio"}
KAM_AUTH=${KAM_AUTH:-1}
MEM_COUNT=${MEM_COUNT:-$USERS}
MEM_RATE=${MEM_RATE:-auto}
SETTLE=${SETTLE:-40}
PROFILE=${PROFILE:-1}
MAX_RETRANS_PCT=${MAX_RETRANS_PCT:-0.1}
RETRY=${RETRY:-1}
KAM_CHILDREN=${KAM_CHILDREN:-4}
DUALGATE=${DUALGATE:-$ROOT/bin/dualgate}
KAMAILIO=${KAMAILIO:-$(command -v kamailio || echo /usr/sbin/kamailio)}
GO=${GO:-go}
OUT=${OUT:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-register}
PASSWORD=bench-secret

PORT_OFFSET=${PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ && $PORT_OFFSET -lt 48000 ]] || die "PORT_OFFSET must be an integer below 48000"
SIP_PORT=$(( 17060 + PORT_OFFSET ))
UAC_PORT=$(( 17080 + PORT_OFFSET ))
HTTP_PORT=$(( 17090 + PORT_OFFSET ))
PPROF_PORT=$(( 17091 + PORT_OFFSET ))
SIP_ADDR=127.0.0.1:$SIP_PORT
SCEN_NOAUTH=$BENCH_DIR/scenarios/register.xml
SCEN_AUTH=$BENCH_DIR/scenarios/register-auth.xml
KAM_CFG=$BENCH_DIR/kamailio/kamailio-register.cfg
KAM_CTL=$OUT/kamailio.ctl
SIPP_COMMON=(-i 127.0.0.1 -p "$UAC_PORT" -nostdin -buff_size 4194304)

# ---------------------------------------------------------------- checks
read -r -a NOAUTH_LIST <<<"$RATES"
read -r -a AUTH_LIST <<<"$AUTH_RATES"
[[ $RETRY =~ ^[0-9]+$ && $RETRY -le 5 ]] || die "RETRY must be 0..5"
for r in "${NOAUTH_LIST[@]}" "${AUTH_LIST[@]}" "$SECS" "$USERS" "$MEM_COUNT" "$KAM_CHILDREN"; do
  [[ $r =~ ^[0-9]+$ && $r -gt 0 ]] || die "RATES, AUTH_RATES, SECS, USERS, MEM_COUNT, KAM_CHILDREN must be positive integers (got '$r')"
done
[[ $SETTLE =~ ^[0-9]+$ && $SETTLE -le 300 ]] || die "SETTLE must be 0..300 seconds"
[[ $MEM_RATE == auto || ($MEM_RATE =~ ^[0-9]+$ && $MEM_RATE -gt 0) ]] || die "MEM_RATE must be auto or a positive integer"
(( USERS <= 9999999 )) || die "USERS must be at most 9999999"
(( MEM_COUNT <= USERS )) || die "MEM_COUNT ($MEM_COUNT) must not exceed USERS ($USERS): the memory run registers distinct users"
for m in $MODES; do [[ $m =~ ^(noauth|auth|memory)$ ]] || die "unknown mode '$m' in MODES (noauth, auth, memory)"; done
for p in $PROXIES; do [[ $p =~ ^(dualgate|kamailio)$ ]] || die "unknown proxy '$p' in PROXIES"; done
command -v sipp >/dev/null || die "sipp not found: install the Debian package sip-tester"
for t in timeout ss ps awk curl; do command -v "$t" >/dev/null || die "$t not found"; done
command -v "$GO" >/dev/null || die "$GO not found: bench/gen-users needs the Go toolchain"
[[ -x $DUALGATE ]] || die "$DUALGATE not built: run 'make build' (make bench-register does it)"
for p in "$SIP_PORT" "$UAC_PORT"; do
  udp_port_busy "$p" && die "UDP port $p on this machine is in use (ss -ulnp 'sport = :$p'); the bench needs UDP $SIP_PORT, $UAC_PORT and TCP $HTTP_PORT, $PPROF_PORT (PORT_OFFSET=N shifts them)"
done
for p in "$HTTP_PORT" "$PPROF_PORT"; do
  ss -Htln "sport = :$p" | grep -q . && die "TCP port $p on this machine is in use (ss -tlnp 'sport = :$p'); the bench needs UDP $SIP_PORT, $UAC_PORT and TCP $HTTP_PORT, $PPROF_PORT (PORT_OFFSET=N shifts them)"
done
mkdir -p "$OUT" || die "cannot create $OUT"

# ---------------------------------------------------------------- users file and configs
USERS_FILE=$OUT/register-users.yaml
t_gen=$(date +%s.%N)
(cd "$ROOT" && timeout 120 "$GO" run ./bench/gen-users -n "$USERS" -realm dualgate -password "$PASSWORD" \
  -users "$USERS_FILE" -csv "$OUT/users.csv") || die "bench/gen-users failed"
note "users file $USERS_FILE: $USERS users ($(du -k "$USERS_FILE" | cut -f1) kB) in $(awk -v a="$t_gen" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

# dualgate-auth.yaml: the repo's config with ports shifted; dualgate-noauth.yaml: the same with
# the sipp client's address trusted. Both name the users file beside them.
ports_sed="s/127\.0\.0\.1:17060/127.0.0.1:$SIP_PORT/; s/127\.0\.0\.1:17090/127.0.0.1:$HTTP_PORT/; s/127\.0\.0\.2:17070/127.0.0.2:$(( 17070 + PORT_OFFSET ))/"
{ sed "$ports_sed" "$BENCH_DIR/dualgate-register.yaml"; echo "users_file: register-users.yaml"; } >"$OUT/dualgate-auth.yaml"
sed 's/^  trusted: \[\]/  trusted: ["127.0.0.1"]/' "$OUT/dualgate-auth.yaml" >"$OUT/dualgate-noauth.yaml"
grep -q '^  trusted: \["127.0.0.1"\]' "$OUT/dualgate-noauth.yaml" || die "could not set sip.trusted in $OUT/dualgate-noauth.yaml"
for c in auth noauth; do
  "$DUALGATE" check -config "$OUT/dualgate-$c.yaml" >"$OUT/dualgate-$c-check.log" 2>&1 \
    || die "dualgate rejects $OUT/dualgate-$c.yaml: $(tail -3 "$OUT/dualgate-$c-check.log")"
done

HAVE_KAMAILIO=1
if [[ ! -x $KAMAILIO ]]; then
  HAVE_KAMAILIO=0
else
  KAM_DEFS=(-A "BENCH_LISTEN=udp:$SIP_ADDR" -A "BENCH_CHILDREN=$KAM_CHILDREN" -A "BENCH_CTL=\"unix:$KAM_CTL\"")
  for d in "" WITH_AUTH; do
    "$KAMAILIO" -c -f "$KAM_CFG" "${KAM_DEFS[@]}" ${d:+-A $d} >"$OUT/kamailio-check${d:+-auth}.log" 2>&1 \
      || die "kamailio rejects $KAM_CFG ${d:+with $d} (see $OUT/kamailio-check${d:+-auth}.log)"
  done
fi
HAVE_PPROF=1; "$GO" tool pprof -h >/dev/null 2>&1 || HAVE_PPROF=0

# ---------------------------------------------------------------- process bookkeeping
PROXY_PID="" PROXY_TO="" PROXY_COMM="" PROXY_PIDS=()
UAC_PID="" UAC_TO="" PROF_PID=""
stop_proxy() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" "$PROXY_COMM" "$PROXY_TO"
  PROXY_PID="" PROXY_TO="" PROXY_PIDS=()
}
cleanup() {
  [[ -n $PROF_PID ]] && { kill -TERM "$PROF_PID" 2>/dev/null; wait "$PROF_PID" 2>/dev/null; }
  [[ -n $UAC_PID ]] && stop_pid "$UAC_PID" sipp "$UAC_TO"
  stop_proxy
}
trap cleanup EXIT
trap 'echo "interrupted: stopping what this run started"; exit 130' INT TERM

n_steps=$(( ${#NOAUTH_LIST[@]} > ${#AUTH_LIST[@]} ? ${#NOAUTH_LIST[@]} : ${#AUTH_LIST[@]} ))
# Upper bound on one registrar's life (it is stopped long before in a normal run).
PROXY_MAXT=$(( ((RETRY + 1) * n_steps + 3) * (SECS + 60) + SETTLE + MEM_COUNT / 500 + 300 ))

# start_proxy name mode(noauth|auth) label
start_proxy() {
  local log="$OUT/$1-$3.log"
  case $1 in
    dualgate)
      PROXY_COMM=dualgate
      spawn_bounded "$PROXY_MAXT" "$log" "$DUALGATE" -config "$OUT/dualgate-$2.yaml" -pprof "127.0.0.1:$PPROF_PORT" ;;
    kamailio)
      PROXY_COMM=kamailio
      local user=() auth=(); [[ $(id -u) -eq 0 ]] && user=(-u root -g root)
      [[ $2 == auth ]] && auth=(-A WITH_AUTH)
      spawn_bounded "$PROXY_MAXT" "$log" "$KAMAILIO" -DD -E -f "$KAM_CFG" "${KAM_DEFS[@]}" "${auth[@]}" \
        -m 1024 -M 16 "${user[@]}" ;;
  esac || { echo "could not start $1; log:"; tail -20 "$log"; return 1; }
  PROXY_PID=$SPAWN_PID PROXY_TO=$SPAWN_TO
  local up=0 t0; t0=$(date +%s)
  for _ in $(seq 1 300); do   # 30 s: dualgate reads and checks the whole users file first
    [[ -d /proc/$PROXY_PID ]] || break
    if udp_port_busy "$SIP_PORT" && { [[ $1 != dualgate ]] || curl -sf -m 2 -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz"; }; then
      up=1; break
    fi
    sleep 0.1
  done
  if [[ $up != 1 ]]; then echo "$1 did not come up on $SIP_ADDR; log $log:"; tail -20 "$log"; stop_proxy; return 1; fi
  sleep 1   # Kamailio forks its workers
  mapfile -t PROXY_PIDS < <(pid_tree "$PROXY_PID")
  note "$1 ($2) pid $PROXY_PID, ${#PROXY_PIDS[@]} process(es), up in $(( $(date +%s) - t0 )) s, log $log"
}

# make_csv FILE START COUNT: sipp injection file of COUNT users from index START (0-based,
# wrapping at USERS)
make_csv() {
  awk -v s="$2" -v n="$3" -v N="$USERS" 'BEGIN { print "SEQUENTIAL"; for (i = 0; i < n; i++) printf "u%07d;\n", (s + i) % N + 1 }' >"$1"
}

scenario_of() { # mode -> scenario and digest arguments
  if [[ $1 == auth ]]; then echo "$SCEN_AUTH"; else echo "$SCEN_NOAUTH"; fi
}

preflight() { # mode dir: single registrations until one gets its 200 (<= 10 tries)
  local scen auth=()
  scen=$(scenario_of "$1")
  [[ $1 == auth ]] && auth=(-au "[field0]" -ap "$PASSWORD")
  make_csv "$2/preflight.csv" 0 1
  for _ in $(seq 1 10); do
    timeout -k 2 8 sipp -sf "$scen" -inf "$2/preflight.csv" "${auth[@]}" "${SIPP_COMMON[@]}" "$SIP_ADDR" \
      -m 1 -timeout 6 -timeout_error -trace_msg -message_file "$2/preflight-msg.log" \
      >"$2/preflight.out" 2>&1 </dev/null && return 0
    sleep 1
  done
  return 1
}

# dualgate's /metrics value of a series (first match), in bytes or counts
metric() { curl -sf -m 5 "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v k="$1" '$1 == k { printf "%.0f\n", $2; exit }'; }

# ---------------------------------------------------------------- one step
fmt_row() {
  printf '%-8s %-6s %-7s %6s %9s %7s %6s %7s %5s %5s %5s %5s %6s %8s %8s  %s\n' "$@"
}
header() {
  fmt_row proxy mode step rate achieved ok failed retrans p50ms p99ms cpu% sipp% us/reg rss_MB pss_MB clean
}

CURSOR=0   # next user of the ladder (users are taken in turn through the steps of a process)
# run_step proxy mode(noauth|auth) step(ladder|profile|fill) rate count -> one row, S_* globals;
# returns 0 if clean
run_step() {
  local proxy=$1 mode=$2 step=$3 rate=$4 count=$5
  local dir="$OUT/$proxy-$mode-$step-$rate" scen auth=() rttf
  mkdir -p "$dir"
  scen=$(scenario_of "$mode")
  [[ $mode == auth ]] && auth=(-au "[field0]" -ap "$PASSWORD")
  make_csv "$dir/users.csv" "$CURSOR" "$count"
  CURSOR=$(( (CURSOR + count) % USERS ))
  local secs=$(( (count + rate - 1) / rate ))
  local maxt=$(( secs + 20 ))
  # sipp writes rtt samples in blocks of -rtt_freq and drops a partial last block: pick a block
  # size that divides COUNT, so a clean step keeps every sample
  for rttf in 1000 500 250 200 100 50 25 20 10 5 4 2 1; do (( count % rttf == 0 )) && break; done
  S_CLEAN=no S_REASON=""
  local t_pids=("${PROXY_PIDS[@]}") rss_max=0 pss_max=0 v
  local samples="$dir/samples.txt"; : >"$samples"
  local t0; t0=$(date +%s.%N)
  spawn_bounded "$maxt" "$dir/uac.out" bash -c 'cd "$1" && shift && exec "$@"' _ "$dir" \
    sipp -sf "$scen" -inf users.csv "${auth[@]}" "${SIPP_COMMON[@]}" "$SIP_ADDR" \
    -r "$rate" -rp 1000 -m "$count" -l $(( rate * 5 + 100 )) -timeout $(( maxt - 3 )) -timeout_error \
    -trace_stat -stf uac-stat.csv -fd 1 -trace_rtt -rtt_freq "$rttf" \
    -trace_err -error_file uac-errors.log -error_overwrite true \
    || { echo "could not start the sipp client"; S_REASON=uac; return 2; }
  UAC_TO=$SPAWN_TO UAC_PID=$SPAWN_PID
  # every 0.5 s: elapsed proxy_ticks sipp_ticks; memory every 2 s
  local i=0 el prof_started=0
  while kill -0 "$UAC_TO" 2>/dev/null; do
    el=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
    echo "$el $(cpu_ticks "${t_pids[@]}") $(cpu_ticks "$UAC_PID")" >>"$samples"
    if (( i % 4 == 0 )); then
      v=$(rss_kb "${t_pids[@]}"); (( v > rss_max )) && rss_max=$v
      v=$(pss_kb "${t_pids[@]}"); (( v > pss_max )) && pss_max=$v
    fi
    if [[ $step == profile && $prof_started == 0 ]] && awk -v e="$el" 'BEGIN{exit !(e >= 1)}'; then
      prof_started=1
      curl -sf -m 25 -o "$dir/cpu.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=10" &
      PROF_PID=$!
    fi
    i=$(( i + 1 ))
    sleep 0.5
  done
  wait "$UAC_TO"; local rc=$?
  UAC_PID="" UAC_TO=""
  echo "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') $(cpu_ticks "${t_pids[@]}") -" >>"$samples"
  if [[ -n $PROF_PID ]]; then wait "$PROF_PID" 2>/dev/null; PROF_PID=""; fi

  # CPU % of one core over the steady part (from 1 s to the end of sending; whole run if short)
  local cpu_proxy cpu_sipp
  read -r cpu_proxy cpu_sipp < <(awk -v s="$secs" -v hz="$HZ" '
      { t[NR]=$1; p[NR]=$2; u[NR]=$3 }
      END {
        a=0; b=0
        for (k=1; k<=NR; k++) { if (!a && t[k] >= 1) a=k; if (t[k] <= s && u[k] != "-") b=k }
        if (!a || !b || t[b]-t[a] < 1) { a=1; b=NR-1 }
        if (b <= a) { print "na na"; exit }
        d=t[b]-t[a]
        printf "%.0f %.0f\n", (p[b]-p[a])/hz/d*100, (u[b]-u[a])/hz/d*100
      }' "$samples")

  local stat="$dir/uac-stat.csv" rtt
  rtt=$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)
  if [[ ! -s $stat ]]; then
    fmt_row "$proxy" "$mode" "$step" "$rate" - - - - - - - - - - - "no(no sipp stats, rc=$rc, see $dir/uac.out)"
    S_REASON=nostats; return 1
  fi
  local total okc failed retr p50=na p99=na pmax n achieved=na us=na
  total=$(csv_col "$stat" '^TotalCallCreated$'); okc=$(csv_col "$stat" '^SuccessfulCall\(C\)$')
  failed=$(csv_col "$stat" '^FailedCall\(C\)$'); retr=$(csv_col "$stat" '^Retransmissions\(C\)$')
  if [[ -n $rtt ]]; then
    read -r p50 p99 pmax n < <(rtt_stats "$rtt" 1)
    achieved=$(rtt_rate "$rtt" 1)
  fi
  # proxy CPU time per registration, microseconds
  [[ $cpu_proxy != na ]] && us=$(awk -v c="$cpu_proxy" -v a="$achieved" -v r="$rate" \
    'BEGIN{ x = (a+0 > 0) ? a : r; printf "%.0f", c/100*1e6/x }')
  local rss_mb pss_mb
  rss_mb=$(awk -v k="$rss_max" 'BEGIN{printf "%.1f", k/1024}')
  pss_mb=$(awk -v k="$pss_max" 'BEGIN{printf "%.1f", k/1024}')
  S_RATE=$rate S_ACH=$achieved S_CPU=$cpu_proxy S_SIPP=$cpu_sipp S_US=$us S_RSS=$rss_mb S_PSS=$pss_mb
  S_P50=$p50 S_P99=$p99 S_OK=$okc S_FAILED=$failed S_RETR=$retr S_DIR=$dir S_RSS_KB=$rss_max S_PSS_KB=$pss_max

  clean_verdict "$rc" "$total" "$count" "$okc" "$failed" "$retr" "$achieved" "$rate"
  fmt_row "$proxy" "$mode" "$step" "$rate" "$achieved" "$okc" "$failed" "$retr" "$p50" "$p99" \
    "$cpu_proxy" "$cpu_sipp" "$us" "$rss_mb" "$pss_mb" "$S_CLEAN"
  [[ $S_CLEAN == yes ]]
}

# ---------------------------------------------------------------- ladders
declare -A MAX MAXROW TOP PROF
echo "dualgate registration bench: $USERS users; noauth ${NOAUTH_LIST[*]} REGISTER/s, auth ${AUTH_LIST[*]} registrations/s, ${SECS}s per step; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw output: $OUT"
[[ $HAVE_KAMAILIO == 0 ]] && note "kamailio not found at $KAMAILIO (Debian package kamailio): measuring dualgate alone, no RATIO"

ladder() { # proxy mode
  local proxy=$1 mode=$2 list idx rate
  if [[ $mode == auth ]]; then list=("${AUTH_LIST[@]}"); else list=("${NOAUTH_LIST[@]}"); fi
  echo
  start_proxy "$proxy" "$mode" "$mode" || { MAX[$proxy-$mode]=0; return; }
  mkdir -p "$OUT/$proxy-$mode-preflight"
  if ! preflight "$mode" "$OUT/$proxy-$mode-preflight"; then
    echo "$proxy $mode: no registration got through (see $OUT/$proxy-$mode-preflight/)"
    MAX[$proxy-$mode]=0; stop_proxy; return
  fi
  if [[ $proxy == dualgate ]]; then
    # Loading the 100,000-user file leaves a few hundred MB of YAML garbage that the first
    # collection would otherwise meet in the middle of the first step: collect it now, as a
    # gateway that has run for two minutes (Go's forced GC period) already has.
    curl -sf -m 20 -o /dev/null "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1"
    sleep 2
  fi
  header
  MAX[$proxy-$mode]=0; TOP[$proxy-$mode]=no; CURSOR=0
  for idx in "${!list[@]}"; do
    rate=${list[$idx]}
    if ! run_step "$proxy" "$mode" ladder "$rate" $(( rate * SECS )); then
      # On a shared machine a step can fail because something else took the CPUs for a
      # second: run it again (RETRY times, same rate, fresh users) before calling it the limit.
      local ok=0 t
      for (( t = 0; t < RETRY; t++ )); do
        sleep 3
        run_step "$proxy" "$mode" retry "$rate" $(( rate * SECS )) && { ok=1; break; }
      done
      [[ $ok == 1 ]] || break
    fi
    MAX[$proxy-$mode]=$rate
    MAXROW[$proxy-$mode]="achieved=$S_ACH cpu=${S_CPU}% cpu_us_per_reg=$S_US sipp_cpu=${S_SIPP}% rtt_ms_p50=$S_P50 p99=$S_P99 rss_mb=$S_RSS pss_mb=$S_PSS"
    [[ $idx -eq $(( ${#list[@]} - 1 )) ]] && TOP[$proxy-$mode]=yes
    sleep 2   # let the last transactions drain
  done
  local m=${MAX[$proxy-$mode]}
  if [[ $proxy == dualgate && $PROFILE == 1 && $m -gt 0 ]]; then
    if [[ $HAVE_PPROF == 0 ]]; then
      PROF[$mode]="PROFILE skipped: '$GO tool pprof' not available"
    else
      sleep 3
      local psecs=$(( SECS < 12 ? 12 : SECS ))
      run_step dualgate "$mode" profile "$m" $(( m * psecs ))
      local pdir=$S_DIR cpu=$S_CPU gor
      # what the process holds right after the load: in-flight and completed server
      # transactions (UDP Timer J keeps a completed one 32 s), garbage not yet collected
      gor=$(metric go_goroutines)
      curl -sf -m 20 -o "$pdir/heap-end.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap"
      if [[ -s $pdir/cpu.pprof ]]; then
        "$GO" tool pprof -top -nodecount=30 "$pdir/cpu.pprof" >"$pdir/pprof-top.txt" 2>&1
        "$GO" tool pprof -top -cum -nodecount=40 "$pdir/cpu.pprof" >"$pdir/pprof-top-cum.txt" 2>&1
        [[ -s $pdir/heap-end.pprof ]] && "$GO" tool pprof -sample_index=inuse_space -top -nodecount=25 \
          "$pdir/heap-end.pprof" >"$pdir/heap-end-top.txt" 2>&1
        # pprof's SIGPROF sampling can miss CPU time on this VM: compare with /proc
        local sampled
        sampled=$(awk '/Total samples =/ { for (i=1; i<=NF; i++) if ($i == "=") { print $(i+1); exit } }' "$pdir/pprof-top.txt")
        PROF[$mode]="PROFILE dualgate $mode at $m/s, 10 s: samples=$sampled (/proc: ${cpu}% of a core = $(awk -v c="$cpu" 'BEGIN{printf "%.1f", c/10}')s) goroutines_at_end=${gor:-na} $pdir/pprof-top.txt (flat), pprof-top-cum.txt (cumulative), heap-end-top.txt (in use right after), cpu.pprof (go tool pprof -http=: $pdir/cpu.pprof)"
      else
        PROF[$mode]="PROFILE dualgate $mode failed: no profile from 127.0.0.1:$PPROF_PORT"
      fi
    fi
  fi
  stop_proxy
  note "$proxy stopped"
}

# Mode by mode, the proxies one after the other: a change in background load lands on both
# ladders of a mode rather than on one proxy's.
for mode in noauth auth; do
  [[ " $MODES " == *" $mode "* ]] || continue
  for proxy in $PROXIES; do
    [[ $proxy == kamailio && $HAVE_KAMAILIO == 0 ]] && continue
    [[ $proxy == kamailio && $mode == auth && $KAM_AUTH != 1 ]] && continue
    ladder "$proxy" "$mode"
  done
done

# ---------------------------------------------------------------- memory
declare -A MEM
# settle_dualgate: two forced collections (the pprof heap endpoint with gc=1; the scavenger
# only returns a chunk freed before the previous cycle) and the heap profile kept, then until
# RSS stays put (2 s, at most 30 s)
settle_dualgate() { # heap-profile-file
  curl -sf -m 20 -o /dev/null "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1"
  sleep 1
  curl -sf -m 20 -o "$1" "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1"
  local prev=0 cur
  for _ in $(seq 1 15); do
    sleep 2
    cur=$(rss_kb "$PROXY_PID")
    (( cur - prev < 1024 && prev - cur < 1024 )) && break
    prev=$cur
  done
}
mem_sample() { # -> "rss_kb pss_kb heap_alloc_bytes"
  local h=na
  [[ $PROXY_COMM == dualgate ]] && h=$(metric go_memstats_heap_alloc_bytes)
  echo "$(rss_kb "${PROXY_PIDS[@]}") $(pss_kb "${PROXY_PIDS[@]}") ${h:-na}"
}
bindings_now() {
  case $PROXY_COMM in
    dualgate) metric gateway_sip_registrations ;;
    kamailio) command -v kamcmd >/dev/null && timeout 10 kamcmd -s "unix:$KAM_CTL" stats.get_statistics usrloc: 2>/dev/null \
                | awk -F'= *' '/location_contacts/ { print $2 + 0; exit }' ;;
  esac
}

memory_run() { # proxy
  local proxy=$1 dir="$OUT/$1-memory"
  mkdir -p "$dir"
  echo
  start_proxy "$proxy" noauth memory || return
  if ! preflight noauth "$dir"; then echo "$proxy memory: no registration got through"; stop_proxy; return; fi
  sleep 2
  local b_rss b_pss b_heap a_rss a_pss a_heap s_rss s_pss s_heap n
  [[ $proxy == dualgate ]] && settle_dualgate "$dir/heap-before.pprof"
  read -r b_rss b_pss b_heap < <(mem_sample)
  header
  CURSOR=0
  run_step "$proxy" noauth fill "$MEM_RATE" "$MEM_COUNT"
  local ok=$S_OK clean=$S_CLEAN peak=$S_RSS_KB peakp=$S_PSS_KB
  read -r a_rss a_pss a_heap < <(mem_sample)
  note "$proxy: waiting ${SETTLE}s for transactions and timers to end"
  sleep "$SETTLE"
  [[ $proxy == dualgate ]] && settle_dualgate "$dir/heap-after.pprof"
  read -r s_rss s_pss s_heap < <(mem_sample)
  n=$(bindings_now); n=${n:-na}
  MEM[$proxy-pss]=$(( (s_pss - b_pss) * 1024 / MEM_COUNT ))
  MEM[$proxy]=$(awk -v p="$proxy" -v n="$MEM_COUNT" -v ok="$ok" -v c="$clean" -v r="$MEM_RATE" -v bn="$n" \
      -v br="$b_rss" -v bp="$b_pss" -v bh="$b_heap" -v ar="$a_rss" -v ap="$a_pss" -v ah="$a_heap" \
      -v sr="$s_rss" -v sp="$s_pss" -v sh="$s_heap" -v pk="$peak" -v pkp="$peakp" -v st="$SETTLE" '
    function mb(k) { return sprintf("%.1f", k/1024) }
    BEGIN {
      printf "MEMORY proxy=%s registrations=%d rate=%d ok=%d clean=%s bindings=%s", p, n, r, ok, c, bn
      printf " rss_mb before=%s peak=%s after=%s settled=%s pss_mb before=%s peak=%s after=%s settled=%s", mb(br), mb(pk), mb(ar), mb(sr), mb(bp), mb(pkp), mb(ap), mb(sp)
      printf " bytes_per_binding rss=%.0f pss=%.0f (settled, %ds after)", (sr-br)*1024/n, (sp-bp)*1024/n, st
      printf " unsettled rss=%.0f pss=%.0f", (ar-br)*1024/n, (ap-bp)*1024/n
      if (sh != "na" && bh != "na") printf " go_live_heap_per_binding=%.0f (heap %.1f -> %.1f MB after GC)", (sh-bh)/n, bh/1048576, sh/1048576
      printf "\n"
    }')
  echo "${MEM[$proxy]}"
  if [[ $proxy == dualgate && -s $dir/heap-after.pprof && $HAVE_PPROF == 1 ]]; then
    "$GO" tool pprof -sample_index=inuse_space -top -nodecount=25 "$dir/heap-after.pprof" >"$dir/heap-after-top.txt" 2>&1
    "$GO" tool pprof -sample_index=inuse_space -top -nodecount=25 -diff_base "$dir/heap-before.pprof" "$dir/heap-after.pprof" >"$dir/heap-diff-top.txt" 2>&1
  fi
  stop_proxy
  note "$proxy stopped"
}

if [[ " $MODES " == *" memory "* ]]; then
  if [[ $MEM_RATE == auto ]]; then
    lo=0
    for proxy in $PROXIES; do
      v=${MAX[$proxy-noauth]:-0}; [[ $v -gt 0 ]] && { [[ $lo -eq 0 || $v -lt $lo ]] && lo=$v; }
    done
    MEM_RATE=$(( lo / 2 )); (( MEM_RATE < 1000 )) && MEM_RATE=1000; (( MEM_RATE > 5000 )) && MEM_RATE=5000
  fi
  for proxy in $PROXIES; do
    [[ $proxy == kamailio && $HAVE_KAMAILIO == 0 ]] && continue
    memory_run "$proxy"
  done
fi

# ---------------------------------------------------------------- summary
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "n/a" }'; }
echo
{
  for mode in noauth auth; do
    for proxy in $PROXIES; do
      [[ -n ${MAX[$proxy-$mode]+x} ]] || continue
      extra=""; [[ ${TOP[$proxy-$mode]:-no} == yes ]] && extra=" (top of the ladder was clean: the real maximum may be higher)"
      unit=register_per_s; [[ $mode == auth ]] && unit=registrations_per_s
      echo "RESULT proxy=$proxy mode=$mode max_clean_$unit=${MAX[$proxy-$mode]} ${MAXROW[$proxy-$mode]:-}$extra"
    done
    if [[ -n ${MAX[dualgate-$mode]+x} && -n ${MAX[kamailio-$mode]+x} ]]; then
      echo "RATIO dualgate/kamailio mode=$mode max_clean=$(ratio "${MAX[dualgate-$mode]}" "${MAX[kamailio-$mode]}") (${MAX[dualgate-$mode]}/${MAX[kamailio-$mode]})"
    fi
  done
  [[ $HAVE_KAMAILIO == 0 ]] && echo "RATIO dualgate/kamailio=n/a (kamailio not installed: dualgate measured alone)"
  for proxy in $PROXIES; do [[ -n ${MEM[$proxy]:-} ]] && echo "${MEM[$proxy]}"; done
  if [[ -n ${MEM[dualgate-pss]:-} && -n ${MEM[kamailio-pss]:-} ]]; then
    echo "RATIO dualgate/kamailio bytes_per_binding_pss=$(ratio "${MEM[dualgate-pss]}" "${MEM[kamailio-pss]}") (${MEM[dualgate-pss]}/${MEM[kamailio-pss]})"
  fi
  for mode in noauth auth; do [[ -n ${PROF[$mode]:-} ]] && echo "${PROF[$mode]}"; done
} | tee "$OUT/SUMMARY"
for mode in noauth auth; do
  f=$(ls "$OUT"/dualgate-$mode-profile-*/pprof-top.txt 2>/dev/null | head -1)
  [[ -s $f ]] || continue
  echo; echo "dualgate CPU profile, $mode, flat (top 12):"
  grep -E '^ +[0-9.]+m?s ' "$f" | head -12 | sed 's/^/  /'
done
[[ ${MAX[dualgate-noauth]:-0} -gt 0 || " $MODES " != *" noauth "* ]]
