"""Spoofed SNMPv3 Reports against a live server (issue 22): real snmpd + snmplb-agent, a forging relay.

SNMPv3 sends the msgID and the engine id in clear, and a Report that refuses a
request (wrong digest, unknown user, unknown engine id) is unauthenticated. An
attacker on the LAN who sees a client's request can answer it first with a
forged Report that carries the server's source address. Such a Report must
never cost a live server: the authenticated answer that follows wins.

The attacker here is ``ForgingRelay``, a stand-in: it listens on a loopback
address of its own that the client is configured to poll, forwards every
datagram both ways to a real snmpd unchanged, and before forwarding a request
sends the client a forged Report of its own. Standing between the two, it
sees what a sniffing attacker sees (the client's port, the msgID and engine id
in clear) and its forgeries come from the address the client polls, as a
spoofed source address would (spoofing a source for real needs raw sockets,
which a test on loopback should not use). It forwards the real traffic within
the same millisecond, so the genuine answer arrives right behind each forgery:
the race of the finding. It knows no key: every forgery is unauthenticated.
"""

from __future__ import annotations

import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from conftest import BIN, COMMUNITY, IDLE, V3
from snmplb.client import ber
from snmplb.client import deadline
from snmplb.client import poller
from snmplb.client import snmpcodec
from snmplb.client.serverstate import Failure, ServerState
from snmplb.client.settings import ClientSettings, Server
from snmplb.lab.fleet import PROJECT, Instance
from support import addrs, get_hosts, hosts_of

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

CHECK = PROJECT / "nms" / "check_snmplb"
_LIFETIME = 60.0  # the relay's thread stops by itself after this many seconds
FORGED_ENGINE = b"\x80\x00\x1f\x88\x04forged-engine"
WRONG_DIGESTS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0)  # usmStatsWrongDigests: "wrong auth passphrase"
UNKNOWN_ENGINE_IDS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)
V3_ENV = {"LB_SNMP_VERSION": "3", "LB_SNMP_USER": V3.name, "LB_SNMP_AUTH_PASSPHRASE": V3.auth_pass,
          "LB_SNMP_PRIV_PASSPHRASE": V3.priv_pass}


def forged_report(msg_id: int, engine_id: bytes, oid: tuple[int, ...], boots: int = 1, etime: int = 1) -> bytes:
    """An unauthenticated Report for ``msg_id``, as anyone who saw the request can build it (no key)."""
    usm = ber.enc_seq(ber.enc_str(engine_id), ber.enc_int(boots), ber.enc_int(etime), ber.enc_str(b""),
                      ber.enc_str(b""), ber.enc_str(b""))
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(65507), ber.enc_str(b"\x00"), ber.enc_int(3))
    vb = ber.enc_seq(ber.enc_seq(ber.enc_oid(oid), ber.enc_int(1, ber.COUNTER32)))
    pdu = ber.enc_seq(ber.enc_int(0), ber.enc_int(0), ber.enc_int(0), vb, tag=ber.REPORT)
    return ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm),
                       ber.enc_seq(ber.enc_str(engine_id), ber.enc_str(b""), pdu))


def forge_after_discovery(request: bytes) -> list[bytes]:
    """For every authenticated request: a 'wrong digest' Report with the request's own msgID and engine id."""
    msg = snmpcodec.v3_parse(request)
    if not msg.flags & 0x01 or not msg.usm.engine_id:
        return []  # the discovery: let the real one through alone
    return [forged_report(msg.msg_id, msg.usm.engine_id, WRONG_DIGESTS, msg.usm.boots, msg.usm.time)]


def forge_discovery(request: bytes) -> list[bytes]:
    """For the discovery request: a Report naming an engine id that is not the server's."""
    msg = snmpcodec.v3_parse(request)
    if msg.flags & 0x01 or msg.usm.engine_id:
        return []
    return [forged_report(msg.msg_id, FORGED_ENGINE, UNKNOWN_ENGINE_IDS, 7, 1000)]


def forge_both(request: bytes) -> list[bytes]:
    """A forged discovery Report, then a forged 'wrong digest' Report for every request under any engine id."""
    return forge_discovery(request) or forge_after_discovery(request)


