#!/usr/bin/env bash
# Scale benchmarks of issue 14, part B (docs/benchmarks.md, "Scale"), as root:
#
#   scripts/scale-flood.sh flood     # forgery and replay floods from spa-flood, daemon pinned to CPU 0,
#                                    # flood on CPU 1; idle wake-ups and RSS; 20 valid opens mid-flood
#   scripts/scale-flood.sh keys      # start and SIGHUP reload with 10,000 key files; RSS per key
#
# Both build the release binaries first and run everything in two network namespaces
# they create (<prefix>spa172s, <prefix>spa172c; 198.18.172.0/24), removed on exit, also on
# error. Nothing touches the root namespace's firewall. Every loop is bounded.
#
# Environment:
#   SPA_E2E_NS_PREFIX   prefix of the namespace names (default none)
#   SPA_SCALE_SERVERS   "label=path ..." spa-server binaries measured in the same run, in turn
#                       (default: "spa=target/release/spa-server"); e.g. an older build to compare
#   FLOOD_SECS          seconds per flood measurement (default 10)
#   TRIALS              valid opens tried in the middle of a flood (default 20; 0 skips that phase)
#   EXTRA_KEYS          configure this many more keys for `flood` (default 0), e.g. 9999: 10,000 keys
#   KEYS                keys for `keys` (default 10000)
#   SPA_SCALE_PERF=1    also `perf record` the daemon during the forgery flood (perf report head)
#   SPA_SCALE_FWKNOPD=1 also fwknopd (UDP server mode) under the same replay flood, if installed
# Results: target/scale/<stamp>/results.md (and the logs beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "scale: run as root (network namespaces)" >&2; exit 1; }
what=${1:-}
[[ $what == flood || $what == keys ]] || { sed -n '2,22p' "$0" >&2; exit 2; }

REPO=$PWD
echo "== building release binaries" >&2
cargo build --release --workspace --bins --quiet
BIN=$REPO/target/release
FLOOD_SECS=${FLOOD_SECS:-10}
TRIALS=${TRIALS:-20}
KEYS=${KEYS:-10000}
P=${SPA_E2E_NS_PREFIX:-}
S=${P}spa172s C=${P}spa172c
SIF=sv172 CIF=cv172
SRV=198.18.172.1 CLI=198.18.172.2
stamp=$(date +%Y%m%d-%H%M%S)
OUT=$REPO/target/scale/$stamp
mkdir -p "$OUT"
# The network side drops to its own user: the work directory must be searchable by it.
WORK=$(mktemp -d /tmp/spa-scale.XXXXXX)
chmod 0711 "$WORK"
RES=$OUT/results.md
# The replay log and the control socket on tmpfs, as the shipped configuration has them.
RT=/dev/shm/spa-scale-rt-$stamp
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for ns in "$S" "$C"; do
        if ip netns list | grep -qx "$ns\( .*\)\?"; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    rm -rf -- "$WORK" "$RT"
}
trap cleanup EXIT INT TERM

say() { echo "$*" | tee -a "$RES"; }
in_s() { ip netns exec "$S" "$@"; }
in_c() { ip netns exec "$C" "$@"; }

setup_net() {
    for ns in "$S" "$C"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; done
    ip link add "$SIF" netns "$S" type veth peer name "$CIF" netns "$C"
    ip -n "$S" addr add $SRV/24 dev "$SIF"
    ip -n "$C" addr add $CLI/24 dev "$CIF"
    for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
    ip -n "$S" link set "$SIF" up
    ip -n "$C" link set "$CIF" up
    in_s iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    in_s iptables -A INPUT -p tcp --dport 22 -j REJECT
    # The port grants open: a listener that accepts and closes, for --wait (bounded: 15 min).
    ip netns exec "$S" timeout 900 python3 -c '
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("0.0.0.0",22)); s.listen(256)
while True:
    c,_=s.accept(); c.close()' &
    PIDS+=($!)
}

