#!/usr/bin/env bash
# Full TLS 1.3 handshakes/s with an RSA-2048 key in SoftHSM, side by side on this machine:
#   raw   SoftHSM C_Sign rate (RSA-PSS, 1 and 2 threads; benches/nginx-baseline/p11sign.c)
#   nginx+libp11, token key: 2 single-process instances with reuseport (stock nginx cannot
#         use a token key in forked workers; see ../benches/nginx-baseline/RESULTS.md)
#   nginx, file key: same layout, for reference
#   hsmgate, token key (release build)
# Each repetition runs the servers back to back (interleaved), with the same load:
#   h2load --h1 -H 'Connection: close' -n N -c C  (one full handshake per request; session
#   cache and tickets are off in nginx; h2load does not resume).
# Prints a markdown table of medians (and min..max) and the ratios to nginx+libp11.
# Knobs: REPS (3), N (6000), C (50), SIGN_SECS (3), NGINX_BASELINE (default benches/nginx-baseline).
# Ports (127.0.0.1 only): 8080 (nginx upstream), 8443 (nginx TLS 1.3), 9443 (hsmgate).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=handshakes
# shellcheck source=lib.sh
. "$HERE/lib.sh"
ROOT=$(cd "$HERE/../.." && pwd)
REPS=${REPS:-3} N=${N:-6000} C=${C:-50} SIGN_SECS=${SIGN_SECS:-3}
BASE=${NGINX_BASELINE:-$ROOT/benches/nginx-baseline}
[[ -x "$BASE/setup-token.sh" ]] || { echo "needs benches/nginx-baseline (or NGINX_BASELINE=DIR)" >&2; exit 1; }
for t in nginx h2load softhsm2-util pkcs11-tool openssl cc; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install nginx libengine-pkcs11-openssl nghttp2-client softhsm2 opensc gcc)" >&2; exit 1; }
done
[[ -e /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so || -e /usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so ]] \
  || { echo "missing libengine-pkcs11-openssl" >&2; exit 1; }
ports_free 8080 8443 9443

WORK=$(mktemp -d -t hsmgate-hs.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'cleanup; rm -rf "$WORK"' EXIT

echo "building hsmgate (release)…" >&2
(cd "$ROOT" && cargo build --release -q -p hsmgate-proxy)
HSMGATE="$ROOT/target/release/hsmgate"

"$BASE/setup-token.sh" "$WORK" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log"; exit 1; }
# shellcheck disable=SC1091
. "$WORK/env.sh"      # SOFTHSM2_CONF MODULE RSA_URI EC_URI
export SOFTHSM2_CONF OPENSSL_CONF="$WORK/openssl-pkcs11.cnf"
cc -O2 -pthread -I/usr/include/p11-kit-1 "$BASE/p11sign.c" -o "$WORK/p11sign" -ldl

printf '1234' >"$WORK/pin"
cat >"$WORK/hsmgate.toml" <<EOT
[[listener]]
address = "127.0.0.1:9443"
tls_versions = ["1.3"]
[tls]
certificate = "$WORK/rsa-token.crt"
key = "pkcs11:token=proxy;object=proxy-rsa;type=private?pin-source=file:$WORK/pin"
[pkcs11]
module = "$MODULE"
sessions = 4
env = { SOFTHSM2_CONF = "$SOFTHSM2_CONF" }
[upstream]
address = "127.0.0.1:8080"
EOT

cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# load PORT PIDS... -> "handshakes_per_s cpu_us_per_handshake"
load() {
  local port=$1; shift
  local c0 c1 out rate ok
  c0=$(cpu_ticks "$@")
  out=$(h2load --h1 -H 'Connection: close' -n "$N" -c "$C" "https://127.0.0.1:$port/proxy" 2>&1)
  c1=$(cpu_ticks "$@")
  rate=$(awk '/^finished in/{gsub(",","",$4); print $4}' <<<"$out")
  ok=$(awk '/^requests:/{print $8}' <<<"$out")
  [[ "$ok" == "$N" ]] || echo "warning: port $port: $ok of $N requests succeeded" >&2
  echo "$rate $(awk -v d=$((c1 - c0)) -v n="$ok" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", d / hz * 1e6 / (n > 0 ? n : 1)}')"
}

start_nginx() { # VARIANT -> starts 2 single-process instances, sets PIDS
  local i conf
  for i in 1 2; do
    conf=$("$BASE/nginx-conf.sh" "$WORK" "$1" single "$i")
    nginx -c "$conf" -p "$(dirname "$conf")" >"$(dirname "$conf")/logs/stdout" 2>&1 &
    PIDS+=($!)
  done
  wait_port 8443
}
start_upstream() { # the plain upstream for hsmgate: nginx file variant's :8080 only is not separable,
  # so run one nginx single instance (file key) and use its :8080; its TLS ports stay idle.
  local conf; conf=$("$BASE/nginx-conf.sh" "$WORK" file single 9)
  nginx -c "$conf" -p "$(dirname "$conf")" >"$(dirname "$conf")/logs/stdout" 2>&1 &
  PIDS+=($!)
  wait_port 8080
}

declare -A R CPU
for rep in $(seq 1 "$REPS"); do
  echo "rep $rep/$REPS" >&2
  for th in 1 2; do
    R[raw$th]+="$("$WORK/p11sign" "$MODULE" proxy 1234 proxy-rsa rsa-pss "$th" "$SIGN_SECS" own | cut -f5) "
  done
  for v in token file; do
    start_nginx "$v"; sleep 0.3
    read -r r c < <(load 8443 "${PIDS[@]}"); R[nginx_$v]+="$r "; CPU[nginx_$v]+="$c "
    cleanup
  done
  start_upstream
  "$HSMGATE" -c "$WORK/hsmgate.toml" 2>"$WORK/hsmgate.log" & HPID=$!
  wait_port 9443; sleep 0.3
  read -r r c < <(load 9443 "$HPID"); R[hsmgate]+="$r "; CPU[hsmgate]+="$c "
  kill -TERM "$HPID"; wait "$HPID" 2>/dev/null || true
  cleanup
done

# the numbers of a space-separated list, one per line, for lib.sh's median
words() { tr ' ' '\n' | grep -v '^$'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{m=$1}{x=$1}END{printf "%s..%s", m, x}'; }
ref=$(words <<<"${R[nginx_token]}" | median)
echo
echo "Full TLS 1.3 handshakes/s, RSA-2048, $(nproc) cores shared by servers and h2load; h2load --h1 -H 'Connection: close' -n $N -c $C; median of $REPS (min..max)"
echo
echo "| server | handshakes/s | ratio to nginx+libp11 | server CPU µs/handshake |"
echo "|---|---|---|---|"
for k in hsmgate nginx_token nginx_file; do
  m=$(words <<<"${R[$k]}" | median)
  name=$k; [[ $k == nginx_token ]] && name="nginx + libp11 (token key)"; [[ $k == nginx_file ]] && name="nginx (file key)"; [[ $k == hsmgate ]] && name="hsmgate (token key)"
  printf '| %s | %s (%s) | %.2f | %s |\n' "$name" "$m" "$(range <<<"${R[$k]}")" "$(awk -v a="$m" -v b="$ref" 'BEGIN{print a/b}')" "$(words <<<"${CPU[$k]}" | median)"
done
for th in 1 2; do
  printf '| raw SoftHSM C_Sign RSA-PSS, %s thread(s) | %s sign/s (%s) | | |\n' "$th" "$(words <<<"${R[raw$th]}" | median)" "$(range <<<"${R[raw$th]}")"
done
