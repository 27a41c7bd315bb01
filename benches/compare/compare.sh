#!/usr/bin/env bash
# compare.sh: hsmgate side by side with nginx on this machine, same SoftHSM token.
#
# Servers (all RSA-2048; 127.0.0.1 only):
#   nginx-file     nginx, key in a PEM file           2 single-process instances, reuseport
#   nginx-libp11   nginx + libp11 (OpenSSL engine),   2 single-process instances, reuseport
#                  key on the token                   (stock nginx cannot use a token key in
#                                                     forked workers: benches/nginx-baseline/RESULTS.md)
#   hsmgate        target/release/hsmgate -c hsmgate.toml, key on the token through the
#                  signer pool; proxies everything to a plain nginx upstream on :8080;
#                  admission control off: a closed loop of 50 connections measures how
#                  many handshakes it can complete, which shedding (alerts) would hide
#                  (benches/compare/admission.sh measures admission under overload)
# plus the raw sign rate of the token (benches/nginx-baseline/p11sign.c, CKM_RSA_PKCS_PSS).
#
# Key-source rows (issue 11 items 2 and 3; ROWS=keys runs only these): setup-token.sh
# imports its PEM keys into the token, so a file key and a token key are the same key.
#   hsmgate-file       hsmgate, RSA-2048 key from the PEM file   } one nginx-syntax config,
#   hsmgate-conf       hsmgate, the same key on the token        } only ssl_certificate_key
#                      (engine:pkcs11: URI, 4 sessions)          } differs; session cache
#   hsmgate-ec-file    hsmgate, P-256 key from the PEM file      } and tickets off as in
#   hsmgate-ec-token   hsmgate, the same P-256 key on the token  } nginx; proxied to :8080;
#                                                                } admission control off
#   (a closed loop of 50 connections is past the token's rate, and admission would shed
#   part of them with an alert: those cost CPU but are not handshakes, and the file-key
#   servers, which have no signer, shed nothing)
#   nginx-ec-file      nginx, P-256 file key       } 2 single-process instances, as above;
#   nginx-ec-libp11    nginx + libp11, P-256 token } TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256
# with the raw CPU of one signature: token C_Sign (p11sign, RSA-PSS and ECDSA, one thread
# on SERVER_CPU, getrusage around the signatures) and the same key in software
# (target/release/file-sign, rustls' aws-lc-rs signer, the thread's own run time).
# The report decomposes a token-key handshake's server CPU: (token key) - (file key) -
# (raw C_Sign) = the offload's own cost minus the software signature of the file-key
# handshake; adding that signature back gives the offload's own cost. The four
# key-source hsmgate servers have an admin listener (PORT_ADMIN) whose
# hsmgate_signer_call_cpu_seconds (token) and hsmgate_tls_file_key_sign_cpu_seconds (file)
# give the CPU of their own signatures in the same run: the offload's own cost uses those.
#
# Load: target/release/hsmgate-load, one thread. Rows:
#   TLS 1.3 / TLS 1.2 full handshakes/s   --mode handshake (new connection, no resumption)
#   TLS 1.3 resumed handshakes/s          --mode resume; nginx configs get a session cache,
#                                         tickets and one ticket key shared by both instances
#   keep-alive req/s                      --mode keepalive; nginx /direct (return 200) and
#                                         /proxy; hsmgate always proxies
#   open-loop sweep                       --rate R at 0.25..3x each server's TLS 1.3 capacity
# nginx serves the handshake, resume and sweep rows through /proxy, so that every request
# costs all servers the same upstream round trip.
# Session cache and tickets: off in nginx for the handshake rows (nginx-conf.sh), rustls
# defaults in hsmgate (stateful cache + TLS 1.3 tickets; the client never offers them there).
#
# Layout (2+ cores): the load generator on LOAD_CPU (0), every server process (nginx
# instances, the upstream, hsmgate) on SERVER_CPU (1): one core per side. With one core,
# nothing is pinned.
#
# Each repetition runs the servers back to back. Output: a markdown table of medians
# (min..max) with ratios to nginx+libp11 and to nginx-file, written to
# benches/results/compare-DATE.md and printed; the sweep as JSON lines and an SVG plot
# (src/bin/plot-sweep.rs) next to it.
#
# Knobs: ROWS: the rows to run, any of "sign hs13 hs12 ka-direct ka-proxy resume sweep keys",
#        or "all" (the default: every row), "base" (all but keys); e.g. ROWS=ka-proxy for the
#        keep-alive row through the upstream alone, ROWS=keys for the key-source rows.
#        REPS (3), DURATION (5s per run), WARMUP (1s), CONNS (50), RESUME_CONNS (6: the
#        load generator's rustls client keeps at most 8 TLS 1.3 tickets per server, so more
#        concurrent connections than that find no ticket and do full handshakes), SWEEP (factors,
#        "0.25 0.5 1 1.5 2 3"), SWEEP_TIMEOUT (3s), SIGN_SECS (3), LOAD_CPU, SERVER_CPU,
#        NGINX_BASELINE (default benches/nginx-baseline), RESULTS (directory),
#        QUICK=1 (1 rep, 2 s runs, 3 sweep points: a smoke run), KEEP=1 (keep the work dir),
#        PORT_UP (8080, upstream), PORT_TLS12 (8442, nginx TLS 1.2), PORT_TLS13 (8443, nginx
#        TLS 1.3), PORT_HSMGATE (9443): all on 127.0.0.1, checked free before anything starts;
#        nginx-conf.sh's fixed ports are rewritten in the generated configs when changed.
#        UPSTREAM: "separate" (default) or "inproc". separate: every server, nginx too,
#        proxies to one separate upstream nginx process (the nginx instances' own upstream
#        listeners are moved off PORT_UP): the same upstream for all, as issue 11's rules
#        ask. inproc (the default until 2026-12-02): each nginx instance also serves the
#        upstream (:PORT_UP) itself, so nginx's /proxy often stays in one process and event
#        loop, while hsmgate's upstream is a separate nginx process (instance 9).
#        HSMGATE_B=PATH: a second hsmgate binary (e.g. a build of another commit), run as
#        "hsmgate-b" right after hsmgate in every rep with the same configuration, upstream
#        and rows, for an A/B in one run (its ratios are in the same table).
#        HSMGATE_A=PATH: the hsmgate binary under test instead of target/release/hsmgate
#        (every script of benches/compare takes it), e.g. scripts/pgo.sh's
#        target/pgo/hsmgate with HSMGATE_B=target/release/hsmgate beside it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=${NGINX_BASELINE:-$ROOT/benches/nginx-baseline}
if [[ ${QUICK:-0} == 1 ]]; then
  REPS=${REPS:-1} DURATION=${DURATION:-2s} SWEEP=${SWEEP:-"0.5 1 2"}
