#!/usr/bin/env bash
# Daemon benchmark: spa-server side by side with knockd and fwknopd in the
# shared harness (../shared/bench, see its README.md), as root.
#
#   scripts/bench.sh                      # spa-rust knockd fwknopd fwknopd-udp, all phases (~12 min)
#   scripts/bench.sh --quick              # 5 trials, 3 s idle/flood, no fail-closed
#   scripts/bench.sh spa-rust --phases latency,failclosed
#
# Arguments are passed to the harness's run.sh; without an adapter name the
# anchors (knockd, fwknopd, fwknopd-udp) run in the same run as ours, because
# only ratios between daemons measured together mean anything on a shared box.
# Results: target/bench/<stamp>/summary.md (and summary.json, raw per adapter);
# ratios.md: spa-rust's figures divided by each anchor's, same run.
#
# Environment:
#   SPA_BENCH_RUN    path of the harness's run.sh
#                    (default: <repo's parent>/shared/bench/run.sh)
#   SPA_ACCESS_TIMEOUT, TRIALS, FLOOD_PPS, ... are the harness's tunables.
#   SPA_RUNTIME_DIR=DIR  keep the replay log on this tmpfs (--runtime-dir,
#                    a per-run subdirectory, removed afterwards) instead of
#                    fdatasync'ing it to --state-dir on disk per request; default /dev/shm,
#                    as the shipped config does with /run; empty: on disk
#   SPA_LOG_LEVEL=debug  spa-server's --log-level (debug logs the iptables
#                    batch time per request)
#   SPA_FIREWALL=nftables  measure the nftables backend (persistent nft
#                    session) instead of iptables. The harness's baseline is
#                    iptables-nft's `ip filter INPUT` (an accept in a chain of
#                    our own would not beat its REJECT), so a config file puts
#                    our sets and rules into that chain: nft_family = "ip".
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench: run as root (network namespaces, iptables inside them)" >&2; exit 1; }
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
prereqs bench

REPO=$PWD
RUN=${SPA_BENCH_RUN:-$(dirname "$REPO")/shared/bench/run.sh}
[[ -x $RUN || -f $RUN ]] || { echo "bench: harness not found at $RUN (set SPA_BENCH_RUN)" >&2; exit 1; }

echo "== building release binaries" >&2
cargo build --release --workspace --bins --quiet

stamp=$(date +%Y%m%d-%H%M%S)
out=$REPO/target/bench/$stamp
# Does the caller name an adapter (or 'all')? Otherwise measure ours + anchors.
args=("$@") named=0 has_out=0
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --out) has_out=1; i=$((i + 1)); out=$(realpath -m "${args[i]:-}") ;;
        --phases) i=$((i + 1)) ;;
        -*) ;;
        *) named=1 ;;
    esac
done
((named)) || args=(spa-rust knockd fwknopd fwknopd-udp "${args[@]}")
((has_out)) || args+=(--out "$out")

# The adapter (shared/bench/adapters/spa-rust.sh) takes our CLI as variables;
# {IF} {SRV_IP} {CLI_IP} {PORT} {WORK} {TIMEOUT} are expanded by it.
export SPA_SERVER_BIN=$REPO/target/release/spa-server
export SPA_CLIENT_BIN=$REPO/target/release/spa-client
export SPA_ACCESS_TIMEOUT=${SPA_ACCESS_TIMEOUT:-30}
export SPA_KEYGEN_ARGS="keygen --out {WORK}/spa.key --name bench --server-id bench"
fw=${SPA_FIREWALL:-iptables}
export SPA_SERVER_ARGS="--interface {IF} --port {PORT} --key {WORK}/spa.key --allow tcp/22 \
--max-duration {TIMEOUT} --default-duration {TIMEOUT} --server-id bench --state-dir {WORK}/state --firewall $fw \
--log-level ${SPA_LOG_LEVEL:-info}"
if [[ $fw == nftables ]]; then
    mkdir -p "$out"
    printf '%s\n' '[firewall_options]' 'nft_family = "ip"' 'nft_table = "filter"' 'nft_chain = "INPUT"' \
        >"$out/spa-server-nft.toml"
    SPA_SERVER_ARGS+=" --config $out/spa-server-nft.toml"
fi
rtdir=
SPA_RUNTIME_DIR=${SPA_RUNTIME_DIR-/dev/shm}
if [[ -n $SPA_RUNTIME_DIR ]]; then
    rtdir=$SPA_RUNTIME_DIR/spa-bench-$stamp
    SPA_SERVER_ARGS+=" --runtime-dir $rtdir"
fi
export SPA_CLIENT_ARGS="send --quiet --key {WORK}/spa.key --server-id bench --open 22 --duration {TIMEOUT} \
--source {CLI_IP} -p {PORT} {SRV_IP}"
# No socket is opened (AF_PACKET capture), so readiness is the log line.
export SPA_READY_REGEX=ready
# Revoke between trials with our own mechanism, a signed close from the
# client namespace (the harness runs SPA_CLOSE_CMD inside the server netns and
# does not expand placeholders, hence the nested netns exec and the literal
# key path: run.sh puts the adapter's scratch dir at <out>/spa-rust/work).
# SPA_CLOSE=flush instead empties our chain behind the daemon's back, as the
# fwknopd adapters do with FWKNOP_INPUT; the next open of the same address
# then takes the daemon's "grant vanished" refresh path (a failed
# iptables-restore, then a retry), which is slower than a fresh add.
key=$out/spa-rust/work/spa.key
if [[ ${SPA_CLOSE:-client} == flush ]]; then
    if [[ $fw == nftables ]]; then
        export SPA_CLOSE_CMD="nft flush set ip filter spa4"
    else
        export SPA_CLOSE_CMD="iptables -F SPA"
    fi
