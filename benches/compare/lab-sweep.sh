#!/usr/bin/env bash
# lab-sweep.sh: hsmgate vs nginx + libp11 in front of "network HSMs": the HSM lab
# (benches/hsm-lab: two SoftHSM tokens with the same RSA-2048 key, each behind its own
# `p11-kit server`), reached through p11-kit-client.so, once over unix sockets and once
# through the lab's TCP hop that adds HOP_MS each way (+2 ms round trip by default).
#
# Servers (TLS 1.3, RSA-2048 key on the lab tokens, /proxy forwarded to a plain nginx
# upstream on PORT_UP):
#   nginx-libp11   NGINX_INSTANCES (2) single-process nginx instances with reuseport (stock
#                  nginx cannot use a token key in forked workers), instance i on hsm-a or
#                  hsm-b alternately. Each nginx process signs one handshake at a time.
#   hsmgate        one process, one HA group of both members (one primary region), SESSIONS
#                  signer sessions over CONNECTIONS p11-kit connections per member.
#   hsmgate-off    the same with admission control off ([admission] enabled = false).
#   SERVERS="..." picks among the three (default all); ADMISSION_TOML="key = value"
#   lines go into hsmgate's [admission] section (e.g. target_wait_ms = 50).
# Per case (unix, hop) and repetition:
#   raw     p11bench, 16 threads over both members: what the two HSMs can sign (capacity)
#   closed  hsmgate-load --mode handshake -c CONNS: handshakes/s each server sustains
#   one     the same with one connection (ONE=0 skips it): one handshake at a time, the
#           handshake's latency at low load (p50/p99), where each signature's PKCS#11
#           round trips over the hop show (issue 11, item 4)
#   sweep   hsmgate-load --rate R for R = factor x capacity (SWEEP), the same offered rates
#           for both servers: goodput and p99 (TIMEOUT per handshake); for hsmgate also
#           the server's p99 (the bucket of hsmgate_tls_handshake_wait_seconds, from the
#           kernel's receipt of the ClientHello, that holds it) and how long the load
#           generator took to send the point's connections (longer than DURATION when
#           its core could not keep up: its p99, counted from each connection's
#           scheduled start, then includes its own lag)
# Layout (2+ cores): servers (nginx instances, upstream, hsmgate) on SERVER_CPU (1); the
# load generator and the lab's HSM processes (p11-kit servers, their per-connection
# children, the hop forwarders) on LOAD_CPU (0), since the HSMs stand for other machines.
# The socat that p11-kit-client starts per connection for the hop is a child of the server
# and runs on its core, for both servers alike.
#
# Output: benches/results/lab-sweep-DATE.md (table of medians with ratios) and one SVG plot
# per case (goodput and p99 against offered rate), raw numbers next to them.
#
# Knobs: REPS (3), DURATION (5s), WARMUP (1s), CONNS (50), SWEEP ("0.25 0.5 1 1.5 2 3"),
#        TIMEOUT (3s), ONE (1), CASES ("unix hop"), HOP_MS (1, one way), NGINX_INSTANCES (2),
#        SESSIONS (16), CONNECTIONS (2), SIGN_SECS (3), LOAD_CPU, SERVER_CPU, HSM_LAB (default benches/hsm-lab),
#        RESULTS, QUICK=1 (1 rep, 2 s, 3 points), KEEP=1, PORT_UP (8080), PORT_TLS (8443,
#        nginx), PORT_HSMGATE (9443), PORT_ADMIN (9912, hsmgate's /metrics).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=lab-sweep
# shellcheck source=lib.sh
. "$HERE/lib.sh"
LAB=${HSM_LAB:-$ROOT/benches/hsm-lab}/lab.sh
if [[ ${QUICK:-0} == 1 ]]; then
  REPS=${REPS:-1} DURATION=${DURATION:-2s} SWEEP=${SWEEP:-"0.5 1 2"}
