#!/usr/bin/env bash
# compare.sh: hsmgate side by side with nginx on this machine, same SoftHSM token.
#
# Servers (all RSA-2048; 127.0.0.1 only):
#   nginx-file     nginx, key in a PEM file           2 single-process instances, reuseport
#   nginx-libp11   nginx + libp11 (OpenSSL engine),   2 single-process instances, reuseport
#                  key on the token                   (stock nginx cannot use a token key in
#                                                     forked workers: benches/nginx-baseline/RESULTS.md)
#   hsmgate        target/release/hsmgate -c hsmgate.toml, key on the token through the
#                  signer pool; proxies everything to a plain nginx upstream on :8080
# plus the raw sign rate of the token (benches/nginx-baseline/p11sign.c, CKM_RSA_PKCS_PSS).
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
# Knobs: REPS (3), DURATION (5s per run), WARMUP (1s), CONNS (50), RESUME_CONNS (6: the
#        load generator's rustls client keeps at most 8 TLS 1.3 tickets per server, so more
#        concurrent connections than that find no ticket and do full handshakes), SWEEP (factors,
#        "0.25 0.5 1 1.5 2 3"), SWEEP_TIMEOUT (3s), SIGN_SECS (3), LOAD_CPU, SERVER_CPU,
#        NGINX_BASELINE (default benches/nginx-baseline), RESULTS (directory),
#        QUICK=1 (1 rep, 2 s runs, 3 sweep points: a smoke run), KEEP=1 (keep the work dir),
#        PORT_UP (8080, upstream), PORT_TLS12 (8442, nginx TLS 1.2), PORT_TLS13 (8443, nginx
#        TLS 1.3), PORT_HSMGATE (9443): all on 127.0.0.1, checked free before anything starts;
#        nginx-conf.sh's fixed ports are rewritten in the generated configs when changed.
#        ROWS: the rows to run, of "sign hs13 hs12 ka-direct ka-proxy resume sweep" (default
#        all); e.g. ROWS=ka-proxy for the keep-alive row through the upstream alone.
#        UPSTREAM: "inproc" (default) or "separate". inproc: each nginx instance also serves
#        the upstream (:PORT_UP) itself, so nginx's /proxy often stays in one process and event
#        loop, while hsmgate's upstream is a separate nginx process (instance 9). separate:
#        every server, nginx too, proxies to that one separate upstream process (the nginx
#        instances' own upstream listeners are moved off PORT_UP); same upstream for all.
#        HSMGATE_B=PATH: a second hsmgate binary (e.g. a build of another commit), run as
#        "hsmgate-b" right after hsmgate in every rep with the same configuration, upstream
#        and rows, for an A/B in one run (its ratios are in the same table).
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
PORTS=("$PORT_UP" "$PORT_TLS12" "$PORT_TLS13" "$PORT_HSMGATE" $((PORT_UP + 1)) $((PORT_UP + 2)) $((PORT_UP + 3)))

SCRIPT=compare
UPSTREAM=${UPSTREAM:-inproc}
[[ $UPSTREAM == inproc || $UPSTREAM == separate ]] || { echo "compare: UPSTREAM is inproc or separate" >&2; exit 1; }
ROWS=" ${ROWS:-sign hs13 hs12 ka-direct ka-proxy resume sweep} "
want() { [[ $ROWS == *" $1 "* ]]; }
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
token_toml >"$WORK/hsmgate.toml"


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
    hsmgate | hsmgate-b)
      local bin=$HSMGATE
      [[ $1 == hsmgate-b ]] && bin=$HSMGATE_B
      start_upstream
      "${SERVER_PIN[@]}" "$bin" -c "$WORK/hsmgate.toml" >"$WORK/$1.log" 2>&1 &
      PIDS+=($!)
      wait_port "$PORT_HSMGATE" "$WORK" ;;
  esac
  sleep 0.3
  all_alive "$1: a server process exited at start (another program on one of the ports ${PORTS[*]}?); logs in $WORK (KEEP=1 keeps them)"
}
url() { # SERVER ROW
  case $1:$2 in
    hsmgate*:*) echo "https://127.0.0.1:$PORT_HSMGATE/proxy" ;;
    *:hs12) echo "https://127.0.0.1:$PORT_TLS12/proxy" ;;
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
run_load() {
  local server=$1 row=$2 c0 c1 out rate ok errs hs res cpu resumed="-"
  shift 2
  want "$row" || return 0
  c0=$(cpu_ticks "${PIDS[@]}")
  out=$("${LOAD_PIN[@]}" "$LOAD" -k -t 1 --json --warmup "$WARMUP" "$@" "$(url "$server" "$row")" 2>"$WORK/load.err") \
    || { cat "$WORK/load.err" >&2; die "hsmgate-load failed against $server ($row)"; }
  c1=$(cpu_ticks "${PIDS[@]}")
  rate=$(jnum rate "$out") ok=$(jnum ok "$out") errs=$(jnum error_total "$out") hs=$(jnum handshakes "$out")
  res=$(jnum resumed "$out")
  # CPU includes the warm-up, so divide by the requests of the whole run (approximately rate * (warmup + duration)).
  cpu=$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v r="$rate" -v w="${WARMUP%s}" -v s="$(jnum duration_s "$out")" \
    'BEGIN{n = r * (w + s); printf "%.0f", (n > 0 ? d / hz * 1e6 / n : 0)}')
  [[ $res != null && -n $res ]] && resumed=$(awk -v a="$res" -v b="$hs" 'BEGIN{printf "%.0f%%", (b > 0 ? 100 * a / b : 0)}')
  ((errs == 0)) || say "$server $row: $errs errors $(jerrors "$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$server" "$REP" "$rate" "$cpu" "$resumed" "$errs" >>"$RAW"
  say "  $server $row: $rate/s ok=$ok errors=$errs server-cpu=${cpu}us/req resumed=$resumed"
}