fi
REPS=${REPS:-3} DURATION=${DURATION:-5s} WARMUP=${WARMUP:-1s} CONNS=${CONNS:-50} RESUME_CONNS=${RESUME_CONNS:-6}
SWEEP=${SWEEP:-"0.25 0.5 1 1.5 2 3"} SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-3s} SIGN_SECS=${SIGN_SECS:-3}
RESULTS=${RESULTS:-$ROOT/benches/results}
PORT_UP=${PORT_UP:-8080} PORT_TLS12=${PORT_TLS12:-8442} PORT_TLS13=${PORT_TLS13:-8443} PORT_HSMGATE=${PORT_HSMGATE:-9443}
# PORT_ADMIN: the admin listener of the key-source hsmgate servers (their signatures' CPU).
PORT_ADMIN=${PORT_ADMIN:-9444}
PORTS=("$PORT_UP" "$PORT_TLS12" "$PORT_TLS13" "$PORT_HSMGATE" $((PORT_UP + 1)) $((PORT_UP + 2)) $((PORT_UP + 3)) "$PORT_ADMIN")

SCRIPT=compare
UPSTREAM=${UPSTREAM:-separate}
[[ $UPSTREAM == inproc || $UPSTREAM == separate ]] || { echo "compare: UPSTREAM is inproc or separate" >&2; exit 1; }
BASE_ROWS="sign hs13 hs12 ka-direct ka-proxy resume sweep"
ROWS=" ${ROWS:-all} "
ROWS=${ROWS// all / $BASE_ROWS keys }
ROWS=${ROWS// base / $BASE_ROWS }
for r in $ROWS; do
  [[ " $BASE_ROWS keys " == *" $r "* ]] || { echo "compare: unknown row $r in ROWS (rows: $BASE_ROWS keys; all; base)" >&2; exit 2; }
done
want() { [[ $ROWS == *" $1 "* ]]; }
# any_base_row: a row of the three base servers (nginx-file, nginx-libp11, hsmgate) is chosen.
any_base_row() { local r; for r in hs13 hs12 ka-direct ka-proxy resume sweep; do want "$r" && return 0; done; return 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# --- tools and ports, before anything is started -------------------------------------------
[[ -x "$BASE/setup-token.sh" && -x "$BASE/nginx-conf.sh" && -f "$BASE/p11sign.c" ]] \
  || die "needs benches/nginx-baseline (setup-token.sh, nginx-conf.sh, p11sign.c), or NGINX_BASELINE=DIR"
engine_ok() { compgen -G "/usr/lib/*-linux-gnu/engines-3/pkcs11.so" >/dev/null; }
missing=()
for t in nginx softhsm2-util pkcs11-tool openssl cc taskset; do command -v "$t" >/dev/null || missing+=("$t"); done
engine_ok || missing+=("engines-3/pkcs11.so")
if ((${#missing[@]})) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  say "installing (missing: ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libengine-pkcs11-openssl softhsm2 \
    opensc nghttp2-client gcc util-linux >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx \
         libengine-pkcs11-openssl softhsm2 opensc nghttp2-client gcc util-linux >/dev/null; }
  missing=()
  for t in nginx softhsm2-util pkcs11-tool openssl cc taskset; do command -v "$t" >/dev/null || missing+=("$t"); done
  engine_ok || missing+=("engines-3/pkcs11.so")
fi
((${#missing[@]} == 0)) || die "missing: ${missing[*]} (apt-get install -y nginx libengine-pkcs11-openssl softhsm2 opensc nghttp2-client gcc)"
command -v cargo >/dev/null || die "missing: cargo"
ports_free "${PORTS[@]}"

pin_layout
if ((PINNED)); then
  LAYOUT="hsmgate-load (1 thread) pinned to CPU $LOAD_CPU; every server process pinned to CPU $SERVER_CPU"
else
  LAYOUT="one CPU: load generator and servers share it (nothing pinned)"
fi
case $UPSTREAM in
  inproc) LAYOUT+="; upstream: nginx serves it in its own instances, hsmgate proxies to a separate nginx process" ;;
  separate) LAYOUT+="; upstream: one separate nginx process for every server" ;;
esac

# --- build (nothing runs yet) --------------------------------------------------------------
build_release
if [[ -n ${HSMGATE_B:-} ]]; then
  [[ -x $HSMGATE_B ]] || die "HSMGATE_B=$HSMGATE_B is not an executable"
fi

# --- work dir, token, processes by PID --------------------------------------------------------
make_work compare

say "making the token (setup-token.sh)"
"$BASE/setup-token.sh" "$WORK" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; die "setup-token.sh failed"; }
# shellcheck disable=SC1091
. "$WORK/env.sh" # SOFTHSM2_CONF MODULE RSA_URI EC_URI
export SOFTHSM2_CONF OPENSSL_CONF="$WORK/openssl-pkcs11.cnf"
cc -O2 -pthread -I/usr/include/p11-kit-1 "$BASE/p11sign.c" -o "$WORK/p11sign" -ldl
printf '1234' >"$WORK/pin"
head -c 80 /dev/urandom >"$WORK/ticket.key"
# hsmgate under test: token key, TLS 1.2 + 1.3, everything proxied to the nginx upstream.
token_toml "[admission]
enabled = false" >"$WORK/hsmgate.toml"


# start_nginx file|token [resume] [INSTANCE...]: single-process instances on SERVER_CPU.
start_nginx() {
  local variant=$1 resume=$2 i
  local extra=()
  if [[ $resume == resume ]]; then
    extra=(-e 's/ssl_session_cache off;/ssl_session_cache shared:SSL:10m;/'
      -e "s|ssl_session_tickets off;|ssl_session_tickets on; ssl_session_ticket_key $WORK/ticket.key;|")
  fi
  shift 2
  if [[ $UPSTREAM == separate ]]; then
    # The TLS instances' own upstream listener off PORT_UP (to the port above it); the
    # separate upstream serves PORT_UP.
    extra+=(-e "s/listen 127.0.0.1:$PORT_UP /listen 127.0.0.1:$((PORT_UP + 1)) /")
    start_upstream
  fi
  for i in "$@"; do start_nginx_instance "$variant" "$i" "${extra[@]}"; done
  wait_port "$PORT_TLS13" "$WORK"
  wait_port "$PORT_UP" "$WORK"
}
# hsmgate_conf SERVER: $WORK/SERVER/nginx.conf for one of the key-source hsmgate servers:
# the same nginx-syntax config for all four but for the key (and TLS 1.2's suite).
hsmgate_conf() {
  local dir="$WORK/$1" cert key suite=ECDHE-RSA-AES128-GCM-SHA256
  case $1 in
    hsmgate-file) cert="$WORK/rsa-file.crt" key="$WORK/rsa-file.key" ;;
    hsmgate-conf) cert="$WORK/rsa-token.crt" key="engine:pkcs11:$RSA_URI" ;;
    hsmgate-ec-file) cert="$WORK/ec-file.crt" key="$WORK/ec-file.key" suite=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
    hsmgate-ec-token) cert="$WORK/ec-token.crt" key="engine:pkcs11:$EC_URI" suite=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
    *) die "hsmgate_conf: unknown server $1" ;;
  esac
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
pid $dir/hsmgate.pid;
error_log $dir/logs/error.log warn;
env HSMGATE_ADMIN=127.0.0.1:$PORT_ADMIN;
events { worker_connections 8192; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$PORT_UP; keepalive 64; }
    server {
        listen 127.0.0.1:$PORT_HSMGATE ssl backlog=4096;
        ssl_certificate     $cert;
        ssl_certificate_key "$key";
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $suite;
        ssl_prefer_server_ciphers on;
        ssl_session_cache off;
        ssl_session_tickets off;
        location = /proxy { $PROXY_TO_UP }
    }
}
EOF
}
# start_upstream: the separate plain upstream on PORT_UP (nginx instance 9, file key); its
# TLS listeners are moved to the two ports above PORT_UP + 1, so that it takes no TLS clients.
start_upstream() {
  start_nginx_instance file 9 -e "s/listen 127.0.0.1:$PORT_TLS12 /listen 127.0.0.1:$((PORT_UP + 2)) /" \
    -e "s/listen 127.0.0.1:$PORT_TLS13 /listen 127.0.0.1:$((PORT_UP + 3)) /"
  wait_port "$PORT_UP" "$WORK"
}
start_server() { # SERVER [resume]
  case $1 in
    nginx-file) start_nginx file "${2:-}" 1 2 ;;
    nginx-libp11) start_nginx token "${2:-}" 1 2 ;;
    nginx-ec-file) start_nginx ec-file "${2:-}" 1 2 ;;
    nginx-ec-libp11) start_nginx ec-token "${2:-}" 1 2 ;;
    hsmgate | hsmgate-b)
      local bin=$HSMGATE
      [[ $1 == hsmgate-b ]] && bin=$HSMGATE_B
      start_upstream
      "${SERVER_PIN[@]}" "$bin" -c "$WORK/hsmgate.toml" >"$WORK/$1.log" 2>&1 &
      PIDS+=($!)
      wait_port "$PORT_HSMGATE" "$WORK" ;;
    hsmgate-*)
      start_upstream
      hsmgate_conf "$1"
      HSMGATE_ADMISSION=off HSMGATE_PKCS11_MODULE=$MODULE "${SERVER_PIN[@]}" "$HSMGATE" -c "$WORK/$1/nginx.conf" -p "$WORK/$1" \
        >"$WORK/$1/stdout" 2>&1 &
      PIDS+=($!)
      wait_port "$PORT_HSMGATE" "$WORK/$1" ;;
  esac
  sleep 0.3
  all_alive "$1: a server process exited at start (another program on one of the ports ${PORTS[*]}?); logs in $WORK (KEEP=1 keeps them)"
}
url() { # SERVER ROW
  case $1:$2 in
    hsmgate*:*) echo "https://127.0.0.1:$PORT_HSMGATE/proxy" ;;
    *:hs12 | *:ec12) echo "https://127.0.0.1:$PORT_TLS12/proxy" ;;
    *:ka-direct) echo "https://127.0.0.1:$PORT_TLS13/direct" ;;
    *) echo "https://127.0.0.1:$PORT_TLS13/proxy" ;;
  esac
}

