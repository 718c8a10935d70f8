"""The MIB compiles strictly, the generated data matches it, every OID user agrees with it, and it
evolves the SMIv2 way (RFC 2578 section 10, RFC 2580): a released revision is never edited.

mibs/released/ keeps each released revision verbatim, as SNMPLB-MIB-<its newest REVISION>.txt;
the current MIB must be its newest revision's copy (older copies are held to their REVISION
clauses, not byte for byte: git shows an edit). smidiff (libsmi) compares each copy with the next,
and the newest with mibs/SNMPLB-MIB.txt when they differ; a finding at level 2 or below (an error)
fails, except the few in RELEASED_FINDINGS: those were published before the check existed, cannot
be taken back, and the definitions they changed are deprecated and replaced in the current module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from snmplb import mib
from snmplb.build import mibgen
from snmplb.lab.fleet import DROP_IN, client_env

MIB_FILE = mibgen.MIB_DIR / "SNMPLB-MIB.txt"


def test_pysmi_strict_compile_and_generated_data_is_current():
    doc = mibgen.compile_json(strict=True)
    assert mibgen.render(doc) == mibgen.DATA_FILE.read_text(), "run python -m snmplb.build.mibgen"
    assert mibgen.main(["--check"]) == 0


def test_every_object_is_a_read_only_scalar_with_a_unique_oid():
    assert len(mib.OBJECTS) == 38
    assert len({o.oid for o in mib.OBJECTS}) == len(mib.OBJECTS)
    for o in mib.OBJECTS:
        assert o.oid[: len(mib.ROOT)] == mib.ROOT
        assert o.access == "read-only"
        assert o.pass_type in ("gauge", "integer", "counter64", "string")
    assert mib.obj("lbStatus").enums == {"idle": 1, "busy": 2, "swapping": 3, "full": 4,
                                         "draining": 5, "disabled": 6, "unavailable": 7}
    assert mib.obj("lbAdminState").enums == {"enabled": 1, "draining": 2, "disabled": 3}
    assert mib.obj("lbLoad1").hint == "d-2"
    assert mib.obj("lbAdminFileStatus").enums == {"ok": 1, "problem": 2}


def test_row_fields_are_the_integer_objects_in_oid_order():
    names = [o.name for o in mib.ROW_FIELDS]
    assert names[0] == "lbLoad1" and names[-1] == "lbLoginsConnecting"
    assert "lbAgentVersion" not in names and "lbRow" not in names
    assert [o.oid for o in mib.ROW_FIELDS] == sorted(o.oid for o in mib.ROW_FIELDS)
    # Distinct values, each legal for its object (an enumeration's own values, within the SMI range).
    values = [max(o.enums.values()) if o.enums else min(i, o.range[1]) for i, o in enumerate(mib.ROW_FIELDS)]
    text = mib.encode_row(values)
    assert mib.decode_row(text) == {o.name: v for o, v in zip(mib.ROW_FIELDS, values)}
    assert mib.decode_row(text + " 7 8") == mib.decode_row(text)  # newer agents append fields
    first = names.index(mib.ROW_FIRST_LAST) + 1
    older = mib.decode_row(" ".join(text.split()[:first]))  # an agent of the MIB's first revision
    assert older == {n: v for n, v in zip(names[:first], values)} and "lbInService" not in older
    assert mib.decode_row(" ".join(text.split()[:first - 1])) is None  # shorter than any agent's row
    assert mib.decode_row(text.replace("3", "x", 1)) is None
    for o in mib.ROW_FIELDS:  # one field beyond its SMI range spoils the row
        i = names.index(o.name)
        bad = [*values[:i], o.range[1] + 1, *values[i + 1:]]
        assert mib.decode_row(mib.encode_row(bad)) is None, o.name
    # An enumeration's value added to the MIB after this client keeps the row readable (a newer agent).
    status = names.index("lbStatus")
    newer = [*values[:status], max(mib.obj("lbStatus").enums.values()) + 1, *values[status + 1:]]
    assert mib.decode_row(mib.encode_row(newer))["lbStatus"] == newer[status]
    assert mib.decode_row("-1 " + text) is None


def _netsnmp(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["snmptranslate", "-M", ":".join(mibgen.mib_search_dirs()), *args],
                          env=client_env(tmp), capture_output=True, text=True, timeout=20)


@pytest.mark.fleet
def test_net_snmp_parses_the_mib_strictly_and_resolves_every_name(tmp_path):
    r = _netsnmp("-m", mib.MODULE, "-Pw", "-PW", "-Tp", f"{mib.MODULE}::snmplbMIB", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    # net-snmp's parser has no translation for a table's row type (SEQUENCE): it says so for every
    # table of every module (NET-SNMP-AGENT-MIB's NsCacheEntry too), and only for that.
    row_types = [f"Warning: No known translation for type ({t}): " for t in ("SnmplbUserEntry",)]
    problems = [ln for ln in r.stderr.splitlines() if ln.strip() and "parsed and ignored" not in ln
                and not ln.startswith("Created directory") and not any(ln.startswith(t) for t in row_types)]
    assert problems == []
    for o in mib.OBJECTS:
        r = _netsnmp("-m", mib.MODULE, "-On", f"{mib.MODULE}::{o.name}.0", tmp=tmp_path)
        assert r.stdout.strip() == mib.oid_str(o.instance), (o.name, r.stderr)
        r = _netsnmp("-m", mib.MODULE, mib.oid_str(o.instance), tmp=tmp_path)
        assert r.stdout.strip() == f"{mib.MODULE}::{o.name}.0"


def _smi_path(directory: Path) -> Path:
    """``directory`` as libsmi's SMIPATH: the modules of mibgen's search path, linked by module name.

    libsmi (smilint, smidiff) finds an imported module by its exact name, without a suffix.
    """
    for d in reversed(mibgen.mib_search_dirs()):
        for f in Path(d).glob("*.txt"):
            link = directory / f.stem
            if link.is_symlink():
                link.unlink()
            link.symlink_to(f)
    return directory


@pytest.mark.fleet
@pytest.mark.skipif(shutil.which("smilint") is None, reason="smitools not installed")
def test_smilint_at_its_strictest_level_finds_nothing(tmp_path):
    r = subprocess.run(["smilint", "-l", "6", "-s", str(_smi_path(tmp_path) / mib.MODULE)],
                       env=dict(os.environ, SMIPATH=str(tmp_path)), capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_the_snmpd_drop_in_registers_and_views_the_mibs_root():
    lines = [ln.split() for ln in DROP_IN.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    root = mib.oid_str(mib.ROOT)
    assert ["pass_persist", root] == lines[0][:2]
    views = [ln for ln in lines if ln[0] == "view"]
    assert ["view", "snmplbView", "included", root] in views
    assert {ln[0] for ln in lines} == {"pass_persist", "view", "rocommunity", "rouser"}
    assert all("-V" in ln and ln[-1] == "snmplbView" for ln in lines if ln[0] in ("rocommunity", "rouser"))
    assert ["rouser", "snmplb", "authPriv", "-V", "snmplbView"] in lines


def test_readme_table_lists_every_object_with_its_oid():
    readme = (mibgen.PROJECT / "README.md").read_text()
    for o in mib.OBJECTS:
        sub = "." + ".".join(map(str, o.oid[len(mib.ROOT):])) + ".0"
        assert f"| {sub} | `{o.name}` |" in readme, o.name
    assert mib.oid_str(mib.ROOT) in readme


# ------------------------------------------------------------------
# The MIB evolves the SMIv2 way (issue 21)
# ------------------------------------------------------------------

RELEASED_DIR = mibgen.MIB_DIR / "released"
_REVISION = re.compile(r'^\s*REVISION\s+"(\d{12}Z)"', re.MULTILINE)
_LAST_UPDATED = re.compile(r'^\s*LAST-UPDATED\s+"(\d{12}Z)"', re.MULTILINE)

# smidiff's errors between released revisions, by the revision that brought them: (error name, the
# names it quotes). Published before smidiff ran here, they cannot be taken back; each is tolerated
# only while the definition it changed (the last name) is deprecated (or obsolete) in the current
# module, its replacements current. Any other error, or one of these against a current definition,
# fails.
RELEASED_FINDINGS = {
    "202611241200Z": {("member-added", "lbSshConnections", "snmplbSessionGroup"),
                      ("member-added", "lbInService", "snmplbAdminGroup")},
    "202611241400Z": {("member-added", "lbLoginRate", "snmplbSessionGroup")},
    "202611300000Z": {("member-added", "lbAdminFileStatus", "snmplbAdminGroup"),
                      ("member-added", "lbAdminFileProblem", "snmplbAdminGroup")},
    "202611301200Z": {("mandatory-added", "snmplbLoginReadyGroup", "snmplbCompliance")},
}


def _revisions(text: str) -> list[str]:
    """A module's REVISION dates, newest first (as a module lists them)."""
    return _REVISION.findall(text)


