#!/usr/bin/env bash
# Builds the Debian package `opsdeck` into target/debian/: the release
# binaries, then what the package makes from them — completions and man
# pages from their own command lines, the systemd units with the package's
# paths (/usr/bin) — and then `cargo deb` with engine/Cargo.toml's
# [package.metadata.deb]. Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi

cargo build --release -p opsdeck-engine --bin opsdeckd -p opsdeck-tui --bin opsdeck
bin="${CARGO_TARGET_DIR:-target}/release"

out=deploy/debian/generated
rm -rf "$out"
mkdir -p "$out/completions" "$out/man" "$out/systemd"
for shell in bash zsh fish; do
    "$bin/opsdeckd" completions "$shell" >"$out/completions/opsdeckd.$shell"
    "$bin/opsdeck" completions "$shell" >"$out/completions/opsdeck.$shell"
done
"$bin/opsdeckd" manpage --out-dir "$out/man" >/dev/null
"$bin/opsdeck" manpage --out-dir "$out/man" >/dev/null
# The units in deploy/systemd are for binaries installed by hand in
# /usr/local/bin; the package's are in /usr/bin.
for unit in deploy/systemd/*.service; do
    sed 's#/usr/local/bin/#/usr/bin/#g' "$unit" >"$out/systemd/$(basename "$unit")"
done
if grep -q /usr/local/ "$out"/systemd/*.service; then
    echo "deploy/debian/build.sh: a unit still names /usr/local:" >&2
    grep -n /usr/local/ "$out"/systemd/*.service >&2
    exit 1
fi

cargo deb -p opsdeck-engine --no-build --output target/debian/
