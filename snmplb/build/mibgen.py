"""Compile mibs/SNMPLB-MIB.txt with pysmi and write snmplb/_mibdata.py.

The MIB is the one source of every OID in the project. At run time the agent,
the poller and the NMS files must not load MIBs (too slow for a thin client,
and Debian lacks the IETF base modules), so this tool compiles the MIB once
into a small Python module that is committed; ``--check`` (run by the tests)
fails when the committed module and the MIB disagree.

    python -m snmplb.build.mibgen            # regenerate after editing the MIB
    python -m snmplb.build.mibgen --check    # exit 1 if _mibdata.py is stale
"""

from __future__ import annotations

import argparse
import json
import pprint
import sys
from pathlib import Path
from typing import Any

from snmplb.errors import MibError

MODULE = "SNMPLB-MIB"
PROJECT = Path(__file__).resolve().parents[2]
MIB_DIR = PROJECT / "mibs"
STAND_IN_DIR = MIB_DIR / "stand-ins"
SYSTEM_MIB_DIRS = ("/usr/share/snmp/mibs", "/usr/share/snmp/mibs/iana", "/usr/share/snmp/mibs/ietf")
DATA_FILE = Path(__file__).resolve().parents[1] / "_mibdata.py"

# Textual conventions of SNMPv2-TC that the MIB uses. pysmi does not emit the
# base modules, so their (RFC 2579) definitions are restated here.
_SNMPV2_TC = {
    "TruthValue": ("INTEGER", {"true": 1, "false": 2}),
    "DisplayString": ("OCTET STRING", {}),
}


def mib_search_dirs() -> list[str]:
    """Directories to resolve the MIB's imports: the project's, the system's, then the stand-ins.

    Real base modules (on an admin's machine) come before the stand-ins, so
    they win where they exist.
    """
    dirs = [str(MIB_DIR)]
    dirs += [d for d in SYSTEM_MIB_DIRS if Path(d).is_dir()]
    dirs.append(str(STAND_IN_DIR))
    return dirs


def compile_json(strict: bool = True) -> dict[str, Any]:
    """Compile the MIB with pysmi and return its JSON document as a dict.

    ``strict`` uses pysmi's SMIv2 parser (no SMIv1 leniency).
    """
    from pysmi.codegen import JsonCodeGen
    from pysmi.compiler import MibCompiler
    from pysmi.parser import SmiStarParser
    from pysmi.parser.dialect import smi_v2
    from pysmi.parser.smi import parserFactory
    from pysmi.reader import get_readers_from_urls
    from pysmi.searcher import StubSearcher
    from pysmi.writer import CallbackWriter

    docs: dict[str, str] = {}

    def keep(name: str, doc: str, _ctx: object) -> None:
        docs[name] = doc

    parser = parserFactory(**smi_v2)() if strict else SmiStarParser()
    compiler = MibCompiler(parser, JsonCodeGen(), CallbackWriter(keep))
    compiler.add_sources(*get_readers_from_urls(*("file://" + d for d in mib_search_dirs())))
    compiler.add_searchers(StubSearcher(*JsonCodeGen.baseMibs))
    status = compiler.compile(MODULE, rebuild=True, genTexts=True)
    if status.get(MODULE) != "compiled" or MODULE not in docs:
        raise MibError(f"pysmi could not compile {MODULE}: {dict(status)}")
    doc: dict[str, Any] = json.loads(docs[MODULE])  # pysmi's JSON document: any JSON value under a name
    return doc


def _resolve_syntax(doc: dict[str, Any], syntax: dict[str, Any]) -> tuple[str, str, dict[str, int], str]:
    """Return (base type, TC name or '', enumeration, display hint) of an object's syntax."""
    name = syntax["type"]
    tc = doc.get(name)
    if tc and tc.get("class") == "textualconvention":
        base = tc["type"]["type"]
        enums = tc["type"].get("constraints", {}).get("enumeration", {})
        return base, name, dict(enums), tc.get("displayhint", "")
    if name in _SNMPV2_TC:
        base, enums = _SNMPV2_TC[name]
        return base, name, dict(enums), ""
    enums = syntax.get("constraints", {}).get("enumeration", {})
    return name, "", dict(enums), ""


