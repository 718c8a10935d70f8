"""The package reads by role, and the thin client carries only its own part.

get_hosts runs on a weak thin client at every login: what it imports is its
start-up time and its memory, and what a thin-client image must carry. These
tests lock that set (by running the real get_hosts against real agents and
reading the interpreter's modules as it exits) and the direction of imports
between the roles (snmplb's docstring has the map).
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ALL_ROLES, COMMUNITY, ROLES, V3
from snmplb.lab.fleet import PROJECT, FakeLoad, Fleet

PACKAGE = PROJECT / "snmplb"
TOP = {"snmplb", "snmplb.mib", "snmplb._mibdata", "snmplb.errors", "snmplb.record", "snmplb.kvfile",
       "snmplb.safefile", "snmplb.adminfile", "snmplb.argtypes", "snmplb.usm",
       "snmplb.affinity"}
# What each role may import besides the shared top level and itself.
MAY_IMPORT = {"client": set(), "login": {"client"}, "nms": {"client"}, "agent": set(), "admin": set(),
              "build": {"client", "agent", "admin", "login", "nms"}, "lab": {"client", "agent", "admin", "build", "login", "nms"}}
# A module that SNMPv3 privacy needs, from python3-cryptography (and its C binding).
V3_EXTRA = ("cryptography", "_cffi_backend", "cffi", "_openssl")
DUMP = "import atexit, json, sys; atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr)); "


def _imports(path: Path) -> set[str]:
    """The snmplb modules a file imports, anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snmplb"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("snmplb"))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the layout uses absolute ones")
    return found


