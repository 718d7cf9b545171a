#!/usr/bin/env bash
# HTTP benchmark: dualgate's HTTP plane beside nginx serving the same portal files, in one run.
# Usage: make bench (after the SIP bench), make bench-http, or bash bench/http-bench.sh after
# `make build`.
#
# Starts, on loopback only, dualgate (bench/dualgate-http.yaml: plain HTTP on 127.0.0.1:18080,
# log level warn, no rate limits, ephemeral HS256 secret, the demo users) and nginx
# (bench/nginx/nginx.conf on 127.0.0.1:18081, docroot = a copy of static/admin/ made in the
# results directory), then loads each in turn with `wrk -t2 -c64 -d15s --latency`:
#   static   GET /admin/ASSET, no Accept-Encoding: the file as is      nginx, dualgate -> RATIO
#   gzip     the same with Accept-Encoding: gzip (both precompressed)  nginx, dualgate -> RATIO
#   tls      static over HTTPS, self-signed cert (TLS, on by default)   nginx, dualgate -> RATIO
#   healthz  GET /healthz, no auth                                     dualgate
#   api-me   GET /api/me with Authorization: Bearer <token from POST /api/login>   dualgate
# and derives the JWT verification cost per request from healthz vs api-me; then stops both
# servers (by PID) and runs the Go micro-benchmark of the verifier (go test -bench Verify
# ./web/auth). Every process runs under timeout(1) and is stopped by its PID on exit (also on
# Ctrl-C); nothing it did not start is touched. See bench/README.md for how to read the output.
#
# Environment:
#   DURATION=15s   THREADS=2   CONNS=64     wrk settings of every measured run
#   WARMUP=2s            an unmeasured wrk run before each measured one; 0 skips it
#   ASSET=admin.js       the portal file under static/admin/ to serve (index.html is /admin/)
#   GZIP=1               also the gzip pair; 0 skips it
#   TLS=auto             the HTTPS pair: auto = when openssl is installed, 1 = always, 0 = never
#   GOBENCH=1            0 skips the go test -bench Verify step
#   BENCH_USER=admin  BENCH_PASSWORD=dualgate-demo    the demo account (configs/users.yaml)
#   NGINX=nginx on PATH or /usr/sbin/nginx    DUALGATE=bin/dualgate    GO=go
#   HTTP_OUT=bench/results/<time>-http       raw output (wrk output, headers, configs, logs)
#   HTTP_CONFIG=bench/dualgate-http.yaml     dualgate's config (copied into HTTP_OUT, ports shifted)
#   PORT_OFFSET=0        shift every port (18080..18083 TCP, 15060/15062 UDP) by this much
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

DURATION=${DURATION:-15s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2s}
ASSET=${ASSET:-admin.js}
GZIP=${GZIP:-1}
TLS=${TLS:-auto}
GOBENCH=${GOBENCH:-1}
BENCH_USER=${BENCH_USER:-admin}
BENCH_PASSWORD=${BENCH_PASSWORD:-dualgate-demo}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
DUALGATE=${DUALGATE:-$ROOT/bin/dualgate}
GO=${GO:-go}
OUT=${HTTP_OUT:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-http}
GOAL=0.8   # the issue's target: dualgate at least 0.8x nginx's rate on static files

PORT_OFFSET=${PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ && $PORT_OFFSET -lt 47000 ]] || die "PORT_OFFSET must be an integer below 47000"
DG_PORT=$(( 18080 + PORT_OFFSET ))     # dualgate, plain HTTP
NGX_PORT=$(( 18081 + PORT_OFFSET ))    # nginx, plain HTTP
DG_TLS_PORT=$(( 18082 + PORT_OFFSET )) # dualgate, HTTPS (TLS=1)
NGX_TLS_PORT=$(( 18083 + PORT_OFFSET ))
SIP_PORT=$(( 15060 + PORT_OFFSET ))    # dualgate's SIP plane: bound, never loaded
SIP_TLS_PORT=$(( 15062 + PORT_OFFSET ))
DG_CONFIG_SRC=${HTTP_CONFIG:-$BENCH_DIR/dualgate-http.yaml}
NGX_CONF_SRC=$BENCH_DIR/nginx/nginx.conf
STATIC_SRC=$ROOT/static/admin

