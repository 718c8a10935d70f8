#!/usr/bin/env bash
# Set up everything snmplb's demo, tests and benchmarks need on Debian (12+):
# the apt packages (net-snmp's snmpd and client tools, and the real peers the
# tests run against) and a Python virtual environment in .venv with the
# package installed in editable mode. Idempotent and quiet when nothing is missing.
#
#   scripts/setup.sh            # everything (tests)
#   scripts/setup.sh --minimal  # only what the demo needs
#   scripts/setup.sh --fast     # (or --venv-only) only the .venv with the test extra: mypy and the
#                               # pure tests (./test --fast); from apt at most python3-venv
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
packages=(snmpd snmp procps)
extras="test,bench"
if [ "$mode" = "--fast" ] || [ "$mode" = "--venv-only" ]; then
    packages=()
    extras="test"
elif [ "$mode" != "--minimal" ]; then
    packages+=(openssh-server openssh-client monitoring-plugins-standard smitools iproute2 time icinga2-bin haproxy)
    packages+=(prometheus-snmp-exporter prometheus)  # snmp_exporter scrapes the agent; promtool tests the rules
    # A real Zabbix to import the template into: its schema, its PHP frontend (the import API), a database.
    packages+=(postgresql zabbix-server-pgsql zabbix-frontend-php php-pgsql php-cli)
    # The feed's C reader (a compiler) and the chooser under a real X server (Tk, Xvfb, keys, screenshots).
    packages+=(gcc libc6-dev python3-tk xvfb xdotool imagemagick)
    # Current LTSP's session wrappers: the real RDP and X2Go clients, xmessage, the .desktop validator.
    packages+=(freerdp2-x11 pyhoca-cli x11-utils desktop-file-utils keyutils)
    # Real RDP and X2Go servers: xrdp with both backends (Xvnc, xorgxrdp), x2goserver (tests/test_sessions.py
    # runs an xrdp that refuses a password; tests/test_desktops.py two servers of each in namespaces).
    packages+=(xrdp tigervnc-standalone-server xorgxrdp x2goserver)
    # SSH_SERVER per login: Debian's real ltsp (pamltsp), a PAM conversation (pamtester), pam_snmplb's headers,
    # sshfs (pamltsp mounts the home from the server it checked the password on).
    packages+=(ltsp pamtester libpam0g-dev sshfs)
    # The .deb packages (debian/): their build, lintian, debootstrap for a client chroot, and every
    # package they depend on or recommend, so that the test's apt install adds nothing but snmplb's own.
    packages+=(dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools lintian man-db debootstrap)
    packages+=(python3-cryptography python3-nagiosplugin)
fi
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
command -v python3 >/dev/null || packages+=(python3 python3-venv)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The tests start their own xrdp on loopback: the system's service (every address, port 3389) that
    # the package starts under systemd is not wanted on a test machine.
    if [[ " ${missing[*]} " == *" xrdp "* ]] && [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now xrdp xrdp-sesman >/dev/null 2>&1 || true
    fi
    # Likewise ltsp's boot-time service (an LTSP server's): the tests only call its pamltsp.
    if [[ " ${missing[*]} " == *" ltsp "* ]] && [ -d /run/systemd/system ]; then
        $sudo systemctl disable ltsp >/dev/null 2>&1 || true
    fi
fi

# The stamp says for which setup.cfg and pyproject.toml, and with which extras, .venv was made; a
# full .venv (test,bench) serves the fast run too.
stamp=".venv/.snmplb-setup"
want="$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ ! -x .venv/bin/python ] || { [ "$have" != "$want $extras" ] && [ "$have" != "$want test,bench" ]; }; then
    echo "setup: preparing .venv" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
    echo "$want $extras" > "$stamp"
fi
