#!/usr/bin/env bash
# Runs every fuzz target for a bounded time. Exits non-zero if any target
# finds a crash (the reproducer is left in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh SECONDS [TARGET...]     e.g. fuzz/run.sh 60
#
# Needs only a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z sanitizer flags. cargo-fuzz is installed if missing.
set -euo pipefail

secs="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
case "$secs" in
    ''|*[!0-9]*) echo "fuzz/run.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(verify verify_v2 plaintext roundtrip privsep_request control_request)

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# One build for all targets, so the time budget goes to fuzzing.
cargo fuzz build -O

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    seeds="seeds/$t"
    [ -d "$seeds" ] || seeds=""
    log="$(mktemp)"
    echo "fuzz/run.sh: $t for ${secs}s"
    # libFuzzer prints its progress on stderr; keep the last lines for the
    # log and the full output for a crash report.
    if cargo fuzz run -O "$t" "corpus/$t" $seeds -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" | sed "s/^/  $t: /"
    else
        tail -n 60 "$log" >&2
        echo "fuzz/run.sh: $t FAILED (artifacts in fuzz/artifacts/$t/)" >&2
        failed+=("$t")
    fi
    rm -f "$log"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${secs}s each, no crash"
