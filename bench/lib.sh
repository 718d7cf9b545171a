# shellcheck shell=bash
# Helpers for bench/sip-bench.sh (sourced): process accounting from /proc, bounded process
# start/stop by PID, and parsing of sipp's csv output.
HZ=$(getconf CLK_TCK)

die() { echo "ERROR: $*" >&2; exit 2; }
note() { echo "NOTE $*"; }

udp_port_busy() { ss -Huln "sport = :$1" | grep -q .; }

# spawn_bounded SECS LOG CMD...: run CMD under timeout(1) (killed after SECS whatever happens to
# this script) with output to LOG. Sets SPAWN_TO (the timeout PID) and SPAWN_PID (the command's
# own PID, a child of timeout; what we measure and signal).
spawn_bounded() {
  local secs=$1 log=$2; shift 2
  timeout -k 5 "$secs" "$@" >"$log" 2>&1 </dev/null &
  SPAWN_TO=$!
  SPAWN_PID=""
  for _ in $(seq 1 50); do
    SPAWN_PID=$(ps -o pid= --ppid "$SPAWN_TO" 2>/dev/null | tr -d ' ' | head -1)
    [[ -n $SPAWN_PID ]] && return 0
    kill -0 "$SPAWN_TO" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# stop_pid PID COMM [TIMEOUT_PID]: SIGTERM a process we started (only if it is still COMM),
# wait up to 10 s, then SIGKILL; then reap its timeout(1) wrapper.
stop_pid() {
  local p=$1 comm=$2 to=${3:-}
  if [[ -n $p && -r /proc/$p/comm && "$(cat "/proc/$p/comm" 2>/dev/null)" == "$comm" ]]; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -d /proc/$p ]] || break; sleep 0.2; done
    [[ -d /proc/$p ]] && kill -KILL "$p" 2>/dev/null
  fi
  if [[ -n $to ]]; then
    for _ in $(seq 1 25); do kill -0 "$to" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$to" 2>/dev/null && kill -TERM "$to" 2>/dev/null
    wait "$to" 2>/dev/null || true
  fi
  return 0
}

# pid and all its descendants (Kamailio: main process + workers)
pid_tree() {
  local p=$1 c
  [[ -d /proc/$p ]] || return 0
  echo "$p"
  for c in $(ps -o pid= --ppid "$p"); do pid_tree "$c"; done
}
# utime+stime ticks summed over PIDs
cpu_ticks() {
  local s=0 p f
  for p in "$@"; do
    read -r f 2>/dev/null <"/proc/$p/stat" || continue
    f=${f##*) }                   # strip "pid (comm) "; fields now start at state (field 3)
    # shellcheck disable=SC2086
    set -- $f
    s=$(( s + ${12} + ${13} ))    # utime = field 14, stime = field 15 in proc(5) numbering
  done
  echo "$s"
}
# PSS / RSS in kB summed over PIDs (summed RSS double-counts Kamailio's shared memory)
pss_kb() {
  local p
  for p in "$@"; do awk '/^Pss:/{s+=$2} END{print s+0}' "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '{s+=$1} END{print s+0}'
}
rss_kb() {
  local p
  for p in "$@"; do awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null; done | awk '{s+=$1} END{print s+0}'
}

# rtt_stats FILE RTD: "p50 p99 max n" (integer ms) of sipp's *_rtt.csv (Date_ms;rtt_ms;rtd_no)
rtt_stats() {
  awk -F';' -v r="$2" 'NR>1 && $3==r {print $2}' "$1" | sort -n | awk '
    function at(q,  i) { i = int(NR*q + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; return a[i] }
    {a[NR]=$1} END{ if (NR==0) {print "na na na 0"; exit}; printf "%s %s %s %d\n", at(0.50), at(0.99), a[NR], NR }'
}
# rtt_rate FILE RTD: achieved call rate of the calls in the rtt file: (n-1)/(last start - first
# start), start = Date_ms - rtt
rtt_rate() {
  awk -F';' -v r="$2" 'NR>1 && $3==r { s=$1-$2; if(n==0||s<mn)mn=s; if(n==0||s>mx)mx=s; n++ }
    END{ if(n>1 && mx>mn) printf "%.1f\n", (n-1)*1000/(mx-mn); else print "na" }' "$1"
}
# csv_col FILE COLNAME: value of a named column in the last line of a sipp -trace_stat or
# -trace_counts csv (semicolon separated, header first). COLNAME may be an awk regex
# anchored by the caller, e.g. '^[0-9]+_503_Recv$' (the last matching column wins).
csv_col() {
  awk -F';' -v c="$2" 'NR==1{for(i=1;i<=NF;i++) if($i ~ c) k=i; next} {v=$k} END{print (k ? v+0 : "na")}' "$1"
}
# send_window FILE TOTAL: seconds sipp took to create TOTAL calls, from the 1 s rows of a
# -trace_stat csv (linear interpolation inside the second in which the last call was created).
send_window() {
  awk -F';' -v tot="$2" '
    function ep(s,  a) { split(s, a, "\t"); return a[3] + 0 }   # "date\ttime\tepoch"
    NR==1 { for(i=1;i<=NF;i++){ if($i=="TotalCallCreated") c=i; if($i=="StartTime") st=i; if($i=="CurrentTime") ct=i }; next }
    { t = ep($ct) - ep($st); n = $c + 0
      if (n >= tot && !done) { w = (n > pn) ? pt + (tot-pn)/(n-pn)*(t-pt) : t; done=1 }
      pt = t; pn = n }
    END { if (done && w > 0) printf "%.2f\n", w; else print "na" }' "$1"
}

# clean_verdict RC TOTAL COUNT OK FAILED RETRANS ACHIEVED RATE sets S_CLEAN (yes, or no(reasons))
# and S_REASON for one load step (bench/README.md, "What clean means"): sipp ended in time
# (RC not 124/137), created COUNT calls and all of them succeeded, none failed, retransmissions
# at most MAX_RETRANS_PCT % of COUNT, and the achieved rate (na: not measured) at least 95 % of
# RATE.
clean_verdict() {
  local rc=$1 total=$2 count=$3 okc=$4 failed=$5 retr=$6 achieved=$7 rate=$8 reason=""
  [[ $rc -eq 124 || $rc -eq 137 ]] && reason+="timeout,"
  [[ $total -ne $count ]] && reason+="created<$count,"
  [[ $okc -ne $count ]] && reason+="ok<$count,"
  [[ $failed -ne 0 ]] && reason+="failed,"
  awk -v r="$retr" -v c="$count" -v m="$MAX_RETRANS_PCT" 'BEGIN{exit !(r*100 > c*m)}' && reason+="retrans>${MAX_RETRANS_PCT}%,"
  if [[ $achieved == na ]]; then reason+="no_rtt,"
  elif awk -v a="$achieved" -v r="$rate" 'BEGIN{exit !(a < 0.95*r)}'; then reason+="rate<95%,"; fi
  S_CLEAN=yes; [[ -n $reason ]] && S_CLEAN="no(${reason%,})"
  S_REASON=${reason%,}
  return 0
}
