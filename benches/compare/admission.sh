#!/usr/bin/env bash
# admission.sh: admission control under overload, side by side, in one run on one machine.
#
# Servers (RSA-2048 key on one SoftHSM token, 127.0.0.1 only, all pinned to SERVER_CPU):
#   hsmgate-on    target/release/hsmgate, admission control on (the default)
#   hsmgate-off   the same with [admission] enabled = false
#   hsmgate-b     HSMGATE_B (another build, e.g. of another commit), configured as
#                 hsmgate-on: an A/B of two builds in one run (SERVERS="hsmgate-on hsmgate-b ...")
#   hsmgate-nice0 admission on, signer threads at the process's priority (signer_nice = 0;
#                 not in the default SERVERS: an A/B of the priority of established clients)
#   nginx-libp11  2 single-process nginx instances + libp11 (as compare.sh)
# each in front of a plain nginx upstream.
#
# Capacity: hsmgate-off's closed-loop TLS 1.3 full-handshake rate (CONNS connections).
# Then, for each factor in SWEEP (0.5 1 1.5 2 3 5), every server gets the same offered open
# loop of factor x capacity new TLS 1.3 connections/s (hsmgate-load --rate, one thread,
# per-attempt timeout SWEEP_TIMEOUT), while a second hsmgate-load keeps ONE keep-alive
# connection (opened 1 s before the flood) sending KA_RATE requests/s: the established
# client's latency under the flood. Recorded per point: goodput (completed handshakes/s),
# p50/p99 of completed handshakes (and for hsmgate the server's p99: the bucket of
# hsmgate_tls_handshake_wait_seconds, from the kernel's receipt of the ClientHello, that
# holds it), shed count (TLS alerts) and time to the alert (p50/p99
# as the client measures it from its connect, and for hsmgate the server's own p99 from
# accept to alert written: the bucket of hsmgate_tls_shed_duration_seconds that holds it),
# timeouts, the keep-alive p50/p99, the server's resident memory after the point, and for
# hsmgate the most handshakes seen waiting for admission during it (polled every 250 ms)
# and how many of its shed handshakes the accept loop shed itself (no task; see
# proxy/src/door.rs).
#
# Output: benches/results/admission-DATE.md (table), -raw.jsonl and .svg (plot-sweep).
# Knobs: SWEEP, DURATION (5s), SWEEP_TIMEOUT (3s), CONNS (50), KA_RATE (50), LOAD_CPU,
# SERVER_CPU, NGINX_BASELINE (default benches/nginx-baseline), RESULTS, KEEP=1, PORT_UP (8180), PORT_TLS13 (8543),
# PORT_HSMGATE (9543), PORT_ADMIN (9911), ON_NICE (hsmgate-on's signer_nice; default: hsmgate's), SERVERS ("hsmgate-on hsmgate-off nginx-libp11").
# HSMGATE_B (the binary of hsmgate-b).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=${NGINX_BASELINE:-$ROOT/benches/nginx-baseline}
SWEEP=${SWEEP:-"0.5 1 1.5 2 3 5"} DURATION=${DURATION:-5s} SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-3s}
CONNS=${CONNS:-50} KA_RATE=${KA_RATE:-50} RESULTS=${RESULTS:-$ROOT/benches/results}
PORT_ADMIN=${PORT_ADMIN:-9911} PORT_UP=${PORT_UP:-8180} PORT_TLS12=${PORT_TLS12:-8542} PORT_TLS13=${PORT_TLS13:-8543} PORT_HSMGATE=${PORT_HSMGATE:-9543}
SERVERS=(${SERVERS:-hsmgate-on hsmgate-off nginx-libp11})
SCRIPT=admission
# shellcheck source=lib.sh
. "$HERE/lib.sh"