else
    export SPA_CLOSE_CMD="ip netns exec spab-cli $SPA_CLIENT_BIN send --quiet --key $key --server-id bench \
--close 22 --source 198.18.0.2 -p 62201 198.18.0.1"
fi
if [[ $fw == nftables ]]; then export SPA_NFT_SET="ip filter spa4"; fi

echo "== $RUN ${args[*]}" >&2
rc=0
"$RUN" "${args[@]}" || rc=$?
if [[ -n $rtdir ]]; then rm -rf -- "$rtdir"; fi
# Ratios against the anchors measured in this same run (docs/benchmarks.md).
if [[ -f $out/summary.json ]]; then
    echo
    python3 - "$out/summary.json" <<'PY' | tee "$out/ratios.md" || true
import json, sys
j = json.load(open(sys.argv[1]))
print("Ratios spa-rust / other daemon, same run (<1 = spa-rust smaller or faster):\n")
A = {a.get("adapter"): a for a in j.get("adapters", []) if "latency" in a or "idle" in a or "flood" in a}
ours = A.get("spa-rust")
if not ours:
    sys.exit("no spa-rust figures")
def g(a, *path):
    for p in path:
        if a is None: return None
        a = a.get(p) if isinstance(a, dict) else None
    return a
def fl(a, mode):
    for f in (a or {}).get("flood", []):
        if f["name"] == mode: return f
def num(x, nd=1): return "-" if x is None else f"{x:.{nd}f}"
def ratio(x, y): return "-" if x is None or y in (None, 0) else f"{x / y:.2f}"
def opened(f):
    k = (f or {}).get("knock_during") or {}
    return "-" if not f else (f"yes, {k['wire_ms']:.1f} ms" if k.get("ok") and k.get("wire_ms") is not None else ("yes" if k.get("ok") else "NO"))
others = [n for n in ("knockd", "fwknopd", "fwknopd-udp") if n in A]
rows = [("knock-to-open wire p50 (ms)", lambda a: g(a, "latency", "wire_ms", "median")),
        ("knock-to-open wire p90 (ms)", lambda a: g(a, "latency", "wire_ms", "p90")),
        ("idle RSS (kB)", lambda a: g(a, "idle", "rss_kb")),
        ("idle CPU, 10 s (ms, sched)", lambda a: g(a, "idle", "self_sched_ms")),
        ("idle wake-ups, 10 s", lambda a: g(a, "idle", "wakeups"))]
print("| figure | spa-rust | " + " | ".join(others) + " | " + " | ".join(f"ratio vs {o}" for o in others) + " |")
print("|---" * (2 + 2 * len(others)) + "|")
for name, f in rows:
    v = f(ours)
    nd = 2 if "CPU" in name else 1 if "ms" in name else 0
    print(f"| {name} | {num(v, nd)} | " + " | ".join(num(f(A[o]), nd) for o in others)
          + " | " + " | ".join(ratio(v, f(A[o])) for o in others) + " |")
for mode in ("udp-b64", "udp-random"):
    fo = fl(ours, mode)
    cpu = lambda f: None if not f else (g(f, "cpu", "self_sched_ms") or 0) + (g(f, "cpu", "children_ticks_ms") or 0)
    vals = {o: fl(A[o], mode) for o in others}
    print(f"| flood {mode}: daemon CPU self+children (ms) | {num(cpu(fo), 0)} | " + " | ".join(num(cpu(vals[o]), 0) for o in others)
          + " | " + " | ".join(ratio(cpu(fo), cpu(vals[o])) for o in others) + " |")
    print(f"| flood {mode}: legit knock opens during flood | {opened(fo)} | " + " | ".join(opened(vals[o]) for o in others) + " |" + " |" * len(others))
def fc(a):
    out = []
    for f in (a or {}).get("failclosed", []):
        out.append(f"{f['scope']}: {f['port_after_timeout']} after {f['waited_s']} s")
    return "; ".join(out) or "-"
print(f"| fail-closed (kill -9, port after timeout+5 s) | {fc(ours)} | " + " | ".join(fc(A[o]) for o in others) + " |" + " |" * len(others))
lat = g(ours, "latency", "wire_ms", "median"); ref = g(A.get("fwknopd-udp"), "latency", "wire_ms", "median")
if lat and ref:
    print(f"\ntarget knock-to-open p50 <= 1/3 of fwknopd-udp: {lat:.1f} ms vs {ref / 3:.1f} ms -> {'MET' if lat <= ref / 3 else 'NOT met'} (ratio {lat / ref:.2f})")
PY
    echo "(also in $out/ratios.md)"
fi
exit "$rc"