# run_load SERVER ROW ARGS... -> appends "ROW SERVER REP rate cpu_us resumed% errors" to the raw TSV.
# Raw numbers go to RESULTS as they come, so an interrupted run keeps what it measured.
mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RAW="$RESULTS/compare-$STAMP-raw.tsv" SWEEP_RAW="$RESULTS/compare-$STAMP-sweep-raw.jsonl"
: >"$RAW"
: >"$SWEEP_RAW"
# Context switches (voluntary and not) of every live thread of the given PIDs, and their
# thread count: "switches threads". A thread that ends during a run takes its switches with
# it, so the difference over a run is a lower bound.
ctx_threads() {
  local p files=()
  for p in "$@"; do files+=("/proc/$p/task/"*/status); done
  cat "${files[@]}" 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/{s += $2} /^Name:/{n++} END{print s + 0, n + 0}'
}
# sign_cpu METRIC: "seconds signatures" of hsmgate's histogram METRIC (the CPU its
# signatures took on the threads that made them: hsmgate_signer_call_cpu_seconds for a
# token key, hsmgate_tls_file_key_sign_cpu_seconds for a file key), or "" without an admin.
sign_cpu() { hist_totals "$PORT_ADMIN" "$1"; }
run_load() {
  local server=$1 row=$2 c0 c1 x0 x1 threads out rate ok errs hs res cpu ctx resumed="-" s0="" s1="" csign="-" smetric
  shift 2
  # The base servers run only the chosen rows; the key-source servers run theirs.
  ((KEY_LOOP)) || want "$row" || return 0
  case $server in
    hsmgate-conf | hsmgate-ec-token) smetric=hsmgate_signer_call_cpu_seconds ;;
    hsmgate-file | hsmgate-ec-file) smetric=hsmgate_tls_file_key_sign_cpu_seconds ;;
    *) smetric="" ;;
  esac
  [[ -n $smetric ]] && s0=$(sign_cpu "$smetric")
  read -r x0 _ < <(ctx_threads "${PIDS[@]}")
  c0=$(cpu_ticks "${PIDS[@]}")
  out=$("${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup "$WARMUP" "$@" "$(url "$server" "$row")" 2>"$WORK/load.err") \
    || { cat "$WORK/load.err" >&2; die "hsmgate-load failed against $server ($row)"; }
  c1=$(cpu_ticks "${PIDS[@]}")
  read -r x1 threads < <(ctx_threads "${PIDS[@]}")
  [[ -n $s0 ]] && s1=$(sign_cpu "$smetric")
  # The signatures' CPU measured in the run itself (µs per signature: the token's calls, or the
  # software signature of a file key), same window as the server CPU.
  [[ -n $s0 && -n $s1 ]] && csign=$(awk -v a="$s0" -v b="$s1" 'BEGIN{split(a, x, " "); split(b, y, " ");
    n = y[2] - x[2]; if (n > 0) printf "%.0f", (y[1] - x[1]) / n * 1e6; else print "-"}')
  rate=$(jnum rate "$out") ok=$(jnum ok "$out") errs=$(jnum error_total "$out") hs=$(jnum handshakes "$out")
  res=$(jnum resumed "$out")
  # CPU includes the warm-up, so divide by the requests of the whole run (approximately rate * (warmup + duration)).
  cpu=$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v r="$rate" -v w="${WARMUP%s}" -v s="$(jnum duration_s "$out")" \
    'BEGIN{n = r * (w + s); printf "%.0f", (n > 0 ? d / hz * 1e6 / n : 0)}')
  ctx=$(awk -v d=$((x1 - x0)) -v r="$rate" -v w="${WARMUP%s}" -v s="$(jnum duration_s "$out")" \
    'BEGIN{n = r * (w + s); printf "%.1f", (n > 0 ? d / n : 0)}')
  [[ $res != null && -n $res ]] && resumed=$(awk -v a="$res" -v b="$hs" 'BEGIN{printf "%.0f%%", (b > 0 ? 100 * a / b : 0)}')
  ((errs == 0)) || say "$server $row: $errs errors $(jerrors "$out")"
  # row server rep rate cpu_us resumed errors context_switches_per_req server_threads sign_cpu_us
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$server" "$REP" "$rate" "$cpu" "$resumed" "$errs" "$ctx" "$threads" "$csign" >>"$RAW"
  say "  $server $row: $rate/s ok=$ok errors=$errs server-cpu=${cpu}us/req ctx-switches=${ctx}/req threads=$threads resumed=$resumed sign-cpu=${csign}us/sign"
}

