#!/usr/bin/env bash
# shed-cost.sh: what one shed connection costs the server (issue 9: shedding must be cheap,
# since on a machine where the HSM shares the proxy's cores every shed takes CPU from
# signing). hsmgate, admission on, in front of one HSM of the lab (benches/hsm-lab: SoftHSM
# behind `p11-kit server`) that is killed once hsmgate is up: with no capacity left every
# new full handshake is shed at the door with its alert (`no_capacity`) and nothing else
# runs. An open loop of RATE new TLS 1.3 connections/s for DURATION.
# Per run: the server process's CPU (user + system, /proc) over the measured part divided
# by the connections shed in it, split into user and kernel; the client's alert p50/p99.
# Over loopback a send also runs the receiver's TCP input on the sender's CPU, so the
# kernel figure holds part of the client's receive path (the same for every build).
#
# Servers: hsmgate (target/release/hsmgate) and, with HSMGATE_B=PATH, hsmgate-b (another
# build, same configuration), alternating REPS times (AB BA AB ...).
# Output: a markdown table of medians (min..max), printed and written to
# benches/results/shed-cost-DATE.md.
# Knobs: REPS (5), RATE (2000), DURATION (6s), WARMUP (1s), HSMGATE_B, NO_BUILD=1, LOAD_CPU,
# SERVER_CPU, HSM_LAB, RESULTS, KEEP=1, PORT_UP (8190), PORT_HSMGATE (9553),
# PORT_ADMIN (9953).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=shed-cost
LAB=${HSM_LAB:-$ROOT/benches/hsm-lab}/lab.sh
REPS=${REPS:-5} RATE=${RATE:-2000} DURATION=${DURATION:-6s} WARMUP=${WARMUP:-1s}
PORT_UP=${PORT_UP:-8190} PORT_HSMGATE=${PORT_HSMGATE:-9553} PORT_ADMIN=${PORT_ADMIN:-9953}
RESULTS=${RESULTS:-$ROOT/benches/results}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[[ -x $LAB ]] || die "needs benches/hsm-lab/lab.sh (or HSM_LAB=DIR)"
ports_free "$PORT_HSMGATE" "$PORT_ADMIN"
pin_layout
build_release
SERVERS=(hsmgate)
if [[ -n ${HSMGATE_B:-} ]]; then
  [[ -x $HSMGATE_B ]] || die "HSMGATE_B=$HSMGATE_B is not an executable"
  SERVERS+=(hsmgate-b)
fi
lab_down() { LAB_DIR="$WORK/lab" "$LAB" down >/dev/null 2>&1; }
make_work shed-cost lab_down
mkdir -p "$RESULTS"
LAB_DIR="$WORK/lab" "$LAB" up "$WORK/lab" 2 >"$WORK/lab.log" 2>&1 || { cat "$WORK/lab.log" >&2; die "lab.sh up failed"; }
# shellcheck disable=SC1091
. "$WORK/lab/client.env" # P11_CLIENT LAB_PIN HSM_A_ADDR ...
printf '%s' "$LAB_PIN" >"$WORK/pin"
# The upstream is never reached (nothing is admitted), but the configuration needs one.
cat >"$WORK/hsmgate.toml" <<EOF
[[listener]]
address = "127.0.0.1:$PORT_HSMGATE"
tls_versions = ["1.3"]
[admin]
address = "127.0.0.1:$PORT_ADMIN"
[tls]
certificate = "$WORK/lab/keys/rsa-cert.pem"
key = "pkcs11:object=tls-rsa;type=private"
[upstream]
address = "127.0.0.1:$PORT_UP"
[shutdown]
grace_ms = 500
[[hsm.group]]
name = "lab"
[[hsm.group.region]]
name = "r1"
role = "primary"
[[hsm.group.region.member]]
name = "hsm-a"
module = "$P11_CLIENT"
env = { P11_KIT_SERVER_ADDRESS = "$HSM_A_ADDR" }
token = "hsm-a"
pin_file = "$WORK/pin"
EOF

