#!/usr/bin/env bash
# Call-rate benchmark: dualgate and Kamailio under the same sipp load, in one run.
# Usage: make bench   (or: bash bench/sip-bench.sh after `make build`)
#
# For each proxy (dualgate, then Kamailio if installed) on 127.0.0.1:5060/UDP: start it, step
# through RATES (calls/s, SECS seconds each) and stop at the first step that is not clean,
# then stop the proxy (by PID). Then dualgate again at OVERLOAD x its highest clean rate, to see
# whether it keeps completing calls and refuses the excess with 503 + Retry-After.
# Every step starts two fresh sipp backends (test/scenarios/uas-rr.xml on 127.0.0.1:5070 and
# :5071) and one sipp caller (test/scenarios/uac-invite.xml; test/scenarios/uac-overload.xml for the
# overload step) on 127.0.0.1:5080. Everything is loopback, bounded by sipp -m and timeout(1),
# and stopped by PID on exit (also on Ctrl-C). See bench/README.md for how to read the output.
#
# Environment:
#   RATES="500 1000 1500 2000 2500 3000 3500"   ladder of call rates (calls/s), ascending
#   SECS=10              seconds of load per step (COUNT = RATE * SECS calls)
#   CALL_MS=1000         call hold time (sipp -d) between ACK and BYE
#   OVERLOAD=1.5         overload step rate = OVERLOAD x dualgate's max clean rate; 0 skips it
#   PROFILE=1            also re-run dualgate's highest clean rate with `perf record` attached
#                        (10 s, software cpu-clock sampling) and print the top symbols
#   PROXIES="dualgate kamailio"   which proxies to measure, in order
#   MAX_RETRANS_PCT=0.1  retransmissions allowed (% of calls) in a clean step
#   KAMAILIO=/usr/sbin/kamailio   KAM_CHILDREN=4 (UDP worker processes)
#   DUALGATE=bin/dualgate         OUT=bench/results/<time>   (raw sipp output per step)
#   OVERLOAD_CAP=N       sip.max_cps for the profile and overload steps (default: the
#                        measured max clean rate; 0 = no cap)
#   PORT_OFFSET=0        shift every port (5060, 5070, 5071, 5080) by this much, e.g. when
#                        someone else's proxy already holds 5060 on a shared machine; the
#                        configs are then rewritten into OUT (the files in bench/ stay as they are)
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

RATES=${RATES:-"500 1000 1500 2000 2500 3000 3500"}
SECS=${SECS:-10}
CALL_MS=${CALL_MS:-1000}
OVERLOAD=${OVERLOAD:-1.5}
PROFILE=${PROFILE:-0}
PROXIES=${PROXIES:-"dualgate kamailio"}
MAX_RETRANS_PCT=${MAX_RETRANS_PCT:-0.1}
KAM_CHILDREN=${KAM_CHILDREN:-4}
DUALGATE=${DUALGATE:-$ROOT/bin/dualgate}
KAMAILIO=${KAMAILIO:-$(command -v kamailio || echo /usr/sbin/kamailio)}
OUT=${OUT:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)}

PORT_OFFSET=${PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ && $PORT_OFFSET -lt 60000 ]] || die "PORT_OFFSET must be an integer below 60000"
PROXY_PORT=$(( 5060 + PORT_OFFSET ))
PROXY_ADDR=127.0.0.1:$PROXY_PORT
UAC_PORT=$(( 5080 + PORT_OFFSET ))
BACKEND_PORTS=($(( 5070 + PORT_OFFSET )) $(( 5071 + PORT_OFFSET )))
UAC_SCEN=$ROOT/test/scenarios/uac-invite.xml
UAS_SCEN=$ROOT/test/scenarios/uas-rr.xml
OVL_SCEN=$ROOT/test/scenarios/uac-overload.xml
DG_CONFIG=$BENCH_DIR/dualgate-bench.yaml
KAM_CFG=$BENCH_DIR/kamailio/kamailio.cfg
KAM_LIST=$BENCH_DIR/kamailio/dispatcher.list
SIPP_COMMON=(-i 127.0.0.1 -p "$UAC_PORT" -s 1000 -nostdin -buff_size 4194304)