def _released() -> list[Path]:
    """The released copies, oldest first (their names end in their newest REVISION: YYYYMMDDHHMMZ)."""
    return sorted(RELEASED_DIR.glob(f"{mib.MODULE}-*.txt"))


def test_each_released_copy_is_its_revision_and_keeps_every_older_revision_clause():
    copies = _released()
    assert len(copies) >= 6  # 202611240000Z .. 202612010000Z, recovered from git history
    previous: list[str] = []
    for copy in copies:
        text = copy.read_text()
        revisions = _revisions(text)
        assert copy.name == f"{mib.MODULE}-{revisions[0]}.txt", copy.name
        assert _LAST_UPDATED.findall(text) == [revisions[0]], copy.name
        assert revisions[1:] == previous and (not previous or revisions[0] > previous[0]), copy.name
        previous = revisions


def test_the_current_mib_is_its_newest_revisions_released_copy():
    text = MIB_FILE.read_text()
    newest = _revisions(text)[0]
    assert _LAST_UPDATED.findall(text) == [newest]
    copy = RELEASED_DIR / f"{mib.MODULE}-{newest}.txt"
    assert copy.exists(), (f"REVISION {newest} has no released copy: once the change is final, "
                           f"cp {MIB_FILE.relative_to(mibgen.PROJECT)} {copy.relative_to(mibgen.PROJECT)}")
    assert copy.read_text() == text, (f"{copy.name} is released and never edited: give the change its own "
                                      f"REVISION clause (and LAST-UPDATED) and a copy of its own")


