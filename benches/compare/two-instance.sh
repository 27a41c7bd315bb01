#!/usr/bin/env bash
# two-instance.sh: two hsmgate instances share the same two lab HSMs with no coordinator
# (issue 9's scale-out run). Each instance has admission control on (the defaults) and one
# HA group of both lab members over the lab's TCP hop (+2 ms round trip by default).
#
#   raw      p11bench, 16 threads over both members: what the two HSMs can sign (R)
#   phase 1  both instances offered FACTOR x R each (open loop, TLS 1.3 full handshakes)
#            for PHASE1 seconds: combined goodput / R, each instance's admitted p99
#   phase 2  instance B is stopped (SIGTERM); instance A alone, still offered FACTOR x R,
#            for PHASE2 seconds: how soon A's admitted rate reaches 0.85 R
#   baseline before phase 1: A's signing latency with one handshake at a time, against
#            which phase 2's is read (several times it: the HSMs are saturated)
# Both instances' /metrics are polled every 0.5 s (hsmgate_admission_admitted_total,
# _shed_total, _limit, and A's hsmgate_signer_latency_seconds), giving the admitted rate,
# A's signatures/s and its mean signing latency per half second; the table, the time
# from B's stop to A's first window at 0.85 R, and the series go to
# benches/results/two-instance-DATE.md (and -series.tsv).
#
# Layout (2+ cores): both hsmgate instances on SERVER_CPU (1); the two load generators and
# the lab's HSM processes on LOAD_CPU (0), as in lab-sweep.sh. On a 2-core machine the HSMs
# share a core with the load generators, so R (measured alone) is an upper bound.
#
# Knobs: FACTOR (2), PHASE1 (10 s), PHASE2 (10 s), HOP_MS (1, one way), SESSIONS (16),
#        SIGNER_NICE ([admission] signer_nice; the default when unset),
#        CONNECTIONS (2), SIGN_SECS (3), TIMEOUT (3s), LAB (path of lab.sh), RESULTS,
#        KEEP=1, PORT_UP (8180), PORT_A (9543), PORT_B (9544), ADMIN_A (9901), ADMIN_B (9902).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=two-instance
# shellcheck source=lib.sh
. "$HERE/lib.sh"
LAB=${LAB:-${HSM_LAB:-$ROOT/benches/hsm-lab}/lab.sh}
FACTOR=${FACTOR:-2} PHASE1=${PHASE1:-10} PHASE2=${PHASE2:-10} HOP_MS=${HOP_MS:-1}
SESSIONS=${SESSIONS:-16} CONNECTIONS=${CONNECTIONS:-2} SIGN_SECS=${SIGN_SECS:-3} TIMEOUT=${TIMEOUT:-3s}
RESULTS=${RESULTS:-$ROOT/benches/results}
PORT_UP=${PORT_UP:-8180} PORT_A=${PORT_A:-9543} PORT_B=${PORT_B:-9544}
ADMIN_A=${ADMIN_A:-9901} ADMIN_B=${ADMIN_B:-9902}

[[ -x "$LAB" ]] || die "needs the HSM lab's lab.sh (LAB=$LAB)"
for t in nginx curl taskset python3 socat; do command -v "$t" >/dev/null || die "missing: $t"; done
ports_free "$PORT_UP" "$PORT_A" "$PORT_B" "$ADMIN_A" "$ADMIN_B"
pin_layout
build_release

lab_down() { LAB_DIR="$WORK/lab" "$LAB" down >/dev/null 2>&1; }
make_work twoinst lab_down
say "starting the HSM lab: 2 members, hop ${HOP_MS} ms each way"
LAB_DIR="$WORK/lab" "$LAB" up "$WORK/lab" 2 "$HOP_MS" >"$WORK/lab.log" 2>&1 || { cat "$WORK/lab.log" >&2; die "lab.sh up failed"; }
# shellcheck disable=SC1091
. "$WORK/lab/client.env" # P11_CLIENT P11BENCH LAB_PIN HSM_A_TCP HSM_B_TCP
if ((PINNED)); then
  for f in "$WORK"/lab/*/server.pid "$WORK"/lab/*/fwd.pid; do taskset -a -p -c "$LOAD_CPU" "$(cat "$f")" >/dev/null; done
