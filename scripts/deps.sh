#!/usr/bin/env bash
# Install the system packages hsmgate's demo and tests use, when missing (Debian 12).
# Needs root (or sudo) only when something is missing.
#   softhsm2        the PKCS#11 token in the demo and the tests
#   p11-kit(-modules) p11-kit server/client: a token as a separate, killable "network HSM"
#   opensc          pkcs11-tool, used by the tests to make keys on tokens
#   libnss3-tools   certutil: an NSS softokn key database, the second PKCS#11 module of the tests
#   curl openssl nghttp2-client   real TLS clients for the end-to-end tests
#   systemd         systemd-analyze verify on the units scripts/install.sh installs
#   podman runc     build and run the container image (deploy/container) in its test
#   chromium        renders the /status page headless in its test (DOM and screenshot)
#   tmux            runs `hsmgate top` in a real terminal in its test
#   python3         the README walk's stand-in upstream (scripts/newcomer-walk.sh) and
#                   the HSM lab's latency hop (benches/hsm-lab/delayfwd.py)
#   python3-websockets  WebSocket client and echo server of the Upgrade test
#   socat           the HSM lab's TCP hop (benches/hsm-lab)
#   iproute2        ss: the socket options `listen` sets, seen on hsmgate's sockets
set -euo pipefail
need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v p11-kit >/dev/null || need+=(p11-kit)
compgen -G "/usr/lib/*/pkcs11/p11-kit-client.so" >/dev/null || need+=(p11-kit-modules)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v certutil >/dev/null || need+=(libnss3-tools)   # brings libnss3, whose libsoftokn3.so is the module
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx)   # `nginx -t` is the oracle of the nginx-config tests
command -v cc >/dev/null || need+=(gcc)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v chromium >/dev/null || need+=(chromium)
# chromium only recommends fonts: without one its screenshot shows empty boxes.
compgen -G "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf" >/dev/null || need+=(fonts-dejavu-core)
command -v tmux >/dev/null || need+=(tmux)
command -v python3 >/dev/null || need+=(python3)
command -v socat >/dev/null || need+=(socat)
command -v ss >/dev/null || need+=(iproute2)
# A real WebSocket client and server for the Upgrade pass-through test (Debian's python3).
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need+=(python3-websockets)
# kubernetes-validate (PyPI): the offline schema check of deploy/k8s; pip, not apt.
if ! command -v kubernetes-validate >/dev/null && command -v pip3 >/dev/null; then
  pip3 install --quiet kubernetes-validate 2>/dev/null \
    || pip3 install --quiet --break-system-packages kubernetes-validate \
    || echo "pip3 install kubernetes-validate failed: its test will be skipped" >&2
fi
((${#need[@]})) || exit 0
SUDO=""
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "missing packages: ${need[*]} (run as root or install them)" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
for attempt in $(seq 1 30); do   # another apt may hold the dpkg lock: wait and retry
  if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
    exit 0
  fi
  echo "apt-get failed (attempt $attempt), retrying in 5 s" >&2
  sleep 5
done
echo "could not install: ${need[*]}" >&2
exit 1
