#!/usr/bin/env bash
# The demo command (README): system packages, a release build, then `hsmgate demo`.
# Extra arguments go to `hsmgate demo` (e.g. --listen 127.0.0.1:9443 --key p256).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked -p hsmgate-proxy
exec target/release/hsmgate demo "$@"
