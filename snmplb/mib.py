"""The SNMPLB-MIB's objects, as the rest of the project sees them.

Every OID in snmplb comes from here, and this module takes them from
``_mibdata.py``, which ``snmplb.build.mibgen`` compiles from mibs/SNMPLB-MIB.txt.
Importing this module is cheap (no MIB parsing): it runs on thin clients.
"""

from __future__ import annotations

from snmplb import _mibdata
from snmplb.record import record

Oid = tuple[int, ...]

# pass_persist type words for the MIB's base types (snmpd.conf(5), pass).
_PASS_TYPES = {
    "Gauge32": "gauge",
    "Unsigned32": "gauge",
    "Counter32": "counter",
    "Counter64": "counter64",
    "Integer32": "integer",
    "INTEGER": "integer",
    "OCTET STRING": "string",
    "TimeTicks": "timeticks",
}


class MibObject(record("MibObject", "name oid base tc enums range units hint access description")):
    """One scalar object of SNMPLB-MIB; its instance OID is ``oid + (0,)``.

    name, base (SMI type), tc (textual convention), units, hint (DISPLAY-HINT),
    access and description are str; oid a tuple of int; enums {label: number};
    range (min, max), the values the SMI allows (a string's size).
    A record (snmplb.record), not a dataclass: thin clients import this at every login.
    """

    __slots__ = ()

    @property
    def instance(self) -> Oid:
        """The OID of the scalar's only instance."""
        oid: Oid = self.oid  # typed for mypy (a record's fields are Any to it)
        return oid + (0,)

    @property
    def pass_type(self) -> str:
        """The type word the pass_persist protocol uses for this object."""
        return _PASS_TYPES[self.base]


MODULE: str = _mibdata.MODULE
ROOT: Oid = _mibdata.ROOT
OBJECTS: tuple[MibObject, ...] = tuple(MibObject(**d) for d in _mibdata.SCALARS)
BY_NAME: dict[str, MibObject] = {o.name: o for o in OBJECTS}
ROW = BY_NAME["lbRow"]
# The columns of lbUserTable (affinity.py asks them), its index lbUserQuery among them; not in OBJECTS:
# no walk lists them, and lbRow does not carry them.
COLUMNS: tuple[MibObject, ...] = tuple(MibObject(**d) for d in _mibdata.COLUMNS)
COLUMN_BY_NAME: dict[str, MibObject] = {o.name: o for o in COLUMNS}
# lbRow's fields: every integer-valued scalar, in OID order (its DESCRIPTION in the MIB).
ROW_FIELDS: tuple[MibObject, ...] = tuple(o for o in OBJECTS if o.base != "OCTET STRING")


# What an object's value means, from the MIB itself: the one place that turns lbRow's integers into
# numbers in their units (a DISPLAY-HINT "d-N" puts the decimal point N digits from the right; UNITS).
_SECONDS = {"milliseconds": 0.001, "seconds": 1.0}
_PER_SECOND = {"logins per minute": 1 / 60}


def _divisor(o: MibObject) -> int:
    hint = o.hint
    return 10 ** int(hint[2:]) if hint.startswith("d-") and hint[2:].isdigit() else 1


_DIVISOR = {o.name: _divisor(o) for o in OBJECTS}


def scaled(name: str, raw: int) -> float:
    """``raw``, the value of object ``name``, as the number its DISPLAY-HINT says (lbLoadPerCpu 150 -> 1.5)."""
    return raw / _DIVISOR[name]


def seconds(name: str, raw: int) -> float:
    """``raw``, the value of a duration object ``name`` (UNITS milliseconds or seconds), in seconds."""
    return raw * _SECONDS[BY_NAME[name].units]


def per_second(name: str, raw: int) -> float:
    """``raw``, the value of a rate object ``name`` (UNITS "... per minute"), per second."""
    return raw * _PER_SECOND[BY_NAME[name].units]


def maximum(name: str) -> int:
    """The largest value object ``name`` may take (its SMI range: lbWeight's 10000)."""
    return int(BY_NAME[name].range[1])


def enum(name: str, label: str) -> int:
    """The number of ``label`` in object ``name``'s enumeration (lbSwapping true -> 1)."""
    enums: dict[str, int] = BY_NAME[name].enums  # typed for mypy (a record's fields are Any to it)
    return enums[label]


def oid_str(oid: Oid) -> str:
    """Dotted text of an OID with a leading dot, as net-snmp prints it."""
    return "." + ".".join(map(str, oid))


def parse_oid(text: str) -> Oid | None:
    """Parse ``.1.3.6`` or ``1.3.6``; None for anything that is not a numeric OID."""
    text = text.strip()
    if text.startswith("."):
        text = text[1:]
    if not text:
        return None
    parts = text.split(".")
    if not all(p.isdigit() and p.isascii() and len(p) <= 10 for p in parts):
        return None
    return tuple(int(p) for p in parts)


def obj(name: str) -> MibObject:
    """The object called ``name`` (KeyError names it when absent)."""
    return BY_NAME[name]


def encode_row(numbers: list[int]) -> str:
    """lbRow's text from the values of ROW_FIELDS, in order."""
    return " ".join(str(int(n)) for n in numbers)


# The last field of the first lbRow (SNMPLB-MIB's first revision). The objects after it were added
# later: an older agent's row ends before them, and its readers do without (serverstate.ServerState).
ROW_FIRST_LAST = "lbSessionSource"


def decode_row(text: str) -> dict[str, int] | None:
    """The named values of an lbRow text; None unless every field it has is a number within its
    object's SMI range, and it has at least the first revision's fields.

    An enumeration's value is not checked here: a newer agent may publish a value added to the MIB
    after this client (as unavailable(7) was to lbStatus), and its row must stay readable. The
    readers judge the values they use (``serverstate.implausible``, ``ServerState.eligible``).

    Extra trailing fields (objects added to the MIB after this client) are ignored; fields missing
    at the tail (an agent older than this client) are absent from the result.
    """
    parts = text.split()
    if len(parts) < _ROW_MIN or not all(p.isdigit() and p.isascii() and len(p) <= 20 for p in parts):
        return None
    values = {}
    for o, p in zip(ROW_FIELDS, parts):
        n = int(p)
        low, high = o.range
        if not low <= n <= high:
            return None
        values[o.name] = n
    return values


_ROW_MIN = [o.name for o in ROW_FIELDS].index(ROW_FIRST_LAST) + 1
