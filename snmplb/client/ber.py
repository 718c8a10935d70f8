"""A small, strict BER codec for the SNMP messages get_hosts sends and reads.

Why not pysnmp's message layer: get_hosts runs once per login on weak thin
clients, and importing pysnmp + pyasn1 costs ~30 ms and several MB before the
first packet (docs/benchmarks.md), more than the whole poll may take. SNMP
needs only a handful of BER types, so this module encodes and decodes those,
checking every length against its container; anything else raises BerError.
The tests cross-check it against pysnmp in both directions.
"""

from __future__ import annotations

from snmplb.errors import SnmplbError
from snmplb.record import record

# Universal and SNMP application tags.
INTEGER, OCTET_STRING, NULL, OID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, OPAQUE, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x44, 0x46
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82
# PDU tags (context-specific, constructed).
GET_REQUEST, GET_NEXT_REQUEST, RESPONSE, SET_REQUEST, REPORT = 0xA0, 0xA1, 0xA2, 0xA3, 0xA8

_MAX_DEPTH = 8


class BerError(SnmplbError):
    """A datagram is not well-formed BER of the expected shape."""


class Tlv(record("Tlv", "tag value pos", defaults=(0,))):
    """A decoded element: tag (int), value (bytes for primitives, a tuple of Tlv for
    constructed ones), and pos, where the content starts in the decoded bytes.

    (Value types on get_hosts' path are ``snmplb.record`` tuples: dataclasses cost a thin
    client ~10 ms of imports at every login, namedtuples a compile each; docs/benchmarks.md.)
    """

    __slots__ = ()


# -- encoding ---------------------------------------------------------------

def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def enc_int(n: int, tag: int = INTEGER) -> bytes:
    """A two's-complement INTEGER (or an unsigned application type with ``tag``)."""
    size = max(1, (n.bit_length() + 8) // 8)
    return tlv(tag, n.to_bytes(size, "big", signed=True))


def enc_str(b: bytes, tag: int = OCTET_STRING) -> bytes:
    return tlv(tag, b)


def enc_null(tag: int = NULL) -> bytes:
    return tlv(tag, b"")


def enc_oid(oid: tuple[int, ...]) -> bytes:
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] > 39):
        raise BerError(f"cannot encode OID {oid}")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        if arc < 0:
            raise BerError(f"cannot encode OID {oid}")
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(OID, bytes(out))


def enc_seq(*parts: bytes, tag: int = SEQUENCE) -> bytes:
    return tlv(tag, b"".join(parts))


# -- decoding ---------------------------------------------------------------

def _read(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``pos``."""
    if pos + 2 > end:
        raise BerError("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError("multi-byte tags are not used by SNMP")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise BerError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise BerError("element longer than its container")
    return tag, pos, pos + length


def decode(data: bytes) -> Tlv:
    """Decode one complete element; trailing bytes are an error."""
    node, pos = _decode(data, 0, len(data), 0)
    if pos != len(data):
        raise BerError("trailing bytes after the message")
    return node


def decode_prefix(data: bytes) -> Tlv:
    """Decode the element at the start of ``data``, ignoring what follows it."""
    return _decode(data, 0, len(data), 0)[0]


def _decode(data: bytes, pos: int, end: int, depth: int) -> tuple[Tlv, int]:
    tag, start, stop = _read(data, pos, end)
    if tag & 0x20:  # constructed
        if depth >= _MAX_DEPTH:
            raise BerError("nested too deep")
        children = []
        p = start
        while p < stop:
            child, p = _decode(data, p, stop, depth + 1)
            children.append(child)
        return Tlv(tag, tuple(children), start), stop
    return Tlv(tag, bytes(data[start:stop]), start), stop


# The values each integer type may carry (RFC 2578 section 7.1, RFC 3416): a decoded integer outside
# its type's range is malformed, and is rejected where it is decoded, not where it is used.
INT32 = (-2**31, 2**31 - 1)
_RANGES = {INTEGER: INT32, COUNTER32: (0, 2**32 - 1), GAUGE32: (0, 2**32 - 1), TIMETICKS: (0, 2**32 - 1),
           COUNTER64: (0, 2**64 - 1)}


def as_int(node: Tlv, tag: int = INTEGER, low: int | None = None, high: int | None = None) -> int:
    """The integer of ``node``, which must have ``tag`` and lie within ``low``..``high`` (default:
    the whole range of that SMI type); BerError otherwise."""
    if node.tag != tag or not isinstance(node.value, bytes) or not node.value or len(node.value) > 9:
        raise BerError(f"expected integer tag {tag:#x}, got {node.tag:#x}")
    n = int.from_bytes(node.value, "big", signed=tag == INTEGER)
    type_low, type_high = _RANGES.get(tag, (0, 2**64 - 1))
    if not max(type_low, low if low is not None else type_low) <= n <= \
            min(type_high, high if high is not None else type_high):
        raise BerError("integer out of range")
    return n


def as_bytes(node: Tlv, tag: int = OCTET_STRING) -> bytes:
    if node.tag != tag or not isinstance(node.value, bytes):
        raise BerError(f"expected octet string tag {tag:#x}, got {node.tag:#x}")
    return node.value


_OIDS: dict[bytes, tuple[int, ...]] = {}  # decoded OIDs by their bytes: every server of a poll answers the same ones
_MAX_OIDS_KEPT = 64


def as_oid(node: Tlv) -> tuple[int, ...]:
    if node.tag != OID or not isinstance(node.value, bytes) or not node.value or len(node.value) > 256:
        raise BerError("expected an OID")
    known = _OIDS.get(node.value)
    if known is not None:  # only OIDs that decoded are kept: what fails, fails again each time
        return known
    oid = _as_oid(node.value)
    if len(_OIDS) >= _MAX_OIDS_KEPT:
        _OIDS.clear()
    _OIDS[node.value] = oid
    return oid


def _as_oid(value: bytes) -> tuple[int, ...]:
    """The arcs of an OID's content octets (a user's question adds two OIDs of 38 arcs to every answer)."""
    arcs, arc = [], 0
    for i, byte in enumerate(value):
        if arc == 0 and byte == 0x80:
            raise BerError("non-minimal OID arc")
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
        elif i == len(value) - 1:
            raise BerError("truncated OID arc")
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return head + tuple(arcs[1:])


def as_seq(node: Tlv, tag: int = SEQUENCE, length: int | None = None) -> tuple[Tlv, ...]:
    if node.tag != tag or not isinstance(node.value, tuple):
        raise BerError(f"expected constructed tag {tag:#x}, got {node.tag:#x}")
    if length is not None and len(node.value) != length:
        raise BerError(f"expected {length} elements, got {len(node.value)}")
    return node.value
