#!/usr/bin/env bash
# Scale benchmarks (issue 14), as root. A benchmark, not a test: never run in CI.
#
#   scripts/scale.sh grants     # both backends, 0 vs 10,000 live grants (~4 min)
#
# grants: for each backend (iptables with ipset, nftables), in two network
# namespaces of its own (198.18.250.0/24, 2001:db8:250::/64; grants for
# 198.19.0.0/16 addresses that exist nowhere), with the real spa-server and
# spa-client, measures with no grant and with GRANTS live grants:
#   * connect→RST latency of an unrelated client (p50 of TRIALS_RST connects
#     to tcp/22, which the admin's baseline rejects with a reset: the packet
#     walks our jump/chain or rules and misses the grant set; the lowest of
#     RST_BLOCKS blocks, and with no grant the lower of before and after);
#   * open and close p50 (TRIALS_OPEN pairs: a sealed datagram, then a TCP
#     connect polled every 0.2 ms until it is accepted, resp. refused);
#   * the daemon's wake-ups (context switches of its processes) and CPU while
#     10,000 grants expire, against one grant.
# The 10,000 grants come from one key allowed 8 ports and other addresses:
# GRANTS/8 datagrams of 8 ports each, each for its own 198.19.x.y, sent at
# FILL_RATE/s with durations shortened by the send offset so they all end
# within about one second (the expiry burst being measured).
#
# Results: target/bench/scale-<stamp>/{summary.md,results.json,*.log}.
# The machine is shared and noisy: compare the ratios of one run.
#
# Environment: GRANTS (10000, a multiple of 8), TRIALS_RST (2000), RST_BLOCKS (5),
# TRIALS_OPEN (30), FILL_RATE (250 datagrams/s), LIFETIME (45 s),
# BACKENDS ("iptables nftables"), SPA_BIN_DIR (default: build and use
# target/release), SPA_E2E_NS_PREFIX (prefix of the namespace names).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "scale: run as root (network namespaces, firewalls inside them)" >&2; exit 1; }
[[ ${1:-} == grants ]] || { sed -n '2,30p' "$0" >&2; exit 2; }

# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
prereqs bench
REPO=$PWD
if [[ -z ${SPA_BIN_DIR:-} ]]; then
    echo "== building release binaries" >&2
    cargo build --release --workspace --bins --quiet
fi
BIN=$(realpath "${SPA_BIN_DIR:-target/release}")
GRANTS=${GRANTS:-10000}
TRIALS_RST=${TRIALS_RST:-2000}
TRIALS_OPEN=${TRIALS_OPEN:-30}
FILL_RATE=${FILL_RATE:-250}
LIFETIME=${LIFETIME:-45}
BACKENDS=${BACKENDS:-iptables nftables}
((GRANTS % 8 == 0 && GRANTS >= 8 && GRANTS <= 60000)) || { echo "scale: GRANTS must be a multiple of 8, 8-60000" >&2; exit 2; }
WINDOW=2 # spa-server's EXPIRY_WINDOW_SECS

PFX=${SPA_E2E_NS_PREFIX:-}
SRV=${PFX}scale-srv CLI=${PFX}scale-cli
SRV_IP=198.18.250.1 CLI_IP=198.18.250.2 SPA_PORT=62201
stamp=$(date +%Y%m%d-%H%M%S)
OUT=$REPO/target/bench/scale-$stamp
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/spa-scale.XXXXXX)
chmod 0711 "$WORK"
RT=$(mktemp -d /dev/shm/spa-scale.XXXXXX)
chmod 0711 "$RT"
PIDS=()

