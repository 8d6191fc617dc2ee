#!/usr/bin/env bash
# Builds the Debian packages spa-server and spa-client (cargo-deb) into
# target/debian/, then checks them: lintian must report no error (each
# warning left is justified in docs/packaging.md) and man(1) must render each
# man page without a warning. As root on a Debian host (apt installs what is
# missing; cargo-deb is installed with `cargo install` if absent, ~2 min).
#
# Usage: scripts/package.sh [--no-lintian]
# Environment: CARGO_DEB_VERSION (default 3.8.0) pins the cargo-deb installed.
set -euo pipefail
cd "$(dirname "$0")/.."
LINTIAN=1
for a in "$@"; do
    case $a in
        --no-lintian) LINTIAN=0 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
prereqs package

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb ${CARGO_DEB_VERSION:-3.8.0} (cargo install --locked)"
    start=$SECONDS
    cargo install cargo-deb --version "${CARGO_DEB_VERSION:-3.8.0}" --locked --quiet
    echo "   cargo-deb installed in $((SECONDS - start)) s"
fi

echo "== release binaries"
cargo build --release --locked -p spa-server -p spa-client -p spa-keys --bins --quiet

echo "== man pages and completions (cargo run -p xtask -- dist target/release/dist)"
rm -rf target/release/dist
cargo run --quiet --locked -p xtask -- dist target/release/dist >/dev/null
# The unit as packaged: the daemon in /usr/sbin, docs under /usr/share/doc.
sed -e 's#/usr/local/sbin/spa-server#/usr/sbin/spa-server#g' \
    -e 's#^Documentation=.*#Documentation=man:spa-server(8) man:spa-server.toml(5) file:///usr/share/doc/spa-server/operations.md#' \
    spa-server/dist/spa-server.service >target/release/dist/spa-server.service
for page in target/release/dist/man/*.[0-9]; do
    warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [[ -z $warnings ]] || { echo "package.sh: man --warnings on $page:"; echo "$warnings"; exit 1; } >&2
    # Compressed here: cargo-deb compresses man pages, but not those it takes
    # from the target directory.
    gzip -9nk "$page"
done

echo "== cargo deb"
rm -rf target/debian
for p in spa-server spa-client; do
    cargo deb --no-build --locked -p "$p" --output target/debian/ 2>&1 | sed 's/^/   /'
done
ls -l target/debian/*.deb | sed 's/^/   /'

if [[ $LINTIAN == 1 ]]; then
    echo "== lintian"
    # Errors fail the build; warnings are printed (docs/packaging.md says
    # why each is there). --allow-root: CI builds as root.
    lintian --allow-root --fail-on error target/debian/*.deb | sed 's/^/   /'
    [[ ${PIPESTATUS[0]} == 0 ]] || { echo "package.sh: lintian reported errors" >&2; exit 1; }
    echo "   lintian: no errors"
fi
