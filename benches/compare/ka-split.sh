#!/usr/bin/env bash
# ka-split.sh: where a keep-alive request's CPU goes, hsmgate against nginx: answered by
# the proxy itself (`return 200`) and proxied to a plain upstream, each split into user
# and kernel CPU per request (issue 11, item 1). The difference between the two rows is
# what the upstream half of a request costs each proxy.
#
# Servers, one at a time, with the same nginx-syntax configuration but for nginx's
# process directives (RSA-2048 key from a PEM file: no signer, nothing but the request
# path is measured):
#   nginx     one single-process nginx (master_process off), reuseport
#   hsmgate   target/release/hsmgate -c the same file (HSMGATE_B: a second binary, as
#             hsmgate-b, alternating)
# both with `location /direct { return 200 }` and `location / { proxy_pass }` to one
# separate plain nginx upstream process (keepalive 64 kept connections).
# Load: hsmgate-load --mode keepalive --tls 1.3 -c CONNS, one thread, pinned to LOAD_CPU
# (0); every server process (the proxy and the upstream) pinned to SERVER_CPU (1).
# Per run: req/s, the proxy's user and kernel CPU µs per request (utime and stime over
# the measured part of the run, from /proc), the upstream's CPU µs per request, and the
# proxy's context switches per request (voluntary / involuntary, all its threads).
#
# Output: a markdown table of medians (min..max) over REPS, printed and written to
# benches/results/ka-split-DATE.md.
# Knobs: REPS (3), DURATION (5s), WARMUP (1s), CONNS (50), HSMGATE_B, NO_BUILD=1,
#        LOAD_CPU, SERVER_CPU, PORT_UP (18180), PORT_TLS (18543), RESULTS, KEEP=1,
#        STEPS ("direct proxy"): what each server process does, in order: "direct" and
#        "proxy" are the keep-alive runs; "hs" is HS_SECS (10) of full TLS 1.3 handshakes
#        (50 connections, /proxy, not measured), after which the runs' rows are named
#        "direct+hs" and "proxy+hs" (e.g. STEPS="proxy hs proxy": the same process before
#        and after a handshake load, as compare.sh runs its keep-alive row).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=ka-split
# shellcheck source=lib.sh
. "$HERE/lib.sh"
REPS=${REPS:-3} DURATION=${DURATION:-5s} WARMUP=${WARMUP:-1s} CONNS=${CONNS:-50}
STEPS=${STEPS:-direct proxy} HS_SECS=${HS_SECS:-10}
PORT_UP=${PORT_UP:-18180} PORT_TLS=${PORT_TLS:-18543}
RESULTS=${RESULTS:-$ROOT/benches/results}
for t in nginx openssl curl; do command -v "$t" >/dev/null || die "missing: $t (apt-get install -y nginx openssl curl)"; done
ports_free "$PORT_UP" "$PORT_TLS"
pin_layout
build_release
SERVERS=(nginx hsmgate)
if [[ -n ${HSMGATE_B:-} ]]; then
  [[ -x $HSMGATE_B ]] || die "HSMGATE_B=$HSMGATE_B is not an executable"
  SERVERS+=(hsmgate-b)
fi
make_work ka-split
mkdir -p "$WORK/logs"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
  -days 2 -subj /CN=localhost 2>/dev/null

ka_upstream_conf >"$WORK/upstream.conf"
ka_proxy_conf "daemon off; master_process off; worker_processes 1; pid $WORK/nginx.pid;" >"$WORK/nginx.conf"
ka_proxy_conf "pid $WORK/hsmgate.pid;" >"$WORK/hsmgate.conf"

"${SERVER_PIN[@]}" nginx -p "$WORK" -c "$WORK/upstream.conf" &
UPSTREAM=$!
PIDS+=("$UPSTREAM")
wait_port "$PORT_UP" "$WORK/logs"

# switches PID: "voluntary involuntary" over all its threads
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v, n}'; }