SERVERS=(nginx-file nginx-libp11 hsmgate)
[[ -n ${HSMGATE_B:-} ]] && SERVERS+=(hsmgate-b)
# is_gate SERVER: an hsmgate (A or B)
is_gate() { [[ $1 == hsmgate* ]]; }
say "layout: $LAYOUT; $REPS rep(s) of $DURATION (+$WARMUP warm-up) per run, $CONNS connections"
for REP in $(seq 1 "$REPS"); do
  say "rep $REP/$REPS"
  for th in 1 2; do
    want sign || break
    pin=()
    ((th == 1)) && pin=("${SERVER_PIN[@]}")
    r=$("${pin[@]}" "$WORK/p11sign" "$MODULE" proxy 1234 proxy-rsa rsa-pss "$th" "$SIGN_SECS" own | cut -f5)
    printf 'sign%s\traw-softhsm\t%s\t%s\t-\t-\t0\n' "$th" "$REP" "$r" >>"$RAW"
    say "  raw C_Sign RSA-PSS, $th thread(s): $r/s"
  done
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
done

# --- statistics helpers -----------------------------------------------------------------------
vals() { awk -F'\t' -v r="$1" -v s="$2" -v c="${3:-4}" '$1 == r && $2 == s {print $c}' "$RAW"; }
med() { vals "$@" | { grep -v '^-$' || true; } | median; }
range() { vals "$1" "$2" | sort -g | awk 'NR==1{m=$1} {x=$1} END{if (NR) printf "%s..%s", m, x}'; }

# --- open-loop sweep: offered = factor x each server's median TLS 1.3 capacity ------------------
declare -A CAP
want sweep && want hs13 || SWEEP="" # the sweep needs the TLS 1.3 capacities
for s in "${SERVERS[@]}"; do CAP[$s]=$(med hs13 "$s"); done
[[ -n $SWEEP ]] && say "sweep factors: $SWEEP; capacities: nginx-file ${CAP[nginx-file]}, nginx-libp11 ${CAP[nginx-libp11]}, hsmgate ${CAP[hsmgate]}"
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

# --- report -------------------------------------------------------------------------------------
OUT="$RESULTS/compare-$STAMP.md" SWEEP_MED="$RESULTS/compare-$STAMP-sweep.jsonl" SVG="$RESULTS/compare-$STAMP-sweep.svg"
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

name() {
  case $1 in
    nginx-file) echo "nginx, file key" ;;
    nginx-libp11) echo "nginx + libp11, token key" ;;
    hsmgate) echo "hsmgate, token key" ;;
    hsmgate-b) echo "hsmgate B ($(basename "$(dirname "$HSMGATE_B")")/$(basename "$HSMGATE_B")), token key" ;;
    raw-softhsm) echo "raw SoftHSM C_Sign" ;;
  esac
}
notes() { # ROW SERVER -> "resumed 99% 98%" and/or "errors: N"
  awk -F'\t' -v r="$1" -v s="$2" '$1 == r && $2 == s {if ($6 != "-") res = res " " $6; e += $7}
    END{out = res != "" ? "resumed" res : ""; if (e > 0) out = out (out != "" ? "; " : "") "errors: " e; print out}' "$RAW"
}
row_table() { # ROW TITLE UNIT
  local row=$1 s m ref_t ref_f
  ref_t=$(med "$row" nginx-libp11) ref_f=$(med "$row" nginx-file)
  for s in "${SERVERS[@]}"; do
    [[ -n $(vals "$row" "$s") ]] || continue
    m=$(med "$row" "$s")
    printf '| %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n' "$2" "$(name "$s")" "$3" "$m" "$(range "$row" "$s")" \
      "$(ratio "$m" "$ref_t")" "$(ratio "$m" "$ref_f")" "$(med "$row" "$s" 5)" "$(notes "$row" "$s")"
  done
}
{
  echo "# hsmgate vs nginx, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Host: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -sr). $LAYOUT."
  echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version 2>/dev/null), hsmgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release)."
  echo "Load: hsmgate-load, 1 thread, $CONNS connections (closed loop), $DURATION measured after $WARMUP warm-up, \`-k\` (no chain check; handshake signatures verified)."
  echo "Median of $REPS rep(s) (min..max). Servers are run back to back within each rep. Server CPU = utime+stime of every server process (nginx instances, upstream, hsmgate) over the run / requests."
  echo
  echo "| test | server | unit | median (min..max) | / nginx+libp11 | / nginx file | server CPU µs/req | notes |"
  echo "|---|---|---|---|---|---|---|---|"
  row_table hs13 "TLS 1.3 full handshake (/proxy)" "handshakes/s"
  row_table hs12 "TLS 1.2 full handshake, ECDHE-RSA (/proxy)" "handshakes/s"
  row_table resume "TLS 1.3 resumed handshake (/proxy)" "handshakes/s"
  row_table ka-direct "keep-alive, nginx /direct (return 200)" "req/s"
  row_table ka-proxy "keep-alive, through the upstream" "req/s"
  for th in 1 2; do
    printf '| raw token sign rate, %s thread(s) | %s | sign/s | %s (%s) | | | | CKM_RSA_PKCS_PSS, p11sign |\n' "$th" "$(name raw-softhsm)" \
      "$(med "sign$th" raw-softhsm)" "$(range "sign$th" raw-softhsm)"
  done
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
} >"$OUT"
cat "$OUT"
say "written: $OUT, $SVG"