SERVERS=(nginx-file nginx-libp11 hsmgate)
[[ -n ${HSMGATE_B:-} ]] && SERVERS+=(hsmgate-b)
# is_gate SERVER: an hsmgate (A or B)
is_gate() { [[ $1 == hsmgate* ]]; }
KEY_SERVERS=(hsmgate-file hsmgate-conf nginx-ec-file nginx-ec-libp11 hsmgate-ec-file hsmgate-ec-token)
# Without the base TLS 1.3 row: nginx + libp11's RSA handshakes too, for hsmgate-conf's ratio.
want hs13 || KEY_SERVERS=(nginx-libp11 "${KEY_SERVERS[@]}")
say "layout: $LAYOUT; rows:$ROWS; $REPS rep(s) of $DURATION (+$WARMUP warm-up) per run, $CONNS connections"
# raw_sign ROW MECH KEY_LABEL THREADS: p11sign's rate and CPU µs per signature into the raw TSV
# (one thread: pinned to SERVER_CPU, where the servers sign).
raw_sign() {
  local pin=() out
  (($4 == 1)) && pin=("${SERVER_PIN[@]}")
  out=$("${pin[@]}" "$WORK/p11sign" "$MODULE" proxy 1234 "$3" "$2" "$4" "$SIGN_SECS" own)
  printf '%s\traw-softhsm\t%s\t%s\t%s\t-\t0\n' "$1" "$REP" "$(cut -f5 <<<"$out")" "$(cut -f6 <<<"$out")" >>"$RAW"
  say "  raw C_Sign $2, $4 thread(s): $(cut -f5 <<<"$out")/s, $(cut -f6 <<<"$out") µs CPU/sign"
}
# file_sign ROW SCHEME KEY: the same key signed in software (rustls' aws-lc-rs), on SERVER_CPU.
file_sign() {
  local out
  out=$("${SERVER_PIN[@]}" "$FILE_SIGN" "$3" "$2" "$SIGN_SECS")
  printf '%s\tfile-sign\t%s\t%s\t%s\t-\t0\n' "$1" "$REP" "$(cut -f4 <<<"$out")" "$(cut -f5 <<<"$out")" >>"$RAW"
  say "  software sign $2 (file key): $(cut -f4 <<<"$out")/s, $(cut -f5 <<<"$out") µs CPU/sign"
}
KEY_LOOP=0
for REP in $(seq 1 "$REPS"); do
  say "rep $REP/$REPS"
  if want sign || want keys; then raw_sign sign1 rsa-pss proxy-rsa 1; fi
  if want sign; then raw_sign sign2 rsa-pss proxy-rsa 2; fi
  if want keys; then
    raw_sign ecsign1 ecdsa proxy-ec 1
    file_sign filesign rsa-pss "$WORK/rsa-file.key"
    file_sign ecfilesign ecdsa "$WORK/ec-file.key"
  fi
  if any_base_row; then
    order=("${SERVERS[@]}")
    # With an A/B, odd reps run A then B and even reps B then A (drift of the busy machine).
    ((REP % 2 == 0)) && [[ -n ${HSMGATE_B:-} ]] && order=(nginx-file nginx-libp11 hsmgate-b hsmgate)
    for s in "${order[@]}"; do
      start_server "$s"
      run_load "$s" hs13 --mode handshake --tls 1.3 -c "$CONNS" -d "$DURATION"
      run_load "$s" hs12 --mode handshake --tls 1.2 -c "$CONNS" -d "$DURATION"
      is_gate "$s" || run_load "$s" ka-direct --mode keepalive --tls 1.3 -c "$CONNS" -d "$DURATION"
      run_load "$s" ka-proxy --mode keepalive --tls 1.3 -c "$CONNS" -d "$DURATION"
      if is_gate "$s"; then
        run_load "$s" resume --mode resume --tls 1.3 -c "$RESUME_CONNS" -d "$DURATION"
      fi
      stop_all
      if ! is_gate "$s" && want resume; then
        start_server "$s" resume
        run_load "$s" resume --mode resume --tls 1.3 -c "$RESUME_CONNS" -d "$DURATION"
        stop_all
      fi
    done
  fi
  if want keys; then
    KEY_LOOP=1
    for s in "${KEY_SERVERS[@]}"; do
      start_server "$s"
      case $s in
        *ec*) run_load "$s" ec13 --mode handshake --tls 1.3 -c "$CONNS" -d "$DURATION"
              run_load "$s" ec12 --mode handshake --tls 1.2 -c "$CONNS" -d "$DURATION" ;;
        *) run_load "$s" hs13 --mode handshake --tls 1.3 -c "$CONNS" -d "$DURATION"
           run_load "$s" hs12 --mode handshake --tls 1.2 -c "$CONNS" -d "$DURATION" ;;
      esac
      stop_all
    done
    KEY_LOOP=0
  fi
