#!/usr/bin/env bash
# Installs spa on this host (the documented install step, docs/operations.md):
#   binaries   $PREFIX/sbin/spa-server, $PREFIX/bin/spa-client, $PREFIX/bin/spa-keygen
#   unit       /etc/systemd/system/spa-server.service
#   config     /etc/spa/server.toml (the example, only if none exists), /etc/spa/keys (0700)
#   docs       $PREFIX/share/doc/spa/ (README, operations, firewall, legacy, security)
#   man pages  $PREFIX/share/man/man{1,5,8}: spa-client(1), spa-keygen(1),
#              spa-server.toml(5), spa-server(8)
#   completions  $PREFIX/share/{bash-completion/completions,zsh/site-functions,
#              fish/vendor_completions.d}
#   user       the system user `spa` (as the Debian package makes it)
# The same files the Debian packages install (docs/packaging.md), for hosts
# without dpkg; man pages and completions come from target/release/dist
# (`cargo run -p xtask -- dist`, run here unless --no-build).
# It starts, enables and restarts nothing: after an upgrade, restart yourself
# (`systemctl restart spa-server`). Running it again is harmless; an existing
# server.toml or key is never touched.
#
# Usage: scripts/install.sh [--no-build]
#   --no-build      install what target/release already holds (e.g. built as
#                   your user before `sudo scripts/install.sh --no-build`)
# Environment:
#   PREFIX=/usr/local   where binaries and docs go
#   DESTDIR=            staging root (packaging, tests): everything goes under it
#   SPA_BIN_DIR=        take the binaries from here instead of target/release
#   SPA_DIST_DIR=       man pages and completions from here (default target/release/dist)
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BUILD=1
for a in "$@"; do
    case $a in
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done
if [[ -z $DESTDIR && $(id -u) != 0 ]]; then
    echo "install.sh: run as root (or set DESTDIR to stage the files)" >&2
    exit 1
fi

BIN_DIR=${SPA_BIN_DIR:-$PWD/target/release}
if [[ $BUILD == 1 && -z ${SPA_BIN_DIR:-} ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || {
        echo "install.sh: cargo not found; build first (cargo build --release) and pass --no-build" >&2
        exit 1
    }
    echo "== cargo build --release"
    cargo build --release --locked -p spa-server -p spa-client -p spa-keys --bins
    echo "== man pages and completions (cargo run -p xtask -- dist)"
    cargo run --quiet --locked -p xtask -- dist "${SPA_DIST_DIR:-target/release/dist}" >/dev/null
fi
DIST=${SPA_DIST_DIR:-$PWD/target/release/dist}
for b in spa-server spa-client spa-keygen; do
    [[ -x $BIN_DIR/$b ]] || { echo "install.sh: $BIN_DIR/$b missing: build first" >&2; exit 1; }
done

D=$DESTDIR
echo "== binaries -> $D$PREFIX/{sbin,bin}"
install -d -m 0755 "$D$PREFIX/sbin" "$D$PREFIX/bin"
# install(1) writes a new file and renames it: a running daemon keeps its old
# binary until restarted.
install -m 0755 "$BIN_DIR/spa-server" "$D$PREFIX/sbin/spa-server"
install -m 0755 "$BIN_DIR/spa-client" "$D$PREFIX/bin/spa-client"
install -m 0755 "$BIN_DIR/spa-keygen" "$D$PREFIX/bin/spa-keygen"

echo "== unit -> $D/etc/systemd/system/spa-server.service"
install -d -m 0755 "$D/etc/systemd/system"
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed -e "s#/usr/local/sbin/spa-server#$PREFIX/sbin/spa-server#g" \
    -e "s#file:///usr/local/share/doc/spa/#file://$PREFIX/share/doc/spa/#g" \
    spa-server/dist/spa-server.service >"$unit_tmp"
install -m 0644 "$unit_tmp" "$D/etc/systemd/system/spa-server.service"

echo "== docs -> $D$PREFIX/share/doc/spa"
install -d -m 0755 "$D$PREFIX/share/doc/spa"
for doc in README.md docs/operations.md docs/firewall.md docs/legacy.md docs/security.md; do
    install -m 0644 "$doc" "$D$PREFIX/share/doc/spa/$(basename "$doc")"
done
install -m 0644 spa-server/dist/server.toml.example "$D$PREFIX/share/doc/spa/server.toml.example"

if [[ -d $DIST/man && -d $DIST/completions ]]; then
    echo "== man pages, completions -> $D$PREFIX/share"
    for page in "$DIST"/man/*.[0-9]; do
        sec=${page##*.}
        install -d -m 0755 "$D$PREFIX/share/man/man$sec"
        gzip -9nc "$page" >"$D$PREFIX/share/man/man$sec/$(basename "$page").gz"
        chmod 0644 "$D$PREFIX/share/man/man$sec/$(basename "$page").gz"
    done
    install -d -m 0755 "$D$PREFIX/share/bash-completion/completions" \
        "$D$PREFIX/share/zsh/site-functions" "$D$PREFIX/share/fish/vendor_completions.d"
    for b in spa-server spa-client spa-keygen; do
        install -m 0644 "$DIST/completions/bash/$b" "$D$PREFIX/share/bash-completion/completions/$b"
        install -m 0644 "$DIST/completions/zsh/_$b" "$D$PREFIX/share/zsh/site-functions/_$b"
        install -m 0644 "$DIST/completions/fish/$b.fish" "$D$PREFIX/share/fish/vendor_completions.d/$b.fish"
    done
else
    echo "== no $DIST: man pages and completions skipped (cargo run -p xtask -- dist $DIST)"
fi

if [[ -z $DESTDIR ]] && ! getent passwd spa >/dev/null && command -v useradd >/dev/null; then
    echo "== system user spa"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "spa-server single-packet authorization" spa
fi

echo "== configuration -> $D/etc/spa"
install -d -m 0755 "$D/etc/spa"
install -d -m 0700 "$D/etc/spa/keys"
chmod 0700 "$D/etc/spa/keys"
if [[ -e $D/etc/spa/server.toml ]]; then
    echo "   $D/etc/spa/server.toml exists: left as it is"
else
    install -m 0600 spa-server/dist/server.toml.example "$D/etc/spa/server.toml"
    echo "   wrote $D/etc/spa/server.toml from the example: set server_id and add a [[key]]"
fi

if [[ -z $DESTDIR && -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi

cat <<EOF

Installed. Nothing was started. Next:
  1. keep your baseline firewall: the rule that refuses the protected port
     (e.g. tcp/22) belongs to your ruleset, after an ESTABLISHED,RELATED accept
  2. $PREFIX/bin/spa-keygen --out /etc/spa/keys/alice.key --name alice --server-id NAME
     and paste the printed [[key]] table into /etc/spa/server.toml
  3. $PREFIX/sbin/spa-server --config /etc/spa/server.toml check-config
  4. systemctl enable --now spa-server; journalctl -u spa-server -f
EOF