fi
printf '%s' "$LAB_PIN" >"$WORK/pin"
CERT="$LAB_DIR/keys/rsa-cert.pem"

# The upstream: a plain nginx answering 200.
mkdir -p "$WORK/upstream/tmp"
cat >"$WORK/upstream/nginx.conf" <<EOF
master_process off; daemon off; pid $WORK/upstream/nginx.pid; error_log $WORK/upstream/error.log warn;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $WORK/upstream/tmp; proxy_temp_path $WORK/upstream/tmp;
  fastcgi_temp_path $WORK/upstream/tmp; uwsgi_temp_path $WORK/upstream/tmp; scgi_temp_path $WORK/upstream/tmp;
  server { listen 127.0.0.1:$PORT_UP backlog=4096; location / { return 200 "hello\n"; } } }
EOF
"${SERVER_PIN[@]}" nginx -c "$WORK/upstream/nginx.conf" -p "$WORK/upstream" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$PORT_UP" "$WORK/upstream"

start_instance() { # NAME PORT ADMIN -> PID in LAST_PID
  local conf="$WORK/hsmgate-$1.toml" m
  {
    printf '[[listener]]\naddress = "127.0.0.1:%s"\ntls_versions = ["1.3"]\n' "$2"
    printf '[admin]\naddress = "127.0.0.1:%s"\n' "$3"
    printf '[tls]\ncertificate = "%s"\nkey = "pkcs11:object=tls-rsa;type=private"\n' "$CERT"
    printf '[upstream]\naddress = "127.0.0.1:%s"\n[shutdown]\ngrace_ms = 500\n' "$PORT_UP"
    [[ -n ${SIGNER_NICE:-} ]] && printf '[admission]\nsigner_nice = %s\n' "$SIGNER_NICE"
    printf '[[hsm.group]]\nname = "lab"\nsign_timeout_ms = 3000\nop_timeout_ms = 2000\n'
    printf '[[hsm.group.region]]\nname = "r1"\nrole = "primary"\n'
    for m in a b; do
      local addr=HSM_${m^^}_TCP
      printf '[[hsm.group.region.member]]\nname = "hsm-%s"\nmodule = "%s"\n' "$m" "$P11_CLIENT"
      printf 'env = { P11_KIT_SERVER_ADDRESS = "%s" }\ntoken = "hsm-%s"\npin_file = "%s"\n' "${!addr}" "$m" "$WORK/pin"
      printf 'sessions = %s\nconnections = %s\n' "$SESSIONS" "$CONNECTIONS"
    done
  } >"$conf"
  "${SERVER_PIN[@]}" "$HSMGATE" -c "$conf" >"$WORK/hsmgate-$1.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  wait_port "$2" "$WORK/hsmgate-$1.log"
}

metric() { # ADMIN_PORT NAME -> the sum of NAME's samples (0 when absent or unreachable)
  curl -s --max-time 0.4 "http://127.0.0.1:$1/metrics" 2>/dev/null \
    | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%.4f\n", s + 0}'
}
# signing ADMIN_PORT -> "count sum": the instance's signatures and their summed latency
# (enqueue → answer, seconds) so far, over both members
signing() {
  curl -s --max-time 0.4 "http://127.0.0.1:$1/metrics" 2>/dev/null \
    | awk 'index($1, "hsmgate_signer_latency_seconds_count{") == 1 {c += $NF}
           index($1, "hsmgate_signer_latency_seconds_sum{") == 1 {s += $NF}
           END {printf "%.0f %.6f\n", c, s}'
}
# mean_ms "C0 S0" "C1 S1" -> mean latency in ms of the signatures between two readings
mean_ms() { awk -v a="$1" -v b="$2" 'BEGIN{split(a, x, " "); split(b, y, " "); n = y[1] - x[1]
  printf "%s", (n > 0 ? sprintf("%.1f", 1000 * (y[2] - x[2]) / n) : "NA")}'; }
