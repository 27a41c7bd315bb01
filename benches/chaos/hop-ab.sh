#!/usr/bin/env bash
# One signature in flight over the HSM lab's +2 ms TCP hop (../shared/hsm-lab): the raw
# C loop (p11bench: C_SignInit + C_Sign) against two builds of the signer pool (signbench
# A and B, e.g. before and after a change), interleaved in one run, and the PKCS#11 calls
# each build makes per signature (pkcs11-spy from the opensc package).
#   A=path/to/signbench-before B=path/to/signbench-after benches/chaos/hop-ab.sh
# Knobs: SHARED, SECS (5), REPS (5), LAB_BASEPORT (24110). Prints a markdown table.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$(cd "$ROOT/../shared" 2>/dev/null && pwd || true)}
LAB="$SHARED/hsm-lab/lab.sh"
[[ -x "$LAB" ]] || { echo "needs ../shared/hsm-lab/lab.sh (set SHARED=...)" >&2; exit 1; }
: "${A:?A=signbench binary (before)}" "${B:?B=signbench binary (after)}"
SECS=${SECS:-5} REPS=${REPS:-5}
export LAB_BASEPORT=${LAB_BASEPORT:-24110}
SPY=${SPY:-$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/pkcs11-spy\.so$' || true)}
RUN=$(mktemp -d -t hsmgate-hopab.XXXXXX)
LABDIR_FILE="$SHARED/hsm-lab/.labdir"
SAVED_LABDIR=$(cat "$LABDIR_FILE" 2>/dev/null || true)
cleanup() {
  LAB_DIR="$RUN" "$LAB" down >/dev/null 2>&1 || true
  # lab.sh up records its directory for later commands; give the previous one back.
  if [[ -n "$SAVED_LABDIR" ]]; then printf '%s\n' "$SAVED_LABDIR" >"$LABDIR_FILE" 2>/dev/null || true; fi
}
trap cleanup EXIT
LAB_DIR="$RUN" "$LAB" up "$RUN" 1 1 >/dev/null
# shellcheck disable=SC1091
. "$RUN/client.env"
printf '%s' "$LAB_PIN" >"$RUN/pin"
config() { # MODULE ENV -> stdout
  printf '[[listener]]\naddress = "127.0.0.1:0"\n[tls]\ncertificate = "%s"\nkey = "pkcs11:object=tls-rsa;type=private"\n' "$LAB_DIR/keys/rsa-cert.pem"
  printf '[upstream]\naddress = "127.0.0.1:9"\n[[hsm.group]]\nname = "bench"\nsign_timeout_ms = 10000\nop_timeout_ms = 10000\n'
  printf '[[hsm.group.region]]\nname = "r"\nrole = "primary"\n'
  printf '[[hsm.group.region.member]]\nname = "hsm-a"\nmodule = "%s"\nenv = { %s }\ntoken = "hsm-a"\npin_file = "%s"\nsessions = 1\n' "$1" "$2" "$RUN/pin"
}
config "$P11_CLIENT" "P11_KIT_SERVER_ADDRESS = \"$HSM_A_TCP\"" >"$RUN/hop.toml"
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
raw() { P11_KIT_SERVER_ADDRESS="$HSM_A_TCP" "$P11BENCH" -m "$P11_CLIENT" -t hsm-a -T 1 -d "$SECS" -M rsa -q 2>/dev/null | field ops_per_s; }
pool() { "$1" "$RUN/hop.toml" 1 "$SECS" 2>/dev/null | field ops_per_s; }
declare -A R
for rep in $(seq 1 "$REPS"); do
  echo "rep $rep/$REPS" >&2
  R[raw]+="$(raw) "; R[a]+="$(pool "$A") "; R[b]+="$(pool "$B") "
done
stats() { tr ' ' '\n' <<<"${R[$1]}" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.1f (%.1f..%.1f)", m, v[1], v[NR]}'; }
med() { stats "$1" | awk '{print $1}'; }
ratio() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN{ printf "%.2f", a / b }'; }
calls() { # BINARY -> "C_SignInit n, C_Sign m per signature"
  [[ -n "$SPY" ]] || { echo "n/a (no pkcs11-spy)"; return; }
  config "$SPY" "P11_KIT_SERVER_ADDRESS = \"$HSM_A_TCP\", PKCS11SPY = \"$P11_CLIENT\", PKCS11SPY_OUTPUT = \"$RUN/spy.log\"" >"$RUN/spy.toml"
  rm -f "$RUN/spy.log"
  local ops; ops=$("$1" "$RUN/spy.toml" 1 1 2>/dev/null | field ops)
  awk -v ops="$ops" '/^[0-9]+: C_SignInit/ {i++} /^[0-9]+: C_Sign$/ || /^[0-9]+: C_Sign[^A-Za-z]/ {s++}
    END {printf "%d ops: C_SignInit %d, C_Sign %d", ops, i, s}' "$RUN/spy.log"
}
echo
echo "RSA-2048 CKM_SHA256_RSA_PKCS over p11-kit + the +2 ms hop, 1 in flight: sign/s, median (min..max) of $REPS interleaved × ${SECS}s; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| path | sign/s | ÷ raw | PKCS#11 calls (spy, 1 s incl. warm-up and self-test) |"
echo "|---|---|---|---|"
echo "| raw p11bench (C_SignInit + C_Sign) | $(stats raw) | 1.00 | |"
echo "| pool A ($(basename "$A")) | $(stats a) | $(ratio a raw) | $(calls "$A") |"
echo "| pool B ($(basename "$B")) | $(stats b) | $(ratio b raw) | $(calls "$B") |"