capacity() { curl -s --max-time 1 "http://127.0.0.1:$PORT_ADMIN/metrics" | awk '/^hsmgate_admission_capacity_ops_per_second/ {print $NF}'; }
RAW="$WORK/raw.tsv"
: >"$RAW"
run() { # SERVER
  local server=$1 bin=$HSMGATE pid out shed u0 s0 u1 s1 hz
  [[ $server == hsmgate-b ]] && bin=$HSMGATE_B
  LAB_DIR="$WORK/lab" "$LAB" restart hsm-a >>"$WORK/lab.log" 2>&1
  "${SERVER_PIN[@]}" "$bin" -c "$WORK/hsmgate.toml" >"$WORK/$server.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$PORT_HSMGATE" "$WORK"
  # The member dies: once hsmgate has seen it, every full handshake is shed.
  LAB_DIR="$WORK/lab" "$LAB" kill hsm-a >>"$WORK/lab.log" 2>&1
  for _ in $(seq 1 150); do [[ $(capacity) == 0 ]] && break; sleep 0.1; done
  [[ $(capacity) == 0 ]] || die "$server: the capacity never fell to 0 (logs in $WORK with KEEP=1)"
  hz=$(getconf CLK_TCK)
  "${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --alert-ok-at-start --mode handshake --tls 1.3 --rate "$RATE" \
    --warmup "$WARMUP" -d "$DURATION" --timeout 3s "https://127.0.0.1:$PORT_HSMGATE/" \
    >"$WORK/load.json" 2>"$WORK/load.err" &
  local load=$!
  sleep "${WARMUP%s}"
  read -r u0 s0 < <(ticks "$pid")
  wait "$load" || { cat "$WORK/load.err" >&2; die "hsmgate-load failed against $server"; }
  read -r u1 s1 < <(ticks "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  out=$(cat "$WORK/load.json")
  shed=$(sed -n 's/.*"tls_alert":\([0-9]*\).*/\1/p' <<<"$out")
  [[ -n $shed && $shed -gt 0 ]] || die "$server: nothing was shed ($out)"
  awk -v s="$server" -v n="$shed" -v u="$((u1 - u0))" -v k="$((s1 - s0))" -v hz="$hz" \
    -v ok="$(jnum ok "$out")" -v a50="$(jnum alert_p50_ms "$out")" -v a99="$(jnum alert_p99_ms "$out")" \
    'BEGIN{printf "%s\t%d\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\n", s, n, ok, (u+k)*1e6/hz/n, u*1e6/hz/n, k*1e6/hz/n, a50, a99}' >>"$RAW"
  say "$server: $(tail -1 "$RAW")"
}

for ((rep = 1; rep <= REPS; rep++)); do
  mapfile -t order < <(rep_order "$rep" "${SERVERS[@]}")
  for server in "${order[@]}"; do run "$server"; done
done

OUT="$RESULTS/shed-cost-$(date -u +%Y%m%d-%H%M%S).md"
col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s {print $c}' "$RAW"; }
{
  echo "# What one shed connection costs the server"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), hsmgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release)${HSMGATE_B:+, hsmgate-b = $HSMGATE_B}; $(nproc) CPUs, load on CPU ${LOAD_CPU:-any}, server on CPU ${SERVER_CPU:-any}."
  echo "Open loop of $RATE new TLS 1.3 connections/s for $DURATION after $WARMUP, the one HSM member dead (every full handshake shed: no_capacity); median (min..max) of $REPS runs, alternating."
  echo
  echo "| server | shed per run | completed per run | server CPU µs per shed | user | kernel | client's alert p50 / p99 ms |"
  echo "|---|---|---|---|---|---|---|"
  for server in "${SERVERS[@]}"; do
    printf '| %s | %s | %s | %s (%s) | %s | %s | %s / %s |\n' "$server" \
      "$(col "$server" 2 | median)" "$(col "$server" 3 | median)" \
      "$(col "$server" 4 | median)" "$(col "$server" 4 | span)" \
      "$(col "$server" 5 | median)" "$(col "$server" 6 | median)" \
      "$(col "$server" 7 | median)" "$(col "$server" 8 | median)"
  done
} | tee "$OUT"
say "written: $OUT"
