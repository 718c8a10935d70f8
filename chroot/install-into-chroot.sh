#!/bin/sh
# Install snmplb's get_hosts into an LTSP chroot, e.g.:
#   sudo chroot/install-into-chroot.sh /opt/ltsp/amd64
#   sudo ltsp-update-image amd64        # LTSP 5 with NBD images: rebuild the image afterwards
#
# What it does, all inside CHROOT:
#   /opt/snmplb                    a venv made by the chroot's own python3 (>= 3.10), with access to
#                                  the chroot's Debian packages (python3-cryptography, for SNMPv3)
#   .../site-packages/snmplb       the package (get_hosts needs nothing else for SNMPv2c)
#   /usr/share/ltsp/get_hosts      the script LDM runs; /usr/lib/ltsp/get_hosts links to it
#   /usr/share/snmplb/xdmcp-snmplb.sh   the XDMCP snippet (see README.md)
#
# SNMPLB_CHROOT_RUN: how to run a command inside CHROOT (default: chroot CHROOT). The tests set it
# empty to lay the same files out under a plain directory with the host's python3.
set -eu
CHROOT=${1:?usage: install-into-chroot.sh CHROOT}
SRC=$(cd "$(dirname "$0")/.." && pwd)
RUN=${SNMPLB_CHROOT_RUN-chroot $CHROOT}
[ -d "$CHROOT" ] || { echo "install-into-chroot: $CHROOT is not a directory" >&2; exit 2; }

in_chroot() { $RUN "$@"; }
# Paths as commands run by in_chroot see them, and as this script (on the host) sees them.
if [ -n "$RUN" ]; then venv=/opt/snmplb; host_root=$CHROOT; else venv=$CHROOT/opt/snmplb; host_root=""; fi

in_chroot python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    { echo "install-into-chroot: the chroot needs python3 >= 3.10" >&2; exit 2; }
in_chroot python3 -m venv --system-site-packages --without-pip "$venv"
site=$(in_chroot "$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$host_root$site/snmplb"
mkdir -p "$host_root$site"
cp -r "$SRC/snmplb" "$host_root$site/snmplb"
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
