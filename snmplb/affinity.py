"""The question "how many sessions has this user here, and does one wait?", asked without naming the user.

A client that knows the user (``snmplb pick --user``, connect, the session
wrappers, the PAM hook) adds two varbinds to its one GET of lbRow:
lbUserSessions and lbUserWaiting at the instance of a question (lbUserQuery):
8 octets of nonce, drawn afresh for each login, then the first 16 octets of
HMAC-SHA-256(site key, nonce + user name in UTF-8). The agent answers by
computing the same for each user it has sessions of (a few dozen HMACs) and
answering the one that matches; 0 and 0 when none does. Beside it the client
asks the same of a decoy (``with_decoy``: random octets, which an honest agent
answers 0), so that an agent saying yes to every question is caught.

So a host without the site key cannot ask about a user by name, and a
question it sees (in clear under SNMPv2c) tells it nothing: not the name, not
even whether two logins were the same user's. With no key on a side, that
side does nothing: the client asks nothing, the agent answers noSuchInstance
(never an unkeyed hash: user names are easy to guess).

The key: a file of at least ``MIN_KEY_CHARS`` printable characters (its
surrounding whitespace is not part of it), named by the agent's
``affinity_key_file`` and the client's ``LB_AFFINITY_KEY_FILE``, owned by root
(or the user reading it) and writable by nobody else; on an agent it must
not be readable by everyone. ``read_key`` checks that and never quotes it.
"""

from __future__ import annotations

from snmplb import mib

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:
    import hashlib
    from collections.abc import Callable, Iterable

QUESTION = mib.COLUMN_BY_NAME["lbUserQuery"]
SESSIONS = mib.COLUMN_BY_NAME["lbUserSessions"]
WAITING = mib.COLUMN_BY_NAME["lbUserWaiting"]
QUESTION_SIZE: int = QUESTION.range[1]  # the MIB's fixed size: 24
NONCE_SIZE = 8
MAC_SIZE = QUESTION_SIZE - NONCE_SIZE
MIN_KEY_CHARS = 32  # a hand-written passphrase this short would fall to offline guessing from captured questions
MAX_KEY_BYTES = 4096
MAX_USER_BYTES = 256  # a user name longer than this is no user of ours (utmp keeps 32, NSS far less)


_BLOCK = 64  # SHA-256's block size (RFC 2104's B)


def _sha256() -> Callable[[bytes], hashlib._Hash]:
    """SHA-256's constructor from the interpreter's own module, not hashlib's: hashlib (and hmac, which
    imports it) loads OpenSSL's libcrypto, about 3 ms of every `pick --user` on a quiet machine, more
    than the rest of the question costs (docs/benchmarks.md). hashlib only where neither exists."""
    try:
        # typeshed has no stubs for the private modules; hashlib's sha256 is the same type.
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.10, 3.11
        except ImportError:
            from hashlib import sha256
    constructor: Callable[[bytes], hashlib._Hash] = sha256
    return constructor


class Keyed:
    """HMAC-SHA-256 (RFC 2104) under one key, the key's two padded blocks hashed once: each MAC then
    costs two copies of a hash state and two short updates. The agent builds one per sample (``Answers``)
    and computes one MAC per user of its own for each question; a client, one MAC per login."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        sha256 = _sha256()
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = sha256(bytes(b ^ 0x36 for b in key))
        self._outer = sha256(bytes(b ^ 0x5C for b in key))

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA-256(key, message), the whole 32 octets."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()
        return digest

    def question(self, user: str, nonce: bytes) -> bytes:
        """The 24 octets that ask about ``user`` with this ``nonce`` (NONCE_SIZE octets)."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError("nonce size")
        return nonce + self.mac(nonce + user.encode("utf-8", "surrogateescape"))[:MAC_SIZE]


def question(key: bytes, user: str, nonce: bytes) -> bytes:
    """The 24 octets that ask about ``user`` under ``key`` with this ``nonce`` (NONCE_SIZE octets)."""
    return Keyed(key).question(user, nonce)