# ---------------------------------------------------------------- checks
secs_of() { # 15s | 15 | 1m -> seconds
  [[ $1 =~ ^([0-9]+)(s|m)?$ ]] || return 1
  local n=${BASH_REMATCH[1]}; [[ ${BASH_REMATCH[2]} == m ]] && n=$(( n * 60 )); echo "$n"
}
DUR_S=$(secs_of "$DURATION") && [[ $DUR_S -ge 2 ]] || die "DURATION must be like 15s or 1m, at least 2s (got '$DURATION')"
WARM_S=$(secs_of "$WARMUP") || die "WARMUP must be like 2s, or 0 (got '$WARMUP')"
for v in "$THREADS" "$CONNS"; do
  [[ $v =~ ^[0-9]+$ && $v -gt 0 ]] || die "THREADS and CONNS must be positive integers (got '$v')"
done
[[ $CONNS -ge $THREADS ]] || die "CONNS ($CONNS) must be at least THREADS ($THREADS) for wrk"
command -v wrk >/dev/null || die "wrk not found: install the Debian package wrk (apt-get install wrk)"
command -v curl >/dev/null || die "curl not found: install the Debian package curl"
for t in timeout ss ps awk gzip cmp sed; do command -v "$t" >/dev/null || die "$t not found"; done
TLS_NOTE=""
case $TLS in
  auto) TLS=1; command -v openssl >/dev/null || { TLS=0; TLS_NOTE="openssl not found (Debian package openssl): no HTTPS pair"; } ;;
  1) command -v openssl >/dev/null || die "TLS=1 needs openssl (Debian package openssl)" ;;
  0) ;;
  *) die "TLS must be auto, 1 or 0 (got '$TLS')" ;;
esac
[[ -x $DUALGATE ]] || die "$DUALGATE not built: run 'make build' (make bench does it)"
[[ -f $STATIC_SRC/$ASSET ]] || die "no $STATIC_SRC/$ASSET: ASSET must name a file of the admin portal ($(ls "$STATIC_SRC" 2>/dev/null | tr '\n' ' '))"
HAVE_NGINX=1
[[ -x $NGINX ]] || HAVE_NGINX=0
ports=("$DG_PORT"); [[ $HAVE_NGINX == 1 ]] && ports+=("$NGX_PORT")
[[ $TLS == 1 ]] && { ports+=("$DG_TLS_PORT"); [[ $HAVE_NGINX == 1 ]] && ports+=("$NGX_TLS_PORT"); }
tcp_port_busy() { ss -Htln "sport = :$1" | grep -q .; }
for p in "${ports[@]}"; do
  tcp_port_busy "$p" && die "TCP port $p on this machine is in use (ss -tlnp 'sport = :$p'); the HTTP bench needs ${ports[*]} (PORT_OFFSET=N shifts them)"
done
for p in "$SIP_PORT" "$SIP_TLS_PORT"; do
  udp_port_busy "$p" && die "UDP port $p on this machine is in use (dualgate's idle SIP plane needs $SIP_PORT and $SIP_TLS_PORT; PORT_OFFSET=N shifts them)"
done
mkdir -p "$OUT" || die "cannot create $OUT"

# ---------------------------------------------------------------- files for this run
# The configs actually used are written into OUT: ports shifted, users_file made absolute (so
# it does not depend on where the copy lives), TLS settings for the HTTPS instance.
DG_CONFIG=$OUT/dualgate-http.yaml
dg_sed="s/127\.0\.0\.1:18080/127.0.0.1:$DG_PORT/; s/udp:127\.0\.0\.1:15060/udp:127.0.0.1:$SIP_PORT/"
dg_sed+="; s#^users_file: *\([^/ ][^ ]*\)#users_file: $BENCH_DIR/\1#"
sed "$dg_sed" "$DG_CONFIG_SRC" >"$DG_CONFIG" || die "cannot write $DG_CONFIG"
"$DUALGATE" check -config "$DG_CONFIG" >"$OUT/dualgate-check.log" 2>&1 ||
  die "bench config $DG_CONFIG_SRC is invalid for $DUALGATE: $(tr '\n' ' ' <"$OUT/dualgate-check.log")"