[[ -d $BASE ]] || die "benches/nginx-baseline not found (or set NGINX_BASELINE)"
dpkg -s libengine-pkcs11-openssl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q libengine-pkcs11-openssl >/dev/null || die "needs libengine-pkcs11-openssl"
if [[ " ${SERVERS[*]} " == *" hsmgate-b "* ]]; then
  [[ -x ${HSMGATE_B:-} ]] || die "hsmgate-b needs HSMGATE_B=PATH, an executable"
fi
ports_free "$PORT_UP" "$PORT_TLS12" "$PORT_TLS13" "$PORT_HSMGATE" "$PORT_ADMIN"
pin_layout
build_release
make_work admission
mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RAW="$RESULTS/admission-$STAMP-raw.jsonl" OUT="$RESULTS/admission-$STAMP.md"

"$BASE/setup-token.sh" "$WORK" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; die "setup-token.sh failed"; }
# shellcheck disable=SC1091
. "$WORK/env.sh"
export SOFTHSM2_CONF OPENSSL_CONF="$WORK/openssl-pkcs11.cnf"
printf '1234' >"$WORK/pin"
for mode in on off nice0; do
  enabled=true; [[ $mode == off ]] && enabled=false
  nice=${ON_NICE:-}; [[ $mode == nice0 ]] && nice=0
  token_toml "[admin]
address = \"127.0.0.1:$PORT_ADMIN\"
[admission]
enabled = $enabled
${nice:+signer_nice = $nice}" >"$WORK/hsmgate-$mode.toml"
done
# server_buckets SERVER PREFIX: hsmgate's shed-time histogram (PREFIX.shed) and its
# histogram of completed full handshakes' waits from the kernel's receipt of the
# ClientHello (PREFIX.wait); empty for nginx.
server_buckets() {
  : >"$2.shed"
  : >"$2.wait"
  echo 0 >"$2.inline"
  [[ $1 == hsmgate-* ]] || return 0
  hist_buckets "$PORT_ADMIN" hsmgate_tls_shed_duration_seconds_bucket "$2.shed"
  wait_buckets "$PORT_ADMIN" "$2.wait"
  # Handshakes shed by the accept loop itself (builds before 2026-12-03 evening: none).
  curl -s --max-time 2 "http://127.0.0.1:$PORT_ADMIN/metrics" 2>/dev/null \
    | awk 'index($0, "hsmgate_tls_answered_at_accept_total{result=\"shed\"}") == 1 { v = $NF }
           END { print v + 0 }' >"$2.inline"
  # Shed handshakes by reason (queue_full, late, ...), cumulative since the server started.
  curl -s --max-time 2 "http://127.0.0.1:$PORT_ADMIN/metrics" 2>/dev/null \
    | awk 'index($0, "hsmgate_admission_shed_total{") == 1 {
             r = $0; sub(/.*reason="/, "", r); sub(/".*/, "", r); n[r] += $NF }
           END { for (r in n) if (n[r] > 0) printf "%s=%d ", r, n[r] }' >"$2.reasons"
}

