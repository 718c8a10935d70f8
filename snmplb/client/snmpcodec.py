"""SNMP GET requests and their responses, for SNMPv2c and SNMPv3 (USM), as pure functions.

Encodes the messages get_hosts sends and decodes what comes back, checking
every field a reply must have. Secrets and randomness (request ids, salts)
come in as arguments, so the functions are deterministic. RFC 3416 (PDUs),
RFC 3412 (v3 message), RFC 3414 (USM, HMAC-SHA-96, key localization),
RFC 7860 (HMAC-SHA-2), RFC 3826 (AES-128-CFB privacy).
"""

from __future__ import annotations

from snmplb import usm
from snmplb.client import ber
from snmplb.client.ber import BerError, Tlv
from snmplb.record import record

Oid = tuple[int, ...]
MAX_MSG_SIZE = 65507
_NON_NEGATIVE_32 = (0, 2**31 - 1)  # msgID, msgMaxSize, snmpEngineBoots, snmpEngineTime (RFC 3412, 3414)
_MAX_ERROR_STATUS = 18  # inconsistentName, the highest error-status of RFC 3416
_MAX_VARBINDS = 2147483647

# usmStats counters an agent reports (RFC 3414 section 5), and what they mean to an admin.
USM_REPORTS: dict[Oid | None, str] = {  # looked up by a report's first OID (None: it had none)
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0): "unsupported security level",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0): "not in time window",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0): "unknown SNMPv3 user name",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0): "unknown engine id",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0): "wrong auth passphrase (wrong digest)",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0): "wrong priv passphrase (decryption error)",
}
NOT_IN_TIME_WINDOW = (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0)

# The protocols and their hashes come from the one list (snmplb.usm): what this codec implements.
AUTH = usm.AUTH
PRIV = usm.PRIV_PROTOCOLS


class Pdu(record("Pdu", "tag request_id error_status error_index varbinds")):
    """A decoded PDU: its tag, ids and error fields (int), and varbinds, a tuple of (OID, Tlv)."""

    __slots__ = ()


def encode_pdu(tag: int, request_id: int, oids: list[Oid]) -> bytes:
    binds = b"".join(map(_varbind, oids))
    return ber.enc_seq(ber.enc_int(request_id), ber.enc_int(0), ber.enc_int(0), ber.enc_seq(binds), tag=tag)


_VARBINDS: dict[Oid, bytes] = {}  # each OID's encoded varbind: a poll asks every server the same OIDs
_MAX_VARBINDS_KEPT = 64  # a long-running front end (the feed) asks a new user's question now and then


def _varbind(oid: Oid) -> bytes:
    """``oid`` with a NULL value, encoded once per process: a user's question adds two OIDs of 38 arcs to
    each server's GET (``serverquery.oids_asked``), and encoding them for each of 30 servers was most
    of what the question cost a client's CPU (docs/benchmarks.md)."""
    bound = _VARBINDS.get(oid)
    if bound is None:
        if len(_VARBINDS) >= _MAX_VARBINDS_KEPT:
            _VARBINDS.clear()
        bound = _VARBINDS[oid] = ber.enc_seq(ber.enc_oid(oid), ber.enc_null())
    return bound


def decode_pdu(node: Tlv) -> Pdu:
    if node.tag not in (ber.RESPONSE, ber.REPORT, ber.GET_REQUEST):
        raise BerError(f"unexpected PDU type {node.tag:#x}")
    rid, status, index, binds = ber.as_seq(node, node.tag, 4)
    varbinds = []
    for vb in ber.as_seq(binds):
        name, value = ber.as_seq(vb, length=2)
        varbinds.append((ber.as_oid(name), value))
    return Pdu(node.tag, ber.as_int(rid), ber.as_int(status, low=0, high=_MAX_ERROR_STATUS),
               ber.as_int(index, low=0, high=_MAX_VARBINDS), tuple(varbinds))


# -- SNMPv2c ----------------------------------------------------------------