if [[ $TLS == 1 ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$OUT/bench-key.pem" -out "$OUT/bench-cert.pem" \
    >"$OUT/openssl.log" 2>&1 || die "openssl could not make the self-signed certificate (see $OUT/openssl.log)"
  DG_TLS_CONFIG=$OUT/dualgate-https.yaml
  sed "s/127\.0\.0\.1:$DG_PORT/127.0.0.1:$DG_TLS_PORT/; s/udp:127\.0\.0\.1:$SIP_PORT/udp:127.0.0.1:$SIP_TLS_PORT/
       s#^    mode: off.*#    mode: files\n    cert_file: $OUT/bench-cert.pem\n    key_file: $OUT/bench-key.pem#" \
    "$DG_CONFIG" >"$DG_TLS_CONFIG"
  grep -q "mode: files" "$DG_TLS_CONFIG" || die "could not switch $DG_TLS_CONFIG to tls mode files"
  "$DUALGATE" check -config "$DG_TLS_CONFIG" >>"$OUT/dualgate-check.log" 2>&1 ||
    die "HTTPS variant $DG_TLS_CONFIG is invalid (see $OUT/dualgate-check.log)"
fi

# nginx gets the same files, and the same precompressed copies dualgate makes at start
# (web/static.go: gzip best compression, kept only when smaller than 9/10 of the file).
NGX_DIR=$OUT/nginx
if [[ $HAVE_NGINX == 1 ]]; then
  mkdir -p "$NGX_DIR/www/admin" "$NGX_DIR/logs" "$NGX_DIR/tmp"
  cp -R "$STATIC_SRC/." "$NGX_DIR/www/admin/" || die "cannot copy $STATIC_SRC"
  while IFS= read -r -d '' f; do
    gzip -9 -n -c "$f" >"$f.gz"
    [[ $(stat -c %s "$f.gz") -lt $(( $(stat -c %s "$f") * 9 / 10 )) ]] || rm -f "$f.gz"
  done < <(find "$NGX_DIR/www/admin" -type f ! -name '*.gz' -print0)
  ngx_sed="s/127\.0\.0\.1:18081/127.0.0.1:$NGX_PORT/; s/127\.0\.0\.1:18083/127.0.0.1:$NGX_TLS_PORT/"
  if [[ $TLS == 1 ]]; then
    ngx_sed+="; s/^\([[:space:]]*\)#TLS /\1/"
    cp "$OUT/bench-cert.pem" "$OUT/bench-key.pem" "$NGX_DIR/"
  fi
  sed "$ngx_sed" "$NGX_CONF_SRC" >"$NGX_DIR/nginx.conf"
  NGX_USER=""; [[ $(id -u) -eq 0 ]] && NGX_USER=" user root root;"   # workers can read OUT
  NGX_ARGS=(-p "$NGX_DIR/" -c "$NGX_DIR/nginx.conf" -e logs/error.log -g "daemon off;$NGX_USER")
  "$NGINX" -t -q "${NGX_ARGS[@]}" >"$OUT/nginx-check.log" 2>&1 ||
    die "nginx rejects $NGX_DIR/nginx.conf: $(tr '\n' ' ' <"$OUT/nginx-check.log")"
fi

# ---------------------------------------------------------------- process bookkeeping
# One server is "name pid timeout_pid comm"; all are stopped on exit.
declare -A SRV_PID SRV_TO SRV_COMM
WRK_PID="" WRK_TO=""
stop_server() {
  [[ -n ${SRV_PID[$1]:-} ]] && stop_pid "${SRV_PID[$1]}" "${SRV_COMM[$1]}" "${SRV_TO[$1]}"
  unset "SRV_PID[$1]" "SRV_TO[$1]"
}
cleanup() {
  local s
  [[ -n $WRK_PID ]] && stop_pid "$WRK_PID" wrk "$WRK_TO"
  for s in "${!SRV_PID[@]}"; do stop_server "$s"; done
}
trap cleanup EXIT
trap 'echo "interrupted: stopping what this run started"; exit 130' INT TERM

# Upper bound on a server's life: every wrk run with its warm-up, plus start and checks.
SERVER_MAXT=$(( 10 * (DUR_S + WARM_S + 15) + 120 ))

start_server() { # name port comm cmd...
  local name=$1 port=$2 comm=$3; shift 3
  local log="$OUT/$name.log"
  spawn_bounded "$SERVER_MAXT" "$log" "$@" || { echo "could not start $name; log:"; tail -20 "$log"; return 1; }
  SRV_PID[$name]=$SPAWN_PID SRV_TO[$name]=$SPAWN_TO SRV_COMM[$name]=$comm
  for _ in $(seq 1 100); do
    [[ -d /proc/$SPAWN_PID ]] || break
    if tcp_port_busy "$port"; then
      sleep 0.5   # nginx forks its workers after binding
      note "$name pid $SPAWN_PID ($(pid_tree "$SPAWN_PID" | wc -l) process(es)) on 127.0.0.1:$port, log $log"
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not come up on 127.0.0.1:$port; log $log:"; tail -20 "$log"; stop_server "$name"; return 1
}

# ---------------------------------------------------------------- one measured run
fmt_row() {
  printf '%-8s %-7s %-18s %7s %10s %7s %7s %7s %6s %5s %5s %7s %7s %7s  %s\n' "$@"
}
header() {
  fmt_row server test path bytes req/s p50ms p99ms non2xx errors cpu% wrk% cpu_us rss_MB pss_MB
}
to_ms() { # wrk latency (123.45us | 1.23ms | 1.02s) -> ms
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); printf "%.3f", v/1000}
    else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.2f", v}
    else if (v ~ /s$/)  {sub(/s$/,"",v); printf "%.0f", v*1000}
    else print "na" }'
}

