#!/usr/bin/env bash
# Proves that the README's first command sets itself up: removes a
# prerequisite package (default iptables), runs scripts/demo.sh, and checks
# that the demo put the package back and passed. As root.
#
# The host's packages are never touched: everything runs in a private mount
# namespace whose /usr, /etc and /var are overlays on a tmpfs, discarded at
# exit; only apt's downloads reach the network. The demo reuses
# target/release when current (build it first to keep this quick).
#
# Usage: scripts/first-run-check.sh [PACKAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "first-run-check: run as root" >&2; exit 1; }
PKG=${1:-iptables}

if [[ ${SPA_FENCED:-} != 1 ]]; then
    exec env SPA_FENCED=1 unshare --mount --propagation private "$0" "$@"
fi
ovl=$(mktemp -d /tmp/spa-first-run.XXXXXX)
mount -t tmpfs -o mode=0700 tmpfs "$ovl"
for d in usr etc var; do
    mkdir -p "$ovl/$d.upper" "$ovl/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$ovl/$d.upper,workdir=$ovl/$d.work" "/$d"
done
trap 'umount -l /usr /etc /var "$ovl" 2>/dev/null; rmdir "$ovl"' EXIT

echo "== first-run check: removing $PKG (in an overlay; the host keeps it)"
dpkg -r --force-depends "$PKG" >/dev/null 2>&1
if dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" 2>/dev/null | grep -q '^ii'; then
    echo "first-run-check: could not remove $PKG" >&2
    exit 1
fi
if [[ $PKG == iptables ]] && command -v iptables >/dev/null; then
    echo "first-run-check: iptables still on PATH after removing the package" >&2
    exit 1
fi
echo "== first-run check: sudo ./scripts/demo.sh without $PKG"
scripts/demo.sh
dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" | grep -q '^ii' || {
    echo "first-run-check: FAILED: the demo passed but did not reinstall $PKG" >&2
    exit 1
}
echo "first-run check passed: $PKG removed, reinstalled by the demo, demo passed"
