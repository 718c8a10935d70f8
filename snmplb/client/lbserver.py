"""A client for ltsp-cluster's lbserver: one HTTP GET, answer = the chosen server as plain text.

Raw socket HTTP/1.0 with one deadline (urllib costs import time on a thin
client and has no overall deadline). The answer is only a proposal: the
`lbserver` algorithm takes it only if that server is eligible.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
_LIMIT = 8192


def ask_lbserver(url: str, deadline: float, clock: Callable[[], float] = time.monotonic) -> tuple[str | None, str]:
    """(host, "") with lbserver's choice, or (None, reason)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 8008  # ValueError for a port out of range
    except ValueError:
        return None, "LB_LBSERVER_URL: not a usable http://host[:port]/ URL"
    if parts.scheme != "http" or not parts.hostname:
        return None, "LB_LBSERVER_URL: not a usable http://host[:port]/ URL"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    left = deadline - clock()
    if left <= 0:
        return None, "no time left"
    try:
        with socket.create_connection((parts.hostname, port), timeout=left) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {parts.hostname}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while len(data) < _LIMIT:
                left = deadline - clock()
                if left <= 0:
                    return None, "lbserver did not answer in time"
                sock.settimeout(left)
                chunk = sock.recv(_LIMIT - len(data))
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError) as exc:
        return None, f"lbserver: {getattr(exc, 'strerror', None) or exc}"
    head, sep, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or status[1] != b"200":
        return None, "lbserver: not an HTTP 200 answer"
    host = body.decode("ascii", "replace").strip()
    if not _HOST.match(host):
        return None, "lbserver: answer is not a host name"
    return host, ""