fi
REPS=${REPS:-3} DURATION=${DURATION:-5s} WARMUP=${WARMUP:-1s} CONNS=${CONNS:-50}
SWEEP=${SWEEP:-"0.25 0.5 1 1.5 2 3"} TIMEOUT=${TIMEOUT:-3s} ONE=${ONE:-1} CASES=${CASES:-"unix hop"}
HOP_MS=${HOP_MS:-1} NGINX_INSTANCES=${NGINX_INSTANCES:-2} SESSIONS=${SESSIONS:-16}
CONNECTIONS=${CONNECTIONS:-2} SIGN_SECS=${SIGN_SECS:-3}
RESULTS=${RESULTS:-$ROOT/benches/results}
PORT_UP=${PORT_UP:-8080} PORT_TLS=${PORT_TLS:-8443} PORT_HSMGATE=${PORT_HSMGATE:-9443}
PORT_ADMIN=${PORT_ADMIN:-9912}
read -r -a SERVERS <<<"${SERVERS:-nginx-libp11 hsmgate hsmgate-off}"

# --- tools and ports, before anything is started -------------------------------------------
[[ -x "$LAB" ]] || die "needs benches/hsm-lab/lab.sh (or HSM_LAB=DIR)"
for c in $CASES; do [[ $c == unix || $c == hop ]] || die "CASES: unknown case '$c' (unix, hop)"; done
engine_ok() { compgen -G "/usr/lib/*-linux-gnu/engines-3/pkcs11.so" >/dev/null; }
missing=()
check() {
  missing=()
  for t in nginx openssl taskset python3 socat; do command -v "$t" >/dev/null || missing+=("$t"); done
  engine_ok || missing+=("engines-3/pkcs11.so")
}
check
if ((${#missing[@]})) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  say "installing (missing: ${missing[*]})"
  pkgs=(nginx libengine-pkcs11-openssl socat python3 util-linux)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null; }
  check
fi
((${#missing[@]} == 0)) || die "missing: ${missing[*]} (apt-get install -y nginx libengine-pkcs11-openssl socat python3)"
command -v cargo >/dev/null || die "missing: cargo"
ports_free "$PORT_UP" "$PORT_TLS" "$PORT_HSMGATE" "$PORT_ADMIN"
pin_layout
if ((PINNED)); then
  LAYOUT="servers pinned to CPU $SERVER_CPU; hsmgate-load (1 thread) and the lab's HSM processes to CPU $LOAD_CPU"
else
  LAYOUT="one CPU: nothing pinned"
fi

build_release

# --- the lab, processes by PID --------------------------------------------------------------
lab_down() { LAB_DIR="$WORK/lab" "$LAB" down >/dev/null 2>&1; }
make_work labsweep lab_down

say "starting the HSM lab: 2 members, hop ${HOP_MS} ms each way"
LAB_DIR="$WORK/lab" "$LAB" up "$WORK/lab" 2 "$HOP_MS" >"$WORK/lab.log" 2>&1 || { cat "$WORK/lab.log" >&2; die "lab.sh up failed"; }
# shellcheck disable=SC1091
. "$WORK/lab/client.env" # P11_CLIENT P11BENCH LAB_PIN HSM_A_ADDR HSM_A_TCP HSM_B_ADDR HSM_B_TCP
if ((${#LOAD_PIN[@]})); then
  for f in "$WORK"/lab/*/server.pid "$WORK"/lab/*/fwd.pid; do
    taskset -a -p -c "$LOAD_CPU" "$(cat "$f")" >/dev/null
  done
fi
printf '%s' "$LAB_PIN" >"$WORK/pin"
CERT="$LAB_DIR/keys/rsa-cert.pem"
cat >"$WORK/openssl-pkcs11.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
MODULE_PATH = $P11_CLIENT
EOF

addr() { # CASE MEMBER(a|b)
  case $1:$2 in
    unix:a) echo "$HSM_A_ADDR" ;; unix:b) echo "$HSM_B_ADDR" ;;
    hop:a) echo "$HSM_A_TCP" ;; hop:b) echo "$HSM_B_TCP" ;;
  esac
}

nginx_main() { # DIR: the lines every nginx instance here starts with
  cat <<EOF
master_process off; daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
env P11_KIT_SERVER_ADDRESS;
env OPENSSL_CONF;
events { worker_connections 8192; multi_accept on; }
worker_rlimit_nofile 20000;
EOF
}
nginx_http_common() { # DIR
  printf '    access_log off;\n'
  for t in client_body proxy fastcgi uwsgi scgi; do printf '    %s_temp_path %s/tmp/%s;\n' "$t" "$1" "$t"; done
}

start_upstream() {
  local d="$WORK/upstream"
  mkdir -p "$d/tmp"
  {
    nginx_main "$d"
    printf 'http {\n'
    nginx_http_common "$d"
    printf '    server { listen 127.0.0.1:%s backlog=4096; keepalive_requests 1000000;\n' "$PORT_UP"
    printf '        location / { return 200 "hello from upstream\\n"; } }\n}\n'
  } >"$d/nginx.conf"
  "${SERVER_PIN[@]}" nginx -c "$d/nginx.conf" -p "$d" >"$d/stdout" 2>&1 &
  PIDS+=($!)
  wait_port "$PORT_UP" "$d"
}

start_nginx() { # CASE
  local i d member
  for i in $(seq 1 "$NGINX_INSTANCES"); do
    d="$WORK/nginx-$1-$i" member=$([[ $((i % 2)) == 1 ]] && echo a || echo b)
    mkdir -p "$d/tmp"
    {
      nginx_main "$d"
      printf 'http {\n'
      nginx_http_common "$d"
      printf '    upstream up { server 127.0.0.1:%s; keepalive 64; }\n' "$PORT_UP"
      printf '    server {\n        listen 127.0.0.1:%s ssl backlog=4096 reuseport;\n' "$PORT_TLS"
      printf '        ssl_certificate %s;\n' "$CERT"
      printf '        ssl_certificate_key "engine:pkcs11:pkcs11:token=hsm-%s;object=tls-rsa;type=private;pin-value=%s";\n' "$member" "$LAB_PIN"
      printf '        ssl_protocols TLSv1.3; ssl_session_cache off; ssl_session_tickets off;\n'
      printf '        keepalive_requests 1000000;\n'
      printf '        location = /proxy { %s }\n    }\n}\n' "$PROXY_TO_UP"
    } >"$d/nginx.conf"
    P11_KIT_SERVER_ADDRESS=$(addr "$1" "$member") OPENSSL_CONF="$WORK/openssl-pkcs11.cnf" \
      "${SERVER_PIN[@]}" nginx -c "$d/nginx.conf" -p "$d" >"$d/stdout" 2>&1 &
    PIDS+=($!)
    # One at a time: nginx writes its pid file once the key is loaded, and SoftHSM
    # behind p11-kit fails logins that race (benches/hsm-lab/README.md).
    for _ in $(seq 1 100); do [[ -s $d/nginx.pid ]] && break; kill -0 "${PIDS[-1]}" 2>/dev/null || break; sleep 0.05; done
  done
  wait_port "$PORT_TLS" "$WORK/nginx-$1-1"
}

start_hsmgate() { # CASE [off: admission control off]
  local conf="$WORK/hsmgate-$1.toml" m
  {
    if [[ ${2:-} == off ]]; then
      printf '[admission]\nenabled = false\n'
    elif [[ -n ${ADMISSION_TOML:-} ]]; then
      printf '[admission]\n%s\n' "$ADMISSION_TOML"
    fi

    printf '[[listener]]\naddress = "127.0.0.1:%s"\ntls_versions = ["1.3"]\n' "$PORT_HSMGATE"
    printf '[admin]\naddress = "127.0.0.1:%s"\n' "$PORT_ADMIN"
    printf '[tls]\ncertificate = "%s"\nkey = "pkcs11:object=tls-rsa;type=private"\n' "$CERT"
    printf '[upstream]\naddress = "127.0.0.1:%s"\n[shutdown]\ngrace_ms = 500\n' "$PORT_UP"
    printf '[[hsm.group]]\nname = "lab"\nsign_timeout_ms = 3000\nop_timeout_ms = 2000\n'
    printf '[[hsm.group.region]]\nname = "r1"\nrole = "primary"\n'
    for m in a b; do
      printf '[[hsm.group.region.member]]\nname = "hsm-%s"\nmodule = "%s"\n' "$m" "$P11_CLIENT"
      printf 'env = { P11_KIT_SERVER_ADDRESS = "%s" }\ntoken = "hsm-%s"\npin_file = "%s"\n' "$(addr "$1" "$m")" "$m" "$WORK/pin"
      printf 'sessions = %s\nconnections = %s\n' "$SESSIONS" "$CONNECTIONS"
    done
  } >"$conf"
  "${SERVER_PIN[@]}" "$HSMGATE" -c "$conf" >"$WORK/hsmgate-$1.log" 2>&1 &
  PIDS+=($!)
  wait_port "$PORT_HSMGATE" "$WORK/hsmgate-$1.log"
}

# Keep the upstream; stop only what start_server started.
SERVER_PIDS_FROM=0
start_server() { # SERVER CASE
  SERVER_PIDS_FROM=${#PIDS[@]}
  case $1 in
    nginx-libp11) start_nginx "$2" ;;
    hsmgate) start_hsmgate "$2" ;;
    hsmgate-off) start_hsmgate "$2" off ;;
  esac
  sleep 0.3
  all_alive "$1 ($2): a server process exited at start; logs in $WORK (KEEP=1 keeps them)"
}
stop_server() {
  local keep=("${PIDS[@]:0:$SERVER_PIDS_FROM}")
  PIDS=("${PIDS[@]:$SERVER_PIDS_FROM}")
  stop_all
  PIDS=("${keep[@]}")
}
url() { [[ $1 == hsmgate* ]] && echo "https://127.0.0.1:$PORT_HSMGATE/proxy" || echo "https://127.0.0.1:$PORT_TLS/proxy"; }

# --- runs -----------------------------------------------------------------------------------------
mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RAW="$RESULTS/lab-sweep-$STAMP-raw.tsv" SWEEP_RAW="$RESULTS/lab-sweep-$STAMP-sweep-raw.jsonl"
ONE_RAW="$RESULTS/lab-sweep-$STAMP-one-raw.tsv"
: >"$RAW"
: >"$ONE_RAW"
: >"$SWEEP_RAW"
load() { # SERVER ARGS... -> hsmgate-load's JSON line (a failed run counts as no goodput)
  local server=$1 out
  shift
  out=$("${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup "$WARMUP" --mode handshake --tls 1.3 \
    --duration "$DURATION" "$@" "$(url "$server")" 2>"$WORK/load.err") \
    || { say "  hsmgate-load failed against $server: $(head -c 300 "$WORK/load.err")"
         out='{"rate":0,"p99_ms":null,"error_total":-1,"errors":{}}'; }
  echo "$out"
}
raw_sign() { # CASE -> sign/s of p11bench over both members, 16 threads
  "${SERVER_PIN[@]}" "$P11BENCH" -m "$P11_CLIENT" -c "$(addr "$1" a);$(addr "$1" b)" -T 16 -d "$SIGN_SECS" -M rsa -q 2>/dev/null \
    | tr ' ' '\n' | awk -F= '$1 == "ops_per_s" {print $2}'
}

start_upstream
say "layout: $LAYOUT; $REPS rep(s) of $DURATION (+$WARMUP warm-up); cases: $CASES"
declare -A CAPACITY
for REP in $(seq 1 "$REPS"); do
  for c in $CASES; do
    cap=$(raw_sign "$c")
    [[ -n $cap ]] || die "p11bench gave no rate for case $c"
    printf '%s\traw\t%s\t%s\t-\t0\t-\n' "$c" "$REP" "$cap" >>"$RAW"
    say "rep $REP/$REPS, $c: raw sign rate of both HSMs $cap/s"
    CAPACITY[$c]=${CAPACITY[$c]:-$cap} # the sweep's scale: the first rep's raw rate
    for s in "${SERVERS[@]}"; do
      start_server "$s" "$c"
      c0=$(cpu_ticks "${PIDS[@]:$SERVER_PIDS_FROM}")
      out=$(load "$s" -c "$CONNS")
      c1=$(cpu_ticks "${PIDS[@]:$SERVER_PIDS_FROM}")
      # The server's own CPU (not the upstream's) over warm-up + run, per handshake.
      cpu=$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v r="$(jnum rate "$out")" -v w="${WARMUP%s}" -v s="$(jnum duration_s "$out")" \
        'BEGIN{n = r * (w + s); printf "%.0f", (n > 0 ? d / hz * 1e6 / n : 0)}')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$s" "$REP" "$(jnum rate "$out")" "$(jnum p99_ms "$out")" "$(jnum error_total "$out")" "$cpu" >>"$RAW"
      say "  $s closed loop: $(jnum rate "$out")/s p99 $(jnum p99_ms "$out") ms errors $(jnum error_total "$out") $(jerrors "$out") server-cpu=${cpu}us/handshake"
      if ((ONE)); then
        # One connection: each handshake waits for the one before it (low load).
        out=$(load "$s" -c 1)
        # case server rep handshakes/s p50 p99 errors
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$s" "$REP" "$(jnum rate "$out")" "$(jnum p50_ms "$out")" "$(jnum p99_ms "$out")" "$(jnum error_total "$out")" >>"$ONE_RAW"
        say "  $s one connection: $(jnum rate "$out")/s p50 $(jnum p50_ms "$out") ms p99 $(jnum p99_ms "$out") ms errors $(jnum error_total "$out")"
      fi
      stop_server
      # A fresh server per point: an overloaded point leaves queued connections behind.
      for f in $SWEEP; do
        rate=$(awk -v c="${CAPACITY[$c]}" -v f="$f" 'BEGIN{printf "%.0f", (c * f < 1 ? 1 : c * f)}')
        start_server "$s" "$c"
        : >"$WORK/wait-before"
        : >"$WORK/wait-after"
        # The server's histogram from the end of the load generator's warm-up, as its own.
        scrape=""
        if [[ $s == hsmgate* ]]; then (sleep "${WARMUP%s}" && wait_buckets "$PORT_ADMIN" "$WORK/wait-before") & scrape=$!; fi
        out=$(load "$s" --rate "$rate" --timeout "$TIMEOUT")
        [[ -n $scrape ]] && wait "$scrape"
        [[ $s == hsmgate* ]] && wait_buckets "$PORT_ADMIN" "$WORK/wait-after"
        stop_server
        srv=$(bucket_quantile 0.99 "$WORK/wait-before" "$WORK/wait-after")
        [[ $srv == inf ]] && srv='">5000"'
        printf '{"case":"%s","server":"%s","factor":%s,"offered":%s,"goodput":%s,"p99_ms":%s,"server_p99_ms":%s,"ran_s":%s,"errors":%s,"rep":%s}\n' \
          "$c" "$s" "$f" "$rate" "$(jnum rate "$out")" "$(jnum p99_ms "$out")" "$srv" "$(jnum duration_s "$out")" "$(jnum error_total "$out")" "$REP" >>"$SWEEP_RAW"
        say "  $s sweep ${f}x = $rate/s: goodput $(jnum rate "$out")/s p99 $(jnum p99_ms "$out") ms (server ≤ $srv ms; sent in $(jnum duration_s "$out") s) errors $(jnum error_total "$out") $(jerrors "$out")"
      done
    done
  done
done

# --- report ----------------------------------------------------------------------------------------
OUT="$RESULTS/lab-sweep-$STAMP.md"
vals() { awk -F'\t' -v c="$1" -v s="$2" -v k="${3:-4}" '$1 == c && $2 == s {print $k}' "$RAW"; }
med() { vals "$@" | { grep -v -e '^-$' -e '^null$' || true; } | median; } # NA when none (e.g. a server not in SERVERS)
range() { vals "$1" "$2" | span; }
one_vals() { awk -F'\t' -v c="$1" -v s="$2" -v k="$3" '$1 == c && $2 == s && $k != "null" {print $k}' "$ONE_RAW"; }
one_med() { one_vals "$@" | median; }
one_range() { one_vals "$@" | span; }
pick() { # CASE SERVER FACTOR FIELD -> values over the reps
  sed -n "s/.*\"case\":\"$1\",\"server\":\"$2\",\"factor\":$3,.*\"$4\":\([0-9][0-9.eE+-]*\).*/\1/p" "$SWEEP_RAW"
}
name() {
  case $1 in
    nginx-libp11) echo "nginx + libp11 ($NGINX_INSTANCES single-process instances)" ;;
    hsmgate) echo "hsmgate (admission on, the default)" ;;
    hsmgate-off) echo "hsmgate, admission off" ;;
  esac
}
casename() { case $1 in unix) echo "unix socket" ;; hop) echo "TCP hop, +$((2 * HOP_MS)) ms RTT" ;; esac; }
{
  echo "# hsmgate vs nginx + libp11 over the HSM lab, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Host: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -sr). $LAYOUT."
  echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), SoftHSM $(softhsm2-util --version 2>/dev/null), p11-kit $(dpkg-query -W -f='${Version}' p11-kit 2>/dev/null || echo '?'), hsmgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release)."
  echo "HSMs: 2 SoftHSM tokens behind p11-kit server (one RSA-2048 key), through p11-kit-client.so. hsmgate: $SESSIONS sessions over $CONNECTIONS connections per member."
  echo "Load: hsmgate-load, 1 thread, TLS 1.3 full handshakes + GET /proxy, $DURATION after $WARMUP warm-up. Median of $REPS rep(s) (min..max)."
  echo
  echo "| HSM path | server | closed-loop handshakes/s, $CONNS conns | / nginx+libp11 | p99 ms | server CPU µs/handshake | raw sign/s of both HSMs |"
  echo "|---|---|---|---|---|---|---|"
  for c in $CASES; do
    ref=$(med "$c" nginx-libp11)
    for s in "${SERVERS[@]}"; do
      m=$(med "$c" "$s")
      printf '| %s | %s | %s (%s) | %s | %s | %s | %s |\n' "$(casename "$c")" "$(name "$s")" "$m" "$(range "$c" "$s")" \
        "$(ratio "$m" "$ref")" "$(med "$c" "$s" 5)" "$(med "$c" "$s" 7)" "$(med "$c" raw)"
    done
  done
  if ((ONE)); then
    echo
    echo "## Low load: one connection, one handshake at a time (closed loop, $DURATION; median of $REPS rep(s), min..max)"
    echo
    echo "| HSM path | server | handshakes/s | p50 ms | p99 ms | p50 / nginx+libp11's |"
    echo "|---|---|---|---|---|---|"
    for c in $CASES; do
      ref=$(one_med "$c" nginx-libp11 5)
      for s in "${SERVERS[@]}"; do
        p50=$(one_med "$c" "$s" 5)
        printf '| %s | %s | %s | %s (%s) | %s (%s) | %s |\n' "$(casename "$c")" "$(name "$s")" "$(one_med "$c" "$s" 4)" \
          "$p50" "$(one_range "$c" "$s" 5)" "$(one_med "$c" "$s" 6)" "$(one_range "$c" "$s" 6)" "$(ratio "$p50" "$ref")"
      done
    done
  fi
  for c in $CASES; do
    echo
    echo "## Open-loop sweep, $(casename "$c") (offered = factor x ${CAPACITY[$c]}/s, the raw sign rate; timeout $TIMEOUT)"
    echo
    head="| factor | offered/s |" rule="|---|---|"
    for s in "${SERVERS[@]}"; do
      head+=" $s goodput/s | p99 ms | errors (shed) |"
      rule+="---|---|---|"
      [[ $s == hsmgate* ]] && head+=" server's p99 ms | sent in s |" && rule+="---|---|"
    done
    echo "$head"
    echo "$rule"
    sweep_med="$RESULTS/lab-sweep-$STAMP-$c.jsonl"
    : >"$sweep_med"
    for f in $SWEEP; do
      row=("$f" "$(pick "$c" "${SERVERS[0]}" "$f" offered | median)")
      for s in "${SERVERS[@]}"; do
        good=$(pick "$c" "$s" "$f" goodput | median) p99=$(pick "$c" "$s" "$f" p99_ms | median)
        errs=$(pick "$c" "$s" "$f" errors | median)
        row+=("$good" "$p99" "$errs")
        [[ $s == hsmgate* ]] && row+=("≤ $(pick "$c" "$s" "$f" server_p99_ms | median)" "$(pick "$c" "$s" "$f" ran_s | median)")
        [[ $p99 == NA ]] && p99=null
        printf '{"server":"%s","factor":%s,"offered":%s,"goodput":%s,"p99_ms":%s}\n' "$s" "$f" "${row[1]}" "$good" "$p99" >>"$sweep_med"
      done
      printf '| %s ' "${row[@]}"
      printf '|\n'
    done
    "$PLOT" "$sweep_med" "$RESULTS/lab-sweep-$STAMP-$c.svg" "HSM lab, $(casename "$c"): TLS 1.3 handshakes, RSA-2048" 2>/dev/null \
      || say "plot-sweep failed for $c (the table is still written)"
    echo
    echo "Plot: lab-sweep-$STAMP-$c.svg"
  done
  echo
  echo "Raw numbers: lab-sweep-$STAMP-raw.tsv, lab-sweep-$STAMP-sweep-raw.jsonl$( ((ONE)) && echo ", lab-sweep-$STAMP-one-raw.tsv")."
} >"$OUT"
cat "$OUT"
say "written: $OUT"
