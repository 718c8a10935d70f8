"""The MIB compiles strictly, the generated data matches it, and every OID user agrees with it."""

from __future__ import annotations

import os
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
    assert len(mib.OBJECTS) == 36
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
    assert names[0] == "lbLoad1" and names[-1] == "lbAdminFileStatus"
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
    problems = [ln for ln in r.stderr.splitlines() if ln.strip() and "parsed and ignored" not in ln
                and not ln.startswith("Created directory")]
    assert problems == []
    for o in mib.OBJECTS:
        r = _netsnmp("-m", mib.MODULE, "-On", f"{mib.MODULE}::{o.name}.0", tmp=tmp_path)
        assert r.stdout.strip() == mib.oid_str(o.instance), (o.name, r.stderr)
        r = _netsnmp("-m", mib.MODULE, mib.oid_str(o.instance), tmp=tmp_path)
        assert r.stdout.strip() == f"{mib.MODULE}::{o.name}.0"


@pytest.mark.fleet
@pytest.mark.skipif(shutil.which("smilint") is None, reason="smitools not installed")
def test_smilint_at_its_strictest_level_finds_nothing(tmp_path):
    # smilint finds imported modules by exact module name, so link them so.
    for d in reversed(mibgen.mib_search_dirs()):
        for f in Path(d).glob("*.txt"):
            link = tmp_path / f.stem
            if link.is_symlink():
                link.unlink()
            link.symlink_to(f)
    r = subprocess.run(["smilint", "-l", "6", "-s", str(tmp_path / mib.MODULE)],
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
