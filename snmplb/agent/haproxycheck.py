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
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Mapping

from snmplb import mib

log = logging.getLogger("snmplb.agent.haproxycheck")
_STATUS = {v: k for k, v in mib.obj("lbStatus").enums.items()}
_ADMIN = {v: k for k, v in mib.obj("lbAdminState").enums.items()}
NOT_TAKING = ("unavailable", "full", "swapping")
MAX_PERCENT = 25600  # HAProxy caps a server's weight at 256: 256 x 100 % of weight 1
_LISTEN_FDS_START = 3  # sd_listen_fds(3)


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
    sock.listen(64)
    return sock


def serve(sock: socket.socket, sampler: Sampler) -> None:
    """Answer each connection with the current reply, then close; forever."""
    while True:
        conn, _ = sock.accept()
        with conn:
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
                    help="where to listen (not needed under systemd socket activation)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Sample like the agent, answer HAProxy; exit 2 on a usage or configuration error."""
    from pathlib import Path

    from snmplb.agent import config as agentconf
    from snmplb.agent.service import Sampler
    from snmplb.errors import SnmplbError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="snmplb-agent-check: %(message)s", stream=sys.stderr)
    config, problems = agentconf.load(Path(args.config) if args.config else agentconf.DEFAULT_CONFIG, {})
    for p in problems:
        log.warning("%s", p)
    try:
        sock = _listener(args.listen)
    except (SnmplbError, OSError, ValueError) as exc:
        log.error("cannot listen: %s", exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
        return 2
    sampler = Sampler(config)
    try:
        sampler.start()
        log.info("answering on %s", sock.getsockname()[:2])
        serve(sock, sampler)
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
