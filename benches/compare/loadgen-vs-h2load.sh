#!/usr/bin/env bash
# loadgen-vs-h2load.sh: is hsmgate-load fast enough to measure a server on this machine?
# Drives the fastest server here (nginx with a file key, 2 single-process instances with
# reuseport, TLS 1.3 only, no session cache or tickets) with h2load and with hsmgate-load,
# each pinned to LOAD_CPU (0) with one thread, the server pinned to SERVER_CPU (1), and
# reports per client: full handshakes/s and the client's own CPU per handshake. A client
# that spends less than 1/rate seconds of CPU per handshake still has headroom on its core.
#
# Knobs: REPS (3), N (h2load requests, 20000), DURATION (hsmgate-load, 10s), CONNS (50),
#        NGINX_BASELINE (default benches/nginx-baseline), RESULTS, KEEP=1, PORT_TLS13 (8443), PORT_UP (8080).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=loadgen-vs-h2load
# shellcheck source=lib.sh
. "$HERE/lib.sh"
BASE=${NGINX_BASELINE:-$ROOT/benches/nginx-baseline}
REPS=${REPS:-3} N=${N:-20000} DURATION=${DURATION:-10s} CONNS=${CONNS:-50}
PORT_TLS13=${PORT_TLS13:-8443} PORT_UP=${PORT_UP:-8080}
RESULTS=${RESULTS:-$ROOT/benches/results}

[[ -x "$BASE/setup-token.sh" && -x "$BASE/nginx-conf.sh" ]] || die "needs benches/nginx-baseline (or NGINX_BASELINE=DIR)"
for t in nginx h2load taskset softhsm2-util pkcs11-tool; do
  command -v "$t" >/dev/null || die "missing: $t (apt-get install -y nginx nghttp2-client softhsm2 opensc util-linux)"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (one for the client, one for the server)"
ports_free "$PORT_TLS13" "$PORT_UP" 8442
LOAD_CPU=${LOAD_CPU:-0} SERVER_CPU=${SERVER_CPU:-1}

say "building hsmgate-load (release)"
(cd "$ROOT" && cargo build --release -q -p hsmgate-benches --bin hsmgate-load)
LOAD="$ROOT/target/release/hsmgate-load"

make_work loadgen

"$BASE/setup-token.sh" "$WORK" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; die "setup-token.sh failed"; }
for i in 1 2; do
  conf=$("$BASE/nginx-conf.sh" "$WORK" file single "$i")
  sed -i -e "s/127\.0\.0\.1:8443/127.0.0.1:$PORT_TLS13/" -e "s/127\.0\.0\.1:8080/127.0.0.1:$PORT_UP/g" "$conf"
  taskset -c "$SERVER_CPU" nginx -c "$conf" -p "$(dirname "$conf")" >"$WORK/nginx-$i.out" 2>&1 &
  PIDS+=($!)
done
wait_port "$PORT_TLS13" "$WORK"
URL="https://127.0.0.1:$PORT_TLS13/direct"

# run CLIENT -> "rate cpu_us_per_handshake"
TIMEFORMAT='%U %S'
run() {
  local out t rate n
  case $1 in
    h2load)
      { time taskset -c "$LOAD_CPU" h2load --h1 -H 'Connection: close' -n "$N" -c "$CONNS" -t 1 "$URL" >"$WORK/out" 2>&1; } 2>"$WORK/time"
      out=$(cat "$WORK/out")
      grep -q " 0 failed, 0 errored" <<<"$out" || say "h2load: $(grep -m1 'requests:' <<<"$out")"
      rate=$(sed -n 's/^finished in [0-9.]*m\?s, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
      n=$(sed -n 's/^requests: [0-9]* total, [0-9]* started, \([0-9]*\) done.*/\1/p' <<<"$out") ;;
    hsmgate-load)
      { time taskset -c "$LOAD_CPU" "$LOAD" -k -t 1 --json --warmup 0s --mode handshake --tls 1.3 -c "$CONNS" -d "$DURATION" "$URL" >"$WORK/out" 2>"$WORK/err"; } 2>"$WORK/time"
      out=$(cat "$WORK/out")
      rate=$(jnum rate "$out") n=$(jnum handshakes "$out") ;;
  esac
  t=$(cat "$WORK/time")
  awk -v r="$rate" -v n="$n" -v u="${t% *}" -v s="${t#* }" 'BEGIN{printf "%s %.0f\n", r, (n > 0 ? (u + s) * 1e6 / n : 0)}'
}

declare -A RATE CPU
for rep in $(seq 1 "$REPS"); do
  for c in h2load hsmgate-load; do
    read -r r u < <(run "$c")
    RATE[$c]+="$r " CPU[$c]+="$u "
    say "rep $rep: $c $r handshakes/s, client CPU ${u} µs/handshake"
  done
done
m() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
mkdir -p "$RESULTS"
OUT="$RESULTS/loadgen-vs-h2load-$(date -u +%Y%m%d-%H%M%S).md"
{
  echo "# hsmgate-load vs h2load against nginx (file key, TLS 1.3 full handshakes), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Client pinned to CPU $LOAD_CPU (1 thread), 2 single-process nginx instances pinned to CPU $SERVER_CPU, $CONNS connections, GET /direct with a new connection each. Median of $REPS."
  echo
  echo "| client | handshakes/s | client CPU µs/handshake | client core busy at that rate |"
  echo "|---|---|---|---|"
  for c in h2load hsmgate-load; do
    r=$(m "${RATE[$c]}") u=$(m "${CPU[$c]}")
    printf '| %s | %s | %s | %s%% |\n' "$c" "$r" "$u" "$(awk -v r="$r" -v u="$u" 'BEGIN{printf "%.0f", r * u / 1e4}')"
  done
  echo
  echo "hsmgate-load's ceiling on one core is about 1e6 / (its CPU µs per handshake) handshakes/s."
} >"$OUT"
cat "$OUT"
say "written: $OUT"