def v2c_get(community: bytes, request_id: int, oids: list[Oid]) -> bytes:
    """An SNMPv2c GetRequest."""
    return ber.enc_seq(ber.enc_int(1), ber.enc_str(community), encode_pdu(ber.GET_REQUEST, request_id, oids))


def v2c_parse(data: bytes, community: bytes) -> Pdu:
    """The PDU of an SNMPv2c message with ``community``; BerError for anything else."""
    version, comm, pdu = ber.as_seq(ber.decode(data), length=3)
    if ber.as_int(version) != 1:
        raise BerError("not an SNMPv2c message")
    if ber.as_bytes(comm) != community:
        raise BerError("wrong community in reply")
    return decode_pdu(pdu)


# -- SNMPv3 / USM -----------------------------------------------------------

def password_to_key(passphrase: bytes, auth: str) -> bytes:
    """Ku: the hash of the passphrase repeated to 1 MiB (RFC 3414 A.2.1).

    Hashed in chunks whose length is a multiple of the passphrase's, so the
    repetition runs on across chunks without a 1 MiB buffer (thin clients).
    """
    import hashlib  # here, not at the top: only SNMPv3 needs it, and get_hosts' start-up counts

    if not passphrase:
        raise ValueError("empty passphrase")
    h = hashlib.new(AUTH[auth][0])
    chunk = passphrase * max(1, 65536 // len(passphrase))
    left = 1048576
    while left > 0:
        h.update(chunk[:left])
        left -= len(chunk)
    return h.digest()


def localize_key(ku: bytes, engine_id: bytes, auth: str) -> bytes:
    """Kul = H(Ku || engineID || Ku) (RFC 3414 A.2.2)."""
    import hashlib

    return hashlib.new(AUTH[auth][0], ku + engine_id + ku).digest()


class UsmParams(record("UsmParams", "engine_id boots time user auth_params priv_params")):
    """USM security parameters: engine_id, user, priv_params (bytes); boots, time (int);
    auth_params, the digest's Tlv (its pos locates it in the message)."""

    __slots__ = ()


class V3Reply(record("V3Reply", "msg_id flags usm scoped")):
    """A decoded SNMPv3 message: msg_id and flags (int), usm (UsmParams), and scoped,
    the ScopedPDU sequence or, when encrypted, its OCTET STRING (Tlv)."""

    __slots__ = ()


def _scoped_pdu(context_engine: bytes, pdu: bytes) -> bytes:
    return ber.enc_seq(ber.enc_str(context_engine), ber.enc_str(b""), pdu)


def v3_discovery(msg_id: int, request_id: int) -> bytes:
    """An unauthenticated, reportable GET with no varbinds: the agent answers with its engine id, boots and time."""
    usm = ber.enc_seq(ber.enc_str(b""), ber.enc_int(0), ber.enc_int(0), ber.enc_str(b""),
                      ber.enc_str(b""), ber.enc_str(b""))
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(MAX_MSG_SIZE), ber.enc_str(b"\x04"), ber.enc_int(3))
    return ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm),
                       _scoped_pdu(b"", encode_pdu(ber.GET_REQUEST, request_id, [])))