def _statuses() -> dict[str, str]:
    """The STATUS of every definition of the current MIB that has one, by name."""
    return {name: d["status"] for name, d in mibgen.compile_json(strict=True).items()
            if isinstance(d, dict) and "status" in d}


def test_one_current_compliance_statement_requires_every_object_through_current_groups():
    doc = mibgen.compile_json(strict=True)
    current = [d for d in doc.values() if isinstance(d, dict) and d.get("class") == "modulecompliance"
               and d["status"] == "current"]
    assert len(current) == 1, [d["name"] for d in current]
    groups = [doc[g["object"]] for g in current[0]["modulecompliance"]]
    assert all(g["class"] == "objectgroup" and g["status"] == "current" for g in groups), \
        [(g["name"], g["status"]) for g in groups]
    members = [o["object"] for g in groups for o in g["objects"]]
    columns = [o.name for o in mib.COLUMNS if o.access != "not-accessible"]  # a table's index is in no group
    assert sorted(members) == sorted([o.name for o in mib.OBJECTS] + columns)  # every object, in one group each
    for g in (d for d in doc.values() if isinstance(d, dict) and d.get("class") == "objectgroup"):
        if g["status"] == "current":
            assert g["name"] in {x["name"] for x in groups}, f"{g['name']} is current but required by no one"


_SMIDIFF_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+) \[(?P<level>\d)\] \{(?P<error>[^}]+)\} (?P<text>.*)$")


def _smidiff(old: Path, new: Path, smipath: Path) -> list[tuple[str, ...]]:
    """smidiff's findings at level 2 or below from ``old`` to ``new``: (error name, quoted names...)."""
    r = subprocess.run(["smidiff", "-l", "2", "-s", "-m", str(old), str(new)],
                       env=dict(os.environ, SMIPATH=str(smipath)), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", f"smidiff {old.name} {new.name}: {r.stderr}"
    findings = []
    for line in r.stdout.splitlines():
        m = _SMIDIFF_LINE.match(line)
        assert m and int(m["level"]) <= 2, line
        findings.append((m["error"], *re.findall(r"`([^']+)'", m["text"])))
    return findings


@pytest.mark.fleet
@pytest.mark.skipif(shutil.which("smidiff") is None, reason="smitools not installed")
def test_smidiff_finds_no_error_from_each_released_revision_to_the_next_and_to_the_current_mib(tmp_path):
    smipath = _smi_path(tmp_path)
    copies = _released()
    steps = list(zip(copies, copies[1:]))
    if MIB_FILE.read_text() != copies[-1].read_text():
        steps.append((copies[-1], MIB_FILE))  # a change under a new REVISION, not released yet
    statuses = _statuses()
    seen, errors = {}, []
    for old, new in steps:
        revision = _revisions(new.read_text())[0]
        for finding in _smidiff(old, new, smipath):
            known = new != MIB_FILE and finding in RELEASED_FINDINGS.get(revision, ())
            seen.setdefault(revision, set()).add(finding)
            if not known or statuses.get(finding[-1]) not in ("deprecated", "obsolete"):
                errors.append(f"{old.name} -> {new.name}: {' '.join(finding)}"
                              + (f" ({finding[-1]} is still {statuses.get(finding[-1])})" if known else ""))
    assert errors == [], "\n".join(errors)
    assert seen == RELEASED_FINDINGS  # the record is exact: no finding listed that smidiff no longer reports