# utime+stime is coarse (10 ms); schedstat's first field is the run time in ns, all threads.
cpu_ns() { local t=0 f; for f in /proc/"$1"/task/*/schedstat; do t=$((t + $(cut -d' ' -f1 "$f"))); done; echo "$t"; }
ctx() { awk '/ctxt_switches/ {s += $2} END {print s}' /proc/"$1"/status; }
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
child_of() { cat /proc/"$1"/task/*/children 2>/dev/null | awk '{print $1}'; }

# The daemon's counters, one value: status --json, then a jq path.
counter() { in_s "$SERVER" --state-dir "$WORK/state" --runtime-dir "$RT" status --json | jq -r "$1 // 0"; }

start_server() { # label path extra-args...
    local label=$1 path=$2; shift 2
    SERVER=$path
    rm -rf "$WORK/state" "$RT"
    LOG=$OUT/$label-$what.log
    : >"$LOG"
    T0=$(date +%s%N)
    taskset -c 0 ip netns exec "$S" "$SERVER" --interface "$SIF" --server-id scale --state-dir "$WORK/state" \
        --runtime-dir "$RT" --firewall iptables --log-level info "$@" >>"$LOG" 2>&1 &
    DPID=$!
    PIDS+=("$DPID")
    for _ in $(seq 3000); do grep -q ' ready' "$LOG" && break; sleep 0.01; done
    grep -q ' ready' "$LOG" || { echo "scale: $label did not start:" >&2; tail -5 "$LOG" >&2; exit 1; }
    T_READY=$((($(date +%s%N) - T0) / 1000000))
    PRIV=$(child_of "$DPID" | head -1)
}

stop_server() {
    kill -TERM "$DPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    rm -rf "$RT"
}

# Waits (bounded, 20 s) until the daemon's frames + kernel drops stop moving.
settle() {
    local last=-1 now
    for _ in $(seq 40); do
        now=$(($(counter .counters.frames) + $(counter .counters.kernel_drops)))
        [[ $now == "$last" ]] && break
        last=$now
        sleep 0.5
    done
}