# Ends what this script started (the recorded PIDs, and whatever runs in
# OUR two namespaces: only this script starts anything there), checked until
# none is left (bounded; SIGKILL last), then deletes the namespaces.
stop_all() {
    local p i ns left
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for ((i = 0; i < 10; i++)); do
        left=
        for ns in "$SRV" "$CLI"; do left+=" $(ip netns pids "$ns" 2>/dev/null || true)"; done
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && left+=" $p"; done
        [[ -z ${left// /} ]] && break
        # shellcheck disable=SC2086
        if ((i < 9)); then kill $left 2>/dev/null || true; else kill -9 $left 2>/dev/null || true; fi
        sleep 0.3
    done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    for ns in "$SRV" "$CLI"; do ip netns del "$ns" 2>/dev/null || true; done
}

cleanup() {
    stop_all
    rm -rf "$WORK" "$RT"
}
trap cleanup EXIT INT TERM

log() { echo "== $*" >&2; }
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }
tool() { in_cli /usr/bin/python3 "$REPO/scripts/scale.py" "$@"; }

netns_up() {
    local ns
    for ns in "$SRV" "$CLI"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; done
    ip -n "$SRV" link add sc-s0 type veth peer name sc-c0 netns "$CLI"
    ip -n "$SRV" addr add "$SRV_IP/24" dev sc-s0
    ip -n "$CLI" addr add "$CLI_IP/24" dev sc-c0
    ip -n "$SRV" addr add 2001:db8:250::1/64 dev sc-s0 nodad
    ip -n "$CLI" addr add 2001:db8:250::2/64 dev sc-c0 nodad
    for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
    ip -n "$SRV" link set sc-s0 up
    ip -n "$CLI" link set sc-c0 up
    # A listener on tcp/22 (accepts and closes), bounded in time.
    in_srv /usr/bin/python3 -c '
import signal, socket
signal.alarm(900)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 22)); s.listen(512)
while True:
    c, _ = s.accept(); c.close()' &
    PIDS+=($!)
}

baseline() {
    if [[ $1 == iptables ]]; then
        local t
        for t in iptables ip6tables; do
            in_srv "$t" -w -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
            in_srv "$t" -w -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset
        done
    else
        in_srv nft -f - <<'EOF'
table inet filter {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    tcp dport 22 reject with tcp reset
  }
}
EOF
    fi
}

# Wake-ups (voluntary context switches: each is one sleep, so one wake-up;
# preemptions on the loaded box are not counted) and CPU ns of spa-server's
# processes (both sides of the privilege split) in the server namespace.
daemon_counters() {
    local p cs=0 ns=0 v
    for p in $(ip netns pids "$SRV"); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == spa-server ]] || continue
        v=$(awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}' "/proc/$p/status" 2>/dev/null || echo 0)
        cs=$((cs + v))
        v=$(awk '{print $1}' "/proc/$p/schedstat" 2>/dev/null || echo 0)
        ns=$((ns + v))
    done
    echo "$cs $ns"
}

count_lines() { grep -c -- "$2" "$1" 2>/dev/null || true; }

# wait_lines FILE PATTERN N SECS: until FILE has N lines with PATTERN.
wait_lines() {
    local end=$((SECONDS + $4))
    while ((SECONDS < end)); do
        (($(count_lines "$1" "$2") >= $3)) && return 0
        sleep 0.2
    done
    return 1
}

seal() { "$BIN/spa-client" send --dry-run --key "$WORK/scale.key" --server-id scale "$@"; }

json_get() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print("" if v is None else v)' "$1" "$2"; }

# Open/close pairs for the client's own address, sealed just before use
# (a datagram is valid for ±30 s).
measure_openclose() {
    local tag=$1 i
    : >"$WORK/opens" && : >"$WORK/closes"
    for ((i = 0; i < TRIALS_OPEN; i++)); do
        seal --open 22 -d 30 >>"$WORK/opens"
        seal --close 22 >>"$WORK/closes"
    done
    tool openclose --src "$CLI_IP" --dst "$SRV_IP" --spa-port "$SPA_PORT" --port 22 \
        --opens "$WORK/opens" --closes "$WORK/closes" >"$OUT/$tag-openclose.json"
    cat "$OUT/$tag-openclose.json" >&2
}

# RST_BLOCKS blocks of TRIALS_RST connects, 1 s apart; the figure is the
# lowest block p50 (the cost without another engineer's build in the way:
# one block takes ~0.1 s, and a busy moment shifts a whole block).
measure_rst() {
    local i
    for ((i = 0; i < ${RST_BLOCKS:-5}; i++)); do
        tool rst --src "$CLI_IP" --dst "$SRV_IP" --port 22 --n "$TRIALS_RST"
        sleep 1
    done | python3 -c '
import json, sys
blocks = [json.loads(l) for l in sys.stdin if l.strip()]
p50s = [b["p50_us"] for b in blocks if b["p50_us"] is not None]
print(json.dumps({"p50_us": min(p50s) if p50s else None, "block_p50s": p50s,
                  "n": sum(b["n"] for b in blocks), "not_refused": sum(b["not_refused"] for b in blocks)}))' >"$OUT/$1-rst.json"
    cat "$OUT/$1-rst.json" >&2
}