# The full value range of each SMI base type (RFC 2578 section 7.1): what an object may carry when
# neither it nor its textual convention narrows it.
_BASE_RANGE = {
    "Gauge32": (0, 2**32 - 1), "Unsigned32": (0, 2**32 - 1), "Counter32": (0, 2**32 - 1),
    "TimeTicks": (0, 2**32 - 1), "Counter64": (0, 2**64 - 1), "Integer32": (-2**31, 2**31 - 1),
    "INTEGER": (-2**31, 2**31 - 1), "OCTET STRING": (0, 65535),
}


def _range(doc: dict[str, Any], syntax: dict[str, Any], base: str) -> tuple[int, int]:
    """The (min, max) an object's value may take: a number's range, a string's size (RFC 2578 7.1)."""
    spans: list[dict[str, int]] = []
    for source in (syntax, (doc.get(syntax["type"]) or {}).get("type", {})):
        constraints = source.get("constraints", {}) if isinstance(source, dict) else {}
        spans = constraints.get("range") or constraints.get("size") or []
        if spans:
            break
    if spans:
        return min(s["min"] for s in spans), max(s["max"] for s in spans)
    return _BASE_RANGE[base]


def scalars_from_json(doc: dict[str, Any], nodetype: str = "scalar") -> list[dict[str, Any]]:
    """The MIB's scalar objects (``nodetype`` "column": its tables' columns, index columns included)
    in OID order, as plain dicts for _mibdata.py."""
    out = []
    for entry in doc.values():
        if not isinstance(entry, dict) or entry.get("nodetype") != nodetype:
            continue
        base, tc, enums, hint = _resolve_syntax(doc, entry["syntax"])
        out.append({
            "name": entry["name"],
            "oid": tuple(int(p) for p in entry["oid"].split(".")),
            "base": base,
            "tc": tc,
            "enums": dict(sorted(enums.items(), key=lambda kv: kv[1])),
            "range": _range(doc, entry["syntax"], base),
            "units": entry.get("units", ""),
            "hint": hint,
            "access": entry["maxaccess"],
            "description": " ".join(entry.get("description", "").split()),
        })
    out.sort(key=lambda o: o["oid"])
    return out


def render(doc: dict[str, Any]) -> str:
    """The text of _mibdata.py for a compiled MIB document."""
    root = tuple(int(p) for p in doc["snmplbMIB"]["oid"].split("."))
    scalars = scalars_from_json(doc)
    return (
        '"""GENERATED from mibs/SNMPLB-MIB.txt by `python -m snmplb.build.mibgen`: do not edit."""\n\n'
        f"MODULE = {MODULE!r}\n"
        f"ROOT = {root!r}\n"
        f"SCALARS = {pprint.pformat(tuple(scalars), width=100, sort_dicts=False)}\n"
        f"COLUMNS = {pprint.pformat(tuple(scalars_from_json(doc, 'column')), width=100, sort_dicts=False)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snmplb.build.mibgen", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that _mibdata.py is up to date")
    args = ap.parse_args(argv)
    try:
        text = render(compile_json(strict=True))
    except MibError as exc:
        print(f"mibgen: {exc}", file=sys.stderr)
        return 2
    current = DATA_FILE.read_text() if DATA_FILE.exists() else ""
    if args.check:
        if current != text:
            print(f"mibgen: {DATA_FILE} is stale; run python -m snmplb.build.mibgen", file=sys.stderr)
            return 1
        return 0
    if current != text:
        DATA_FILE.write_text(text)
        print(f"mibgen: wrote {DATA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