class ForgingRelay:
    """The attacker's stand-in (see the module's docstring): a relay to ``target`` that injects ``forge``'s
    datagrams to the client ahead of each request it forwards. ``forward=False``: the server is dead
    (nothing forwarded), only the forgeries reach the client."""

    def __init__(self, host: str, target: Instance, forge: Callable[[bytes], list[bytes]],
                 forward: bool = True) -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((host, 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.back.connect((target.host, target.port))
        self.server = Server(host, self.front.getsockname()[1])
        self.address = f"{host}:{self.server.port}"
        self.forge, self.forward = forge, forward
        self.client: tuple | None = None
        self.forged = 0  # forgeries sent
        self.answers = 0  # genuine datagrams relayed to the client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end = time.monotonic() + _LIFETIME
        while not self._stop.is_set() and time.monotonic() < end:
            readable, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in readable:
                data, self.client = self.front.recvfrom(65535)
                try:
                    forgeries = self.forge(data)
                except ber.BerError:
                    forgeries = []
                for forgery in forgeries:  # first: the attacker is faster than the server
                    self.front.sendto(forgery, self.client)
                    self.forged += 1
                if self.forward:
                    self.back.send(data)
            if self.back in readable:
                try:
                    data = self.back.recv(65535)
                except OSError:  # ICMP from a stopped snmpd: nothing to relay
                    continue
                if self.client is not None:
                    self.front.sendto(data, self.client)
                    self.answers += 1

    def __enter__(self) -> ForgingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.front.close()
        self.back.close()


def v3_settings(*servers: Server, timeout_ms: int = 1500, **kw: str) -> ClientSettings:
    v3 = {"snmp_version": "3", "user": V3.name, "auth_passphrase": V3.auth_pass, "priv_passphrase": V3.priv_pass}
    return ClientSettings(servers=servers, community=COMMUNITY, timeout_ms=timeout_ms, **{**v3, **kw})


def poll_one(server: Server, **kw) -> ServerState:
    s = v3_settings(server, **kw)
    [state] = poller.poll(s, random.Random(22), deadline=deadline.after(s.timeout_ms))
    return state


def check(relay: ForgingRelay, secrets: str) -> tuple[int, str]:
    """check_snmplb as Nagios runs it, against the relay's address; secrets from a file, never argv."""
    cmd = [str(CHECK), "-H", relay.server.host, "-p", str(relay.server.port), "-P", "3", "-u", V3.name,
           "--secrets", secrets, "--timeout-ms", "1500"]
    r = subprocess.run(cmd, env={"PATH": os.environ["PATH"], "SNMPLB_PYTHON": sys.executable},
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip()


@pytest.fixture
def secrets(tmp_path) -> str:
    path = tmp_path / "secrets"
    path.write_text(f"auth_passphrase = {V3.auth_pass}\npriv_passphrase = {V3.priv_pass}\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("forge", [forge_after_discovery, forge_discovery, forge_both])
def test_a_forged_report_racing_the_real_answer_does_not_fail_a_live_server(fleet, secrets, forge):
    """Before the fix: a forged Report after discovery failed the server at once ([auth]: check_snmplb
    UNKNOWN, get_hosts dropped it, pick exited 3), and a forged discovery Report pinned the poll to an
    engine id no agent has, so that the server stayed unreachable until the deadline (check_snmplb
    CRITICAL)."""
    real = fleet.add("real", IDLE)
    other = fleet.add("other", IDLE)
    with ForgingRelay("127.0.0.66", real, forge) as relay:
        state = poll_one(relay.server)
        assert state.ok and state.failure == "", state
        code, out = check(relay, secrets)
        assert code == 0 and out.startswith("SNMPLB OK"), out
        # get_hosts as LDM runs it: the relayed server is one of the two live servers it lists.
        r = get_hosts(f"{relay.address} {addrs([other])}", LB_ALGORITHM="fixed", **V3_ENV)
        assert hosts_of(r) == ["127.0.0.66", other.host], r.stderr
        # snmplb pick (before the fix: exit 3, nothing usable).
        p = subprocess.run([str(BIN / "snmplb"), "pick"], capture_output=True, text=True, timeout=60,
                           env={"PATH": os.environ["PATH"], "LB_SERVERS": relay.address, "LB_TIMEOUT_MS": "1500",
                                "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", **V3_ENV})
        assert (p.returncode, p.stdout) == (0, "127.0.0.66\n"), p.stderr
        assert relay.forged >= 4 and relay.answers >= 4  # every client met a forgery, and the real agent
    for said in (out, r.stderr, p.stderr):
        assert V3.auth_pass not in said and V3.priv_pass not in said


def test_a_forged_report_for_a_dead_server_is_its_reason_at_the_deadline(fleet):
    """Nothing better came: the server fails with the unauthenticated Report's reason ([auth]), as before
    the fix, only at the deadline instead of at once."""
    real = fleet.add("real", IDLE)
    with ForgingRelay("127.0.0.67", real, forge_both, forward=False) as relay:
        state = poll_one(relay.server, timeout_ms=600)
        assert relay.forged >= 2  # the discovery and at least one request under the forged engine id
    assert not state.ok and state.failure == Failure.AUTH and "wrong auth passphrase" in state.reason, state


def test_a_real_wrong_passphrase_is_still_named(fleet):
    """The agent's own refusal (an unauthenticated 'wrong digest' Report) is still the reason, at the deadline."""
    real = fleet.add("real", IDLE)
    state = poll_one(Server(real.host, real.port), timeout_ms=600, **{"auth_passphrase": "not-the-passphrase"})
    assert state.failure == Failure.AUTH and "wrong auth passphrase" in state.reason, state
    assert "not-the-passphrase" not in state.reason