# wake-ups and CPU while the grants ending around $2 expire: from now to
# the last end + the expiry window + 2 s, idle otherwise.
measure_expiry() {
    local tag=$1 until=$2 want=$3 before after
    local slog=$OUT/$BACKEND-server.log
    read -r -a before <<<"$(daemon_counters)"
    local t0=$SECONDS
    while (($(date +%s) < until + WINDOW + 2)) && ((SECONDS - t0 < 300)); do sleep 0.5; done
    wait_lines "$slog" "grant expired" "$want" 30 || log "$tag: only $(count_lines "$slog" "grant expired") of $want expiry lines"
    sleep 1
    read -r -a after <<<"$(daemon_counters)"
    awk -v w=$((after[0] - before[0])) -v ns=$((after[1] - before[1])) -v s=$((SECONDS - t0)) \
        'BEGIN { printf "{\"wakeups\": %d, \"cpu_ms\": %.1f, \"secs\": %d}\n", w, ns / 1e6, s }' >"$OUT/$tag-expiry.json"
    cat "$OUT/$tag-expiry.json" >&2
}

run_backend() {
    BACKEND=$1
    log "$BACKEND: namespaces, baseline, daemon"
    netns_up
    baseline "$BACKEND"
    rm -f "$WORK/scale.key"
    "$BIN/spa-client" keygen --out "$WORK/scale.key" --name scale --server-id scale >/dev/null
    local allow='"tcp/22"' p
    for p in 1001 1002 1003 1004 1005 1006 1007 1008; do allow+=", \"tcp/$p\""; done
    cat >"$WORK/server.toml" <<EOF
max_grants_total = 65536
# Sealing $GRANTS/8 datagrams one spa-client at a time takes a while on a
# loaded box; the benchmark is not about the time window.
window_secs = 600
[[key]]
name = "scale"
file = "$WORK/scale.key"
allow = [$allow]
max_duration = 600
max_grants = 65536
allow_other_address = true
rate_per_minute = 60000
rate_burst = 10000
EOF
    rm -rf "$WORK/state" "${RT:?}/run"
    mkdir -p "$WORK/state" "$RT/run"
    local slog=$OUT/$BACKEND-server.log
    in_srv "$BIN/spa-server" --config "$WORK/server.toml" --interface sc-s0 --port "$SPA_PORT" \
        --server-id scale --state-dir "$WORK/state" --runtime-dir "$RT/run" --firewall "$BACKEND" \
        --log-level info >"$slog" 2>&1 &
    PIDS+=($!)
    local end=$((SECONDS + 20))
    until in_srv sh -c 'iptables -w -S SPA >/dev/null 2>&1 || nft list set inet filter spa4 >/dev/null 2>&1'; do
        ((SECONDS < end)) || { log "daemon did not start"; cat "$slog" >&2; exit 1; }
        sleep 0.2
    done
    sleep 1

    log "$BACKEND: 0 grants"
    measure_rst "$BACKEND-0"
    measure_openclose "$BACKEND-0"

    log "$BACKEND: expiry of 1 grant"
    local opened
    opened=$(count_lines "$slog" "accepted open")
    seal --open 1001 --allow-ip 198.19.255.1 -d 5 >"$WORK/one"
    tool send --src "$CLI_IP" --dst "$SRV_IP" --port "$SPA_PORT" --file "$WORK/one" >/dev/null
    wait_lines "$slog" "accepted open" $((opened + 1)) 10
    sleep 1
    local expired
    expired=$(count_lines "$slog" "grant expired")
    measure_expiry "$BACKEND-1" $(($(date +%s) + 5)) $((expired + 1))

    log "$BACKEND: sealing $((GRANTS / 8)) datagrams for $GRANTS grants"
    local n=$((GRANTS / 8)) i ports=1001,1002,1003,1004,1005,1006,1007,1008
    : >"$WORK/fill"
    for ((i = 0; i < n; i++)); do
        # Sent at i / FILL_RATE s after the first: all end LIFETIME s after it.
        seal --open "$ports" --allow-ip "198.19.$((i / 250)).$((i % 250 + 1))" \
            -d $((LIFETIME - i / FILL_RATE)) >>"$WORK/fill"
    done
    opened=$(count_lines "$slog" "accepted open")
    local t_fill
    t_fill=$(date +%s)
    local decided
    decided=$(count_lines "$slog" "accepted open\|rejected\|denied")
    tool send --src "$CLI_IP" --dst "$SRV_IP" --port "$SPA_PORT" --file "$WORK/fill" --rate "$FILL_RATE" >&2
    wait_lines "$slog" "accepted open\|rejected\|denied" $((decided + n)) 120 || log "only part of the fill was decided"
    local live filled=$(($(date +%s) - t_fill))
    if [[ $BACKEND == iptables ]]; then
        live=$(in_srv ipset list -t SPA4 | awk '/Number of entries/ {print $4}')
    else
        live=$(in_srv nft list set inet filter spa4 | grep -o ' \. tcp \. ' | wc -l)
    fi
    printf '{"accepted": %d, "of": %d, "live": %d, "secs": %d}\n' \
        "$(($(count_lines "$slog" "accepted open") - opened))" "$n" "$live" "$filled" | tee "$OUT/$BACKEND-fill.json" >&2
    ((live >= GRANTS)) || log "WARNING: $live of $GRANTS grants live: the figures below are not for $GRANTS"
    measure_rst "$BACKEND-$GRANTS"
    measure_openclose "$BACKEND-$GRANTS"

    log "$BACKEND: expiry of $GRANTS grants"
    expired=$(count_lines "$slog" "grant expired")
    # The last fill datagram's grant ends LIFETIME s after the fill began
    # (plus the daemon's lag, waited for by the expiry lines).
    measure_expiry "$BACKEND-$GRANTS" $((t_fill + LIFETIME + 1)) $((expired + GRANTS))
    log "$BACKEND: 0 grants again (the box is noisy: the lower 0-grant p50 is the reference)"
    measure_rst "$BACKEND-0after"

    # The daemon first (SIGTERM: it removes its chain and sets), then the rest.
    kill "${PIDS[-1]}" 2>/dev/null || true
    wait "${PIDS[-1]}" 2>/dev/null || true
    stop_all
}

