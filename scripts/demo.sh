#!/usr/bin/env bash
# The demo of spa's main job, on one machine, as root: two network
# namespaces joined by a veth (198.18.250.0/24), a server namespace whose
# firewall refuses tcp/22, and a real open/close with spa-client.
# Nothing outside the two namespaces it creates is touched; they are removed
# on exit, also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "demo: run as root: sudo $0 (it creates network namespaces)" >&2; exit 1; }
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
prereqs demo

# Reuse the release binaries when none of the sources is newer (no Rust
# needed then); otherwise build them, as SUDO_USER when run under sudo, so
# target/ stays theirs and their toolchain (~/.cargo/bin) is the one used.
stale() {
    local bin srcs
    for bin in spa-server:spa-server spa-client:spa-client spa-keygen:; do
        srcs=${bin#*:} bin=target/release/${bin%%:*}
        [[ -x $bin ]] || return 0
        # The binary's crate, and the crates every binary uses.
        [[ -z $(find Cargo.toml Cargo.lock spa-proto keys $srcs \
            \( -name '*.rs' -o -name Cargo.toml \) -newer "$bin" -print -quit) ]] || return 0
    done
    return 1
}
if stale; then
    prereqs build
    echo "== building (release)"
    build=(cargo build --release --locked -p spa-server -p spa-client -p spa-keys --bins --quiet)
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root && $(stat -c %U .) == "$SUDO_USER" ]]; then
        runuser -u "$SUDO_USER" -- env PATH="$PATH" "${build[@]}"
    else
        "${build[@]}"
    fi
else
    echo "== release binaries are current: not rebuilding"
fi
B=$PWD/target/release
S=spademo-srv C=spademo-cli SIP=198.18.250.1 CIP=198.18.250.2
WORK=$(mktemp -d /tmp/spa-demo.XXXXXX)
# The daemon's network side runs unprivileged: it must be able to reach its state below.
chmod 0711 "$WORK"
SERVER_PID= SSHD_PID=

cleanup() {
    if [[ -n $SSHD_PID ]]; then kill "$SSHD_PID" 2>/dev/null; wait "$SSHD_PID" 2>/dev/null || true; fi
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; fi
    for ns in $S $C; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] && { kill -9 $pids; wait; } 2>/dev/null
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

in_s() { ip netns exec "$S" "$@"; }
in_c() { ip netns exec "$C" "$@"; }
# probe WANT: connect to tcp/22 from the client; the demo fails unless the
# result is WANT (OK or refused).
probe() {
    local got=refused
    if in_c timeout 3 python3 -c "import socket,sys; s=socket.create_connection(('$SIP',22),timeout=1); s.recv(64)" 2>/dev/null; then
        got=OK
    fi
    echo "   -> connect to $SIP:22: $got"
    [[ $got == "$1" ]] || { echo "demo: FAILED: expected $1"; sed 's/^/   /' "$WORK/server.log"; exit 1; }
}

echo "== two namespaces: $C ($CIP) --veth-- $S ($SIP)"
for ns in $S $C; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; done
in_s ip link add spademo0 type veth peer name spademo1 netns "$C"
in_s ip addr add $SIP/24 dev spademo0; in_s ip link set spademo0 up; in_s ip link set lo up
in_c ip addr add $CIP/24 dev spademo1; in_c ip link set spademo1 up; in_c ip link set lo up

echo "== the admin's baseline in $S: tcp/22 closed to new connections"
in_s iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
in_s iptables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset
in_s iptables -S INPUT | sed 's/^/   /'
in_s python3 -c "
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',22)); s.listen(8)
while True:
    c,_=s.accept(); c.sendall(b'SSH-2.0-demo-sshd\r\n'); c.close()" &
SSHD_PID=$!

echo "== spa-keygen"
"$B/spa-keygen" --out "$WORK/demo.key" --name demo --server-id demo | sed 's/^/   /'

echo "== spa-server in $S (no socket on udp/62201: a kernel-filtered capture)"
ip netns exec "$S" "$B/spa-server" --interface spademo0 --key "$WORK/demo.key" --allow tcp/22 \
    --server-id demo --state-dir "$WORK/state" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do grep -q ready "$WORK/server.log" && break; sleep 0.05; done
grep -q ready "$WORK/server.log" || { cat "$WORK/server.log"; exit 1; }

echo "== before: "; probe refused
echo "== spa-client send --open 22 $SIP"
in_c "$B/spa-client" send --key "$WORK/demo.key" --open 22 "$SIP"
sleep 0.2
echo "== after open:"; probe OK
echo "   the grant, scoped to $CIP:"; in_s iptables -S SPA | grep -- "-s" | sed 's/^/   /'
echo "== spa-client send --close 22 $SIP"
in_c "$B/spa-client" send --key "$WORK/demo.key" --close 22 "$SIP"
sleep 0.2
echo "== after close:"; probe refused
echo "== replaying a captured datagram"
in_c "$B/spa-client" send --key "$WORK/demo.key" --open 22 --output "$WORK/dg.bin" "$SIP"
in_c "$B/spa-client" raw-send "$WORK/dg.bin" "$SIP"
sleep 0.2
in_c "$B/spa-client" raw-send "$WORK/dg.bin" "$SIP"
sleep 0.2
echo "== server log:"; sed 's/^/   /' "$WORK/server.log"
grep -q "rejected: replayed" "$WORK/server.log" || { echo "demo: FAILED: the replayed datagram was not rejected"; exit 1; }
echo "== demo passed: closed, opened for $CIP only, closed again, the replay rejected"
