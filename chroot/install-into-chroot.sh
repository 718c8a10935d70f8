#!/bin/sh
# Install snmplb's get_hosts into an LTSP chroot, e.g.:
#   sudo chroot/install-into-chroot.sh /opt/ltsp/amd64 python3-snmplb_*.deb snmplb-client_*.deb
#   sudo ltsp-update-image amd64        # LTSP 5 with NBD images: rebuild the image afterwards
#
# With .deb files (built by `dpkg-buildpackage -us -uc -b`, see README.md): the chroot's own apt installs
# them, with their Debian dependencies (python3; python3-cryptography, recommended for SNMPv3 privacy,
# comes from the chroot's apt sources unless SNMPLB_APT_OPTIONS=--no-install-recommends):
#   /usr/lib/python3/dist-packages/snmplb   the shared modules, snmplb.client and snmplb.login
#   /usr/share/ltsp/get_hosts               the script LDM runs; /usr/lib/ltsp/get_hosts links to it
#   /usr/share/snmplb/xdmcp-snmplb.sh       the XDMCP snippet (see README.md)
#
# Without .deb files, the alternative: the same parts of the package from this checkout in a venv at
# /opt/snmplb made by the chroot's own python3 (>= 3.10), with access to the chroot's Debian packages
# (python3-cryptography, for SNMPv3), and the same scripts. get_hosts uses /opt/snmplb when present.
#
# SNMPLB_CHROOT_RUN: how to run a command inside CHROOT (default: chroot CHROOT). The tests set it
# empty to lay the venv's files out under a plain directory with the host's python3.
set -eu
CHROOT=${1:?usage: install-into-chroot.sh CHROOT [PACKAGE.deb ...]}
shift
SRC=$(cd "$(dirname "$0")/.." && pwd)
RUN=${SNMPLB_CHROOT_RUN-chroot $CHROOT}
[ -d "$CHROOT" ] || { echo "install-into-chroot: $CHROOT is not a directory" >&2; exit 2; }

in_chroot() { $RUN "$@"; }

if [ $# -gt 0 ]; then
    [ -n "$RUN" ] || { echo "install-into-chroot: installing packages needs a chroot (SNMPLB_CHROOT_RUN is empty)" >&2; exit 2; }
    # The chroot's apt installs local files given as paths: copy them in, under a directory of our own.
    inbox=/var/cache/snmplb-install
    rm -rf "$CHROOT$inbox"
    mkdir -p "$CHROOT$inbox"
    trap 'rm -rf "$CHROOT$inbox"' EXIT
    debs=""
    for deb in "$@"; do
        case "$deb" in *.deb) ;; *) echo "install-into-chroot: $deb is not a .deb file" >&2; exit 2 ;; esac
        [ -f "$deb" ] || { echo "install-into-chroot: $deb not found" >&2; exit 2; }
        cp "$deb" "$CHROOT$inbox/"
        debs="$debs $inbox/$(basename "$deb")"
    done
    # shellcheck disable=SC2086  # word splitting wanted: the options, and paths without spaces (ours)
    in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${SNMPLB_APT_OPTIONS:-} $debs
    if [ -e "$CHROOT/opt/snmplb/bin/python3" ]; then
        echo "install-into-chroot: note: $CHROOT/opt/snmplb (an earlier venv install) is still there and get_hosts" \
             "uses it first: remove it to use the package" >&2
    fi
    echo "snmplb-client installed in $CHROOT: /usr/share/ltsp/get_hosts (and /usr/lib/ltsp/get_hosts)"
    exit 0
fi

# Paths as commands run by in_chroot see them, and as this script (on the host) sees them.
if [ -n "$RUN" ]; then venv=/opt/snmplb; host_root=$CHROOT; else venv=$CHROOT/opt/snmplb; host_root=""; fi

in_chroot python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    { echo "install-into-chroot: the chroot needs python3 >= 3.10" >&2; exit 2; }
in_chroot python3 -m venv --system-site-packages --without-pip "$venv"
site=$(in_chroot "$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$host_root$site/snmplb"
mkdir -p "$host_root$site/snmplb"
# What the thin client needs, as the packages select it (python3-snmplb and snmplb-client): not the
# agent, the admin tool, the NMS check, the generators or the lab.
for part in $(sed -n 's|^usr/lib/python3\*/dist-packages/\(snmplb/[^ ]*\)$|\1|p' \
                  "$SRC/debian/python3-snmplb.install" "$SRC/debian/snmplb-client.install"); do
    cp -r "$SRC/$part" "$host_root$site/$part"
done
find "$host_root$site/snmplb" -name __pycache__ -prune -exec rm -rf {} +
in_chroot "$venv/bin/python3" -m compileall -q "$site/snmplb" >/dev/null

install -d "$CHROOT/usr/share/ltsp" "$CHROOT/usr/lib/ltsp" "$CHROOT/usr/share/snmplb"
install -m 755 "$SRC/chroot/get_hosts" "$CHROOT/usr/share/ltsp/get_hosts"
ln -sf ../../share/ltsp/get_hosts "$CHROOT/usr/lib/ltsp/get_hosts"
install -m 644 "$SRC/chroot/xdmcp-snmplb.sh" "$CHROOT/usr/share/snmplb/xdmcp-snmplb.sh"

if ! in_chroot "$venv/bin/python3" -c 'import cryptography' 2>/dev/null; then
    echo "install-into-chroot: note: for SNMPv3 privacy install python3-cryptography in the chroot" >&2
fi
echo "snmplb installed in $CHROOT: /usr/share/ltsp/get_hosts (and /usr/lib/ltsp/get_hosts)"