# The anchor: the previous iptables design, a rule per grant (what the
# iptables backend wrote before issue 14), with no daemon: GRANTS rules put
# in by iptables-restore, then the same connect→RST trials, and the time of
# one add and one delete through `iptables-restore --noflush` (the backend's
# batch), median of 21, with 0 and with GRANTS rules.
ms_of() { # median ms of 21 runs of: in_srv iptables-restore -w 3 --noflush < $1 (undone by $2)
    local i t0 t1 all=()
    for ((i = 0; i < 21; i++)); do
        t0=$(date +%s%N)
        in_srv iptables-restore -w 3 --noflush <"$1"
        t1=$(date +%s%N)
        all+=($(((t1 - t0) / 1000)))
        in_srv iptables-restore -w 3 --noflush <"$2"
    done
    printf '%s\n' "${all[@]}" | sort -n | sed -n 11p | awk '{printf "%.2f", $1 / 1000}'
}
anchor_rule() { echo "-s 198.19.$(($1 / 250)).$(($1 % 250 + 1))/32 -p tcp -m tcp --dport $2 -m time --datestop $3 -m comment --comment \"spa-server exp=1\" -j ACCEPT"; }
anchor_rules() {
    log "anchor: a rule per grant (the iptables backend before issue 14)"
    netns_up
    baseline iptables
    local stop n i tag add_ms
    stop=$(date -u -d @$(($(date +%s) + 3600)) +%Y-%m-%dT%H:%M:%S)
    for n in 0 "$GRANTS"; do
        {
            echo "*filter"
            echo ":SPA - [0:0]"
            echo "-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment spa-server -j SPA"
            for ((i = 0; i < n; i++)); do echo "-A SPA $(anchor_rule $((i / 8)) $((1001 + i % 8)) "$stop")"; done
            echo "COMMIT"
        } >"$WORK/anchor.rules"
        in_srv sh -c 'iptables -w -D INPUT -m conntrack --ctstate NEW -m comment --comment spa-server -j SPA 2>/dev/null; true'
        in_srv iptables-restore -w 3 --noflush <"$WORK/anchor.rules"
        tag=rules-$n
        measure_rst "$tag"
        printf '*filter\n-A SPA %s\nCOMMIT\n' "$(anchor_rule 7000 22 "$stop")" >"$WORK/add"
        printf '*filter\n-D SPA %s\nCOMMIT\n' "$(anchor_rule 7000 22 "$stop")" >"$WORK/del"
        add_ms=$(ms_of "$WORK/add" "$WORK/del")
        in_srv iptables-restore -w 3 --noflush <"$WORK/add"
        printf '{"add_ms": %s, "delete_ms": %s}\n' "$add_ms" "$(ms_of "$WORK/del" "$WORK/add")" \
            | tee "$OUT/$tag-batch.json" >&2
        in_srv iptables-restore -w 3 --noflush <"$WORK/del"
    done
    stop_all
}