def with_decoy(question: bytes, decoy: bytes = b"") -> tuple[bytes, bytes]:
    """``question`` and a ``decoy`` (drawn here when not given), in random order: the decoy is random
    octets of a question's size, which nobody can tell from a user's question without the key. An
    honest agent answers it 0 (no user of its matches it); one that answers it with a session says yes
    to any question: a liar drawing every user's login to itself. One decoy per login, as there is one
    question: a liar that sees the GETs to other servers too finds both in each of them. Drawn from the
    system's random source, as the nonce."""
    import os

    decoy = decoy or os.urandom(QUESTION_SIZE)
    return (question, decoy) if os.urandom(1)[0] & 1 else (decoy, question)


def who(key: bytes | Keyed, asked: bytes, users: Iterable[str]) -> str | None:
    """Which of ``users`` the question ``asked`` is about (None: none of them, or not a question).
    ``key``: the site key, or a ``Keyed`` made of it once for many questions."""
    import hmac

    if len(asked) != QUESTION_SIZE:
        return None
    keyed = key if isinstance(key, Keyed) else Keyed(key)
    nonce = asked[:NONCE_SIZE]
    found = None
    for user in users:
        # Every user is compared, in constant time each: the answer's timing says nothing about which one.
        if hmac.compare_digest(keyed.question(user, nonce), asked) and found is None:
            found = user
    return found


def instances(asked: bytes) -> tuple[mib.Oid, mib.Oid]:
    """The OIDs of lbUserSessions and lbUserWaiting for the question ``asked`` (fixed size: no length)."""
    index = tuple(asked)
    return SESSIONS.oid + index, WAITING.oid + index


def parse_instance(oid: mib.Oid) -> tuple[str, bytes] | None:
    """(the column's name, the question) of an OID under lbUserSessions or lbUserWaiting; None otherwise."""
    for column in (SESSIONS, WAITING):
        n = len(column.oid)
        if oid[:n] == column.oid and len(oid) == n + QUESTION_SIZE and all(0 <= x <= 255 for x in oid[n:]):
            return column.name, bytes(oid[n:])
    return None


def key_problem(st_mode: int, st_uid: int, my_uid: int, *, agent: bool, st_gid: int = 0,
                my_gids: tuple[int, ...] = (0,)) -> str:
    """Why a key file with this mode and owner must not be used ("" when it may): owned by root or by
    the reader, writable by nobody else, and, on an agent (``agent``), readable by nobody but root,
    its owner and a group the agent is in or root's (``st_gid`` the file's group, ``my_gids`` the
    agent's): a server's users must not ask about each other."""
    import stat

    if not stat.S_ISREG(st_mode):
        return "is not a regular file"
    if st_uid not in (0, my_uid):
        return "is owned by another user than root or this one"
    if st_mode & 0o022:
        return "may be written by others than its owner"
    if agent and st_mode & 0o004:
        return "may be read by every user on this server (chmod o-r)"
    if agent and st_mode & 0o040 and st_gid != 0 and st_gid not in my_gids:
        return "may be read by a group this agent is not in (chgrp to the agent's, or chmod g-r)"
    return ""


def read_key(path: str, name: str, *, agent: bool) -> tuple[bytes | None, str]:
    """The site key in ``path`` and "" ; or None and the problem, naming the setting ``name`` and the
    path, never a character of the file. An empty ``path``: no key, no problem (the feature is off)."""
    import os

    if not path:
        return None, ""
    off = "affinity is off"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return None, f"{name}: {path} cannot be read ({exc.strerror}); {off}"
    try:
        st = os.fstat(fd)
        problem = key_problem(st.st_mode, st.st_uid, os.geteuid(), agent=agent, st_gid=st.st_gid,
                              my_gids=(os.getegid(), *os.getgroups()))
        if problem:
            return None, f"{name}: {path} {problem}; {off}"
        data = os.read(fd, MAX_KEY_BYTES + 1)
    except OSError as exc:
        return None, f"{name}: {path} cannot be read ({exc.strerror}); {off}"
    finally:
        os.close(fd)
    key = data.strip()
    if len(data) > MAX_KEY_BYTES:
        return None, f"{name}: {path} is longer than {MAX_KEY_BYTES} bytes; {off}"
    if len(key) < MIN_KEY_CHARS or not all(0x21 <= b <= 0x7E for b in key):
        return None, (f"{name}: {path} does not hold a key of at least {MIN_KEY_CHARS} printable characters "
                      f"(make one: snmplb-admin affinity-key); {off}")
    return key, ""