# run_test server test url [curl/wrk header...]: prints one row; sets R_* globals.
# Returns 0 when wrk produced a rate with no socket errors and no non-2xx answers.
run_test() {
  local server=$1 test=$2 url=$3; shift 3
  local hdrs=("$@") wh=() ch=() h
  for h in "${hdrs[@]}"; do wh+=(-H "$h"); ch+=(-H "$h"); done
  local name=${server%-tls}   # the HTTPS dualgate is a second process, shown as dualgate
  local label="$name-$test" path="/${url#*://*/}"
  local pids; mapfile -t pids < <(pid_tree "${SRV_PID[$server]}")
  R_RPS=na R_P50=na R_P99=na R_CPU=na R_US=na R_RSS=na R_PSS=na R_BYTES=na
  # One request first: it must be 200; keep its headers; its body size is the "bytes" column.
  local code bytes
  read -r code bytes < <(curl -sS -k -m 5 "${ch[@]}" -D "$OUT/$label.headers" -o "$OUT/$label.body" \
    -w '%{http_code} %{size_download}\n' "$url" 2>>"$OUT/$label.curl.err")
  if [[ ${code:-000} != 200 ]]; then
    fmt_row "$name" "$test" "$path" - - - - - - - - - - - "(curl got ${code:-nothing}; see $OUT/$label.headers)"
    return 1
  fi
  if (( WARM_S > 0 )); then
    timeout -k 5 $(( WARM_S + 20 )) wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "${wh[@]}" "$url" \
      >"$OUT/$label.warmup" 2>&1 </dev/null
  fi
  local samples="$OUT/$label.samples" rss_max=0 pss_max=0 v i=0 el t0
  : >"$samples"
  t0=$(date +%s.%N)
  spawn_bounded $(( DUR_S + 30 )) "$OUT/$label.wrk" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
    "${wh[@]}" "$url" || { echo "could not start wrk"; return 2; }
  WRK_PID=$SPAWN_PID WRK_TO=$SPAWN_TO
  # every 0.5 s: elapsed server_ticks wrk_ticks (wrk_ticks "-" once wrk is gone); memory every 2 s
  while kill -0 "$WRK_TO" 2>/dev/null; do
    el=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
    local st wt="-"
    st=$(cpu_ticks "${pids[@]}")
    [[ -d /proc/$WRK_PID ]] && wt=$(cpu_ticks "$WRK_PID")
    [[ -d /proc/$WRK_PID ]] || wt="-"
    echo "$el $st $wt" >>"$samples"
    if (( i % 4 == 0 )); then
      v=$(rss_kb "${pids[@]}"); (( v > rss_max )) && rss_max=$v
      v=$(pss_kb "${pids[@]}"); (( v > pss_max )) && pss_max=$v
    fi
    i=$(( i + 1 ))
    sleep 0.5
  done
  wait "$WRK_TO"; local rc=$?
  WRK_PID="" WRK_TO=""
  # CPU in % of ONE core over the steady part: from 1 s (0.5 s in runs under 4 s) to the last
  # sample with wrk alive.
  local cpu wcpu
  read -r cpu wcpu < <(awk -v hz="$HZ" -v st="$( (( DUR_S < 4 )) && echo 0.5 || echo 1)" '
      { t[NR]=$1; s[NR]=$2; w[NR]=$3 }
      END {
        a=0; b=0
        for (k=1; k<=NR; k++) { if (!a && t[k] >= st) a=k; if (w[k] != "-") b=k }
        if (!a || b <= a || t[b]-t[a] < 0.9) { print "na na"; exit }
        d=t[b]-t[a]
        printf "%.0f %.0f\n", (s[b]-s[a])/hz/d*100, (w[b]-w[a])/hz/d*100
      }' "$samples")
  local f="$OUT/$label.wrk" rps p50 p99 non2xx errs
  rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
  p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$f")")
  p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$f")")
  non2xx=$(awk '/Non-2xx or 3xx responses/{print $NF}' "$f"); non2xx=${non2xx:-0}
  errs=$(awk '/Socket errors/{gsub(/,/,""); print $4+$6+$8+$10}' "$f"); errs=${errs:-0}
  local us=na
  [[ -n $rps && $cpu != na ]] && us=$(awk -v c="$cpu" -v r="$rps" 'BEGIN{printf "%.1f", c/100*1e6/r}')
  local rss_mb pss_mb
  rss_mb=$(awk -v k="$rss_max" 'BEGIN{printf "%.1f", k/1024}')
  pss_mb=$(awk -v k="$pss_max" 'BEGIN{printf "%.1f", k/1024}')
  R_RPS=${rps:-na} R_P50=$p50 R_P99=$p99 R_CPU=$cpu R_US=$us R_RSS=$rss_mb R_PSS=$pss_mb R_BYTES=$bytes
  local note_=""
  [[ $rc -ne 0 ]] && note_="(wrk rc=$rc, see $f)"
  [[ -z $rps ]] && note_="(no rate from wrk, see $f)"
  fmt_row "$name" "$test" "$path" "$bytes" "${rps:-na}" "$p50" "$p99" "$non2xx" "$errs" "$cpu" "$wcpu" \
    "$us" "$rss_mb" "$pss_mb" "$note_"
  [[ $rc -eq 0 && -n $rps && $non2xx == 0 && $errs == 0 ]]
}