done

# --- statistics helpers -----------------------------------------------------------------------
vals() { awk -F'\t' -v r="$1" -v s="$2" -v c="${3:-4}" '$1 == r && $2 == s {print $c}' "$RAW"; }
med() { vals "$@" | { grep -v '^-$' || true; } | median; }
range() { vals "$1" "$2" | span; }

# --- open-loop sweep: offered = factor x each server's median TLS 1.3 capacity ------------------
if want sweep && want hs13; then  # the sweep needs the TLS 1.3 capacities
  declare -A CAP
  for s in "${SERVERS[@]}"; do CAP[$s]=$(med hs13 "$s"); done
  say "sweep factors: $SWEEP; capacities: nginx-file ${CAP[nginx-file]}, nginx-libp11 ${CAP[nginx-libp11]}, hsmgate ${CAP[hsmgate]}"
  # Each point gets a freshly started server: an overloaded point leaves thousands of queued
  # connections behind, which would otherwise be served during the next point.
  for REP in $(seq 1 "$REPS"); do
    for s in "${SERVERS[@]}"; do
      for f in $SWEEP; do
        start_server "$s"
        rate=$(awk -v c="${CAP[$s]}" -v f="$f" 'BEGIN{printf "%.0f", (c * f < 1 ? 1 : c * f)}')
        out=$("${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup "$WARMUP" --mode handshake --tls 1.3 \
          --rate "$rate" --duration "$DURATION" --timeout "$SWEEP_TIMEOUT" "$(url "$s" sweep)" 2>"$WORK/load.err") \
          || { say "  sweep $s ${f}x: hsmgate-load failed ($(head -c 200 "$WORK/load.err")), counted as no goodput"
               out="{\"rate\":0,\"p99_ms\":null,\"error_total\":-1,\"errors\":{}}"; }
        printf '{"server":"%s","factor":%s,"offered":%s,"goodput":%s,"p99_ms":%s,"errors":%s,"rep":%s}\n' \
          "$s" "$f" "$rate" "$(jnum rate "$out")" "$(jnum p99_ms "$out")" "$(jnum error_total "$out")" "$REP" >>"$SWEEP_RAW"
        say "  sweep $s ${f}x = $rate/s: goodput $(jnum rate "$out")/s p99 $(jnum p99_ms "$out") ms errors $(jnum error_total "$out") $(jerrors "$out")"
        stop_all
      done
    done
  done