poll() { # -> time, admitted/shed/limit of A and of B, A's signatures and latency sum, every 0.5 s
  local t0 now
  t0=$(date +%s.%N)
  while :; do
    now=$(date +%s.%N)
    printf '%.2f' "$(awk -v a="$now" -v b="$t0" 'BEGIN{print a - b}')"
    for a in "$ADMIN_A" "$ADMIN_B"; do
      printf '\t%s\t%s\t%s' "$(metric "$a" hsmgate_admission_admitted_total)" \
        "$(metric "$a" hsmgate_admission_shed_total)" "$(metric "$a" hsmgate_admission_limit)"
    done
    printf '\t%s\t%s\n' $(signing "$ADMIN_A")
    sleep 0.5
  done
}
load() { # PORT SECONDS OUT: hsmgate-load at FACTOR x R, its JSON line to OUT
  "${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup 0s --mode handshake --tls 1.3 --duration "$2s" \
    --rate "$RATE" --timeout "$TIMEOUT" "https://127.0.0.1:$1/" >"$3" 2>"$3.err" \
    || echo '{"rate":0,"p99_ms":null,"error_total":-1}' >"$3"
}

RAW=$("${SERVER_PIN[@]}" "$P11BENCH" -m "$P11_CLIENT" -c "$HSM_A_TCP;$HSM_B_TCP" -T 16 -d "$SIGN_SECS" -M rsa -q 2>/dev/null \
  | tr ' ' '\n' | awk -F= '$1 == "ops_per_s" {print $2}')
[[ -n $RAW ]] || die "p11bench gave no rate"
RATE=$(awk -v r="$RAW" -v f="$FACTOR" 'BEGIN{printf "%.0f", r * f}')
say "raw sign rate of both HSMs over the hop: $RAW/s; each instance offered $RATE/s"

start_instance a "$PORT_A" "$ADMIN_A"
PID_A=$LAST_PID
start_instance b "$PORT_B" "$ADMIN_B"
PID_B=$LAST_PID
sleep 1
all_alive "an instance exited at start; logs in $WORK (KEEP=1 keeps them)"

# A's signing latency with one handshake at a time (the HSMs idle but for it): the
# baseline phase 2's latency is read against.
s0=$(signing "$ADMIN_A")
"${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup 0s --mode handshake --tls 1.3 --duration 2s \
  -c 1 "https://127.0.0.1:$PORT_A/" >"$WORK/idle.json" 2>"$WORK/idle.err" || true
IDLE_MS=$(mean_ms "$s0" "$(signing "$ADMIN_A")")
say "A's signing latency, one handshake at a time: $IDLE_MS ms"

SERIES="$WORK/series.tsv"
poll >"$SERIES" &
POLLER=$!
PIDS+=("$POLLER")
sleep 0.6
T_START=$(tail -n1 "$SERIES" | cut -f1)
wait_buckets "$ADMIN_A" "$WORK/a0.hist"
wait_buckets "$ADMIN_B" "$WORK/b0.hist"
say "phase 1: both instances, ${PHASE1} s"
load "$PORT_A" "$PHASE1" "$WORK/a1.json" &
la=$!
load "$PORT_B" "$PHASE1" "$WORK/b1.json" &
lb=$!
wait "$la" "$lb"
wait_buckets "$ADMIN_A" "$WORK/a1.hist"
wait_buckets "$ADMIN_B" "$WORK/b1.hist"
say "phase 2: instance B stopped; instance A alone, ${PHASE2} s"
kill -TERM "$PID_B"
T_STOP=$(tail -n1 "$SERIES" | cut -f1)
load "$PORT_A" "$PHASE2" "$WORK/a2.json"
wait_buckets "$ADMIN_A" "$WORK/a2.hist"
sleep 0.6
kill "$POLLER" 2>/dev/null || true

a1=$(cat "$WORK/a1.json") b1=$(cat "$WORK/b1.json") a2=$(cat "$WORK/a2.json")
combined=$(awk -v a="$(jnum rate "$a1")" -v b="$(jnum rate "$b1")" 'BEGIN{printf "%.0f", a + b}')
# Admitted per second of A (and B) from the series; takeover = first half-second window
# after the stop from which A's admitted rate stays >= 0.85 R for the rest of phase 2.
mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$RESULTS/two-instance-$STAMP.md"
awk -F'\t' 'NR > 1 {dt = $1 - t; ra = $2 < a ? 0 : ($2 - a) / dt; rb = $5 < b ? 0 : ($5 - b) / dt
  n = $8 - c; ms = n > 0 ? sprintf("%.1f", 1000 * ($9 - l) / n) : "NA"
  printf "%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\n", $1, ra, rb, $4, $7, n / dt, ms}
  {t = $1; a = $2; b = $5; c = $8; l = $9}' "$SERIES" >"$RESULTS/two-instance-$STAMP-series.tsv"
