#!/usr/bin/env bash
# The project's test command (README, and what CI runs). Run as root: the
# end-to-end tests create network namespaces and use real iptables/nftables
# inside them (never in the root namespace).
#   FUZZ_SECS=N   seconds per fuzz target (default 60; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build"
cargo build --workspace --bins --locked
step "tests (unit, property, end-to-end in network namespaces)"
cargo test --workspace --locked
if [[ ${FUZZ_SECS:-60} != 0 ]]; then
    step "fuzz (${FUZZ_SECS:-60} s per target)"
    fuzz/run.sh "${FUZZ_SECS:-60}"
fi
echo
echo "all checks passed"