fi

# --- report -------------------------------------------------------------------------------------
OUT="$RESULTS/compare-$STAMP.md" SWEEP_MED="$RESULTS/compare-$STAMP-sweep.jsonl" SVG="$RESULTS/compare-$STAMP-sweep.svg"
if want sweep && want hs13; then
  # Medians per (server, factor) over the repetitions, as plot-sweep input.
  : >"$SWEEP_MED"
  for s in "${SERVERS[@]}"; do
    for f in $SWEEP; do
      pick() { sed -n "s/.*\"server\":\"$s\",\"factor\":$f,.*\"$1\":\([0-9][0-9.eE+-]*\).*/\1/p" "$SWEEP_RAW"; }
      off=$(pick offered | median) good=$(pick goodput | median) p99=$(pick p99_ms | median) err=$(pick errors | median)
      [[ $p99 == NA ]] && p99=null
      [[ $err == NA ]] && err=null
      printf '{"server":"%s","factor":%s,"offered":%s,"goodput":%s,"p99_ms":%s,"errors":%s}\n' "$s" "$f" "$off" "$good" "$p99" "$err" >>"$SWEEP_MED"
    done
  done
  "$PLOT" "$SWEEP_MED" "$SVG" "open-loop TLS 1.3 handshakes, RSA-2048 ($REPS rep median, $DURATION each)" 2>/dev/null \
    || say "plot-sweep failed (the table is still written)"
else
  rm -f "$SWEEP_RAW"
fi

