#!/usr/bin/env bash
# Installs the Debian package on this machine with dpkg, checks what it put
# where, runs the installed `opsdeckd check-config` on the installed config
# and the installed engine as its user (as opsdeckd.service runs it, but
# without systemd) with one run through a local worker, then purges the
# package and checks that nothing of it is left.
#
#   sudo deploy/debian/smoke-test.sh [target/debian/opsdeck_VERSION_ARCH.deb]
#
# Default: the newest package deploy/debian/build.sh made. It refuses to run
# where opsdeck is installed or its users or directories exist, since the
# purge at the end would remove them.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
    echo "smoke-test: $*" >&2
    exit 1
}

deb="${1:-$(ls -t target/debian/opsdeck_*.deb 2>/dev/null | head -n 1)}"
[ -n "$deb" ] && [ -f "$deb" ] || fail "no package; build one with deploy/debian/build.sh"
[ "$(id -u)" = 0 ] || fail "run as root: it installs and purges a package"
if dpkg-query -W -f='${Status}' opsdeck 2>/dev/null | grep -q ' installed$'; then
    fail "opsdeck is installed here; the purge at the end would remove it and its data"
fi
for user in opsdeck opsdeck-worker; do
    if getent passwd "$user" >/dev/null || getent group "$user" >/dev/null; then
        fail "the user or group $user exists; the purge at the end would remove it"
    fi
done
for dir in /etc/opsdeck /var/lib/opsdeck /var/lib/opsdeck-worker /var/log/opsdeck /run/opsdeck; do
    [ ! -e "$dir" ] || fail "$dir exists; the purge at the end would remove it"
done

socket=/run/opsdeck/engine.sock
work="$(mktemp -d)"
engine_pid=
installed=
cleanup() {
    local status=$?
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        kill -KILL "$engine_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -s "$work/engine.log" ]; then
        echo "--- the engine's output:" >&2
        cat "$work/engine.log" >&2
    fi
    if [ -n "$installed" ]; then
        dpkg --purge opsdeck >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

echo "smoke-test: installing $deb"
installed=yes
dpkg -i "$deb"

# What the package put where.
for file in /usr/bin/opsdeckd /usr/bin/opsdeck; do
    [ -x "$file" ] || fail "$file is missing or not executable"
done
for file in \
    /usr/lib/systemd/system/opsdeckd.service \
    /usr/lib/systemd/system/opsdeck-worker@.service \
    /usr/share/bash-completion/completions/opsdeckd \
    /usr/share/bash-completion/completions/opsdeck \
    /usr/share/zsh/vendor-completions/_opsdeckd \
    /usr/share/zsh/vendor-completions/_opsdeck \
    /usr/share/fish/vendor_completions.d/opsdeckd.fish \
    /usr/share/fish/vendor_completions.d/opsdeck.fish \
    /usr/share/man/man1/opsdeckd.1.gz \
    /usr/share/man/man1/opsdeckd-serve.1.gz \
    /usr/share/man/man1/opsdeck.1.gz \
    /usr/share/man/man1/opsdeck-submit.1.gz; do
    [ -s "$file" ] || fail "$file is missing or empty"
done
zcat /usr/share/man/man1/opsdeckd.1.gz | grep -q '^\.TH opsdeckd 1' || fail "opsdeckd.1 is not a man page"
grep -q '^ExecStart=/usr/bin/opsdeckd serve ' /usr/lib/systemd/system/opsdeckd.service \
    || fail "opsdeckd.service does not start /usr/bin/opsdeckd"
if grep -q /usr/local/ /usr/lib/systemd/system/opsdeck*.service; then
    fail "an installed unit names /usr/local"
fi
dpkg-query -W -f='${Conffiles}\n' opsdeck | grep -q '^ /etc/opsdeck/engine.toml ' \
    || fail "/etc/opsdeck/engine.toml is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/opsdeck/engine.toml)" = "root:opsdeck 640" ] \
    || fail "/etc/opsdeck/engine.toml is $(stat -c '%U:%G %a' /etc/opsdeck/engine.toml), not root:opsdeck 640"
[ "$(stat -c '%U:%G %a' /var/lib/opsdeck)" = "opsdeck:opsdeck 700" ] \
    || fail "/var/lib/opsdeck is $(stat -c '%U:%G %a' /var/lib/opsdeck), not opsdeck:opsdeck 700"
