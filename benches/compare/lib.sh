# lib.sh: helpers shared by compare.sh and lab-sweep.sh (sourced, not run).
# The caller sets SCRIPT (its name, for messages) and keeps the PIDs it starts in PIDS.

say() { echo "${SCRIPT:-bench}: $*" >&2; }
die() { say "$*"; exit 1; }

# Stop every process in PIDS: SIGTERM, up to 3 s, then SIGKILL; reap them.
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# die with MESSAGE unless every process in PIDS still runs (a server that failed at start)
all_alive() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "$1"; done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# die unless every port given is free
ports_free() {
  local port
  for port in "$@"; do port_busy "$port" && die "port $port is busy (needs $* free)"; done
  return 0
}
# wait_port PORT [WHERE]: up to 15 s for something to listen on 127.0.0.1:PORT
wait_port() {
  local _
  for _ in $(seq 1 150); do port_busy "$1" && return 0; sleep 0.1; done
  die "nothing listens on :$1 (logs in ${2:-the work dir})"
}
# ticks PID: "utime stime" clock ticks of one process
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# rep_order REP SERVER...: the servers one per line, every other rep in reverse order (the
# drift of a shared machine falls on each side alike)
rep_order() { local rep=$1; shift; if ((rep % 2)); then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi; }
# utime+stime clock ticks of the given PIDs
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }

# Numbers out of hsmgate-load's one-line --json report.
jnum() { sed -n "s/.*\"$1\":\(null\|[0-9.eE+-][0-9.eE+-]*\).*/\1/p" <<<"$2"; }
jerrors() { sed -n 's/.*"errors":\({[^}]*}\).*/\1/p' <<<"$1"; }

# Median of the numbers on stdin ("NA" when there are none).
median() { sort -g | awk '{a[NR]=$1} END{if (NR == 0) {print "NA"; exit} if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2] + a[NR/2+1]) / 2}'; }
# The smallest and largest of the numbers on stdin as "MIN..MAX" (nothing when none).
span() { sort -g | awk 'NR==1{m=$1} {x=$1} END{if (NR) printf "%s..%s", m, x}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "NA" || b == "NA" || b == 0) print "-"; else printf "%.2f", a / b}'; }

# make_work NAME [CLEANUP]: WORK = a fresh temporary directory, PIDS = (); on exit, run
# CLEANUP (a function name), stop every process in PIDS and remove WORK (KEEP=1 keeps it).
make_work() {
  WORK=$(mktemp -d -t "hsmgate-$1.XXXXXX")
  PIDS=()
  WORK_CLEANUP=${2:-}
  trap finish_work EXIT
  trap 'exit 130' INT TERM
}
finish_work() {
  stop_all
  if [[ -n ${WORK_CLEANUP:-} ]]; then "$WORK_CLEANUP" || true; fi
  if [[ ${KEEP:-0} == 1 ]]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}

# pin_layout: LOAD_PIN / SERVER_PIN (taskset prefixes; empty on one CPU) from LOAD_CPU (0)
# and SERVER_CPU (1); PINNED=1 when pinned.
pin_layout() {
  if (($(nproc) >= 2)); then
    LOAD_CPU=${LOAD_CPU:-0} SERVER_CPU=${SERVER_CPU:-1}
    LOAD_PIN=(taskset -c "$LOAD_CPU") SERVER_PIN=(taskset -c "$SERVER_CPU") PINNED=1
  else
    LOAD_PIN=() SERVER_PIN=() PINNED=0
  fi
}