# ---------------------------------------------------------------- main
declare -A RPS RES
FAILED=0
record() { # key server test: remember the last run's figures for the summary
  RPS[$1]=$R_RPS
  RES[$1]="server=$2 test=$3 req_s=$R_RPS bytes=$R_BYTES lat_p50_ms=$R_P50 lat_p99_ms=$R_P99 cpu=${R_CPU}% cpu_us_per_req=$R_US rss_mb=$R_RSS pss_mb=$R_PSS"
}
measure() { # key server test url [header...]
  local key=$1 server=$2 test=$3; shift 3
  if [[ -z ${SRV_PID[$server]:-} ]]; then RPS[$key]=na; return; fi
  run_test "$server" "$test" "$@" || FAILED=1
  record "$key" "${server%-tls}" "$test"
}

echo "dualgate HTTP bench: wrk -t$THREADS -c$CONNS -d$DURATION --latency (warm-up $WARMUP), asset /admin/$ASSET; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw output: $OUT"
echo "$(wrk -v 2>&1 | head -1 | cut -c1-60);$([[ $HAVE_NGINX == 1 ]] && echo " $("$NGINX" -v 2>&1);") dualgate $DUALGATE"
awk '{exit !($1 > 1)}' /proc/loadavg &&
  note "the machine is busy (load average $(cut -d' ' -f1 /proc/loadavg) before the bench starts): expect low, noisy figures; cpu% + wrk% well below $(( $(nproc) * 100 )) shows it"
