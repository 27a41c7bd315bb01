#!/usr/bin/env bash
# Signatures/s through hsmgate's signer pool vs the raw PKCS#11 rate of the same HSM lab
# (benches/hsm-lab: SoftHSM behind p11-kit server; p11bench is the raw C loop), in one run:
#   1 member, 2 members (unix socket), and 1 member through the +2 ms round-trip TCP hop.
# Prints a markdown table. Knobs: HSM_LAB (default benches/hsm-lab), SECS (5), REPS (3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=pool-vs-raw
# shellcheck source=../compare/lib.sh
. "$HERE/../compare/lib.sh"
ROOT=$(cd "$HERE/../.." && pwd)
LAB=${HSM_LAB:-$ROOT/benches/hsm-lab}/lab.sh
[[ -x "$LAB" ]] || { echo "needs benches/hsm-lab/lab.sh (or HSM_LAB=DIR)" >&2; exit 1; }
SECS=${SECS:-5} REPS=${REPS:-3}
RUN=$(mktemp -d -t hsmgate-poolbench.XXXXXX)
trap 'LAB_DIR="$RUN" "$LAB" down >/dev/null 2>&1 || true' EXIT
(cd "$ROOT" && cargo build --release -q -p hsmgate-signer --example signbench)
SIGNBENCH="$ROOT/target/release/examples/signbench"
LAB_DIR="$RUN" "$LAB" up "$RUN" 2 1 >/dev/null
# shellcheck disable=SC1091
. "$RUN/client.env"
printf '%s' "$LAB_PIN" >"$RUN/pin"

config() { # NAME SESSIONS ADDR...  -> writes $RUN/NAME.toml (one primary region)
  local name=$1 sessions=$2; shift 2
  {
    printf '[[listener]]\naddress = "127.0.0.1:0"\n[tls]\ncertificate = "%s"\nkey = "pkcs11:object=tls-rsa;type=private"\n' "$LAB_DIR/keys/rsa-cert.pem"
    printf '[upstream]\naddress = "127.0.0.1:9"\n[[hsm.group]]\nname = "bench"\nsign_timeout_ms = 10000\nop_timeout_ms = 10000\n'
    printf '[[hsm.group.region]]\nname = "r"\nrole = "primary"\n'
    local i=0 addr tok
    for addr in "$@"; do
      tok=hsm-$(printf "\\x$(printf %x $((97 + i)))")
      printf '[[hsm.group.region.member]]\nname = "%s"\nmodule = "%s"\nenv = { P11_KIT_SERVER_ADDRESS = "%s" }\ntoken = "%s"\npin_file = "%s"\nsessions = %s\n' \
        "$tok" "$P11_CLIENT" "$addr" "$tok" "$RUN/pin" "$sessions"
      i=$((i + 1))
    done
  } >"$RUN/$name.toml"
}
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
raw() { # ADDR(S) THREADS  (several addresses: one instance each, p11bench -c)
  if [[ "$1" == *";"* ]]; then "$P11BENCH" -m "$P11_CLIENT" -c "$1" -T "$2" -d "$SECS" -M rsa -q 2>/dev/null | field ops_per_s
  else P11_KIT_SERVER_ADDRESS="$1" "$P11BENCH" -m "$P11_CLIENT" -t hsm-a -T "$2" -d "$SECS" -M rsa -q 2>/dev/null | field ops_per_s; fi
}
pool() { "$SIGNBENCH" "$RUN/$1.toml" "$2" "$SECS" 2>/dev/null | field ops_per_s; }

config one1 1 "$HSM_A_ADDR"; config one8 8 "$HSM_A_ADDR"
config two8 8 "$HSM_A_ADDR" "$HSM_B_ADDR"
config hop1 1 "$HSM_A_TCP"; config hop16 16 "$HSM_A_TCP"
declare -A R
for rep in $(seq 1 "$REPS"); do
  echo "rep $rep/$REPS" >&2
  R[raw1_1]+="$(raw "$HSM_A_ADDR" 1) ";   R[pool1_1]+="$(pool one1 1) "
  R[raw1_8]+="$(raw "$HSM_A_ADDR" 8) ";   R[pool1_8]+="$(pool one8 16) "
  R[raw2_16]+="$(raw "$HSM_A_ADDR;$HSM_B_ADDR" 16) "; R[pool2_16]+="$(pool two8 32) "
  R[rawhop1]+="$(raw "$HSM_A_TCP" 1) ";   R[poolhop1]+="$(pool hop1 1) "
  R[rawhop16]+="$(raw "$HSM_A_TCP" 16) "; R[poolhop16]+="$(pool hop16 32) "
done
m() { median <<<"$(tr ' ' '\n' <<<"${R[$1]}" | grep -v '^$')"; }
ratio() { awk -v a="$(m "$1")" -v b="$(m "$2")" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "RSA-2048 CKM_SHA256_RSA_PKCS sign/s over p11-kit (lab), median of $REPS × ${SECS}s; $(nproc) cores shared by HSMs, client and pool"
echo
echo "| path | raw p11bench | hsmgate pool | pool ÷ raw |"
echo "|---|---|---|---|"
echo "| 1 member, 1 in flight (1 session) | $(m raw1_1) | $(m pool1_1) | $(ratio pool1_1 raw1_1) |"
echo "| 1 member, pipelined (raw 8 threads; pool 8 sessions) | $(m raw1_8) | $(m pool1_8) | $(ratio pool1_8 raw1_8) |"
echo "| 2 members, pipelined (raw 16 threads on 2 instances; pool 2×8 sessions) | $(m raw2_16) | $(m pool2_16) | $(ratio pool2_16 raw2_16) |"
echo "| +2 ms hop, 1 in flight | $(m rawhop1) | $(m poolhop1) | $(ratio poolhop1 rawhop1) |"
echo "| +2 ms hop, pipelined (raw 16 threads; pool 16 sessions) | $(m rawhop16) | $(m poolhop16) | $(ratio poolhop16 rawhop16) |"
echo
echo "pipelining gain over the hop (pool pipelined ÷ pool single in flight): $(ratio poolhop16 poolhop1)×"