# build_release: hsmgate, hsmgate-load, plot-sweep and file-sign (release); sets HSMGATE
# (or HSMGATE_A), LOAD, PLOT, FILE_SIGN. The binaries are where cargo puts them (CARGO_TARGET_DIR if set).
# NO_BUILD=1 takes the binaries as they are (e.g. while another cargo holds the target dir).
build_release() {
  if [[ ${NO_BUILD:-0} == 1 ]]; then
    say "NO_BUILD=1: using the release binaries as built"
  else
    say "building hsmgate, hsmgate-load, plot-sweep, file-sign (release)"
    (cd "$ROOT" && cargo build --release -q -p hsmgate-proxy --bin hsmgate \
      && cargo build --release -q -p hsmgate-benches --bin hsmgate-load --bin plot-sweep --bin file-sign)
  fi
  local bin=${CARGO_TARGET_DIR:-$ROOT/target}/release
  HSMGATE="$bin/hsmgate" LOAD="$bin/hsmgate-load" PLOT="$bin/plot-sweep" FILE_SIGN="$bin/file-sign"
  # HSMGATE_A=PATH: another hsmgate binary as the one under test (e.g. scripts/pgo.sh's
  # target/pgo/hsmgate), with HSMGATE_B beside it as before.
  if [[ -n ${HSMGATE_A:-} ]]; then
    [[ -x $HSMGATE_A ]] || die "HSMGATE_A=$HSMGATE_A is not an executable"
    HSMGATE=$HSMGATE_A
    say "hsmgate under test: $HSMGATE"
  fi
}

# start_nginx_instance VARIANT INSTANCE [SED_EXPR...]: one single-process nginx from
# $BASE/nginx-conf.sh (file|token), its fixed ports rewritten to PORT_UP, PORT_TLS12 and
# PORT_TLS13, then any further sed expressions applied; started under SERVER_PIN, its PID
# added to PIDS and left in LAST_PID. Returns once the instance has loaded its key and
# opened its ports (it wrote its pid file). nginx + libp11 instances starting at the same
# time on one SoftHSM store crash now and then (SIGSEGV at start, 2 to 6 of 25 paired
# starts here), so instances start one at a time, and one that died at start is started
# once more.
start_nginx_instance() {
  local variant=$1 i=$2 conf dir try p
  shift 2
  conf=$("$BASE/nginx-conf.sh" "$WORK" "$variant" single "$i")
  dir=$(dirname "$conf")
  sed -i -e "s/127\.0\.0\.1:8080/127.0.0.1:$PORT_UP/g" -e "s/127\.0\.0\.1:8442/127.0.0.1:$PORT_TLS12/" \
    -e "s/127\.0\.0\.1:8443/127.0.0.1:$PORT_TLS13/" "$@" "$conf"
  for try in 1 2; do
    rm -f "$dir/nginx.pid"
    "${SERVER_PIN[@]}" nginx -c "$conf" -p "$dir" >"$dir/logs/stdout" 2>&1 &
    p=$!
    for _ in $(seq 1 150); do
      [[ -s $dir/nginx.pid ]] && break
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then break; fi
    wait "$p" 2>/dev/null || true
    ((try == 1)) && say "nginx ($variant, instance $i) exited at start; starting it once more"
  done
  LAST_PID=$p
  PIDS+=("$LAST_PID")
}

# token_toml [EXTRA]: hsmgate's TOML for the comparison's token key ($WORK/rsa-token.crt,
# token "proxy", PIN in $WORK/pin, module $MODULE with $SOFTHSM2_CONF), TLS 1.2 + 1.3 on
# PORT_HSMGATE, everything proxied to PORT_UP, keep-alive connections not closed after
# 1000 requests (as the nginx servers beside it); EXTRA (TOML lines) goes before [shutdown].
token_toml() {
  cat <<EOT
[[listener]]
address = "127.0.0.1:$PORT_HSMGATE"
tls_versions = ["1.2", "1.3"]
[tls]
certificate = "$WORK/rsa-token.crt"
key = "pkcs11:token=proxy;object=proxy-rsa;type=private?pin-source=file:$WORK/pin"
[pkcs11]
module = "$MODULE"
sessions = 4
env = { SOFTHSM2_CONF = "$SOFTHSM2_CONF" }
[upstream]
address = "127.0.0.1:$PORT_UP"
[limits]
keepalive_requests = 1000000
${1:-}
[shutdown]
grace_ms = 500
EOT
}