# ---------------------------------------------------------------- checks
read -r -a RATE_LIST <<<"$RATES"
[[ ${#RATE_LIST[@]} -gt 0 ]] || die "RATES is empty"
for r in "${RATE_LIST[@]}" "$SECS" "$CALL_MS" "$KAM_CHILDREN"; do
  [[ $r =~ ^[0-9]+$ && $r -gt 0 ]] || die "RATES, SECS, CALL_MS, KAM_CHILDREN must be positive integers (got '$r')"
done
[[ $OVERLOAD =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "OVERLOAD must be a number (got '$OVERLOAD')"
command -v sipp >/dev/null || die "sipp not found: install the Debian package sip-tester"
for t in timeout ss ps awk; do command -v "$t" >/dev/null || die "$t not found"; done
[[ -x $DUALGATE ]] || die "$DUALGATE not built: run 'make build' (make bench does it)"
for p in "$PROXY_PORT" "${BACKEND_PORTS[@]}" "$UAC_PORT"; do
  udp_port_busy "$p" && die "UDP port $p on this machine is in use (ss -ulnp 'sport = :$p'); the bench needs $PROXY_PORT, ${BACKEND_PORTS[*]}, $UAC_PORT (PORT_OFFSET=N shifts them)"
done
mkdir -p "$OUT" || die "cannot create $OUT"
if [[ $PORT_OFFSET != 0 ]]; then
  ports_sed="s/127\.0\.0\.1:5060/127.0.0.1:$PROXY_PORT/g; s/127\.0\.0\.1:5070/127.0.0.1:${BACKEND_PORTS[0]}/g; s/127\.0\.0\.1:5071/127.0.0.1:${BACKEND_PORTS[1]}/g"
  sed "$ports_sed" "$DG_CONFIG" >"$OUT/dualgate-bench.yaml" && DG_CONFIG=$OUT/dualgate-bench.yaml
  sed "$ports_sed" "$KAM_CFG" >"$OUT/kamailio.cfg" && KAM_CFG=$OUT/kamailio.cfg
  sed "$ports_sed" "$KAM_LIST" >"$OUT/dispatcher.list" && KAM_LIST=$OUT/dispatcher.list
fi

"$DUALGATE" check -config "$DG_CONFIG" >/dev/null || die "bench config $DG_CONFIG is invalid"
HAVE_KAMAILIO=1
if [[ ! -x $KAMAILIO ]]; then
  HAVE_KAMAILIO=0
elif ! "$KAMAILIO" -c -f "$KAM_CFG" -A "BENCH_DSLIST=\"$KAM_LIST\"" >"$OUT/kamailio-check.log" 2>&1; then
  die "kamailio rejects $KAM_CFG (see $OUT/kamailio-check.log)"
fi

# ---------------------------------------------------------------- process bookkeeping
PROXY_PID="" PROXY_TO="" PROXY_COMM=""
UAS_PIDS=() UAS_TOS=()
UAC_PID="" UAC_TO="" PERF_PID="" PERF_TO=""
stop_backends() {
  local i
  for i in "${!UAS_PIDS[@]}"; do stop_pid "${UAS_PIDS[$i]}" sipp "${UAS_TOS[$i]}"; done
  UAS_PIDS=() UAS_TOS=()
}
stop_proxy() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID" "$PROXY_COMM" "$PROXY_TO"
  PROXY_PID="" PROXY_TO=""
}
cleanup() {
  [[ -n $PERF_PID ]] && stop_pid "$PERF_PID" perf "$PERF_TO"
  [[ -n $UAC_PID ]] && stop_pid "$UAC_PID" sipp "$UAC_TO"
  stop_backends
  stop_proxy
}
trap cleanup EXIT
trap 'echo "interrupted: stopping what this run started"; exit 130' INT TERM

# ---------------------------------------------------------------- proxies
# Upper bound on one proxy's life (it is stopped long before in a normal run).
STEP_MAX=$(( SECS + CALL_MS / 1000 + 70 + 150 ))
PROXY_MAXT=$(( (${#RATE_LIST[@]} + 2) * STEP_MAX + 120 ))

wait_listening() { # pid: until 127.0.0.1:5060/UDP is bound (5 s)
  for _ in $(seq 1 50); do
    [[ -d /proc/$1 ]] || return 1
    udp_port_busy "$PROXY_PORT" && return 0
    sleep 0.1
  done
  return 1
}

start_proxy() { # name [log-suffix]
  local log="$OUT/$1${2:+-$2}.log"
  case $1 in
    dualgate)
      PROXY_COMM=dualgate
      spawn_bounded "$PROXY_MAXT" "$log" "$DUALGATE" -config "$DG_CONFIG" ;;
    kamailio)
      PROXY_COMM=kamailio
      local user=(); [[ $(id -u) -eq 0 ]] && user=(-u root -g root)
      spawn_bounded "$PROXY_MAXT" "$log" "$KAMAILIO" -DD -E -f "$KAM_CFG" \
        -A "BENCH_DSLIST=\"$KAM_LIST\"" -A "BENCH_CHILDREN=$KAM_CHILDREN" -m 1024 -M 16 "${user[@]}" ;;
  esac || { echo "could not start $1; log:"; tail -20 "$log"; return 1; }
  PROXY_PID=$SPAWN_PID PROXY_TO=$SPAWN_TO
  if ! wait_listening "$PROXY_PID"; then
    echo "$1 did not come up on $PROXY_ADDR; log $log:"; tail -20 "$log"; stop_proxy; return 1
  fi
  sleep 1   # let Kamailio fork its workers / dualgate send its first probes
  PROXY_PIDS=(); mapfile -t PROXY_PIDS < <(pid_tree "$PROXY_PID")
  note "$1 pid $PROXY_PID ($(( ${#PROXY_PIDS[@]} )) process(es)) on $PROXY_ADDR, log $log"
}

start_backends() { # dir maxt
  local port
  for port in "${BACKEND_PORTS[@]}"; do
    spawn_bounded "$2" "$1/uas-$port.out" sipp -sf "$UAS_SCEN" -i 127.0.0.1 -p "$port" -nostdin \
      -buff_size 4194304 -trace_err -error_file "$1/uas-$port-errors.log" -error_overwrite true \
      || { echo "could not start sipp backend on $port"; return 1; }
    UAS_PIDS+=("$SPAWN_PID") UAS_TOS+=("$SPAWN_TO")
  done
  for _ in $(seq 1 50); do
    local ok=1
    for port in "${BACKEND_PORTS[@]}"; do udp_port_busy "$port" || ok=0; done
    [[ $ok == 1 ]] && return 0
    sleep 0.1
  done
  echo "sipp backends did not bind ${BACKEND_PORTS[*]}"; return 1
}

preflight() { # dir: single calls until one goes through (<= 15 tries)
  for _ in $(seq 1 15); do
    timeout -k 2 8 sipp -sf "$UAC_SCEN" "${SIPP_COMMON[@]}" "$PROXY_ADDR" -m 1 -d 0 \
      -timeout 6 -timeout_error >"$1/preflight.out" 2>&1 </dev/null && return 0
    sleep 1
  done
  return 1
}

# ---------------------------------------------------------------- one step
fmt_row() {
  printf '%-8s %-8s %6s %9s %7s %6s %7s %5s %5s %6s %6s %8s %8s  %s\n' "$@"
}
header() {
  fmt_row proxy step rate achieved ok failed retrans p50ms p99ms cpu% sipp% rss_MB pss_MB clean
}

# run_step proxy mode rate secs -> prints one row, sets S_* globals; returns 0 if clean.
# mode: ladder | profile (ladder step with perf attached) | overload (test/scenarios/uac-overload.xml)
run_step() {
  local proxy=$1 mode=$2 rate=$3 secs=$4
  local dir="$OUT/$proxy-$mode-$rate" scen=$UAC_SCEN
  mkdir -p "$dir"
  local count=$(( rate * secs ))
  local limit=$(( rate * (CALL_MS / 1000 + 3) + 500 ))
  local maxt=$(( secs + CALL_MS / 1000 + 20 ))
  local extra=() rttf
  # sipp writes rtt samples in blocks of -rtt_freq and drops a partial last block at exit:
  # pick a block size that divides COUNT, so a clean step keeps every sample
  for rttf in 100 50 25 20 10 5 4 2 1; do (( count % rttf == 0 )) && break; done
  if [[ $mode == overload ]]; then
    scen=$OVL_SCEN
    limit=$(( rate * (CALL_MS / 1000 + 35) + 500 ))   # room for calls waiting out INVITE timer B
    maxt=$(( secs + CALL_MS / 1000 + 70 ))
    extra=(-trace_counts)
  fi
  S_CLEAN=no S_OK=0 S_REASON=""
  start_backends "$dir" $(( maxt + 150 )) || { S_REASON=backends; return 2; }
  if ! preflight "$dir"; then
    fmt_row "$proxy" "$mode" "$rate" - - - - - - - - - - "no(preflight: no call got through, see $dir/preflight.out)"
    stop_backends; S_REASON=preflight; return 2
  fi

  local t_pids=("${PROXY_PIDS[@]}") rss_max=0 pss_max=0 v
  local samples="$dir/samples.txt"; : >"$samples"
  local t0 ; t0=$(date +%s.%N)
  local uas0; uas0=$(cpu_ticks "${UAS_PIDS[@]}")
  spawn_bounded "$maxt" "$dir/uac.out" bash -c 'cd "$1" && shift && exec "$@"' _ "$dir" \
    sipp -sf "$scen" "${SIPP_COMMON[@]}" "$PROXY_ADDR" \
    -r "$rate" -rp 1000 -m "$count" -l "$limit" -d "$CALL_MS" -timeout $(( maxt - 3 )) -timeout_error \
    -trace_stat -stf uac-stat.csv -fd 1 -trace_rtt -rtt_freq "$rttf" "${extra[@]}" \
    -trace_err -error_file uac-errors.log -error_overwrite true \
    || { echo "could not start the sipp caller"; stop_backends; S_REASON=uac; return 2; }
  UAC_TO=$SPAWN_TO UAC_PID=$SPAWN_PID
  # sample every 0.5 s: elapsed proxy_ticks uac_ticks uas_ticks; memory every 2 s
  local i=0 el perf_started=0
  while kill -0 "$UAC_TO" 2>/dev/null; do
    el=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
    echo "$el $(cpu_ticks "${t_pids[@]}") $(cpu_ticks "$UAC_PID") $(cpu_ticks "${UAS_PIDS[@]}")" >>"$samples"
    if (( i % 4 == 0 )); then
      v=$(rss_kb "${t_pids[@]}"); (( v > rss_max )) && rss_max=$v
      v=$(pss_kb "${t_pids[@]}"); (( v > pss_max )) && pss_max=$v
    fi
    if [[ $mode == profile && $perf_started == 0 ]] && awk -v e="$el" 'BEGIN{exit !(e >= 1)}'; then
      perf_started=1
      spawn_bounded 30 "$dir/perf.log" perf record -e cpu-clock -F 999 -g -p "$PROXY_PID" \
        -o "$dir/perf.data" -- sleep 10 && PERF_PID=$SPAWN_PID PERF_TO=$SPAWN_TO
    fi
    i=$(( i + 1 ))
    sleep 0.5
  done
  wait "$UAC_TO"; local rc=$?
  UAC_PID="" UAC_TO=""
  local t1; t1=$(date +%s.%N)
  local uas1; uas1=$(cpu_ticks "${UAS_PIDS[@]}")
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') $(cpu_ticks "${t_pids[@]}") - -" >>"$samples"
  stop_backends
  if [[ -n $PERF_TO ]]; then wait "$PERF_TO" 2>/dev/null; PERF_PID="" PERF_TO=""; fi

  # CPU % of one core over the steady part of the step (from 1 s to SECS s; whole run if short)
  local cpu_proxy cpu_sipp
  read -r cpu_proxy cpu_sipp < <(awk -v s="$secs" -v hz="$HZ" -v uas="$((uas1 - uas0))" '
      { t[NR]=$1; p[NR]=$2; u[NR]=$3; w[NR]=$4 }
      END {
        a=0; b=0
        for (k=1; k<=NR; k++) { if (!a && t[k] >= 1) a=k; if (t[k] <= s && w[k] != "-") b=k }
        if (!a || !b || t[b]-t[a] < 1) { a=1; b=NR-1 }
        if (b <= a) { print "na na"; exit }
        d=t[b]-t[a]
        printf "%.0f %.0f\n", (p[b]-p[a])/hz/d*100, ((u[b]-u[a]) + (w[b]-w[a]))/hz/d*100
      }' "$samples")

  local stat="$dir/uac-stat.csv" rtt counts
  rtt=$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)
  counts=$(ls "$dir"/*_counts.csv 2>/dev/null | head -1)
  if [[ ! -s $stat ]]; then
    fmt_row "$proxy" "$mode" "$rate" - - - - - - - - - - "no(no sipp stats, rc=$rc, see $dir/uac.out)"
    S_REASON=nostats; return 1
  fi
  local total okc failed retr p50=na p99=na pmax=na n achieved=na
  total=$(csv_col "$stat" '^TotalCallCreated$'); okc=$(csv_col "$stat" '^SuccessfulCall\(C\)$')
  failed=$(csv_col "$stat" '^FailedCall\(C\)$'); retr=$(csv_col "$stat" '^Retransmissions\(C\)$')
  if [[ -n $rtt ]]; then
    read -r p50 p99 pmax n < <(rtt_stats "$rtt" 1)
    achieved=$(rtt_rate "$rtt" 1)
  fi
  local rss_mb pss_mb
  rss_mb=$(awk -v k="$rss_max" 'BEGIN{printf "%.1f", k/1024}')
  pss_mb=$(awk -v k="$pss_max" 'BEGIN{printf "%.1f", k/1024}')
  S_RATE=$rate S_ACH=$achieved S_CPU=$cpu_proxy S_RSS=$rss_mb S_PSS=$pss_mb S_P50=$p50 S_P99=$p99
  S_TOTAL=$total S_OK=$okc S_FAILED=$failed S_RETR=$retr S_DIR=$dir S_RC=$rc

  if [[ $mode == overload ]]; then
    local refused completed window
    refused=$(csv_col "$counts" '^[0-9]+_503_Recv$')
    completed=$(csv_col "$counts" '^[0-9]+_200_Recv$')   # last 200 column: the BYE's 200
    window=$(send_window "$stat" "$total")
    S_REFUSED=$refused S_COMPLETED=$completed S_WINDOW=$window
    S_UNFINISHED=$(( total - okc - failed ))
    fmt_row "$proxy" "$mode" "$rate" "$achieved" "$completed" "$failed" "$retr" "$p50" "$p99" \
      "$cpu_proxy" "$cpu_sipp" "$rss_mb" "$pss_mb" "(503: $refused)"
    return 0
  fi

  clean_verdict "$rc" "$total" "$count" "$okc" "$failed" "$retr" "$achieved" "$rate"
  fmt_row "$proxy" "$mode" "$rate" "$achieved" "$okc" "$failed" "$retr" "$p50" "$p99" \
    "$cpu_proxy" "$cpu_sipp" "$rss_mb" "$pss_mb" "$S_CLEAN"
  [[ $S_CLEAN == yes ]]
}

# ---------------------------------------------------------------- main
declare -A MAX MAXROW TOP
echo "dualgate call-rate bench: rates ${RATE_LIST[*]} calls/s, ${SECS}s per step, hold ${CALL_MS}ms; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw output: $OUT"
[[ $HAVE_KAMAILIO == 0 ]] && note "kamailio not found at $KAMAILIO (Debian package kamailio): measuring dualgate alone, no RATIO"

for proxy in $PROXIES; do
  case $proxy in
    dualgate) ;;
    kamailio) [[ $HAVE_KAMAILIO == 1 ]] || continue ;;
    *) die "unknown proxy '$proxy' in PROXIES" ;;
  esac
  echo
  start_proxy "$proxy" || { MAX[$proxy]=0; continue; }
  header
  MAX[$proxy]=0; TOP[$proxy]=no
  for idx in "${!RATE_LIST[@]}"; do
    rate=${RATE_LIST[$idx]}
    run_step "$proxy" ladder "$rate" "$SECS" || break
    MAX[$proxy]=$rate
    MAXROW[$proxy]="cpu=${S_CPU}% rss_mb=$S_RSS pss_mb=$S_PSS setup_ms_p50=$S_P50 p99=$S_P99"
    [[ $idx -eq $(( ${#RATE_LIST[@]} - 1 )) ]] && TOP[$proxy]=yes
    sleep 2   # let the last calls' timewait and the proxy's transactions drain
  done
  stop_proxy
  note "$proxy stopped"
done

# dualgate again, fresh: optional profile at its max clean rate, then the overload step.
DG_MAX=${MAX[dualgate]:-0}
OVL_RATE=0
[[ $DG_MAX -gt 0 ]] && OVL_RATE=$(awk -v m="$DG_MAX" -v f="$OVERLOAD" 'BEGIN{printf "%d", m*f + 0.5}')
PROF_LINE="" OVL_LINE=""
if [[ $PROFILE == 1 ]]; then
  if [[ $DG_MAX -eq 0 ]]; then PROF_LINE="PROFILE skipped: dualgate had no clean step"
  elif ! command -v perf >/dev/null; then PROF_LINE="PROFILE skipped: perf not installed (Debian package linux-perf)"
  elif ! perf stat -e cpu-clock true >/dev/null 2>&1; then PROF_LINE="PROFILE skipped: perf does not work here ($(perf stat -e cpu-clock true 2>&1 | head -1))"
  fi
fi
if [[ ($PROFILE == 1 && -z $PROF_LINE) || $OVL_RATE -gt 0 ]]; then
  echo
  # As an operator would after measuring: cap new calls at the clean rate (sip.max_cps), so the
  # excess is refused with a stateless 503 instead of dragging every call down.
  # OVERLOAD_CAP=0 runs the overload step without a cap.
  CAP=${OVERLOAD_CAP:-$DG_MAX}
  if [[ $CAP -gt 0 ]]; then
    sed "s/^  retry_after: .*/&\n  max_cps: $CAP/" "$DG_CONFIG" >"$OUT/dualgate-capped.yaml"
    grep -q "max_cps: $CAP" "$OUT/dualgate-capped.yaml" || die "could not add max_cps to $DG_CONFIG"
    DG_CONFIG=$OUT/dualgate-capped.yaml
    echo "NOTE dualgate restarted with sip.max_cps=$CAP for the profile and overload steps"
  fi
  if start_proxy dualgate overload; then
    header
    if [[ $PROFILE == 1 && -z $PROF_LINE ]]; then
      psecs=$(( SECS < 12 ? 12 : SECS ))
      run_step dualgate profile "$DG_MAX" "$psecs"
      pdir="$OUT/dualgate-profile-$DG_MAX"
      hw="hardware counters available"
      perf stat -e instructions true 2>&1 | grep -q 'not supported' && hw="no hardware counters on this VM (perf stat -e instructions: not supported), software cpu-clock sampling"
      if [[ -s $pdir/perf.data ]]; then
        perf report -i "$pdir/perf.data" --stdio --no-children -g none --sort symbol --percent-limit 0.5 \
          >"$pdir/perf-report.txt" 2>/dev/null
        perf report -i "$pdir/perf.data" --stdio --children -g none --sort symbol --percent-limit 1 \
          >"$pdir/perf-report-children.txt" 2>/dev/null
        PROF_LINE="PROFILE dualgate at $DG_MAX calls/s, 10 s, $hw: $pdir/perf-report.txt (perf.data beside it; go tool pprof needs perf_to_profile, not packaged, so use: perf report -i $pdir/perf.data)"
      else
        PROF_LINE="PROFILE failed: no perf.data (see $pdir/perf.log)"
      fi
      sleep 2
    fi
    if [[ $OVL_RATE -gt 0 ]]; then
      if run_step dualgate overload "$OVL_RATE" "$SECS"; then
        OVL_LINE=$(awk -v m="$DG_MAX" -v r="$OVL_RATE" -v tot="$S_TOTAL" -v w="$S_WINDOW" -v c="$S_COMPLETED" \
          -v ref="$S_REFUSED" -v f="$S_FAILED" -v un="$S_UNFINISHED" -v rt="$S_RETR" -v p99="$S_P99" -v cpu="$S_CPU" '
          BEGIN {
            off = (w+0 > 0) ? tot/w : 0; good = (w+0 > 0) ? c/w : 0; bad = f + un
            held = (good >= 0.9*m) ? "yes" : "no"
            v = (good >= 0.9*m && bad <= 0.01*tot) ? "held" : (good >= 0.5*m ? "degraded" : "collapsed")
            printf "OVERLOAD proxy=dualgate target_cps=%d (%.2gx max clean %d) offered_cps=%.0f calls=%d completed=%d completed_cps=%.0f (%.0f%% of max clean) refused_503=%d failed=%d unfinished=%d retrans=%d setup_ms_p99=%s cpu=%s%% throughput_held=%s verdict=%s",
              r, r/m, m, off, tot, c, good, (m ? 100*good/m : 0), ref, f, un, rt, p99, cpu, held, v
          }')
      else
        OVL_LINE="OVERLOAD proxy=dualgate target_cps=$OVL_RATE error=${S_REASON:-step_failed}"
      fi
    fi
    stop_proxy
    note "dualgate stopped"
  fi
elif [[ $DG_MAX -eq 0 && $OVERLOAD != 0 ]]; then
  OVL_LINE="OVERLOAD skipped: dualgate had no clean step"
fi

# ---------------------------------------------------------------- summary
echo
{
  for proxy in $PROXIES; do
    [[ -n ${MAX[$proxy]+x} ]] || continue
    extra=""; [[ ${TOP[$proxy]:-no} == yes ]] && extra=" (top of the ladder was clean: the real maximum may be higher)"
    echo "RESULT proxy=$proxy max_clean_cps=${MAX[$proxy]} ${MAXROW[$proxy]:-}$extra"
  done
  if [[ $HAVE_KAMAILIO == 0 ]]; then
    echo "RATIO dualgate/kamailio=n/a (kamailio not installed: dualgate measured alone)"
  elif [[ -n ${MAX[dualgate]+x} && -n ${MAX[kamailio]+x} ]]; then
    if [[ ${MAX[kamailio]} -gt 0 ]]; then
      echo "RATIO dualgate/kamailio max_clean_cps=$(awk -v a="${MAX[dualgate]}" -v b="${MAX[kamailio]}" 'BEGIN{printf "%.2f", a/b}') (${MAX[dualgate]}/${MAX[kamailio]})"
    else
      echo "RATIO dualgate/kamailio=n/a (kamailio had no clean step)"
    fi
  fi
  [[ -n $OVL_LINE ]] && echo "$OVL_LINE"
  [[ -n $PROF_LINE ]] && echo "$PROF_LINE"
} | tee "$OUT/SUMMARY"
if [[ -s ${pdir:-/nonexistent}/perf-report.txt ]]; then
  echo; echo "dualgate CPU profile, self time by symbol ([k] kernel, [.] dualgate):"
  grep -E '^ +[0-9.]+%' "$pdir/perf-report.txt" | head -15 | awk '{printf "  %7s %s %s\n", $1, $2, $3}'
  echo "dualgate and sipgo functions, time including callees:"
  grep -E '^ +[0-9.]+%.*github\.com/(dualgate|emiago)/' "$pdir/perf-report-children.txt" | head -15 | awk '{printf "  %7s %s\n", $1, $4}'
fi
[[ ${MAX[dualgate]:-0} -gt 0 ]]