name() {
  case $1 in
    nginx-file) echo "nginx, file key" ;;
    nginx-libp11) echo "nginx + libp11, token key" ;;
    hsmgate) echo "hsmgate, token key" ;;
    hsmgate-conf) echo "hsmgate, token key (nginx-syntax config, admission off)" ;;
    hsmgate-file) echo "hsmgate, same key from a file (nginx-syntax config)" ;;
    nginx-ec-file) echo "nginx, P-256 file key" ;;
    nginx-ec-libp11) echo "nginx + libp11, P-256 token key" ;;
    hsmgate-ec-token) echo "hsmgate, P-256 token key (admission off)" ;;
    hsmgate-ec-file) echo "hsmgate, same P-256 key from a file" ;;
    hsmgate-b) echo "hsmgate B ($(basename "$(dirname "$HSMGATE_B")")/$(basename "$HSMGATE_B")), token key" ;;
    raw-softhsm) echo "raw SoftHSM C_Sign" ;;
    file-sign) echo "software sign, same key (aws-lc-rs)" ;;
  esac
}
notes() { # ROW SERVER -> "resumed 99% 98%" and/or "errors: N"
  awk -F'\t' -v r="$1" -v s="$2" '$1 == r && $2 == s {if ($6 != "-") res = res " " $6; e += $7}
    END{out = res != "" ? "resumed" res : ""; if (e > 0) out = out (out != "" ? "; " : "") "errors: " e; print out}' "$RAW"
}
row_table() { # ROW TITLE UNIT: one table line per server with numbers in ROW
  local row=$1 s m ref_t ref_f lib=nginx-libp11 file=nginx-file
  [[ $row == ec* ]] && lib=nginx-ec-libp11 file=nginx-ec-file
  ref_t=$(med "$row" "$lib") ref_f=$(med "$row" "$file")
  for s in $(printf '%s\n' "${SERVERS[@]}" "${KEY_SERVERS[@]}" | awk '!seen[$0]++'); do
    [[ -n $(vals "$row" "$s") ]] || continue
    m=$(med "$row" "$s")
    printf '| %s | %s | %s | %s (%s) | %s | %s | %s | %s (%s) | %s |\n' "$2" "$(name "$s")" "$3" "$m" "$(range "$row" "$s")" \
      "$(ratio "$m" "$ref_t")" "$(ratio "$m" "$ref_f")" "$(med "$row" "$s" 5)" "$(med "$row" "$s" 8)" "$(med "$row" "$s" 9)" \
      "$(notes "$row" "$s")"
  done
}
sign_row() { # ROW SERVER TITLE NOTE
  [[ -n $(vals "$1" "$2") ]] || return 0
  printf '| %s | %s | sign/s | %s (%s) | | | %s (%s) | | %s |\n' "$3" "$(name "$2")" "$(med "$1" "$2")" "$(range "$1" "$2")" \
    "$(med "$1" "$2" 5)" "$(vals "$1" "$2" 5 | span)" "$4"
}
# per_rep ROW SERVER [COL]: "rep value" lines
per_rep() { awk -F'\t' -v r="$1" -v s="$2" -v c="${3:-5}" '$1 == r && $2 == s {print $3, $c}' "$RAW"; }
# decompose ROW TOKEN FILE RAW_ROW SOFT_ROW: per rep, T - F - C and T - F - Cr + Sr (server CPU
# µs per handshake with the token key T and the file key F; raw C_Sign CPU C from p11sign and
# the software signature's S from file-sign, each in a tight loop of its own; Cr and Sr, the
# same two signatures' CPU measured inside hsmgate in T's and F's own runs). A signature in a
# handshake costs more than in a tight loop (caches), and SoftHSM's moves between runs, so the
# offload's own cost subtracts each run's own; the loop figures are shown beside them.
decompose() {
  local row=$1 tok=$2 fil=$3 rawr=$4 soft=$5 title=$6
  [[ -n $(vals "$row" "$tok") && -n $(vals "$row" "$fil") ]] || return 0
  join <(per_rep "$row" "$tok" | sort) <(per_rep "$row" "$fil" | sort) \
    | join - <(per_rep "$rawr" raw-softhsm | sort) | join - <(per_rep "$soft" file-sign | sort) \
    | join - <(per_rep "$row" "$tok" 10 | sort) | join - <(per_rep "$row" "$fil" 10 | sort) >"$WORK/decomp"
  # columns: rep T F C S Cr Sr
  local lit own
  lit=$(awk '{printf "%.0f\n", $2 - $3 - $4}' "$WORK/decomp")
  own=$(awk '$6 != "-" && $7 != "-" {printf "%.0f\n", $2 - $3 - $6 + $7}' "$WORK/decomp")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s (%s) | **%s** (%s) |\n' "$title" "$(med "$row" "$tok" 5)" "$(med "$row" "$fil" 5)" \
    "$(med "$rawr" raw-softhsm 5)" "$(med "$row" "$tok" 10)" "$(med "$soft" file-sign 5)" "$(med "$row" "$fil" 10)" \
    "$(median <<<"$lit")" "$(span <<<"$lit")" \
    "$(median <<<"$own")" "$(span <<<"$own")"
}
# target LABEL ROW SERVER REFERENCE GOAL: "| label | rate ratio | verdict | CPU ratio | verdict |":
# SERVER's median handshakes/s over REFERENCE's, and REFERENCE's server CPU per handshake over
# SERVER's (the rate ratio when the server core is the only limit: on a shared machine the
# rate ratio also carries how much of the core each server got).
target() {
  local r c
  r=$(ratio "$(med "$2" "$3")" "$(med "$2" "$4")") c=$(ratio "$(med "$2" "$4" 5)" "$(med "$2" "$3" 5)")
  verdict() { awk -v v="$1" -v g="$2" 'BEGIN{if (v == "-") print "-"; else print (v + 0 >= g + 0 ? "met" : "not met")}'; }
  printf '| %s | ≥ %s | %s | %s | %s | %s |\n' "$1" "$5" "$r" "$(verdict "$r" "$5")" "$c" "$(verdict "$c" "$5")"
}
{
  echo "# hsmgate vs nginx, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Host: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -sr). $LAYOUT."
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version 2>/dev/null), hsmgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release${HSMGATE_A:+; the hsmgate rows but B run $HSMGATE_A})."
  echo "Load: hsmgate-load, 1 thread, $CONNS connections (closed loop), $DURATION measured after $WARMUP warm-up, \`-k\` (no chain check; handshake signatures verified)."
  echo "Rows: $ROWS. Median of $REPS rep(s) (min..max). Servers are run back to back within each rep. Server CPU = utime+stime of every server process (nginx instances, upstream, hsmgate) over the run / requests."
  echo "Context switches: voluntary + involuntary of every live thread of those processes over the run / requests (threads that ended during the run are not counted); threads: their count at the end of the run."
  echo
  echo "| test | server | unit | median (min..max) | / nginx+libp11 | / nginx file | server CPU µs/req | server context switches/req (threads) | notes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  row_table hs13 "TLS 1.3 full handshake, RSA-2048 (/proxy)" "handshakes/s"
  row_table hs12 "TLS 1.2 full handshake, ECDHE-RSA (/proxy)" "handshakes/s"
  row_table ec13 "TLS 1.3 full handshake, P-256 (/proxy)" "handshakes/s"
  row_table ec12 "TLS 1.2 full handshake, ECDHE-ECDSA (/proxy)" "handshakes/s"
  row_table resume "TLS 1.3 resumed handshake (/proxy)" "handshakes/s"
  row_table ka-direct "keep-alive, nginx /direct (return 200)" "req/s"
  row_table ka-proxy "keep-alive, through the upstream" "req/s"
  echo
  echo "| raw signature | signer | unit | median (min..max) | | | CPU µs/sign (min..max) | | notes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  sign_row sign1 raw-softhsm "RSA-2048, 1 thread on the server CPU" "CKM_RSA_PKCS_PSS, p11sign"
  sign_row sign2 raw-softhsm "RSA-2048, 2 threads" "CKM_RSA_PKCS_PSS, p11sign"
  sign_row filesign file-sign "RSA-2048, 1 thread on the server CPU" "rsa_pss_rsae_sha256, file-sign"
  sign_row ecsign1 raw-softhsm "P-256, 1 thread on the server CPU" "CKM_ECDSA, p11sign"
  sign_row ecfilesign file-sign "P-256, 1 thread on the server CPU" "ecdsa_secp256r1_sha256, file-sign"
  if want keys; then
    echo
    echo "## The offload's own cost (server CPU µs per full handshake, hsmgate, one nginx-syntax config, token key vs the same key from a file)"
    echo
    echo "T = token key, F = the same key from a file (server CPU per handshake). C = raw \`C_Sign\` CPU of one signature (p11sign) and"
    echo "S = the same signature in software (file-sign), each in a tight loop of its own; Cr and Sr = the same two signatures' CPU inside"
    echo "hsmgate, in T's and F's own runs (\`hsmgate_signer_call_cpu_seconds\`, \`hsmgate_tls_file_key_sign_cpu_seconds\`)."
    echo "T − F − C is the issue's formula; it still subtracts the software signature F contains and a loop's figure for the token's, so"
    echo "T − F − Cr + Sr (each signature as it cost in its own handshakes) is the offload's own cost."
    echo "Both are taken per rep (T, F, C, S, Cr, Sr of the same rep); median (min..max)."
    echo
    echo "| handshake | T | F | C | Cr | S | Sr | T − F − C | offload's own: T − F − Cr + Sr |"
    echo "|---|---|---|---|---|---|---|---|---|"
    decompose hs13 hsmgate-conf hsmgate-file sign1 filesign "TLS 1.3, RSA-2048"
    decompose hs12 hsmgate-conf hsmgate-file sign1 filesign "TLS 1.2 ECDHE-RSA, RSA-2048"
    decompose ec13 hsmgate-ec-token hsmgate-ec-file ecsign1 ecfilesign "TLS 1.3, P-256"
    decompose ec12 hsmgate-ec-token hsmgate-ec-file ecsign1 ecfilesign "TLS 1.2 ECDHE-ECDSA, P-256"
    echo
    echo "## Targets (issue 11 items 2 and 3)"
    echo
    echo "| ratio | target | handshakes/s (medians) | | server CPU per handshake, inverse | |"
    echo "|---|---|---|---|---|---|"
    want hs13 && target "TLS 1.3 RSA-2048: hsmgate (TOML, admission off) / nginx + libp11" hs13 hsmgate nginx-libp11 1.2
    target "TLS 1.3 RSA-2048: hsmgate (nginx-syntax, admission off) / nginx + libp11" hs13 hsmgate-conf nginx-libp11 1.2
    for r in ec13 ec12; do
      v=$([[ $r == ec13 ]] && echo "TLS 1.3" || echo "TLS 1.2 ECDHE-ECDSA")
      target "$v P-256: hsmgate token / hsmgate same key from a file" $r hsmgate-ec-token hsmgate-ec-file 0.9
      target "$v P-256: hsmgate token / nginx + libp11 token" $r hsmgate-ec-token nginx-ec-libp11 1.5
    done
    echo
    echo "Offload's own cost, target ≤ 60 µs per handshake: see the last column above (TLS 1.3, RSA-2048)."
  fi
  if want sweep && want hs13; then
    echo
    echo "Notes: the resume row runs $RESUME_CONNS connections (the client keeps at most 8 TLS 1.3 tickets per server); its notes give the share of"
    echo "handshakes that resumed, per rep. nginx's resume row uses"
    echo "\`ssl_session_cache shared:SSL:10m; ssl_session_tickets on;\` and one \`ssl_session_ticket_key\` for both instances."
    echo "Keep-alive rows are bound by the single load-generator thread as much as by the servers."
    echo
    echo "## Open-loop sweep (TLS 1.3 full handshakes; offered = factor x the server's closed-loop median above; timeout $SWEEP_TIMEOUT)"
    echo
    echo "| server | factor | offered/s | goodput/s | p99 ms | errors |"
    echo "|---|---|---|---|---|---|"
    sed 's/^{"server":"\([^"]*\)","factor":\([^,]*\),"offered":\([^,]*\),"goodput":\([^,]*\),"p99_ms":\([^,]*\),"errors":\([^}]*\)}$/| \1 | \2 | \3 | \4 | \5 | \6 |/' "$SWEEP_MED"
    echo
    echo "Plot: $(basename "$SVG") (goodput and p99 vs offered). Raw numbers: compare-$STAMP-raw.tsv, compare-$STAMP-sweep-raw.jsonl."
  else
    echo
    echo "Raw numbers: compare-$STAMP-raw.tsv."
  fi
} >"$OUT"
cat "$OUT"
if want sweep && want hs13; then say "written: $OUT, $SVG"; else say "written: $OUT"; fi
