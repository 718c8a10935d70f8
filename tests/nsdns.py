"""A network namespace of the test's own with a DNS server on its loopback, so name lookups stay local.

The real machine's resolver must never be asked (no DNS query may leave the
machine), so tests that exercise host names run the poller inside a namespace
that has nothing but ``lo``: ``ip netns exec`` bind-mounts our resolv.conf
(one nameserver, 127.0.0.1) and hosts file over the real ones, and the DNS
server below, started inside the namespace, answers on 127.0.0.1:53. Every
query it receives is logged, which proves where the lookups went; the
namespace's empty routing table proves that nothing could go anywhere else.

Run as a script (inside the namespace) it is that DNS server:
``python nsdns.py LOGFILE SPEC_JSON``, SPEC mapping a lower-case name to
``["a", "127.0.0.x"]`` (answered at once), ``["slow", "127.0.0.x", seconds]``
(answered after a delay), or ``["hang"]`` (never answered). Every other name
gets NXDOMAIN at once. It stops by itself after ``_LIFETIME`` seconds.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

_LIFETIME = 180.0
_NETNS_ETC = Path("/etc/netns")


# -- the DNS server (runs inside the namespace) ------------------------------

def _question(packet: bytes) -> tuple[str, int, int] | None:
    """(name, qtype, end of the question) of a standard query, None for anything else."""
    if len(packet) < 12 or packet[2] & 0x80:  # short, or a response
        return None
    pos, labels = 12, []
    for _ in range(128):  # bounded: a name has at most 127 labels
        if pos >= len(packet):
            return None
        n = packet[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(packet):
            return None  # compression in a question, or a truncated label: not from a stub resolver
        labels.append(packet[pos + 1:pos + 1 + n].decode("ascii", "replace").lower())
        pos += 1 + n
    else:
        return None
    if pos + 4 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[pos:pos + 2])[0]
    return ".".join(labels), qtype, pos + 4


def _answer(packet: bytes, end: int, rcode: int, address: str | None) -> bytes:
    """The response: the question echoed, with one A record when ``address`` is given."""
    flags = 0x8000 | (struct.unpack("!H", packet[2:4])[0] & 0x0100) | 0x0080 | rcode  # QR, RD as asked, RA
    header = packet[:2] + struct.pack("!HHHHH", flags, 1, 1 if address else 0, 0, 0)
    body = packet[12:end]
    if address:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
    return header + body


def serve(log_path: str, spec: dict[str, list]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    pending: list[tuple[float, bytes, tuple]] = []
    print("ready", flush=True)
    end = time.monotonic() + _LIFETIME
    with open(log_path, "a", buffering=1) as log:
        while time.monotonic() < end:
            wait = min([0.5] + [max(0.0, due - time.monotonic()) for due, _, _ in pending])
            if select.select([sock], [], [], wait)[0]:
                packet, client = sock.recvfrom(4096)
                q = _question(packet)
                if q is None:
                    continue
                name, qtype, qend = q
                log.write(f"{name} {qtype}\n")
                how = spec.get(name)
                if how is None:
                    sock.sendto(_answer(packet, qend, 3, None), client)  # NXDOMAIN
                elif how[0] == "hang":
                    pass
                else:
                    address = how[1] if qtype == 1 else None  # A record; NODATA for AAAA and others
                    delay = how[2] if how[0] == "slow" else 0.0
                    pending.append((time.monotonic() + delay, _answer(packet, qend, 0, address), client))
            now = time.monotonic()
            for item in [p for p in pending if p[0] <= now]:
                sock.sendto(item[1], item[2])
                pending.remove(item)


# -- the namespace (used by the tests, outside it) ---------------------------

class Namespace:
    """``ip netns add`` with lo up, our resolv.conf and hosts, and the DNS server running inside.

    A context manager; everything it creates (the namespace, /etc/netns/NAME,
    the server process) is removed on exit.
    """

    def __init__(self, tmp: Path, spec: dict[str, list], hosts: str = "") -> None:
        self.name = f"snmplb-t-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.spec = spec
        self.hosts = hosts
        self.log = tmp / "dns-queries.log"
        self.server: subprocess.Popen | None = None

    def exec(self, *cmd: str) -> list[str]:
        """``cmd`` prefixed to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
            etc = _NETNS_ETC / self.name
            etc.mkdir(parents=True)
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
            (etc / "hosts").write_text("127.0.0.1 localhost\n" + self.hosts)
            self.log.write_text("")
            self.server = subprocess.Popen(self.exec(sys.executable, __file__, str(self.log), json.dumps(self.spec)),
                                           stdout=subprocess.PIPE, text=True)
            ready = select.select([self.server.stdout], [], [], 15)[0]
            if not ready or self.server.stdout.readline().strip() != "ready":
                raise RuntimeError("the namespace's DNS server did not start")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(5)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(_NETNS_ETC / self.name, ignore_errors=True)
        try:
            _NETNS_ETC.rmdir()  # only when no other namespace uses it
        except OSError:
            pass

    def queries(self) -> list[tuple[str, int]]:
        """(name, qtype) of every query the DNS server received."""
        return [(n, int(t)) for n, t in (line.split() for line in self.log.read_text().splitlines())]

    def routes(self) -> tuple[list[str], list[str]]:
        """The namespace's routes (IPv4 and IPv6, every table) and its links, one line each."""
        def ip(*args: str) -> list[str]:
            r = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True, check=True)
            return [line for line in r.stdout.splitlines() if line.strip()]
        return ip("-4", "route", "show", "table", "all") + ip("-6", "route", "show", "table", "all"), ip("-o", "link")


def available() -> str:
    """"" when namespaces can be made here, else why not (the tests then skip)."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return ""


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