# Phase 2 (after B's stop, the first second left out): A's signatures/s and mean latency.
read -r P2_OPS P2_MS < <(awk -F'\t' -v s="$T_STOP" '$1 > s + 1 && $7 != "NA" {n += $6 * 1; w += $6 * $7; k++}
  END {if (k && n > 0) printf "%.0f %.1f\n", n / k, w / n; else print "NA NA"}' "$RESULTS/two-instance-$STAMP-series.tsv")
takeover=$(awk -F'\t' -v s="$T_STOP" -v r="$RAW" '$1 > s && $2 >= 0.85 * r && first == "" {first = $1 - s}
  END {print (first == "" ? "never" : sprintf("%.1f s", first))}' "$RESULTS/two-instance-$STAMP-series.tsv")
{
  echo "# Two hsmgate instances sharing two lab HSMs ($(date -u +%F), commit $(git -C "$ROOT" rev-parse --short HEAD))"
  echo
  echo "Machine: $(nproc) CPUs; $([[ $PINNED == 1 ]] && echo "instances on CPU $SERVER_CPU, load generators and HSMs on CPU $LOAD_CPU" || echo "nothing pinned")."
  echo "Hop: ${HOP_MS} ms each way. Raw pipelined sign rate of both HSMs (p11bench, 16 threads): **$RAW/s** = R."
  echo "Each instance offered $FACTOR x R = $RATE full TLS 1.3 handshakes/s (open loop, timeout $TIMEOUT)."
  echo
  echo "| phase | instance | goodput/s | goodput / R | admitted p50 ms | p99 ms | server's p50 / p99 ms | errors (shed + other) | load generator ran |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for row in "1 A a1 a0 $PHASE1" "1 B b1 b0 $PHASE1" "2 A a2 a1 $PHASE2"; do
    set -- $row
    j=$(cat "$WORK/$3.json")
    server="≤ $(bucket_quantile 0.5 "$WORK/$4.hist" "$WORK/$3.hist") / ≤ $(bucket_quantile 0.99 "$WORK/$4.hist" "$WORK/$3.hist")"
    echo "| $1 | $2 | $(jnum rate "$j") | $(ratio "$(jnum rate "$j")" "$RAW") | $(jnum p50_ms "$j") | $(jnum p99_ms "$j") | $server | $(jnum error_total "$j") | $(jnum duration_s "$j") s for $5 s |"
  done
  echo "| 1 | A + B | $combined | $(ratio "$combined" "$RAW") | | | | | |"
  echo
  echo "Admitted p50/p99: the load generator's, from each connection's scheduled start (its own lag included: it ran longer than the phase when its core could not keep up). Server's: the bucket of hsmgate_tls_handshake_wait_seconds holding the quantile, from the kernel's receipt of the ClientHello (the accept queue included) to the handshake's end."
  echo
  echo "After B stopped, A's admitted rate first reached 0.85 R after **$takeover** (windows of about half a second from /metrics; the series shows whether it stayed)."
  echo
  echo "A's signing latency (enqueue → signature, both members): $IDLE_MS ms with one handshake at a time before phase 1; $P2_MS ms mean over phase 2 at $P2_OPS signatures/s. Several times the idle figure with A's limit no longer growing means the HSMs are saturated: A then has what they can sign beside the load generator that shares their core, which is less than R measured alone."
  echo
  echo "Series (s since start, admitted/s A, admitted/s B, limit A, limit B, A's signatures/s, A's mean signing latency ms): two-instance-$STAMP-series.tsv; B stopped at t=${T_STOP}s (phase 1 began at ${T_START}s)."
} >"$OUT"
cat "$OUT"
say "written: $OUT"