SERVER_PID=""
start_nginx() { # VARIANT INSTANCE...
  local variant=$1 i
  shift
  for i in "$@"; do
    start_nginx_instance "$variant" "$i"
    SERVER_PID="$SERVER_PID $LAST_PID"
  done
  wait_port "$PORT_UP" "$WORK"
}
start_server() {
  SERVER_PID=""
  case $1 in
    nginx-libp11) start_nginx token 1 2; wait_port "$PORT_TLS13" "$WORK"; SERVER_URL="https://127.0.0.1:$PORT_TLS13/proxy" ;;
    hsmgate-*)
      start_nginx file 9
      SERVER_PID=""
      local bin=$HSMGATE mode=${1#hsmgate-}
      if [[ $1 == hsmgate-b ]]; then bin=$HSMGATE_B mode=on; fi
      "${SERVER_PIN[@]}" "$bin" -c "$WORK/hsmgate-$mode.toml" >"$WORK/$1.log" 2>&1 &
      PIDS+=($!)
      SERVER_PID=$!
      wait_port "$PORT_HSMGATE" "$WORK"
      SERVER_URL="https://127.0.0.1:$PORT_HSMGATE/proxy" ;;
  esac
  sleep 0.5
  all_alive "$1: a server process exited at start; logs in $WORK (KEEP=1 keeps them)"
}
rss_kb() { local t=0 p; for p in $SERVER_PID; do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo "$t"; }
load() { "${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json "$@"; }
# peak_waiting SERVER OUT: until killed, the largest number of handshakes waiting for
# admission (hsmgate_admission_waiting, polled every 250 ms) written to OUT; "-" for nginx.
peak_waiting() {
  local max=0 v
  echo "-" >"$2"
  [[ $1 == hsmgate-* ]] || return 0
  echo 0 >"$2"
  while :; do
    v=$(curl -s --max-time 1 "http://127.0.0.1:$PORT_ADMIN/metrics" 2>/dev/null \
      | awk '/^hsmgate_admission_waiting/ {s += $NF} END {printf "%d", s}')
    if ((${v:-0} > max)); then max=$v; echo "$max" >"$2"; fi
    sleep 0.25
  done
}

say "layout: load on CPU ${LOAD_CPU:-any}, servers on CPU ${SERVER_CPU:-any}"
start_server hsmgate-off
cap_out=$(load --mode handshake --tls 1.3 -c "$CONNS" -d "$DURATION" "$SERVER_URL")
CAP=$(jnum rate "$cap_out")
stop_all
say "capacity (hsmgate-off, closed loop, $CONNS connections): $CAP handshakes/s"

for s in "${SERVERS[@]}"; do
  start_server "$s"
  for f in $SWEEP; do
    rate=$(awk -v c="$CAP" -v f="$f" 'BEGIN{printf "%.0f", c * f}')
    ka_secs=$(( ${DURATION%s} + 3 ))
    load --mode keepalive --tls 1.3 -c 1 --rate "$KA_RATE" --warmup 0s -d "${ka_secs}s" "$SERVER_URL" >"$WORK/ka.json" 2>"$WORK/ka.err" &
    ka=$!
    sleep 1
    # The server's histograms from the end of the load generator's warm-up (1 s), as its own.
    (sleep 1 && server_buckets "$s" "$WORK/before") &
    scrape=$!
    peak_waiting "$s" "$WORK/peak" &
    peak=$!
    out=$(load --mode handshake --tls 1.3 --rate "$rate" --warmup 1s -d "$DURATION" --timeout "$SWEEP_TIMEOUT" "$SERVER_URL" 2>"$WORK/load.err") \
      || out='{"rate":0,"error_total":-1,"errors":{}}'
    kill "$peak" 2>/dev/null || true
    wait "$peak" 2>/dev/null || true
    waiting=$(cat "$WORK/peak")
    wait "$scrape" || true
    wait "$ka" || true
    server_buckets "$s" "$WORK/after"
    srv_shed=$(bucket_quantile 0.99 "$WORK/before.shed" "$WORK/after.shed")
    [[ $srv_shed == inf ]] && srv_shed='">5000"'
    srv_p99=$(bucket_quantile 0.99 "$WORK/before.wait" "$WORK/after.wait")
    at_accept=$(( $(cat "$WORK/after.inline") - $(cat "$WORK/before.inline") ))
    [[ $srv_p99 == inf ]] && srv_p99='">5000"'
    kao=$(cat "$WORK/ka.json")
    alerts=$(sed -n 's/.*"tls_alert":\([0-9]*\).*/\1/p' <<<"$out"); alerts=${alerts:-0}
    timeouts=$(sed -n 's/.*"timeout":\([0-9]*\).*/\1/p' <<<"$out"); timeouts=${timeouts:-0}
    rss=$(rss_kb)
    printf '{"server":"%s","factor":%s,"offered":%s,"goodput":%s,"p50_ms":%s,"p99_ms":%s,"server_p99_ms":%s,"shed":%s,"shed_p50_ms":%s,"shed_p99_ms":%s,"server_shed_p99_ms":%s,"timeouts":%s,"errors":%s,"ka_p50_ms":%s,"ka_p99_ms":%s,"ka_errors":%s,"rss_kb":%s,"peak_waiting":"%s","shed_at_accept":%s}\n' \
      "$s" "$f" "$rate" "$(jnum rate "$out")" "$(jnum p50_ms "$out")" "$(jnum p99_ms "$out")" "$srv_p99" "$alerts" \
      "$(jnum alert_p50_ms "$out")" "$(jnum alert_p99_ms "$out")" "$srv_shed" "$timeouts" "$(jerrors "$out")" \
      "$(jnum p50_ms "$kao")" "$(jnum p99_ms "$kao")" "$(jnum error_total "$kao")" "$rss" "$waiting" "$at_accept" >>"$RAW"
    say "  $s ${f}x=$rate/s: goodput $(jnum rate "$out")/s p99 $(jnum p99_ms "$out") ms (server ≤ $srv_p99 ms), shed $alerts (p99 $(jnum alert_p99_ms "$out") ms, server ≤ $srv_shed ms), timeouts $timeouts; keep-alive p99 $(jnum p99_ms "$kao") ms; rss ${rss} kB; peak waiting $waiting; shed at accept $at_accept; shed so far by reason: $(cat "$WORK/after.reasons")"
  done
  stop_all
done

{
  echo "# Admission control under overload ($(date -u +%Y-%m-%d), hsmgate $(git -C "$ROOT" rev-parse --short HEAD))"
  echo
  echo "$(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load on CPU ${LOAD_CPU:-any}, servers on CPU ${SERVER_CPU:-any}."
  echo "Capacity = hsmgate-off's closed-loop TLS 1.3 full handshakes/s with $CONNS connections: **$CAP/s**."
  echo "Each point: $DURATION open loop of new TLS 1.3 connections at factor x capacity (timeout $SWEEP_TIMEOUT), one run;"
  echo "meanwhile one keep-alive connection opened 1 s earlier sends $KA_RATE requests/s."
  echo
  echo "| server | x | offered/s | goodput/s | goodput/cap | p50 ms | p99 ms | server's p99 ms | shed | shed p50 ms | shed p99 ms | server's shed p99 ms | timeouts | keep-alive p50 / p99 ms | RSS MB | peak waiting | shed at accept |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  while read -r line; do
    g() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$line"; }
    printf '| %s | %s | %s | %s | %s | %s | %s | ≤ %s | %s | %s | %s | ≤ %s | %s | %s / %s | %s | %s | %s |\n' "$(g server)" "$(g factor)" "$(g offered)" \
      "$(g goodput)" "$(ratio "$(g goodput)" "$CAP")" "$(g p50_ms)" "$(g p99_ms)" "$(g server_p99_ms)" "$(g shed)" "$(g shed_p50_ms)" "$(g shed_p99_ms)" "$(g server_shed_p99_ms)" \
      "$(g timeouts)" "$(g ka_p50_ms)" "$(g ka_p99_ms)" "$(awk -v k="$(g rss_kb)" 'BEGIN{printf "%.1f", k/1024}')" "$(g peak_waiting)" "$(g shed_at_accept)"
  done <"$RAW"
  echo
  echo "Plot: admission-$STAMP.svg (goodput and p99 against the offered rate)."
} >"$OUT"
"$PLOT" "$RAW" "$RESULTS/admission-$STAMP.svg" "Admission control: TLS 1.3 full handshakes, RSA-2048 SoftHSM" 2>/dev/null \
  || say "plot-sweep failed (the table is still written)"
cat "$OUT"
say "written: $OUT"