# One flood: mode (forge|replay), then the figures as a table row.
measure_flood() {
    local label=$1 mode=$2 src=(--header-of "$WORK/probe.bin")
    [[ $mode == replay ]] && src=(--replay "$WORK/probe.bin")
    local f0 d0 a0 r0 c0 out sent secs f1 d1 a1 r1 c1
    f0=$(counter .counters.frames) d0=$(counter .counters.kernel_drops)
    a0=$(counter '.counters.rejects.auth_failed') r0=$(counter '.counters.rejects.replayed')
    c0=$(cpu_ns "$DPID")
    local perf=()
    if [[ ${SPA_SCALE_PERF:-0} == 1 && $mode == forge ]] && command -v perf >/dev/null; then
        perf record -F 999 -g -o "$OUT/$label-perf.data" -p "$DPID" -- sleep "$FLOOD_SECS" >/dev/null 2>&1 &
        perf=($!)
    fi
    out=$(in_c "$BIN/spa-flood" "$SRV" "${src[@]}" --from $CLI --cpu 1 --count 1000000000 \
        --seconds "$FLOOD_SECS" --json)
    settle
    c1=$(cpu_ns "$DPID")
    f1=$(counter .counters.frames) d1=$(counter .counters.kernel_drops)
    a1=$(counter '.counters.rejects.auth_failed') r1=$(counter '.counters.rejects.replayed')
    [[ ${#perf[@]} -gt 0 ]] && { wait "${perf[0]}" || true; perf report -i "$OUT/$label-perf.data" --no-children \
        --percent-limit 2 --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -25 >"$OUT/$label-perf.txt" || true; }
    sent=$(jq -r .sent <<<"$out") secs=$(jq -r .seconds <<<"$out")
    local judged=$((f1 - f0)) drops=$((d1 - d0)) cpu=$((c1 - c0))
    local why=$(((a1 - a0) + (r1 - r0)))
    python3 - "$label" "$mode" "$sent" "$secs" "$judged" "$drops" "$cpu" "$why" <<'PY' | tee -a "$RES"
import sys
label, mode, sent, secs, judged, drops, cpu, why = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
cpu_s = cpu / 1e9
print(f"| {label} | {mode} | {sent:,.0f} | {sent / secs:,.0f}/s | {judged:,.0f} ({why:,.0f} auth_failed+replayed) "
      f"| {drops:,.0f} ({100 * drops / max(sent, 1):.1f} %) | {cpu_s:.2f} s ({100 * cpu_s / secs:.0f} % of a core) "
      f"| {judged / secs:,.0f}/s | **{judged / max(cpu_s, 1e-9):,.0f}/s** | {1e9 * cpu_s / max(judged, 1):,.0f} ns |")
PY
}

# TRIALS valid opens, each sent with --wait in the middle of a flood of `mode`: in rounds of 5, each
# round a fresh flood (and for a replay flood a freshly sealed datagram, so its copies stay inside the
# time window: replayed, not too old).
opens_mid_flood() {
    local label=$1 mode=$2 ok=0 i fpid t0 ms=() src=(--header-of "$WORK/probe.bin")
    [[ $mode == replay ]] && src=(--replay "$WORK/probe.bin")
    for i in $(seq "$TRIALS"); do
        if (((i - 1) % 5 == 0)); then
            in_c "$BIN/spa-client" send --quiet --key "$WORK/k.key" --server-id scale --open 22 \
                --output "$WORK/probe.bin"
            # Not through in_c: `$!` must be the flood's own PID (a function in the background is a subshell).
            ip netns exec "$C" "$BIN/spa-flood" "$SRV" "${src[@]}" --from $CLI --cpu 1 --count 1000000000 \
                --seconds 25 >/dev/null &
            fpid=$!
            PIDS+=("$fpid")
            sleep 1
        fi
        t0=$(date +%s%N)
        if in_c "$BIN/spa-client" send --quiet --key "$WORK/k.key" --server-id scale --open 22 --duration 30 \
            --source $CLI --wait=10 $SRV 2>>"$OUT/$label-wait.err"; then
            ok=$((ok + 1))
            ms+=($((($(date +%s%N) - t0) / 1000000)))
        fi
        in_c "$BIN/spa-client" send --quiet --key "$WORK/k.key" --server-id scale --close 22 --source $CLI \
            --wait=10 $SRV 2>>"$OUT/$label-wait.err" || true
        if ((i % 5 == 0 || i == TRIALS)); then
            kill "$fpid" 2>/dev/null || true
            wait "$fpid" 2>/dev/null || true
        fi
    done
    local sorted med="-"
    if ((${#ms[@]})); then
        sorted=$(printf '%s\n' "${ms[@]}" | sort -n)
        med=$(sed -n "$(((${#ms[@]} + 1) / 2))p" <<<"$sorted")
    fi
    say "| $label | $mode | $ok / $TRIALS | ${med} ms |"
}

flood_bench() {
    setup_net
    in_c "$BIN/spa-client" keygen --out "$WORK/k.key" --name bench --server-id scale >/dev/null
    EXTRA=()
    if ((${EXTRA_KEYS:-0} > 0)); then
        gen_keys "$WORK/extra" "$EXTRA_KEYS"
        EXTRA=(--config "$WORK/extra/server.toml")
    fi
    say "# scale-flood.sh flood, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $((1 + ${EXTRA_KEYS:-0})) key(s)"
    say ""
    say "Daemon pinned to CPU 0 (taskset), spa-flood to CPU 1; ${FLOOD_SECS} s per flood; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
    say ""
    local spec label path
    declare -A rest_rss rest_priv rest_wake
    for spec in ${SPA_SCALE_SERVERS:-spa=$BIN/spa-server}; do
        label=${spec%%=*} path=${spec#*=}
        start_server "$label" "$path" --key "$WORK/k.key" --allow tcp/22 "${EXTRA[@]}"
        sleep 2
        local w0 w1 p0 p1
        w0=$(ctx "$DPID") p0=$(ctx "$PRIV")
        sleep 10
        w1=$(ctx "$DPID") p1=$(ctx "$PRIV")
        rest_wake[$label]="$((w1 - w0)) + $((p1 - p0))"
        rest_rss[$label]=$(rss_kb "$DPID") rest_priv[$label]=$(rss_kb "$PRIV")
        stop_server
    done
    say "At rest (2 s after ready, then 10 s): wake-ups (context switches) of the network side + the privileged side, RSS."
    say ""
    say "| build | wake-ups in 10 s | RSS network side | RSS privileged side |"
    say "|---|---:|---:|---:|"
    for spec in ${SPA_SCALE_SERVERS:-spa=$BIN/spa-server}; do
        label=${spec%%=*}
        say "| $label | ${rest_wake[$label]} | ${rest_rss[$label]} kB | ${rest_priv[$label]} kB |"
    done
    say ""
    say "Floods: judged = frames the daemon read (every one a verdict); per CPU-second = judged / the daemon's own CPU time (schedstat)."
    say ""
    say "| build | flood | sent | offered | judged | kernel drops | daemon CPU | judged per wall second | judged per CPU-second | CPU per datagram |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for spec in ${SPA_SCALE_SERVERS:-spa=$BIN/spa-server}; do
        label=${spec%%=*} path=${spec#*=}
        start_server "$label" "$path" --key "$WORK/k.key" --allow tcp/22 "${EXTRA[@]}"
        # Sealed now: the replay flood's copies are inside the window (replayed, not too old).
        in_c "$BIN/spa-client" send --quiet --key "$WORK/k.key" --server-id scale --open 22 --output "$WORK/probe.bin"
        measure_flood "$label" forge
        in_c "$BIN/spa-client" send --quiet --key "$WORK/k.key" --server-id scale --open 22 --output "$WORK/probe.bin"
        measure_flood "$label" replay
        stop_server
    done
    FWKNOPD_OPENS=
    [[ ${SPA_SCALE_FWKNOPD:-0} == 1 ]] && fwknopd_bench
    ((TRIALS > 0)) || return 0
    say ""
    say "A valid datagram (spa-client send --wait=10, one resend at half time) in the middle of each flood:"
    say ""
    say "| build | flood | opened | median time to open |"
    say "|---|---|---:|---:|"
    for spec in ${SPA_SCALE_SERVERS:-spa=$BIN/spa-server}; do
        label=${spec%%=*} path=${spec#*=}
        start_server "$label" "$path" --key "$WORK/k.key" --allow tcp/22 "${EXTRA[@]}"
        opens_mid_flood "$label" forge
        opens_mid_flood "$label" replay
        stop_server
    done
    [[ -n $FWKNOPD_OPENS ]] && say "$FWKNOPD_OPENS (fwknop client, then tcp/22 polled for 10 s)"
    for f in "$OUT"/*-perf.txt; do
        [[ -f $f ]] || continue
        say ""
        say "perf, $(basename "$f" -perf.txt), forgery flood (self time >= 2 %):"
        say '```'
        sed 's/^/    /' "$f" | tee -a "$RES"
        say '```'
    done
}

# fwknopd in UDP server mode (the shared harness's fwknopd-udp anchor: same config) under the same
# replay flood: copies of one valid SPA packet, the first sent for real so the rest are replays.
fwknopd_bench() {
    local d=$WORK/fwknopd kg key hmac ready=0 out sent secs c0 c1 dr0 dr1 ok=0 i fpid
    if ! command -v fwknopd >/dev/null || ! command -v fwknop >/dev/null; then
        say "fwknopd: not installed (apt-get install fwknop-server fwknop-client), skipped"
        return
    fi
    mkdir -p "$d/run"
    kg=$(fwknop --no-rc-file --key-gen)
    key=$(awk '/^KEY_BASE64:/{print $2}' <<<"$kg") hmac=$(awk '/^HMAC_KEY_BASE64:/{print $2}' <<<"$kg")
    printf '%s\n' "PCAP_INTF $SIF;" "ENABLE_PCAP_PROMISC N;" "FIREWALL_EXE /usr/sbin/iptables;" \
        "ENABLE_UDP_SERVER Y;" "UDPSERV_PORT 62201;" "FWKNOP_RUN_DIR $d/run;" >"$d/fwknopd.conf"
    printf '%s\n' "SOURCE ANY" "OPEN_PORTS tcp/22" "KEY_BASE64 $key" "HMAC_KEY_BASE64 $hmac" \
        "FW_ACCESS_TIMEOUT 30" >"$d/access.conf"
    chmod 600 "$d/fwknopd.conf" "$d/access.conf"
    taskset -c 0 ip netns exec "$S" fwknopd -f -c "$d/fwknopd.conf" -a "$d/access.conf" \
        -d "$d/run/digest.cache" -p "$d/run/fwknopd.pid" -i "$SIF" -U >"$OUT/fwknopd.log" 2>&1 &
    local fw=$!
    PIDS+=("$fw")
    for _ in $(seq 200); do
        in_s ss -Hlun 'sport = :62201' | grep -q . && { ready=1; break; }
        sleep 0.05
    done
    ((ready)) || { say "fwknopd did not start: $(tail -3 "$OUT/fwknopd.log")"; return; }
    sleep 0.5
    knock() { # [--save-packet FILE --test]
        in_c fwknop --no-rc-file --no-save-args -A tcp/22 -a $CLI -D $SRV --key-base64-rijndael "$key" \
            --key-base64-hmac "$hmac" "$@" >/dev/null 2>&1
    }
    udp_drops() { in_s awk '$2 ~ /:F2F9$/ {d += $NF} END {print d + 0}' /proc/net/udp; }
    knock --save-packet "$d/pkt.txt" --test
    tr -d '\n' <"$d/pkt.txt" >"$d/pkt"
    in_c "$BIN/spa-flood" "$SRV" --replay "$d/pkt" --from $CLI --count 1 >/dev/null
    sleep 0.5
    c0=$(cpu_ns "$fw") dr0=$(udp_drops)
    out=$(in_c "$BIN/spa-flood" "$SRV" --replay "$d/pkt" --from $CLI --cpu 1 --count 1000000000 \
        --seconds "$FLOOD_SECS" --json)
    # fwknopd works through its socket's backlog: wait (bounded) until its CPU time stops moving.
    local last=-1
    for _ in $(seq 60); do
        c1=$(cpu_ns "$fw")
        [[ $c1 == "$last" ]] && break
        last=$c1
        sleep 0.5
    done
    dr1=$(udp_drops)
    sent=$(jq -r .sent <<<"$out") secs=$(jq -r .seconds <<<"$out")
    python3 - "$sent" "$secs" "$((dr1 - dr0))" "$((c1 - c0))" <<'PY' | tee -a "$RES"
import sys
sent, secs, drops, cpu = map(float, sys.argv[1:])
judged, cpu_s = sent - drops, cpu / 1e9
print(f"| fwknopd-udp | replay | {sent:,.0f} | {sent / secs:,.0f}/s | {judged:,.0f} (sent - socket drops) "
      f"| {drops:,.0f} ({100 * drops / max(sent, 1):.1f} %) | {cpu_s:.2f} s ({100 * cpu_s / secs:.0f} % of a core) "
      f"| {judged / secs:,.0f}/s | **{judged / max(cpu_s, 1e-9):,.0f}/s** | {1e9 * cpu_s / max(judged, 1):,.0f} ns |")
PY
    # Valid knocks in the middle of the replay flood: opened when tcp/22 accepts within 10 s.
    ip netns exec "$C" "$BIN/spa-flood" "$SRV" --replay "$d/pkt" --from $CLI --cpu 1 --count 1000000000 \
        --seconds 120 >/dev/null &
    fpid=$!
    PIDS+=("$fpid")
    sleep 1
    for i in $(seq "$TRIALS"); do
        in_s iptables -F FWKNOP_INPUT 2>/dev/null || true
        knock
        if in_c timeout 10 python3 -c '
import socket, sys, time
for _ in range(1000):
    try:
        socket.create_connection(("'$SRV'", 22), timeout=0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.01)
sys.exit(1)'; then ok=$((ok + 1)); fi
    done
    kill "$fpid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
    FWKNOPD_OPENS="| fwknopd-udp | replay | $ok / $TRIALS | - |"
    kill "$fw" 2>/dev/null || true
    wait "$fw" 2>/dev/null || true
}

# N key files as spa-keygen writes them (0600) in DIR, and DIR/server.toml with one [[key]] each.
gen_keys() {
    mkdir -p "$1"
    chmod 0700 "$1"
    python3 - "$1" "$2" <<'PY'
import base64, os, sys
d, n = sys.argv[1], int(sys.argv[2])
with open(os.path.join(d, "server.toml"), "w") as conf:
    for i in range(n):
        p = os.path.join(d, f"k{i:05}.key")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, f'name = "k{i:05}"\nkey = "{base64.b64encode(os.urandom(32)).decode()}"\nserver_id = "scale"\n'.encode())
        os.close(fd)
        conf.write(f'[[key]]\nname = "k{i:05}"\nfile = "{p}"\nallow = ["tcp/22"]\n\n')
PY
}

keys_bench() {
    setup_net
    say "# scale-flood.sh keys, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
    say ""
    local n label path
    say "| keys | start to ready | SIGHUP to reloaded | RSS network side | RSS privileged side |"
    say "|---:|---:|---:|---:|---:|"
    spec=${SPA_SCALE_SERVERS:-spa=$BIN/spa-server}
    label=${spec%%=*} path=${spec#*=}
    for n in 16 "$KEYS"; do
        local dir=$WORK/keys$n
        mkdir -p "$dir"
        chmod 0700 "$dir"
        # Key files as spa-keygen writes them (0600), and one [[key]] each.
        gen_keys "$dir" "$n"
        start_server "$label-$n" "$path" --config "$dir/server.toml"
        sleep 2
        local rn rp t0 before
        rn=$(rss_kb "$DPID") rp=$(rss_kb "$PRIV")
        before=$(grep -c 'reloaded' "$LOG" || true)
        t0=$(date +%s%N)
        kill -HUP "$DPID"
        for _ in $(seq 1000); do
            [[ $(grep -c 'reloaded\|reload refused' "$LOG" || true) -gt $before ]] && break
            sleep 0.01
        done
        local reload_ms=$((($(date +%s%N) - t0) / 1000000))
        grep -q 'reload refused' "$LOG" && reload_ms="refused: $(grep 'reload refused' "$LOG" | tail -1 | cut -c1-200)"
        say "| $n | ${T_READY} ms | ${reload_ms} ms | $rn kB | $rp kB |"
        eval "rss_$n=$rn rssp_$n=$rp"
        stop_server
    done
    local a b
    a=$(eval echo "\$rss_$KEYS") b=$rss_16
    say ""
    say "RSS growth per key (network side): $(python3 -c "print(f'{($a - $b) * 1024 / ($KEYS - 16):.0f} bytes')"); \
privileged side: $(python3 -c "print(f'{($(eval echo "\$rssp_$KEYS") - $rssp_16) * 1024 / ($KEYS - 16):.0f} bytes')")"
}

case $what in
    flood) flood_bench ;;
    keys) keys_bench ;;
esac
echo "(results in $RES)" >&2
