"""snmplb-agent-check: HAProxy's agent-check, answered from the same sample as the MIB.

HAProxy connects to ``agent-port`` every ``agent-inter`` and reads one line
(its configuration manual, "agent-check"); this responder writes that line
and closes. The figures are the agent's own: this process runs the agent's
``Sampler`` with the agent's configuration file (/etc/snmplb/agent.conf),
so /proc, the sessions, the admin file, sshd's listening socket and the
login paths are read by the same code, with the same rules, into the same
values the MIB publishes (lbStatus, lbAdminState, lbWeight, lbRating).

Why a service of its own, not a thread of the pass_persist agent: snmpd
starts pass_persist agents lazily, at the first SNMP request for their
subtree, and restarts them only when asked again; a responder living in the
agent would be missing after every snmpd restart until a client polled,
and HAProxy would keep a stale state all that time. A long-running service
(systemd/snmplb-agent-check.service, optionally socket-activated by
snmplb-agent-check.socket) is up from boot, does not care whether snmpd
runs, and keeps its swap-rate history (a per-connection snapshot could not
compute rates: they need two samples). It samples every ``interval``, like
the agent, so the cost does not grow with the number of balancers asking.

The reply (``reply``, a pure function of the values):
- admin disabled -> ``maint`` (no new connections, HAProxy stops health checks)
- admin draining -> ``drain`` (existing connections stay)
- status unavailable, full or swapping -> ``ready down #<status>``: cannot take a
  login (sshd not listening, a login path full or hung, max sessions reached,
  swapping per swap_threshold)
- otherwise ``ready up <W>%`` with W = lbWeight x lbRating / 100, at least 1:
  the admin's weight (100 = a reference server) scaled by the server's health
  (lbRating, 100 idle .. 1), relative to the ``weight`` in haproxy.cfg.
Every reply names the admin state (ready/drain/maint) and, unless draining or
disabled, the operating state: HAProxy keeps what an agent does not say, and
only the agent can undo its own drain, maint or down.
A responder that does not answer (stopped, or no sample yet) changes nothing:
HAProxy documents that a failed agent connection is not an error, and the
server keeps its last state and weight; its regular ``check`` still runs.

Who may ask (``--allow``, default this machine's loopback addresses only):
HAProxy needs one TCP connection from each balancer to the address it is
told (``agent-addr``, else the server's) and nothing else, so the responder
binds that one address (``--listen``) and answers only the balancers'
addresses. Anyone else could learn the server's state and, worse, keep the
responder busy: a few local connect/close loops filled its accept queue, and
the balancer's probes waited or timed out while HAProxy kept the last state
(a flood could hide a drain). So the allow list is enforced in the kernel:
a classic BPF filter on the listening socket (``allow_filter``) drops every
packet from another address, the SYN included, before it takes a place in
the accept queue or costs this process anything. The same check runs again
after ``accept`` (``Allowed``), so a kernel that refuses the filter still
answers nobody else (then a flood can still slow the answers: that is logged
at start).
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterable, Mapping

from snmplb import mib
from snmplb.errors import ConfigError

log = logging.getLogger("snmplb.agent.haproxycheck")
_STATUS = {v: k for k, v in mib.obj("lbStatus").enums.items()}
_ADMIN = {v: k for k, v in mib.obj("lbAdminState").enums.items()}
NOT_TAKING = ("unavailable", "full", "swapping")
MAX_PERCENT = 25600  # HAProxy caps a server's weight at 256: 256 x 100 % of weight 1
_LISTEN_FDS_START = 3  # sd_listen_fds(3)
DEFAULT_ALLOW = "127.0.0.1,::1"  # a balancer on this machine; name the real ones with --allow
MAX_ALLOW = 64  # entries of --allow: the filter stays short (at most 13 instructions an entry)
BACKLOG = socket.SOMAXCONN

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def reply(values: Mapping[str, int]) -> str:
    """The agent-check line for the MIB's values (lbAdminState, lbStatus, lbWeight, lbRating)."""
    admin = _ADMIN.get(values["lbAdminState"], "unknown")
    status = _STATUS.get(values["lbStatus"], "unknown")
    if admin == "disabled" or status == "disabled":
        return "maint"
    if admin == "draining" or status == "draining":
        return "drain"
    if status in NOT_TAKING or status == "unknown":
        return f"ready down #{status}"  # a space before "#": "down#x" is not understood (HAProxy 2.6)
    percent = max(1, min(MAX_PERCENT, values["lbWeight"] * values["lbRating"] // 100))
    return f"ready up {percent}%"


TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: main() imports the sampler when it starts
    from snmplb.agent.service import Sampler


def _values(sampler: Sampler) -> dict[str, int] | None:
    """The sampler's current lbAdminState, lbStatus, lbWeight and lbRating (None before a first sample)."""
    out: dict[str, int] = {}
    for name in ("lbAdminState", "lbStatus", "lbWeight", "lbRating"):
        entry = sampler.table.get(mib.obj(name).instance)
        if entry is None:
            return None
        out[name] = entry.value  # type: ignore[assignment]  # these four are INTEGERs in the MIB
    return out


def parse_allow(text: str) -> tuple[Network, ...]:
    """The networks of ``--allow``: addresses or CIDR networks separated by commas or blanks.

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) stands for its IPv4 address (a dual-stack
    socket sees IPv4 peers so). ConfigError names a bad entry; an empty list is refused (it would
    answer nobody: stop the service instead).
    """
    nets: list[Network] = []
    for word in text.replace(",", " ").split():
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            raise ConfigError(f"--allow: {word!r} is not an address or a network (10.0.0.5, 10.0.0.0/24, fd00::5)"
                              ) from None
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped and net.prefixlen >= 96:
            net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        nets.append(net)
    if not nets:
        raise ConfigError("--allow: no address given (it would answer nobody)")
    if len(nets) > MAX_ALLOW:
        raise ConfigError(f"--allow: {len(nets)} entries, at most {MAX_ALLOW} (use networks)")
    return tuple(nets)


class Allowed:
    """Whether a peer address (as ``accept`` gives it) is in the allow list: the check after ``accept``."""

    def __init__(self, nets: Iterable[Network]) -> None:
        self.nets = tuple(nets)

    def __call__(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.nets)


# Classic BPF (linux/filter.h), run by the kernel on every packet that reaches the socket: for a
# listening TCP socket, on the SYN, before a connection exists. Offsets are from the IP header
# (SKF_NET_OFF), whatever the socket's family: a dual-stack socket gets IPv4 packets as they are.
_LD_B, _LD_W, _RSH, _AND, _JA, _JEQ, _RET = 0x30, 0x20, 0x74, 0x54, 0x05, 0x15, 0x06
_SKF_NET_OFF = -0x100000
_ACCEPT, _DROP = 0xFFFFFFFF, 0
SO_ATTACH_FILTER = 26

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def _net(offset: int) -> int:
    return (_SKF_NET_OFF + offset) & 0xFFFFFFFF


def _words(net: Network) -> list[tuple[int, int, int]]:
    """(offset in the IP header, mask, value) of each 32-bit word of the source address to compare."""
    base, size = (12, 32) if net.version == 4 else (8, 128)
    addr, left = int(net.network_address), net.prefixlen
    out = []
    for i in range(size // 32):
        bits = max(0, min(32, left - 32 * i))
        if bits:
            mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
            out.append((base + 4 * i, mask, (addr >> (size - 32 * (i + 1))) & mask))
    return out


def _block(nets: Iterable[Network]) -> list[Insn]:
    """Accept when the source matches one of ``nets`` (all one family), else drop."""
    code: list[Insn] = []
    for net in nets:
        entry: list[Insn] = []
        for offset, mask, value in _words(net):
            entry.append((_LD_W, 0, 0, _net(offset)))
            if mask != 0xFFFFFFFF:
                entry.append((_AND, 0, 0, mask))
            entry.append((_JEQ, 0, 0, value))  # jf filled below: to the next entry
        entry.append((_RET, 0, 0, _ACCEPT))
        for i, (c, jt, jf, k) in enumerate(entry):
            if c == _JEQ:
                entry[i] = (c, jt, len(entry) - 1 - i, k)  # past this entry's ret
        code += entry
    return code + [(_RET, 0, 0, _DROP)]


def allow_filter(nets: Iterable[Network]) -> list[Insn]:
    """The classic BPF program that keeps packets from ``nets`` and drops every other packet."""
    nets = tuple(nets)
    v4 = _block(n for n in nets if n.version == 4)
    v6 = _block(n for n in nets if n.version == 6)
    head: list[Insn] = [
        (_LD_B, 0, 0, _net(0)),  # the IP version, in the first byte's high nibble
        (_RSH, 0, 0, 4),
        (_JEQ, 0, 1, 4),
        (_JA, 0, 0, 3),  # to the IPv4 block
        (_JEQ, 0, 1, 6),
        (_JA, 0, 0, 1 + len(v4)),  # to the IPv6 block
        (_RET, 0, 0, _DROP),
    ]
    return head + v4 + v6


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_filter(sock: socket.socket, program: list[Insn]) -> None:
    """SO_ATTACH_FILTER ``program`` to ``sock`` (the kernel copies it); OSError when refused."""
    insns = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    prog = _SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))


def _listener(listen: str | None) -> socket.socket:
    """The socket systemd passed (LISTEN_FDS), else one bound to ``listen`` (HOST:PORT, [V6]:PORT)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS", "0") != "0":
        return socket.socket(fileno=_LISTEN_FDS_START)
    if not listen:
        from snmplb.errors import ConfigError

        raise ConfigError("--listen HOST:PORT is required unless systemd passes the socket")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(BACKLOG)
    return sock


_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, leaving no TIME_WAIT behind


def serve(sock: socket.socket, sampler: Sampler, allowed: Allowed) -> None:
    """Answer each connection from an allowed address with the current reply, then close; forever.

    Another address is reset at once, unanswered (only a kernel without the socket filter lets one
    through).
    """
    while True:
        conn, peer = sock.accept()
        with conn:
            if not allowed(peer[0]):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                continue
            values = _values(sampler)
            if values is None:
                continue  # no sample yet: say nothing, HAProxy keeps the server as it was
            conn.settimeout(1.0)  # a balancer that does not read must not hold the next one up
            try:
                conn.sendall((reply(values) + "\n").encode("ascii"))
            except OSError:
                pass


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="snmplb-agent-check", description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="the agent's configuration file (default /etc/snmplb/agent.conf)")
    ap.add_argument("--listen", metavar="HOST:PORT",
                    help="where to listen: the address HAProxy's agent-addr names (not needed under systemd "
                         "socket activation)")
    ap.add_argument("--allow", metavar="ADDRS", default=DEFAULT_ALLOW,
                    help="the only addresses answered: HAProxy's (the balancers'), as addresses or networks "
                         f"separated by commas (default {DEFAULT_ALLOW}: this machine's loopback only)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Sample like the agent, answer HAProxy; exit 2 on a usage or configuration error."""
    from pathlib import Path

    from snmplb.agent import config as agentconf
    from snmplb.agent.service import Sampler
    from snmplb.errors import SnmplbError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="snmplb-agent-check: %(message)s", stream=sys.stderr)
    try:
        nets = parse_allow(args.allow)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    config, problems = agentconf.load(Path(args.config) if args.config else agentconf.DEFAULT_CONFIG, {})
    for p in problems:
        log.warning("%s", p)
    try:
        sock = _listener(args.listen)
    except (SnmplbError, OSError, ValueError) as exc:
        log.error("cannot listen: %s", exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
        return 2
    try:
        attach_filter(sock, allow_filter(nets))
    except OSError as exc:
        log.warning("the kernel refused the allow filter (%s): others are refused after accept only, and a "
                    "flood of connections can slow the answers", exc.strerror or exc)
    sampler = Sampler(config)
    try:
        sampler.start()
        log.info("answering on %s, to %s only", sock.getsockname()[:2], ", ".join(map(str, nets)))
        serve(sock, sampler, Allowed(nets))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # the outer edge: one line, never a traceback
        log.error("stopped on an unexpected error (%s)", type(exc).__name__)
        return 1
    finally:
        sampler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