[[ -n $TLS_NOTE ]] && note "$TLS_NOTE"
[[ $HAVE_NGINX == 0 ]] && note "nginx not found at $NGINX (Debian package nginx-light or nginx): measuring dualgate alone, no RATIO"
echo

DG_COMM=$(basename "$DUALGATE" | cut -c1-15)   # what /proc/PID/comm shows: stop_pid checks it
start_server dualgate "$DG_PORT" "$DG_COMM" "$DUALGATE" -config "$DG_CONFIG" || exit 1
[[ $HAVE_NGINX == 1 ]] && { start_server nginx "$NGX_PORT" "$(basename "$NGINX" | cut -c1-15)" "$NGINX" "${NGX_ARGS[@]}" || exit 1; }
if [[ $TLS == 1 ]]; then
  start_server dualgate-tls "$DG_TLS_PORT" "$DG_COMM" "$DUALGATE" -config "$DG_TLS_CONFIG" || exit 1
fi

DG=http://127.0.0.1:$DG_PORT NGX=http://127.0.0.1:$NGX_PORT
APATH=/admin/$ASSET; [[ $ASSET == index.html ]] && APATH=/admin/
# The binary embeds static/ at build time: it must serve the very bytes nginx gets.
curl -sS -m 5 -o "$OUT/dualgate-asset" "$DG$APATH" 2>"$OUT/asset-check.err" ||
  die "dualgate does not serve $APATH: $(cat "$OUT/asset-check.err")"
cmp -s "$OUT/dualgate-asset" "$STATIC_SRC/$ASSET" ||
  die "$DUALGATE serves a different $APATH than $STATIC_SRC/$ASSET: rebuild it (make build; make bench does)"

# A bearer token from the embedded login, as a portal or API client gets one.
login_body=$(printf '{"username":"%s","password":"%s"}' "$BENCH_USER" "$BENCH_PASSWORD")
login=$(curl -sS -m 5 -X POST -H 'Content-Type: application/json' --data "$login_body" \
  -w '\n%{http_code}' "$DG/api/login" 2>&1)
TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' <<<"$login" | head -1)
if [[ -z $TOKEN ]]; then
  note "POST /api/login as $BENCH_USER gave no token ($(tr '\n' ' ' <<<"$login" | cut -c1-200)): the api-me run is skipped"
fi

header
measure nginx-static nginx static "$NGX$APATH"
measure dualgate-static dualgate static "$DG$APATH"
if [[ $GZIP == 1 ]]; then
  measure nginx-gzip nginx gzip "$NGX$APATH" "Accept-Encoding: gzip"
  measure dualgate-gzip dualgate gzip "$DG$APATH" "Accept-Encoding: gzip"
  for s in nginx dualgate; do
    [[ -f $OUT/$s-gzip.headers ]] && ! grep -qi '^content-encoding: gzip' "$OUT/$s-gzip.headers" &&
      note "$s sent $APATH uncompressed to a gzip client (too small to gain 10 %?): the gzip pair compares plain bodies"
  done
fi
if [[ $TLS == 1 ]]; then
  tls_of() { timeout 5 openssl s_client -brief -connect "127.0.0.1:$1" </dev/null 2>&1 |
    awk '/^Protocol version:/{p=$NF} /^Ciphersuite:/{c=$NF} END{print p" "c}'; }
  [[ -n ${SRV_PID[nginx]:-} ]] && note "HTTPS: nginx negotiates $(tls_of "$NGX_TLS_PORT"), dualgate $(tls_of "$DG_TLS_PORT") (self-signed P-256 certificate)"
  measure nginx-tls nginx tls "https://127.0.0.1:$NGX_TLS_PORT$APATH"
  measure dualgate-tls dualgate-tls tls "https://127.0.0.1:$DG_TLS_PORT$APATH"
