#!/usr/bin/env bash
# A Debian root made by debootstrap from Debian's own archive, for tests/test_debian13.py: minbase plus what
# building snmplb's packages (Build-Depends, build-essential, lintian) and running them (snmpd, snmp, the
# packages' dependencies and recommendations) needs, so that a test run on a copy of it downloads nothing.
#
#   scripts/debian-root.sh SUITE DIR [MIRROR]     # e.g. trixie /var/cache/snmplb-test/trixie-root
#   scripts/debian-root.sh --mirror               # print the archive apt uses on this machine
#
# MIRROR defaults to the archive this machine's apt uses for its own release (/etc/apt/sources.list and
# sources.list.d: the first deb entry whose suite is this release's codename). A complete DIR (it has
# .snmplb-root, naming the suite, the mirror and the package list) is reused as it is; anything else is
# made again, in DIR.new, and moved to DIR only when complete. Every mount (debootstrap's own, /proc, /dev
# and /sys for apt) and every process is in a private mount and PID namespace (unshare): they end with it,
# also when a step's time bound (timeout) kills it; nothing is left mounted on this machine.
#
# Exit status: 0 made or reused, 3 the archive cannot be reached (no root made), other: failed.
set -euo pipefail

PACKAGES=(build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
          lintian snmpd snmp procps python3-nagiosplugin python3-cryptography keyutils libpam0g-dev)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

host_mirror() {
    # One-line (deb [options] URI SUITE COMPONENTS) and deb822 (.sources) entries, in apt's order.
    python3 - <<'EOF'
import glob, re
release = dict(line.rstrip("\n").split("=", 1) for line in open("/etc/os-release") if "=" in line)
codename = release.get("VERSION_CODENAME", "").strip('"')
files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
         *sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))]
for name in files:
    try:
        text = open(name).read()
    except OSError:
        continue
    if name.endswith(".list"):
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                print(words[1])
                raise SystemExit
    else:
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if re.match(r"[A-Za-z-]+:", line):
                    key, value = line.split(":", 1)
                    fields[key.lower()] = value.split()
            if ("deb" in fields.get("types", ()) and codename in fields.get("suites", ()) and fields.get("uris")
                    and fields.get("enabled", ["yes"]) != ["no"]):
                print(fields["uris"][0])
                raise SystemExit
EOF
}

if [ "${1:-}" = --mirror ]; then
    host_mirror
    exit 0
fi
SUITE=${1:?usage: debian-root.sh SUITE DIR [MIRROR]}
DIR=${2:?usage: debian-root.sh SUITE DIR [MIRROR]}
MIRROR=${3:-$(host_mirror)}
MIRROR=${MIRROR%/}
[ -n "$MIRROR" ] || { echo "debian-root: no Debian archive in this machine's apt sources" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "debian-root: debootstrap and chroot need root" >&2; exit 2; }
case "$DIR" in /*) ;; *) echo "debian-root: DIR must be an absolute path" >&2; exit 2 ;; esac
KEY="suite=$SUITE mirror=$MIRROR packages=${PACKAGES[*]}"

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock -w 2800 9 || { echo "debian-root: another run holds $DIR.lock" >&2; exit 2; }
if [ -f "$DIR/.snmplb-root" ] && [ "$(cat "$DIR/.snmplb-root")" = "$KEY" ]; then
    echo "debian-root: reusing $DIR ($SUITE from $MIRROR)"
    exit 0
fi

# The archive must serve the suite: its signed Release file (curl is not in every minbase; python3 is here).
if ! python3 - "$MIRROR/dists/$SUITE/InRelease" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
        sys.exit(0 if b"Codename:" in r.read(4096) else 1)
except Exception as e:
    print(f"debian-root: {sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(1)
EOF
then
    echo "debian-root: the archive $MIRROR does not serve $SUITE (cannot reach $MIRROR/dists/$SUITE/InRelease)" >&2
    exit 3
fi

new="$DIR.new"
rm -rf --one-file-system "$new"
mkdir -p "$new"
echo "debian-root: debootstrap $SUITE from $MIRROR into $new" >&2
start=$SECONDS
# In the namespace: debootstrap (it mounts /proc and /sys in the root itself), then apt in the root with
# /proc, /dev and /sys mounted and no service started (policy-rc.d), then apt's downloaded files removed.
timeout --kill-after=30 2700 unshare --mount --pid --fork --kill-child --propagation private -- \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    bash -euo pipefail -c '
    suite=$1 root=$2 mirror=$3 keyring=$4; shift 4
    timeout 1500 debootstrap --variant=minbase --keyring="$keyring" "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
        { tail -20 "$root.log" >&2; exit 1; }
    printf "#!/bin/sh\nexit 101\n" > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    mount -t sysfs -o ro sysfs "$root/sys"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    timeout 300 chroot "$root" apt-get update -q >>"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
    timeout 1500 chroot "$root" apt-get install -y -q --no-install-recommends "$@" >>"$root.log" 2>&1 ||
        { tail -20 "$root.log" >&2; exit 1; }
    chroot "$root" apt-get clean
' debian-root "$SUITE" "$new" "$MIRROR" "$KEYRING" "${PACKAGES[@]}"
echo "$KEY" > "$new/.snmplb-root"
rm -rf --one-file-system "$DIR"
mv "$new" "$DIR"
mv "$new.log" "$DIR.log"
echo "debian-root: made $DIR ($SUITE from $MIRROR) in $((SECONDS - start)) s"