for user in opsdeck opsdeck-worker; do
    [ "$(getent passwd "$user" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "no system user $user"
done
[ -L /etc/systemd/system/multi-user.target.wants/opsdeckd.service ] || fail "opsdeckd.service is not enabled"

# The installed units, as systemd would read them; any complaint fails.
if command -v systemd-analyze >/dev/null 2>&1; then
    cp /usr/lib/systemd/system/opsdeck-worker@.service "$work/opsdeck-worker@smoke.service"
    complaints="$(systemd-analyze verify /usr/lib/systemd/system/opsdeckd.service \
        "$work/opsdeck-worker@smoke.service" 2>&1)" || true
    [ -z "$complaints" ] || fail "systemd-analyze verify of the installed units: $complaints"
fi

# As the unit runs it: the engine's user, its state directory, its umask.
# Each command execs the next, so that $! is the engine's own pid.
as_engine=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/opsdeck
    STATE_DIRECTORY=/var/lib/opsdeck RUST_LOG=info
    setpriv --reuid=opsdeck --regid=opsdeck --init-groups --)
umask 0007

# The installed config passes as the engine's user reads it, without a warning.
"${as_engine[@]}" /usr/bin/opsdeckd check-config --config /etc/opsdeck/engine.toml \
    >"$work/check.out" 2>"$work/check.err" \
    || fail "check-config refused the installed config: $(cat "$work/check.out" "$work/check.err")"
[ ! -s "$work/check.err" ] || fail "check-config warned about the installed config: $(cat "$work/check.err")"

# The engine, with one local worker; no TCP listener or metrics port, so
# that it cannot collide with anything else on this machine.
install -d -o opsdeck -g opsdeck -m 0750 /run/opsdeck
"${as_engine[@]}" /usr/bin/opsdeckd serve --config /etc/opsdeck/engine.toml --socket "$socket" \
    --listen none --metrics-listen none --local-workers 1 >"$work/engine.log" 2>&1 &
engine_pid=$!
ready=
for _ in $(seq 150); do
    if /usr/bin/opsdeck --engine "unix://$socket" queues >/dev/null 2>&1; then
        ready=yes
        break
    fi
    kill -0 "$engine_pid" 2>/dev/null || fail "the engine exited before it was ready"
    sleep 0.2
done
[ -n "$ready" ] || fail "the engine did not answer on $socket within 30 s"

cat >"$work/smoke.toml" <<'SPEC'
name = "package-smoke"

[[step]]
queue = "smoke"
run = "echo hello from the package"
SPEC
timeout 60 /usr/bin/opsdeck --engine "unix://$socket" submit --wait --reason "package smoke test" \
    "$work/smoke.toml" >"$work/run.out" 2>&1 \
    || fail "the run did not succeed: $(cat "$work/run.out")"
grep -q "hello from the package" "$work/run.out" || fail "the run's output is missing: $(cat "$work/run.out")"
[ "$(stat -c %U /var/lib/opsdeck/opsdeck.db)" = opsdeck ] || fail "the database is not the engine user's"

kill -TERM "$engine_pid"
stopped=0
wait "$engine_pid" || stopped=$?
engine_pid=
[ "$stopped" -eq 0 ] || fail "the engine exited with $stopped after SIGTERM"

# Purge: nothing of the package, its users or its data is left.
files="$(dpkg -L opsdeck)"
dpkg --purge opsdeck
installed=
while IFS= read -r path; do
    if [ -f "$path" ] || [ -L "$path" ]; then
        fail "$path is left after the purge"
    fi
done <<<"$files"
for dir in /etc/opsdeck /var/lib/opsdeck /var/lib/opsdeck-worker /var/log/opsdeck /run/opsdeck; do
    [ ! -e "$dir" ] || fail "$dir is left after the purge"
done
for user in opsdeck opsdeck-worker; do
    if getent passwd "$user" >/dev/null || getent group "$user" >/dev/null; then
        fail "the user or group $user is left after the purge"
    fi
done
[ ! -e /etc/systemd/system/multi-user.target.wants/opsdeckd.service ] \
    || fail "opsdeckd.service is still enabled after the purge"
if dpkg-statoverride --list /etc/opsdeck/engine.toml >/dev/null; then
    fail "the mode override of /etc/opsdeck/engine.toml is left after the purge"
fi

echo "smoke-test: $deb installed, served a run as opsdeck, and purged cleanly"