RAW="$WORK/raw.tsv"
: >"$RAW"
run() { # SERVER
  local server=$1 pid path out rate n hz u0 s0 u1 s1 up0 up1 v0 i0 v1 i1
  case $server in
    nginx) "${SERVER_PIN[@]}" nginx -p "$WORK" -c "$WORK/nginx.conf" >"$WORK/logs/$server.out" 2>&1 & ;;
    hsmgate) "${SERVER_PIN[@]}" "$HSMGATE" -c "$WORK/hsmgate.conf" >"$WORK/logs/$server.out" 2>&1 & ;;
    hsmgate-b) "${SERVER_PIN[@]}" "$HSMGATE_B" -c "$WORK/hsmgate.conf" >"$WORK/logs/$server.out" 2>&1 & ;;
  esac
  pid=$!
  PIDS+=("$pid")
  wait_port "$PORT_TLS" "$WORK/logs"
  curl -sfk "https://127.0.0.1:$PORT_TLS/direct" >/dev/null || die "$server: /direct does not answer"
  curl -sfk "https://127.0.0.1:$PORT_TLS/proxy" >/dev/null || die "$server: /proxy does not answer"
  hz=$(getconf CLK_TCK)
  local after="" label
  for path in $STEPS; do
    if [[ $path == hs ]]; then
      "${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --mode handshake --tls 1.3 -c 50 -d "${HS_SECS}s" \
        "https://127.0.0.1:$PORT_TLS/proxy" >/dev/null 2>"$WORK/load.err" \
        || { cat "$WORK/load.err" >&2; die "hsmgate-load (handshakes) failed against $server"; }
      after=+hs
      continue
    fi
    label=$path$after
    # The warm-up is left out: the counters are read once it is over.
    "${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup "$WARMUP" --mode keepalive --tls 1.3 -c "$CONNS" \
      -d "$DURATION" "https://127.0.0.1:$PORT_TLS/$path" >"$WORK/load.json" 2>"$WORK/load.err" &
    local load=$!
    sleep "${WARMUP%s}"
    read -r u0 s0 < <(ticks "$pid")
    up0=$(cpu_ticks "$UPSTREAM")
    read -r v0 i0 < <(switches "$pid")
    wait "$load" || { cat "$WORK/load.err" >&2; die "hsmgate-load failed against $server /$path"; }
    read -r u1 s1 < <(ticks "$pid")
    up1=$(cpu_ticks "$UPSTREAM")
    read -r v1 i1 < <(switches "$pid")
    out=$(cat "$WORK/load.json")
    rate=$(jnum rate "$out")
    n=$(awk -v r="$rate" -v d="$(jnum duration_s "$out")" 'BEGIN{print r * d}')
    # server path rep req/s user_us kernel_us upstream_us voluntary involuntary errors
    awk -v s="$server" -v p="$label" -v rep="$REP" -v r="$rate" -v n="$n" -v hz="$hz" \
      -v u=$((u1 - u0)) -v k=$((s1 - s0)) -v up=$((up1 - up0)) -v v=$((v1 - v0)) -v i=$((i1 - i0)) \
      -v e="$(jnum error_total "$out")" \
      'BEGIN{f = 1e6 / hz / n; printf "%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%s\n", s, p, rep, r, u * f, k * f, up * f, v / n, i / n, e}' >>"$RAW"
    say "  $(tail -1 "$RAW")"
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  PIDS=("$UPSTREAM")
  sleep 0.5
}

say "$REPS rep(s) of $DURATION (+$WARMUP warm-up), $CONNS connections; load on CPU ${LOAD_CPU:-any}, servers on CPU ${SERVER_CPU:-any}"
for REP in $(seq 1 "$REPS"); do
  say "rep $REP/$REPS"
  mapfile -t order < <(rep_order "$REP" "${SERVERS[@]}")
  for s in "${order[@]}"; do run "$s"; done
done

# --- report -------------------------------------------------------------------------------------
mkdir -p "$RESULTS"
OUT="$RESULTS/ka-split-$(date -u +%Y%m%d-%H%M%S).md"
col() { awk -F'\t' -v s="$1" -v p="$2" -v k="$3" '$1 == s && $2 == p {print $k}' "$RAW"; }
cell() { printf '%s (%s)' "$(col "$@" | median)" "$(col "$@" | span)"; }
{
  echo "# Keep-alive CPU per request, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Host: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -sr);" \
    "hsmgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')." \
    "hsmgate-load, 1 thread, TLS 1.3, $CONNS keep-alive connections, $DURATION after $WARMUP warm-up; median (min..max) of $REPS rep(s)."
  echo
  echo "| server | path | req/s | user µs/req | kernel µs/req | proxy µs/req | upstream µs/req | context switches/req (vol / invol) |"
  echo "|---|---|---|---|---|---|---|---|"
  mapfile -t labels < <(awk -F'\t' '!seen[$2]++ {print $2}' "$RAW")
  for s in "${SERVERS[@]}"; do
    for p in "${labels[@]}"; do
      total=$(paste <(col "$s" "$p" 5) <(col "$s" "$p" 6) | awk '{print $1 + $2}' | median)
      printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s |\n' "$s" "/$p" "$(cell "$s" "$p" 4)" "$(cell "$s" "$p" 5)" \
        "$(cell "$s" "$p" 6)" "$total" "$(col "$s" "$p" 7 | median)" "$(col "$s" "$p" 8 | median)" "$(col "$s" "$p" 9 | median)"
    done
  done
  echo
  if [[ " ${labels[*]} " == *" direct "* && " ${labels[*]} " == *" proxy "* ]]; then
    echo "The upstream half of a request (the proxy's CPU through the upstream minus its CPU for \`return 200\`, medians):"
    echo
    for s in "${SERVERS[@]}"; do
      printf -- '- %s: user %s µs, kernel %s µs\n' "$s" \
        "$(awk -v a="$(col "$s" proxy 5 | median)" -v b="$(col "$s" direct 5 | median)" 'BEGIN{printf "%.1f", a - b}')" \
        "$(awk -v a="$(col "$s" proxy 6 | median)" -v b="$(col "$s" direct 6 | median)" 'BEGIN{printf "%.1f", a - b}')"
    done
  fi
  errs=$(awk -F'\t' '{e += $10} END{print e + 0}' "$RAW")
  echo
  echo "Errors over all runs: $errs."
} >"$OUT"
cat "$OUT"
say "written: $OUT"