# hist_buckets ADMIN_PORT SERIES OUT: a cumulative histogram of hsmgate's /metrics, "le
# count" per line, into OUT (empty when unreachable). SERIES is the bucket series' name and
# labels before le, e.g. 'hsmgate_tls_handshake_wait_seconds_bucket{kind="full",'.
hist_buckets() {
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null \
    | awk -v s="$2" 'index($0, s "le=\"") == 1 || index($0, s "{le=\"") == 1 {
        le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le); print le, $NF }' >"$3"
}

# hist_totals ADMIN_PORT NAME: "sum count" of hsmgate's histogram NAME on /metrics, over
# every series (any labels), from one scrape; empty when unreachable or not there yet.
hist_totals() {
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null \
    | awk -v n="$2" '
        $1 == n "_sum" || index($1, n "_sum{") == 1 { s += $NF; seen_s = 1 }
        $1 == n "_count" || index($1, n "_count{") == 1 { c += $NF; seen_c = 1 }
        END { if (seen_s && seen_c) printf "%.9f %d\n", s, c }'
}

# wait_buckets ADMIN_PORT OUT: hsmgate's histogram of completed full handshakes' waits from
# the kernel's receipt of the ClientHello: the admitted latency as the server sees it,
# accept queue included and the load generator's own lag excluded.
wait_buckets() { hist_buckets "$1" 'hsmgate_tls_handshake_wait_seconds_bucket{kind="full",' "$2"; }

# bucket_quantile Q BEFORE AFTER: the upper bound (ms) of the bucket holding quantile Q of
# what was recorded between two hist_buckets scrapes ("inf" past the last bound, "null"
# when nothing was).
bucket_quantile() {
  join -a 2 -e 0 -o 0,1.2,2.2 <(sort "$2") <(sort "$3") | awk '{le = ($1 == "+Inf") ? 1e9 : $1; print le, $3 - $2}' | sort -g \
    | awk -v q="$1" '{le[NR] = $1; c[NR] = $2} END {
        n = c[NR]; if (n <= 0) { print "null"; exit }
        for (i = 1; i <= NR; i++) if (c[i] >= q * n) { if (le[i] >= 1e9) print "inf"; else printf "%g\n", le[i] * 1000; exit }
      }'
}

# PROXY_TO_UP: what every proxied location of the comparisons does, nginx's and hsmgate's
# alike: proxy_pass to the group `up` over kept connections, with the request headers
# hsmgate's native format sets (so both proxies do the same work per request).
# shellcheck disable=SC2016 # nginx's variables, not the shell's
PROXY_TO_UP='proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;'

# The keep-alive configuration of ka-split.sh and instr.sh, written into WORK (which holds
# cert.pem and key.pem): ka_upstream_conf prints the upstream nginx's (`return 200` on
# PORT_UP); ka_proxy_conf NGINX_HEAD prints the proxy's (nginx and hsmgate read the same
# file): `/direct` answered by the proxy, `/` proxied to the upstream with kept connections.
ka_upstream_conf() {
  cat <<EOF
daemon off; master_process off; worker_processes 1;
pid $WORK/upstream.pid; error_log $WORK/logs/upstream.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$PORT_UP reuseport backlog=4096;
        keepalive_requests 1000000;
        location / { return 200 "hello from upstream\n"; }
    }
}
EOF
}
ka_proxy_conf() {
  cat <<EOF
$1
error_log $WORK/logs/proxy.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$PORT_UP; keepalive 64; }
    server {
        listen 127.0.0.1:$PORT_TLS ssl reuseport backlog=4096;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        keepalive_requests 1000000;
        location /direct { return 200 "hello\n"; }
        location / { $PROXY_TO_UP }
    }
}
EOF
}