def _role(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in MAY_IMPORT else None


@pytest.mark.parametrize("role", sorted(MAY_IMPORT))
def test_a_role_imports_only_the_shared_top_and_the_roles_it_builds_on(role):
    files = sorted((PACKAGE / role).glob("*.py"))
    assert files
    for path in files:
        for module in _imports(path):
            other = _role(module)
            assert other in (None, role) or other in MAY_IMPORT[role], f"{path.name} imports {module}"


def test_the_package_map_says_what_this_file_enforces():
    """snmplb/__init__.py's map names every module of each role, and what each role uses is MAY_IMPORT."""
    import re

    import snmplb

    doc = snmplb.__doc__ or ""
    blocks = dict(re.findall(r"^(\w+)/ +(.*?)(?=^\w+/ |^gethosts and nmscheck)", doc, re.M | re.S))
    assert set(blocks) == set(MAY_IMPORT), set(blocks) ^ set(MAY_IMPORT)
    for role, text in blocks.items():
        uses = re.search(r"uses ([a-z, ]+)", text)
        named = set() if "uses no other role" in text else set(re.split(r",\s*", uses.group(1).strip())) if uses else None
        assert named == MAY_IMPORT[role], (role, named)
        words = set(re.findall(r"[a-z_0-9]+", text))
        missing = [p.stem for p in (PACKAGE / role).glob("*.py") if p.stem != "__init__" and p.stem not in words]
        assert missing == [], (role, missing)
    for module in TOP - {"snmplb"}:
        assert module.split(".")[1] in doc, module


def test_every_module_sits_in_a_role_or_is_shared():
    top = {f"snmplb.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    shims = {"snmplb.gethosts", "snmplb.nmscheck"}
    assert top - shims <= TOP, top - shims - TOP


def _run_get_hosts(env: dict[str, str]):
    """get_hosts as the wrapper starts it (python -I -c), with the module list printed at exit (main,
    not main_and_exit: that one leaves by os._exit, past atexit; they import the same)."""
    code = "from snmplb.client.gethosts import main; main()"
    r = subprocess.run([sys.executable, "-I", "-c", DUMP + code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    modules = json.loads(r.stderr.strip().splitlines()[-1])
    return r.stdout, modules


def _outside(modules: list[str], allowed_extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(snmplb modules outside the client's set, modules outside the standard library)."""
    ours = [m for m in modules if m.startswith("snmplb")]
    foreign = [m for m in ours if m not in TOP and not m.startswith("snmplb.client.") and m != "snmplb.client"]
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    third = [m for m in modules
             if m.split(".")[0] not in stdlib and not m.startswith("snmplb") and not m.startswith(allowed_extra)
             and m != "__main__" and not m.startswith(("__editable__", "_distutils_hack"))]  # the dev venv's finders
    return foreign, third


@pytest.mark.parametrize("algorithm", ["balanced", "thresholded", "sticky", "lbserver", "best"])
def test_get_hosts_pulls_in_only_the_client_and_the_standard_library(fleet: Fleet, algorithm):
    """A real v2c poll of real agents with each kind of algorithm (sticky reads the MAC, lbserver asks
    over HTTP): nothing of the agent, admin, NMS, login or lab parts, nothing outside the stdlib."""
    a = fleet.add("a", FakeLoad(load1=0.2))
    b = fleet.add("b", FakeLoad(load1=3.0))
    env = {"PATH": os.environ["PATH"], "LB_SERVERS": f"{a.address} {b.address}", "LB_SNMP_COMMUNITY": COMMUNITY,
           "LB_ALGORITHM": algorithm, "LB_LBSERVER_URL": "http://127.0.0.1:1/", "SNMPLB_CLIENT_CONF": "/nonexistent"}
    out, modules = _run_get_hosts(env)
    assert sorted(out.split()) == sorted([a.host, b.host]), out
    foreign, third = _outside(modules)
    assert foreign == [] and third == [], (foreign, third)
    assert "snmplb.client.gethosts" in modules and "snmplb.client.describe" not in modules


def test_snmpv3_adds_only_cryptography(fleet: Fleet):
    a = fleet.add("a")
    env = {"PATH": os.environ["PATH"], "LB_SERVERS": a.address, "LB_SNMP_VERSION": "3", "LB_SNMP_USER": V3.name,
           "LB_SNMP_AUTH_PASSPHRASE": V3.auth_pass, "LB_SNMP_PRIV_PASSPHRASE": V3.priv_pass,
           "SNMPLB_CLIENT_CONF": "/nonexistent"}
    out, modules = _run_get_hosts(env)
    assert out.split() == [a.host]
    foreign, third = _outside(modules, V3_EXTRA)
    assert foreign == [] and third == [], (foreign, third)
    assert "cryptography" in modules


def test_an_old_get_hosts_script_meeting_the_new_package_still_prints_a_line(fleet: Fleet, tmp_path: Path):
    """Wrappers installed before the move call snmplb.gethosts.main_and_exit: the shim keeps them working."""
    a = fleet.add("a")
    old = (PROJECT / "chroot" / "get_hosts").read_text().replace(
        "from snmplb.client.gethosts import main_and_exit", "from snmplb.gethosts import main_and_exit")
    assert "from snmplb.gethosts import" in old
    script = tmp_path / "get_hosts"
    script.write_text(old)
    script.chmod(0o755)
    r = subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "SNMPLB_PYTHON": sys.executable, "LB_SERVERS": a.address,
                            "LB_SNMP_COMMUNITY": COMMUNITY, "SNMPLB_CLIENT_CONF": "/nonexistent"})
    assert r.returncode == 0 and r.stdout == f"{a.host}\n", (r.stdout, r.stderr)
    assert "snmplb failed" not in r.stderr


# What get_hosts must not import on its common path (v2c, addresses, the default algorithm): each costs a
# thin client start-up time (docs/benchmarks.md measures them), and none is needed there.
NOT_AT_START = ("site", "typing", "re", "enum", "dataclasses", "collections", "threading", "socket", "pathlib", "hashlib",
                "json", "urllib", "ipaddress", "snmplb.client.lookups", "snmplb.client.lbserver", "snmplb.client.describe")


def _plain_install(base: Path) -> Path:
    """A venv with the package copied in, as a regular (non-editable) install lays it out: the
    thin client's /opt/snmplb. Returns its python."""
    venv = base / "opt-snmplb"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    shutil.copytree(PACKAGE, site / "snmplb", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(site / "snmplb")], check=True,
                   timeout=120)
    return venv / "bin" / "python"


def test_the_get_hosts_script_starts_python_without_site_and_imports_only_what_the_poll_needs(fleet: Fleet,
                                                                                              tmp_path: Path):
    """chroot/get_hosts as LDM runs it, with snmplb installed as on a thin client: the interpreter starts
    without the site module (-S) and still finds the package; the modules it loads are read from
    ``-X importtime`` (added by a shim in front of the venv's python: it sees the script's own flags)."""
    a, b = fleet.add("a", FakeLoad(load1=0.2)), fleet.add("b", FakeLoad(load1=3.0))
    python = _plain_install(tmp_path)
    shim = tmp_path / "python3"
    shim.write_text(f'#!/bin/sh\necho "$*" > {tmp_path / "argv"}\nexec {python} -X importtime "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "SNMPLB_PYTHON": str(shim), "LB_SERVERS": f"{a.address} {b.address}",
           "LB_SNMP_COMMUNITY": COMMUNITY, "SNMPLB_CLIENT_CONF": "/nonexistent"}
    r = subprocess.run([str(PROJECT / "chroot" / "get_hosts")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and sorted(r.stdout.split()) == sorted([a.host, b.host]), (r.stdout, r.stderr)
    assert (tmp_path / "argv").read_text().startswith("-I -S -c ")
    modules = [ln.split("|")[-1].strip() for ln in r.stderr.splitlines()
               if ln.startswith("import time:") and "self [us]" not in ln]
    assert "snmplb.client.gethosts" in modules, r.stderr
    foreign, third = _outside(modules)
    assert foreign == [] and third == [], (foreign, third)
    loaded = [m for m in NOT_AT_START if m in modules]
    assert loaded == [], loaded


def test_no_test_file_imports_from_another():
    """Shared helpers live in conftest.py, support.py, farm.py, netfixtures.py and nsdns.py, never in a test file."""
    tests = Path(__file__).parent
    offenders = [f"{path.name} imports {module}" for path in sorted(tests.glob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text()))
                 for module in ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                 if module.split(".")[0].startswith("test_")]
    assert offenders == []


def test_every_test_file_names_its_roles_so_that_a_change_to_a_role_finds_its_tests():
    """``./test -m agent`` runs every test of the agent: each test file is in conftest.ROLES, with roles
    that are the package's (the subpackages MAY_IMPORT lists), and no entry names a file that is gone."""
    files = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    assert sorted(files - ROLES.keys()) == [], "add these test files to ROLES in tests/conftest.py"
    assert sorted(ROLES.keys() - files) == [], "these files are gone: remove them from ROLES in tests/conftest.py"
    assert set(ALL_ROLES) == set(MAY_IMPORT)
    assert {f: r for f, r in ROLES.items() if not r or not set(r) <= set(ALL_ROLES)} == {}


def test_every_type_ignore_in_the_package_names_its_error_and_says_why():
    """mypy runs strict over the package (./test); where it is told to look away, the line says which error
    (mypy itself refuses an ignore without one) and why: in a comment after it, or on the line above."""
    bare = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            at = line.find("# type: ignore")
            if at < 0:
                continue
            rest = line[at + len("# type: ignore"):]
            why = rest.partition("]")[2].strip().lstrip("#").strip() if rest.startswith("[") else ""
            above = lines[i - 1].strip() if i else ""
            if not rest.startswith("[") or not (why or above.startswith("#")):
                bare.append(f"{path.relative_to(PROJECT)}:{i + 1}")
    assert bare == []


# The login selection exists once (snmplb.client.selection, driven by snmplb.client.driver): what it is
# made of may be imported only by the modules that make it up, never by a front end that would re-derive it.
SELECTION_PARTS = {
    "snmplb.client.algorithms.decide": {"snmplb/client/selection.py"},
    "snmplb.client.algorithms.Context": {"snmplb/client/selection.py", "snmplb/client/balanced.py"},
    "snmplb.client.sampling.sample_servers": {"snmplb/client/selection.py"},
    "snmplb.client.sampling.weight_drift": {"snmplb/client/selection.py"},
    "snmplb.client.settings.sample_weights_of": {"snmplb/client/selection.py"},
    # check_snmplb builds its settings from its own options, not a login's (no client.conf, no lts.conf).
    "snmplb.client.settings.from_env": {"snmplb/client/sources.py", "snmplb/nms/plugin.py"},
    "snmplb.client.clientconf.read_client_conf": {"snmplb/client/sources.py"},
    "snmplb.client.clientid.default_mac": {"snmplb/client/driver.py"},
    # check_snmplb asks one server, with no selection: the NMS plugin is the poll's other driver.
    "snmplb.client.poller.poll": {"snmplb/client/driver.py", "snmplb/nms/plugin.py"},
    "snmplb.client.gethosts": {"snmplb/gethosts.py"},  # the entry point: its shim only (and the script)
}


def test_the_login_selection_is_assembled_in_one_place():
    """get_hosts, pick, connect, status, feed, the chooser and the simulator drive ``Selection``; none of
    them (nor anything else in the package or bench/) imports the parts of the plan or the decision."""
    sources = sorted(PACKAGE.rglob("*.py")) + sorted((PROJECT / "bench").glob("*.py"))
    offenders = []
    for path in sources:
        rel = str(path.relative_to(PROJECT))
        imported = _imports(path)
        for part, allowed in SELECTION_PARTS.items():
            if part in imported and rel not in allowed:
                offenders.append(f"{rel} imports {part}")
    assert offenders == []
    # The simulator drives the same object (and nothing of the old closures).
    storm = (PROJECT / "bench" / "storm.py").read_text()
    assert "Selection(" in storm and "selection.decide(" in storm