for b in $BACKENDS; do run_backend "$b"; done
if [[ ${ANCHOR:-1} == 1 ]]; then anchor_rules; fi

# Ratios of this run.
{
    echo "# scale.sh grants, $stamp, commit $(git rev-parse --short HEAD), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| backend | connect→RST p50 0 / $GRANTS (µs) | ratio | open p50 0 / $GRANTS (ms) | ratio | close p50 0 / $GRANTS (ms) | ratio | close/open at $GRANTS | expiry wake-ups 1 / $GRANTS | expiry CPU 1 / $GRANTS (ms) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for b in $BACKENDS; do
        r0=$(python3 -c 'import json,sys; print(min(json.load(open(f))["p50_us"] for f in sys.argv[1:]))' \
            "$OUT/$b-0-rst.json" "$OUT/$b-0after-rst.json")
        r1=$(json_get "$OUT/$b-$GRANTS-rst.json" p50_us)
        o0=$(json_get "$OUT/$b-0-openclose.json" open_p50_us) o1=$(json_get "$OUT/$b-$GRANTS-openclose.json" open_p50_us)
        c0=$(json_get "$OUT/$b-0-openclose.json" close_p50_us) c1=$(json_get "$OUT/$b-$GRANTS-openclose.json" close_p50_us)
        w0=$(json_get "$OUT/$b-1-expiry.json" wakeups) w1=$(json_get "$OUT/$b-$GRANTS-expiry.json" wakeups)
        u0=$(json_get "$OUT/$b-1-expiry.json" cpu_ms) u1=$(json_get "$OUT/$b-$GRANTS-expiry.json" cpu_ms)
        python3 - "$b" "$r0" "$r1" "$o0" "$o1" "$c0" "$c1" "$w0" "$w1" "$u0" "$u1" <<'EOF'
import sys
b, r0, r1, o0, o1, c0, c1, w0, w1, u0, u1 = sys.argv[1:]
f = lambda x: float(x) if x else float("nan")
r0, r1, o0, o1, c0, c1 = map(f, (r0, r1, o0, o1, c0, c1))
print(f"| {b} | {r0:.1f} / {r1:.1f} | {r1 / r0:.2f}x | {o0 / 1000:.2f} / {o1 / 1000:.2f} | {o1 / o0:.2f}x "
      f"| {c0 / 1000:.2f} / {c1 / 1000:.2f} | {c1 / c0:.2f}x | {c1 / o1:.2f}x | {w0} / {w1} | {u0} / {u1} |")
EOF
    done
    if [[ -f $OUT/rules-0-rst.json ]]; then
        echo
        echo "Anchor, same run: a rule per grant (the iptables backend before issue 14), no daemon; one add / one delete = one \`iptables-restore --noflush\` batch, median of 21."
        echo
        echo "| rules | connect→RST p50 (µs) | one add (ms) | one delete (ms) |"
        echo "|---|---|---|---|"
        for n in 0 "$GRANTS"; do
            echo "| $n | $(json_get "$OUT/rules-$n-rst.json" p50_us) | $(json_get "$OUT/rules-$n-batch.json" add_ms) | $(json_get "$OUT/rules-$n-batch.json" delete_ms) |"
        done
    fi
} >"$OUT/summary.md"
python3 - "$OUT" >"$OUT/results.json" <<'EOF'
import json, os, sys
d = sys.argv[1]
print(json.dumps({f[:-5]: json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json") and f != "results.json"}, indent=1))
EOF
cat "$OUT/summary.md"
echo "results: $OUT" >&2
