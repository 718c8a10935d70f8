"""Network actors for get_hosts tests, all on loopback and all bounded in time.

- Silent: a UDP socket that receives and never answers.
- DelayProxy: relays to a real snmpd, holding each answer back (a slow or late server).
- HostileProxy: relays to a real snmpd, but first sends the client garbage, a
  reply with a wrong request id, and a reply with the right id from another
  address (a spoofed source), each carrying a tempting lie (an idle server).
- FakeLbserver: ltsp-cluster's lbserver is unmaintained and not packaged for
  Debian, so it cannot run here; this HTTP server answers the way its docs
  describe (the chosen server's address as plain text on GET /).
"""

from __future__ import annotations

import http.server
import select
import socket
import threading
import time

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib

_LIFETIME = 120.0  # every actor stops by itself after this many seconds


class _Actor:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self._thread.start()

    def _guarded(self) -> None:
        end = time.monotonic() + _LIFETIME
        while not self._stop.is_set() and time.monotonic() < end:
            self.step()

    def step(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


class Silent:
    """Receives and never answers."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address = f"{host}:{self.sock.getsockname()[1]}"

    def stop(self) -> None:
        self.sock.close()


class DelayProxy(_Actor):
    """Listens on ``host``, relays to ``target`` (host, port), answers after ``delay`` seconds."""

    def __init__(self, host: str, target: tuple[str, int], delay: float) -> None:
        super().__init__()
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((host, 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(target)
        self.address = f"{host}:{self.front.getsockname()[1]}"
        self.delay = delay
        self.pending: list[tuple[float, bytes, tuple]] = []
        self.clients: list[tuple] = []
        self.start()

    def step(self) -> None:
        readable, _, _ = select.select([self.front, self.back], [], [], 0.01)
        if self.front in readable:
            data, client = self.front.recvfrom(65535)
            self.clients.append(client)
            self.back.send(data)
        if self.back in readable:
            data = self.back.recv(65535)
            if self.clients:
                self.pending.append((time.monotonic() + self.delay, data, self.clients.pop(0)))
        now = time.monotonic()
        for item in [p for p in self.pending if p[0] <= now]:
            self.front.sendto(item[1], item[2])
            self.pending.remove(item)


def lying_reply(request: bytes, community: bytes, request_id_delta: int = 0, **changes: int) -> bytes:
    """A well-formed v2c answer to ``request`` with an lbRow of an idle, empty, giant server (with
    ``changes``: those fields of the row changed, e.g. to make it implausible)."""
    pdu = snmpcodec.v2c_parse(request, community)
    values = {o.name: min(o.enums.values()) if o.enums else 0 for o in mib.ROW_FIELDS}  # legal: enums take their first
    values.update(lbLoad1=1, lbLoad5=1, lbLoad15=1, lbCpuCount=64, lbMemTotal=10**9, lbMemAvailable=10**9,
                  lbMemAvailablePercent=100, lbSwapping=2, lbWeight=10000, lbAdminState=1, lbStatus=1,
                  lbRating=100, lbSessionSource=1)
    values.update(changes)
    text = mib.encode_row([values[o.name] for o in mib.ROW_FIELDS]).encode()
    vb = ber.enc_seq(ber.enc_seq(ber.enc_oid(mib.ROW.instance), ber.enc_str(text)))
    body = ber.enc_seq(ber.enc_int(pdu.request_id + request_id_delta), ber.enc_int(0), ber.enc_int(0), vb,
                       tag=ber.RESPONSE)
    return ber.enc_seq(ber.enc_int(1), ber.enc_str(community), body)


class HostileProxy(DelayProxy):
    """A relay that tries to make the client believe lies before the real answer arrives."""

    def __init__(self, host: str, spoof_host: str, target: tuple[str, int], community: bytes) -> None:
        self.spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.spoof.bind((spoof_host, 0))
        self.community = community
        super().__init__(host, target, delay=0.05)

    def step(self) -> None:
        readable, _, _ = select.select([self.front], [], [], 0)
        if self.front in readable:
            data, client = self.front.recvfrom(65535)
            self.front.sendto(b"\x00\xffgarbage\x30\x84", client)
            self.front.sendto(lying_reply(data, self.community, request_id_delta=1), client)
            self.front.sendto(lying_reply(data, b"other-community"), client)
            self.spoof.sendto(lying_reply(data, self.community), client)  # right id, wrong source
            self.clients.append(client)
            self.back.send(data)
        super().step()

    def stop(self) -> None:
        super().stop()
        self.spoof.close()


class FakeLbserver:
    """Answers GET / with ``answer`` as text/plain (see the module docstring for why it is a fake)."""

    def __init__(self, answer: str, delay: float = 0.0) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                time.sleep(outer.delay)
                body = (outer.answer + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.answer, self.delay = answer, delay
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
