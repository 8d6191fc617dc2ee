#!/usr/bin/env bash
# What spa's scripts need on a Debian host, in one place: demo.sh, test.sh
# (and so .ci/run), bench.sh and package.sh all source this file and call
#
#     prereqs PURPOSE...        # demo | build | test | bench | package
#
# which installs the Debian packages those purposes need that are missing
# (apt-get, as root), then, for any purpose that compiles, finds a Rust
# toolchain of at least $SPA_MIN_RUST (also the one in SUDO_USER's home when
# run under sudo) and puts it on PATH. What it cannot install itself (Rust
# comes from rustup, not from Debian 12, whose rustc is 1.63) stops the
# script with one sentence saying what to run.
#
# Run directly, it does the same: `sudo scripts/prereqs.sh test package`.
#
# Environment:
#   SPA_NO_APT=1   never run apt-get; name the missing packages and stop
#   CARGO=PATH     use this cargo (its directory goes first on PATH)

# The one list. Each package: the purposes that need it.
SPA_PACKAGES="
iptables          demo test bench package
ipset             demo test bench package
nftables          test bench
iproute2          demo test bench
python3           demo test bench
procps            test
kmod              test
knockd            test bench
systemd           test
strace            test
util-linux        test
openssh-server    test
openssh-client    test
ca-certificates   build
gcc               build
libc6-dev         build
tcpdump           bench
nmap              test
hyperfine         bench
jq                bench
fwknop-server     bench
fwknop-client     bench
dpkg-dev          package
lintian           package
man-db            test package
"
SPA_MIN_RUST=1.85
SPA_RUSTUP_CMD="curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"

# The packages PURPOSE... need (build is implied by test, bench, package;
# demo.sh asks for it only when it has to compile).
spa_packages_for() {
    local want=" $* " pkg purposes p
    case $want in *" test "* | *" bench "* | *" package "*) want+="build " ;; esac
    while read -r pkg purposes; do
        [[ -n $pkg ]] || continue
        for p in $purposes; do
            if [[ $want == *" $p "* ]]; then echo "$pkg"; break; fi
        done
    done <<<"$SPA_PACKAGES"
}

spa_missing_packages() {
    local pkg
    for pkg in $(spa_packages_for "$@"); do
        dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || echo "$pkg"
    done
}

# "1.85.0" >= "1.85"?
spa_version_ge() {
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

# Puts a cargo >= SPA_MIN_RUST first on PATH: $CARGO, then PATH, then
# ~/.cargo/bin of root and of SUDO_USER (sudo resets HOME and PATH, so the
# toolchain a user installed with rustup is not found otherwise). rustup's
# proxies find their toolchains through RUSTUP_HOME (default ~/.rustup of
# the current HOME), so it is set to the owner's when their proxy is used.
spa_find_cargo() {
    local dirs=() d ver rh best_old=
    [[ -n ${CARGO:-} ]] && dirs+=("$(dirname "$CARGO")")
    dirs+=("")
    [[ -n ${HOME:-} ]] && dirs+=("$HOME/.cargo/bin")
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        d=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        [[ -n $d ]] && dirs+=("$d/.cargo/bin")
    fi
    for d in "${dirs[@]}"; do
        local cargo=cargo rustc=rustc
        [[ -n $d ]] && { cargo=$d/cargo rustc=$d/rustc; }
        command -v "$cargo" >/dev/null 2>&1 || continue
        rh=${RUSTUP_HOME:-}
        [[ -n $d && -d $d/../../.rustup ]] && rh=$(cd "$d/../../.rustup" && pwd)
        ver=$(RUSTUP_HOME=$rh "$rustc" --version 2>/dev/null | awk '{print $2}')
        [[ -n $ver ]] || continue
        if spa_version_ge "${ver%%-*}" "$SPA_MIN_RUST"; then
            [[ -n $d ]] && export PATH="$d:$PATH"
            [[ -n $rh ]] && export RUSTUP_HOME="$rh"
            return 0
        fi
        best_old=$ver
    done
    if [[ -n $best_old ]]; then
        echo "prereqs: Rust $best_old is too old: spa needs Rust >= $SPA_MIN_RUST; run \`rustup update stable\` (or install rustup: $SPA_RUSTUP_CMD)" >&2
    else
        echo "prereqs: no Rust toolchain found (spa needs Rust >= $SPA_MIN_RUST, newer than Debian's rustc): install it with $SPA_RUSTUP_CMD, then run this again (under sudo, ~/.cargo/bin of \$SUDO_USER is searched too)" >&2
    fi
    return 1
}

# promtool (the tests check `status --prometheus` and the metrics file with
# it) ships only in Debian 12's `prometheus` package, whose postinst would
# create a user, enable the prometheus service and start it (listening on
# :9090) on the host. So the package is never installed: its .deb is
# downloaded and promtool alone extracted to $SPA_PROMTOOL, unless a
# promtool is on PATH already.
SPA_PROMTOOL=/var/cache/spa-e2e/promtool
spa_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    [[ -x $SPA_PROMTOOL ]] && return 0
    if [[ -n ${SPA_NO_APT:-} || $(id -u) != 0 ]]; then
        echo "prereqs: promtool missing; run: sudo scripts/prereqs.sh test (extracts it from Debian's prometheus .deb, without installing the package)" >&2
        return 1
    fi
    echo "== prereqs: extracting promtool from Debian's prometheus package (not installed: no service)" >&2
    local dir
    dir=$(mktemp -d /var/cache/spa-e2e.XXXXXX 2>/dev/null || mktemp -d)
    (
        cd "$dir" || exit 1
        # _apt cannot write a root-private directory: let apt download as root.
        chmod 755 "$dir"
        apt-get download -qq prometheus >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get download -qq prometheus >/dev/null 2>&1; } || exit 1
        mkdir -p "$(dirname "$SPA_PROMTOOL")"
        dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x -O ./usr/bin/promtool >"$SPA_PROMTOOL.new" &&
            chmod 755 "$SPA_PROMTOOL.new" && mv "$SPA_PROMTOOL.new" "$SPA_PROMTOOL"
    )
    local rc=$?
    rm -rf "$dir"
    if ((rc != 0)); then
        echo "prereqs: could not extract promtool from the prometheus package (apt-get download prometheus)" >&2
        return 1
    fi
}

prereqs() {
    local missing
    missing=$(spa_missing_packages "$@" | tr '\n' ' ')
    missing=${missing% }
    if [[ -n $missing ]]; then
        if [[ -n ${SPA_NO_APT:-} || $(id -u) != 0 ]]; then
            echo "prereqs: missing Debian packages: $missing; install them with: sudo apt-get install $missing" >&2
            return 1
        fi
        echo "== prereqs: installing $missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        # An install first (the package lists may be current), update only if it fails.
        # shellcheck disable=SC2086
        if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
            apt-get update -qq >/dev/null
            apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
                echo "prereqs: apt-get install $missing failed (see above)" >&2
                return 1
            }
        fi
    fi
    case " $* " in
        *" test "*) spa_promtool || return 1 ;;
    esac
    case " $* " in
        *" build "* | *" test "* | *" bench "* | *" package "*) spa_find_cargo || return 1 ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    (($#)) || { sed -n '2,17p' "$0"; exit 2; }
    prereqs "$@"
    echo "prereqs: all present for: $*"
fi
