#!/usr/bin/env bash
# The project's test command (README, and what CI runs). Run as root: the
# end-to-end tests create network namespaces and use real iptables/nftables
# inside them (never in the root namespace).
#   FUZZ_SECS=N   seconds per fuzz target (default 60; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
prereqs test

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build"
cargo build --workspace --bins --locked
step "Debian packages (cargo-deb, lintian, man --warnings)"
scripts/package.sh
step "first run: the demo sets itself up after a prerequisite is removed"
scripts/first-run-check.sh iptables
step "tests (unit, property, end-to-end in network namespaces)"
log=$(mktemp /tmp/spa-test.XXXXXX)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: one failing test binary must not hide the others' results.
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run: cargo's last line is a doc-test
# summary of a crate without doc tests ("0 passed").
summary() {
    awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
}
if [[ $status != 0 ]]; then
    echo
    echo "failing tests:"
    grep -E '^test .* FAILED$' "$log" | sort -u || true
    summary
    exit "$status"
fi
if [[ ${FUZZ_SECS:-60} != 0 ]]; then
    step "fuzz (${FUZZ_SECS:-60} s per target)"
    fuzz/run.sh "${FUZZ_SECS:-60}"
fi
echo
echo "all checks passed"
summary
