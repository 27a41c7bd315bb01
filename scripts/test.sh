#!/usr/bin/env bash
# The test command (README, .ci/run): system packages, then fmt, clippy, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run
cargo test --workspace --locked
