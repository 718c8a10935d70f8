"""The user's question (snmplb.affinity): HMAC-SHA-256 as RFC 2104 and hmac compute it, and cheap on a client."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import pytest

from snmplb import affinity
from snmplb.agent.usersessions import Answers, UserSessions


@pytest.mark.parametrize("size", [0, 1, 16, 63, 64, 65, 200, affinity.MAX_KEY_BYTES])
def test_the_keyed_mac_is_hmac_sha256_for_every_key_length(size):
    key = bytes((7 * i + size) % 256 for i in range(size))
    keyed = affinity.Keyed(key)
    for message in (b"", b"x", bytes(range(256)) * 3):
        assert keyed.mac(message) == hmac.new(key, message, hashlib.sha256).digest()


def test_a_question_is_the_nonce_and_the_first_16_octets_of_the_mac_and_the_agent_finds_its_user():
    key, nonce = b"a-site-key-of-sixteen-or-more", b"\x00\x01\x02\x03\x04\x05\x06\x07"
    asked = affinity.question(key, "zoë", nonce)
    assert asked == nonce + hmac.new(key, nonce + "zoë".encode(), hashlib.sha256).digest()[:16]
    assert affinity.who(key, asked, ["ann", "zoë", "bob"]) == "zoë"
    assert affinity.who(affinity.Keyed(key), asked, ["ann", "zoë"]) == "zoë"
    assert affinity.who(b"another-key-of-sixteen-chars", asked, ["zoë"]) is None
    assert affinity.who(key, asked[:-1], ["zoë"]) is None
    answers = Answers(key, {"zoë": UserSessions(2, 1)})
    assert [answers.answer(c, asked) for c in ("lbUserSessions", "lbUserWaiting")] == [2, 1]
    with pytest.raises(ValueError):
        affinity.question(key, "zoë", b"short")


@pytest.mark.fleet  # a process of its own (conftest.py: markers)
def test_a_clients_question_loads_neither_hashlib_nor_openssl():
    # hashlib (and hmac, which imports it) loads libcrypto: ~3 ms of every `pick --user` (docs/benchmarks.md).
    code = ("import sys; from snmplb import affinity; affinity.question(b'k' * 16, 'ann', bytes(8)); "
            "print(sorted(m for m in ('hashlib', 'hmac', '_hashlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(affinity.__file__).rsplit("/snmplb/", 1)[0])
    assert out.stdout.strip() == "[]", out