fi
measure dualgate-healthz dualgate healthz "$DG/healthz"
if [[ -n $TOKEN ]]; then
  measure dualgate-me dualgate api-me "$DG/api/me" "Authorization: Bearer $TOKEN"
else
  RPS[dualgate-me]=na FAILED=1
fi
for s in dualgate-tls nginx dualgate; do stop_server "$s"; done
note "servers stopped; load average $(cut -d' ' -f1-3 /proc/loadavg)"

GOB_LINES=()
if [[ $GOBENCH == 1 ]]; then
  if command -v "$GO" >/dev/null; then
    (cd "$ROOT" && timeout -k 5 600 "$GO" test -run '^$' -bench Verify -benchmem ./web/auth) \
      >"$OUT/go-bench-verify.txt" 2>&1 || FAILED=1
    mapfile -t GOB_LINES < <(grep -E '^Benchmark' "$OUT/go-bench-verify.txt")
    [[ ${#GOB_LINES[@]} -gt 0 ]] || GOB_LINES=("GOBENCH failed: see $OUT/go-bench-verify.txt")
  else
    GOB_LINES=("GOBENCH skipped: $GO not found")
  fi
fi

# ---------------------------------------------------------------- summary
ratio_line() { # test
  local n=${RPS[nginx-$1]:-na} d=${RPS[dualgate-$1]:-na}
  [[ $HAVE_NGINX == 1 ]] || { echo "RATIO dualgate/nginx $1=n/a (nginx not installed: dualgate measured alone)"; return; }
  if [[ $n == na || $d == na ]]; then echo "RATIO dualgate/nginx $1=n/a (a run failed)"; return; fi
  awk -v d="$d" -v n="$n" -v t="$1" -v g="$GOAL" 'BEGIN{ r=d/n
    printf "RATIO dualgate/nginx %s req_s=%.2f (%.0f/%.0f) goal>=%.1f %s\n", t, r, d, n, g, (r >= g ? "met" : "MISSED") }'
}
echo
{
  for k in nginx-static dualgate-static nginx-gzip dualgate-gzip nginx-tls dualgate-tls dualgate-healthz dualgate-me; do
    [[ -n ${RES[$k]:-} ]] && echo "RESULT ${RES[$k]} path=$([[ $k == *healthz ]] && echo /healthz || { [[ $k == *-me ]] && echo /api/me || echo "$APATH"; })"
  done
  ratio_line static
  [[ $GZIP == 1 ]] && ratio_line gzip
  [[ $TLS == 1 ]] && ratio_line tls
  h=${RPS[dualgate-healthz]:-na} m=${RPS[dualgate-me]:-na}
  if [[ $h != na && $m != na ]]; then
    hs=${RES[dualgate-healthz]##*cpu_us_per_req=} ms=${RES[dualgate-me]##*cpu_us_per_req=}
    awk -v h="$h" -v m="$m" -v hu="${hs%% *}" -v mu="${ms%% *}" 'BEGIN{
      printf "JWT verify cost per request (estimate) = 1/rps(/api/me) - 1/rps(/healthz) = %.1f us (%.0f vs %.0f req/s at the same concurrency)", 1e6/m - 1e6/h, m, h
      if (hu != "na" && mu != "na") printf "; dualgate CPU per request %.1f vs %.1f us = %.1f us", mu, hu, mu - hu
      printf "\n" }'
  else
    echo "JWT verify cost per request: n/a (healthz or api-me run failed)"
  fi
  for l in "${GOB_LINES[@]}"; do
    [[ $l == Benchmark* ]] && echo "GOBENCH $(awk '{printf "%s %s %s %s %s %s %s %s", $1, $2, $3, $4, $5, $6, $7, $8}' <<<"$l")" || echo "$l"
  done
} | tee "$OUT/SUMMARY"
[[ $FAILED == 0 ]]