def _aes_cfb(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    # Imported here: only SNMPv3 with privacy needs the cryptography package.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    try:  # cryptography >= 47 keeps CFB among the "decrepit" modes
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:
        from cryptography.hazmat.primitives.ciphers.modes import CFB
    c = Cipher(algorithms.AES(key[:16]), CFB(iv))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def _iv(boots: int, time: int, salt: bytes) -> bytes:
    return boots.to_bytes(4, "big") + time.to_bytes(4, "big") + salt


def v3_get(msg_id: int, request_id: int, oids: list[Oid], *, engine_id: bytes, boots: int, time: int,
           user: bytes, auth: str, auth_key: bytes, priv_key: bytes, salt: bytes) -> bytes:
    """An authPriv GetRequest (HMAC with ``auth``, AES-128-CFB with an 8-byte ``salt``)."""
    if len(salt) != 8:
        raise ValueError("salt must be 8 bytes")
    scoped = _scoped_pdu(engine_id, encode_pdu(ber.GET_REQUEST, request_id, oids))
    encrypted = _aes_cfb(priv_key, _iv(boots, time, salt), scoped, encrypt=True)
    mac_len = AUTH[auth][1]
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(MAX_MSG_SIZE), ber.enc_str(b"\x07"), ber.enc_int(3))
    usm = ber.enc_seq(ber.enc_str(engine_id), ber.enc_int(boots), ber.enc_int(time), ber.enc_str(user),
                      ber.enc_str(b"\0" * mac_len), ber.enc_str(salt))
    msg = ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm), ber.enc_str(encrypted))
    node = ber.decode(msg)  # locate the zeroed digest to fill it in
    digest_pos = _usm_node(node)[4].pos
    import hmac

    mac = hmac.new(auth_key, msg, AUTH[auth][0]).digest()[:mac_len]
    return msg[:digest_pos] + mac + msg[digest_pos + mac_len:]


def _usm_node(msg: Tlv) -> tuple[Tlv, ...]:
    _, _, sec, _ = ber.as_seq(msg, length=4)
    raw = ber.as_bytes(sec)
    inner = ber.decode(raw)
    fields = ber.as_seq(inner, length=6)
    # Re-base the inner positions onto the outer message.
    shift = sec.pos
    return tuple(Tlv(f.tag, f.value, f.pos + shift) for f in fields)


def v3_parse(data: bytes) -> V3Reply:
    """Decode an SNMPv3/USM message's envelope (no authentication check yet)."""
    msg = ber.decode(data)
    version, glob, _, scoped = ber.as_seq(msg, length=4)
    if ber.as_int(version) != 3:
        raise BerError("not an SNMPv3 message")
    msg_id, max_size, flags, model = ber.as_seq(glob, length=4)
    flag_bytes = ber.as_bytes(flags)
    if len(flag_bytes) != 1 or ber.as_int(model) != 3:
        raise BerError("not a USM message")
    f = _usm_node(msg)
    low, high = _NON_NEGATIVE_32
    usm = UsmParams(ber.as_bytes(f[0]), ber.as_int(f[1], low=low, high=high), ber.as_int(f[2], low=low, high=high),
                    ber.as_bytes(f[3]), f[4], ber.as_bytes(f[5]))
    ber.as_int(max_size, low=484, high=high)  # RFC 3412: msgMaxSize (484..2147483647)
    return V3Reply(ber.as_int(msg_id, low=low, high=high), flag_bytes[0], usm, scoped)


def v3_verify(data: bytes, reply: V3Reply, auth: str, auth_key: bytes) -> bool:
    """True when the reply's digest is right for ``auth_key``."""
    digest = reply.usm.auth_params
    mac_len = AUTH[auth][1]
    if not isinstance(digest.value, bytes) or len(digest.value) != mac_len:
        return False
    import hmac

    zeroed = data[:digest.pos] + b"\0" * mac_len + data[digest.pos + mac_len:]
    want = hmac.new(auth_key, zeroed, AUTH[auth][0]).digest()[:mac_len]
    return hmac.compare_digest(want, digest.value)


def v3_pdu(reply: V3Reply, priv_key: bytes | None) -> Pdu:
    """The PDU of a reply, decrypting it when the priv flag is set."""
    node = reply.scoped
    if reply.flags & 0x02:
        if priv_key is None or len(reply.usm.priv_params) != 8:
            raise BerError("encrypted reply without usable privacy parameters")
        plain = _aes_cfb(priv_key, _iv(reply.usm.boots, reply.usm.time, reply.usm.priv_params),
                         ber.as_bytes(node), encrypt=False)
        node = ber.decode_prefix(plain)  # some agents pad the plaintext; the BER says where it ends
    _, _, pdu = ber.as_seq(node, length=3)
    return decode_pdu(pdu)
