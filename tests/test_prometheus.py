"""Prometheus: Debian's real snmp_exporters serve the generated module and scrape real snmpd + agent
instances; promtool checks and unit-tests the alert rules; the Grafana dashboard's queries are parsed by
promtool and only use metrics the module exports.

The exporters: the installed one (Debian 12's 0.21, one config file: snmp.yml appended to the site's),
Debian 13's and Debian unstable's (the archive's newest; several config files: snmplb-snmp.yml next to the
site's snmp.yml), both fetched from this machine's own Debian mirror by scripts/fetch-snmp-exporter into
.venv/snmp-exporters, once (a package fetch in setup; the tests themselves talk to loopback only)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import COMMUNITY, V3, wait_for
from snmplb import mib
from snmplb.build import promgen
from snmplb.build import promrules
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import PROJECT, FakeLoad

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

PROM = PROJECT / "nms" / "prometheus"
EXPORTER = shutil.which("prometheus-snmp-exporter")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (package prometheus) not installed")
FETCH = PROJECT / "scripts" / "fetch-snmp-exporter"
# "installed": Debian 12's (scripts/setup.sh); trixie: Debian 13's; sid: the newest in Debian's archive.
EXPORTERS = ("installed", "trixie", "sid")
FETCH_TIMEOUT = 1200  # the helper bounds each apt run itself (300 s); this is the backstop


@dataclass(frozen=True)
class Binary:
    """One snmp_exporter: its path, version and the package's files (its default /etc/prometheus/snmp.yml)."""

    origin: str
    path: str
    version: str
    root: Path

    @property
    def release(self) -> tuple[int, int]:
        major, minor = re.match(r"(\d+)\.(\d+)", self.version).groups()
        return int(major), int(minor)

    @property
    def several_files(self) -> bool:
        """0.24 and later take several --config.file (and read auths apart from modules, since 0.23)."""
        return self.release >= (0, 24)


_BINARIES: dict[str, Binary | str] = {}  # origin -> the binary, or why there is none (the skip reason)


def _find_binary(origin: str) -> Binary | str:
    if origin == "installed":
        if EXPORTER is None:
            return "prometheus-snmp-exporter not installed (scripts/setup.sh installs it)"
        path, root = EXPORTER, Path("/")
    else:
        try:
            r = subprocess.run([sys.executable, str(FETCH), origin], capture_output=True, text=True,
                               timeout=FETCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"scripts/fetch-snmp-exporter {origin} did not finish in {FETCH_TIMEOUT} s"
        if r.returncode in (3, 4, 5):  # archive unreachable, no such package, does not run here
            return f"no snmp_exporter from Debian {origin}: {r.stderr.strip()}"
        assert r.returncode == 0 and r.stdout.count("\n") == 2, r.stdout + r.stderr
        path = r.stdout.splitlines()[0]
        root = Path(path).parents[2]  # ROOT/usr/bin/prometheus-snmp-exporter
    r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"version (\d+\.\d+\.\d+)", r.stdout + r.stderr)
    assert r.returncode == 0 and m, r.stdout + r.stderr
    return Binary(origin, path, m.group(1), root)


@pytest.fixture(params=EXPORTERS)
def binary(request: pytest.FixtureRequest) -> Binary:
    """Each exporter in turn; fetched once per session (the helper caches it across sessions)."""
    if request.param not in _BINARIES:
        _BINARIES[request.param] = _find_binary(request.param)
    found = _BINARIES[request.param]
    if isinstance(found, str):
        pytest.skip(found)
    return found


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of Prometheus' text format: (name, labels, value); comments skipped."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, line
            labels = {k: bytes(v, "utf-8").decode("unicode_escape") for k, v in LABEL.findall(m.group(2) or "")}
            out.append((m.group(1), labels, float(m.group(3))))
    return out


# Straight to loopback: an http_proxy in the environment must not carry these requests off the machine.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """A snmp_exporter on a loopback port with its config files; killed by stop()."""

    def __init__(self, binary: Binary, configs: list[Path], log: Path) -> None:
        self.binary, self.log = binary, log
        for _ in range(3):  # the free port may be taken before the exporter binds it: a few tries
            self.port = _free_tcp_port()
            self._log = open(log, "wb")
            self.proc = subprocess.Popen([binary.path, *(f"--config.file={c}" for c in configs),
                                          f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=debug"],
                                         stdout=self._log, stderr=subprocess.STDOUT)
            if wait_for(self._up, timeout=20) and self.proc.poll() is None:
                return
            self.stop()
        raise AssertionError(f"snmp_exporter {binary.version} did not start: {log.read_text()[-2000:]}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            return True  # exited: stop waiting (the caller sees it is not serving)
        try:
            with _LOCAL.open(f"http://127.0.0.1:{self.port}/", timeout=2):
                return True
        except OSError:
            return False

    def scrape(self, target: str, module: str = promgen.MODULE, auth: str | None = promgen.AUTH) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}/snmp?target={target}&module={module}" + (f"&auth={auth}" if auth else "")
        try:
            with _LOCAL.open(url, timeout=30) as r:  # the module's own SNMP timeout is 5 s x 3 tries
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def scrape_v3(self, target: str) -> tuple[int, str]:
        """As nms/README.md says: 0.21 and 0.22 have a v3 module, later versions a v3 auth."""
        if self.binary.release >= (0, 23):
            return self.scrape(target, promgen.MODULE, promgen.AUTH_V3)
        return self.scrape(target, promgen.MODULE_V3, None)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()


def with_secrets(text: str) -> str:
    """A shipped file as a site deploys it: the placeholders replaced by the secrets (here the fleet's)."""
    for placeholder, secret in ((promgen.COMMUNITY_PLACEHOLDER, COMMUNITY), (promgen.AUTH_PLACEHOLDER, V3.auth_pass),
                                (promgen.PRIV_PLACEHOLDER, V3.priv_pass)):
        assert placeholder in text
        text = text.replace(placeholder, secret)
    return text


SITE_MODULE, SITE_AUTH = "site_uptime", "site_v2"


def site_snmp_yml(binary: Binary) -> str:
    """The site's own /etc/prometheus/snmp.yml: the package's (comments only) and a module of the site's."""
    default = binary.root / "etc" / "prometheus" / "snmp.yml"
    text = default.read_text() if default.is_file() else ""
    module = {"get": ["1.3.6.1.2.1.1.3.0"], "timeout": "1s",
              "metrics": [{"name": "sysUpTime", "oid": "1.3.6.1.2.1.1.3", "type": "gauge", "help": "uptime"}]}
    if binary.release >= (0, 23):
        site = {"auths": {SITE_AUTH: {"community": "the-sites-own", "version": 2}}, "modules": {SITE_MODULE: module}}
    else:
        site = {SITE_MODULE: {**module, "version": 2, "auth": {"community": "the-sites-own"}}}
    return text + yaml.safe_dump(site)


def deployed_configs(binary: Binary, tmp_path: Path) -> list[Path]:
    """The config files as nms/README.md deploys them next to the site's snmp.yml, which keeps its module:
    0.24 and later take snmplb-snmp.yml as a second --config.file; 0.21 and 0.22 read one file, so
    snmp.yml is appended to the site's."""
    site = tmp_path / "snmp.yml"
    site.write_text(site_snmp_yml(binary))
    files = [site]
    if binary.several_files:
        files.append(tmp_path / "snmplb-snmp.yml")
        files[1].write_text(with_secrets((PROM / "snmplb-snmp.yml").read_text()))
    else:
        with site.open("a") as f:
            f.write(with_secrets((PROM / "snmp.yml").read_text()))
    for f in files:
        f.chmod(0o600)
    return files


def published(netsnmp, inst) -> dict[str, str]:
    """What the agent publishes, by snmpget (numeric values, strings unquoted)."""
    objs = promgen.exported()
    r = netsnmp.v2c("snmpget", inst, *(mib.oid_str(o.instance) for o in objs), opts=("-On", "-Oe", "-Oqv"))
    assert r.returncode == 0, r.stderr
    values = r.stdout.splitlines()
    assert len(values) == len(objs), r.stdout
    return {o.name: v.strip().strip('"') for o, v in zip(objs, values)}


# Objects that move between the snmpget and the scrape (time, rates over the agent's window).
MOVING = {"lbDataAge", "lbInService", "lbSwapInRate", "lbSwapOutRate", "lbLoginRate", "lbSwapInPages"}


def assert_matches(samples, snmp: dict[str, str]) -> None:
    """Every exported object's series carry the value snmpget read."""
    by_name: dict[str, list] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    for o in promgen.exported():
        name, kind, raw = promgen.metric_name(o), promgen.metric_type(o), snmp[o.name]
        if kind == "EnumAsStateSet":
            states = {labels[name]: value for labels, value in by_name[name]}
            assert set(states) == set(o.enums), (name, states)  # one series per state of the MIB
            expect = {label: 1.0 if str(n) == raw else 0.0 for label, n in o.enums.items()}
            assert states == expect, (name, raw, states)
        elif kind == "EnumAsInfo":
            ((labels, value),) = by_name[name + "_info"]
            assert value == 1 and o.enums[labels[name]] == int(raw), (name, raw, labels)
        elif o.hint == "d-2":
            ((_, value),) = by_name[name]
            assert value == pytest.approx(int(raw) / 100, abs=1e-9), (name, raw, value)
        elif o.base == "OCTET STRING":
            ((labels, value),) = by_name[name]
            assert value == 1 and labels[name] == raw, (name, raw, labels)
        elif o.name not in MOVING:
            ((_, value),) = by_name[name]
            assert value == int(raw), (name, raw, value)
        else:
            assert name in by_name, name


def value(samples, name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_snmp_exporter_scrapes_the_agent_values(binary, fleet, netsnmp, tmp_path):
    """Each exporter, configured as nms/README.md says, scrapes what the agents publish."""
    idle = fleet.add("idle", FakeLoad(load1=1.5, load5=1.2, load15=0.07, cpus=4,
                                      sessions=(("ann", "10.0.0.1"), ("bob", "10.0.0.2"), ("ann", "10.0.0.3"))))
    drain = fleet.add("drain", FakeLoad(load1=0.5), AdminSettings(state="draining"))
    swap = fleet.add("swap", FakeLoad(pswpin=0))
    broken = fleet.add("broken", agent="/bin/false")  # snmpd answers, SNMPLB-MIB's objects are missing
    published(netsnmp, swap)  # snmpd starts the agent at the first request: its baseline is 0 pages
    stop = threading.Event()

    def keep_swapping() -> None:
        """Swap-ins keep arriving (the agent averages over 10 s), so the server stays swapping throughout."""
        for i in range(1, 300):  # bounded: 300 s at most, and stopped by the test's end
            swap.set_load(FakeLoad(pswpin=i * 100_000))
            if stop.wait(1.0):
                return

    bumper = threading.Thread(target=keep_swapping, daemon=True)
    bumper.start()
    exporter = None
    try:
        assert wait_for(lambda: published(netsnmp, swap)["lbSwapping"] == str(mib.obj("lbSwapping").enums["true"]),
                        timeout=15)
        exporter = Exporter(binary, deployed_configs(binary, tmp_path), tmp_path / "exporter.log")
        for inst in (idle, drain, swap):
            snmp = published(netsnmp, inst)
            code, text = exporter.scrape(inst.address)  # host:port (0.21: net.SplitHostPort); 0.21 ignores auth
            assert code == 200, text[-2000:]
            samples = parse_exposition(text)
            assert_matches(samples, snmp)
        # The figures the fake servers were given, end to end.
        s = parse_exposition(exporter.scrape(idle.address)[1])
        assert value(s, "snmplb_load1") == 1.5 and value(s, "snmplb_load15") == 0.07
        assert value(s, "snmplb_load_per_cpu") == pytest.approx(0.38, abs=0.006)
        assert value(s, "snmplb_cpus") == 4 and value(s, "snmplb_sessions") == 3 and value(s, "snmplb_users") == 2
        assert value(s, "snmplb_mem_total_kibibytes") == 8 * 1024 * 1024
        assert value(s, "snmplb_status", snmplb_status="busy") + value(s, "snmplb_status", snmplb_status="idle") == 1
        assert value(s, "snmplb_admin_state", snmplb_admin_state="enabled") == 1
        assert value(s, "snmplb_swapping", snmplb_swapping="false") == 1
        assert "snmplb_row" not in text and "lbRow" not in text
        d = parse_exposition(exporter.scrape(drain.address)[1])
        assert value(d, "snmplb_admin_state", snmplb_admin_state="draining") == 1
        assert value(d, "snmplb_status", snmplb_status="draining") == 1 and value(d, "snmplb_rating") == 0
        w = parse_exposition(exporter.scrape(swap.address)[1])
        assert value(w, "snmplb_swapping", snmplb_swapping="true") == 1
        assert value(w, "snmplb_status", snmplb_status="swapping") == 1
        assert value(w, "snmplb_swap_in_pages_total") >= 100_000
        # SNMPv3 authPriv, with the passphrases from the deployed file.
        code, text = exporter.scrape_v3(idle.address)
        assert code == 200 and value(parse_exposition(text), "snmplb_sessions") == 3, text[-2000:]
        # The site's own module is still there: it runs (against a closed port: refused at once).
        code, text = exporter.scrape("127.0.0.60:1", SITE_MODULE, SITE_AUTH)
        assert code == 500 and "snmp_error" in text, (code, text[-2000:])
        assert exporter.scrape("127.0.0.60:1", "no_such_module", SITE_AUTH)[0] == 400  # what a lost one gives
        # snmpd without the agent: the scrape succeeds with no snmplb series (SnmplbServerDown's second half).
        code, text = exporter.scrape(broken.address)
        assert code == 200 and not [n for n, _, _ in parse_exposition(text) if n.startswith("snmplb_")], text
        # A target that does not answer: the scrape fails, so Prometheus records up == 0.
        code, text = exporter.scrape("127.0.0.60:1")
        assert code == 500 and "snmp_error" in text, (code, text)
        log = exporter.log.read_text()
        for secret in (COMMUNITY, V3.auth_pass, V3.priv_pass):
            assert secret not in log
    finally:
        stop.set()
        bumper.join(timeout=10)
        if exporter:
            exporter.stop()


def dry_run(binary: Binary, *configs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary.path, *(f"--config.file={c}" for c in configs), "--dry-run"],
                          capture_output=True, text=True, timeout=60)


def test_each_exporter_takes_the_file_nms_readme_gives_it(binary, tmp_path):
    """--dry-run (strict parsing) of the files as deployed, next to the site's snmp.yml; and the other
    format refused, so that nms/README.md's table of versions stays true."""
    configs = deployed_configs(binary, tmp_path)
    r = dry_run(binary, *configs)
    assert r.returncode == 0, r.stdout + r.stderr
    other = tmp_path / "other.yml"
    if binary.several_files:
        # snmplb-snmp.yml alone (a site without a snmp.yml of its own) is a whole configuration.
        r = dry_run(binary, configs[1])
        assert r.returncode == 0, r.stdout + r.stderr
        other.write_text(with_secrets((PROM / "snmp.yml").read_text()))
        r = dry_run(binary, configs[0], other)
        assert r.returncode != 0 and "snmplb" in r.stdout + r.stderr, r.stdout + r.stderr
        # A name in two files (here the module given twice) stops the exporter: no silent override.
        r = dry_run(binary, *configs, configs[1])
        assert r.returncode != 0 and 'key \\"snmplb\\" already set in map' in r.stderr, r.stdout + r.stderr
    else:
        # One file only, and not the 0.24 format.
        other.write_text(with_secrets((PROM / "snmplb-snmp.yml").read_text()))
        r = dry_run(binary, other)
        assert r.returncode != 0 and "snmplb" in r.stdout + r.stderr, r.stdout + r.stderr
        r = dry_run(binary, configs[0], configs[0])
        assert r.returncode != 0 and "cannot be repeated" in r.stderr, r.stdout + r.stderr
        # Appended twice by mistake: refused, not half-used.
        with configs[0].open("a") as f:
            f.write(with_secrets((PROM / "snmp.yml").read_text()))
        r = dry_run(binary, configs[0])
        assert r.returncode != 0 and 'key \\"snmplb\\" already set in map' in r.stderr, r.stdout + r.stderr


def test_both_formats_carry_the_same_module():
    """snmplb-snmp.yml (0.24+) is snmp.yml's (0.21/0.22) module with its auths apart; generator.yml names
    the same metrics."""
    old = yaml.safe_load((PROM / "snmp.yml").read_text())
    new = yaml.safe_load((PROM / "snmplb-snmp.yml").read_text())
    assert set(old) == {promgen.MODULE, promgen.MODULE_V3}
    assert set(new) == {"auths", "modules"} and set(new["modules"]) == {promgen.MODULE}
    assert set(new["auths"]) == {promgen.AUTH, promgen.AUTH_V3}
    for module in old.values():
        assert {k: v for k, v in module.items() if k not in ("auth", "version")} == new["modules"][promgen.MODULE]
    assert new["auths"][promgen.AUTH] == {**old[promgen.MODULE]["auth"], "version": 2}
    assert new["auths"][promgen.AUTH_V3] == {**old[promgen.MODULE_V3]["auth"], "version": 3}
    gen = yaml.safe_load((PROM / "generator.yml").read_text())
    overrides = gen["modules"]["snmplb"]["overrides"]
    assert {ov["name"] for ov in overrides.values()} == {m["name"] for m in new["modules"]["snmplb"]["metrics"]}
    assert set(gen["auths"]) == set(new["auths"])


def test_module_follows_the_mib():
    """Every object but lbRow, with the MIB's OID, type and every enumeration value; no secret in the files."""
    doc = yaml.safe_load((PROM / "snmp.yml").read_text())
    for module in (promgen.MODULE, promgen.MODULE_V3):
        metrics = {m["oid"]: m for m in doc[module]["metrics"]}
        assert len(metrics) == len(mib.OBJECTS) - 1
        for o in mib.OBJECTS:
            m = metrics.get(".".join(map(str, o.oid)))
            if o.name == "lbRow":
                assert m is None
                continue
            assert m["name"].startswith("snmplb_") and m["help"]
            assert m.get("enum_values", {}) == {n: label for label, n in o.enums.items()}, o.name
            if o.hint == "d-2":  # hundredths: the regex extracts give the real number (promgen's docstring)
                assert m["type"] == "DisplayString" and m["regex_extracts"] == {"": promgen._HUNDREDTHS}
            else:
                assert m["type"] == {"Counter64": "counter", "Gauge32": "gauge"}.get(o.base, m["type"])
        assert doc[module]["get"] == [".".join(map(str, o.instance)) for o in mib.OBJECTS if o.name != "lbRow"]
    assert doc[promgen.MODULE_V3]["auth"]["security_level"] == "authPriv"
    for f in PROM.glob("*.yml"):
        text = f.read_text()
        assert COMMUNITY not in text and "public" not in text and V3.auth_pass not in text


@pytest.mark.parametrize("hundredths, shown", [(0, 0.0), (7, 0.07), (42, 0.42), (100, 1.0), (150, 1.5),
                                               (12345, 123.45), (4294967295, 42949672.95)])
def test_the_hundredths_regex_gives_the_real_number(hundredths, shown):
    """The same regexes snmp_exporter applies (it anchors them; Go's $1 expands like Python's \\1)."""
    for rule in promgen._HUNDREDTHS:
        m = re.fullmatch(rule["regex"], str(hundredths))
        if m:
            assert float(m.expand(rule["value"].replace("$1", r"\1").replace("$2", r"\2"))) == shown
            return
    raise AssertionError(hundredths)


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules():
    r = subprocess.run([PROMTOOL, "check", "rules", str(PROM / "snmplb-rules.yml")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    tests = sorted((PROJECT / "tests" / "prometheus").glob("*.yml"))
    assert tests
    r = subprocess.run([PROMTOOL, "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=300,
                       cwd=PROJECT)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_every_alert_has_a_unit_test_that_fires_it():
    rules = yaml.safe_load((PROM / "snmplb-rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    fired, quiet = set(), set()
    for f in (PROJECT / "tests" / "prometheus").glob("*.yml"):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts == fired == quiet, (alerts - fired, alerts - quiet)
    needed = {"SnmplbServerDown", "SnmplbSwapping", "SnmplbFull", "SnmplbDrainingTooLong", "SnmplbUnavailable",
              "SnmplbAdminFileProblem", "SnmplbDataStale", "SnmplbFleetSessionsNearMaximum",
              "SnmplbFleetCapacityLow"}
    assert needed <= alerts


# PromQL words that are not metric names.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "inf", "nan", "le"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, ranges and grouping dropped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        if not m.group(2) and m.group(1).lower() not in _PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", m.group(1)):
            names.add(m.group(1))
    return names


def test_metric_names_parser():
    assert metric_names('sum by (instance) (rate(snmplb_a_total[5m])) / on(instance) snmplb_b{x="y"} > 0.9') == \
        {"snmplb_a_total", "snmplb_b"}
    assert metric_names('up{job="snmplb"} == 0 unless snmplb_c offset 5m') == {"up", "snmplb_c"}


def dashboard_exprs() -> list[str]:
    dash = json.loads((PROJECT / "nms" / "grafana" / "snmplb-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def exported_names() -> frozenset[str]:
    """Every series name the module exposes (an EnumAsInfo object's name gains ``_info``)."""
    return frozenset(promgen.metric_name(o) + ("_info" if promgen.metric_type(o) == "EnumAsInfo" else "")
                     for o in promgen.exported())


def test_dashboard_and_rules_use_only_exported_metrics():
    known = exported_names() | {"up"}
    exprs = dashboard_exprs()
    assert len(exprs) >= 8
    rules = yaml.safe_load((PROM / "snmplb-rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expr in exprs:
        names = metric_names(expr)
        assert names and names <= known, (expr, names - known)
    used = set().union(*map(metric_names, dashboard_exprs()))
    for wanted in ("snmplb_sessions", "snmplb_max_sessions", "snmplb_status", "snmplb_load_per_cpu",
                   "snmplb_mem_available_percent", "snmplb_swap_in_pages_per_second", "snmplb_logins_per_minute",
                   "snmplb_ssh_connections"):
        assert wanted in used, wanted


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    """promtool has no bare query parser: each query becomes a recording rule it must accept."""
    exprs = [e.replace("$__rate_interval", "5m").replace("$instance", ".*") for e in dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(yaml.safe_dump(rules))
    r = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_json_shape():
    dash = json.loads((PROJECT / "nms" / "grafana" / "snmplb-dashboard.json").read_text())
    assert dash["title"] and dash["uid"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}" and t["refId"]
    assert promrules.dashboard() == (PROJECT / "nms" / "grafana" / "snmplb-dashboard.json").read_text()


GENERATOR = shutil.which("prometheus-snmp-generator")


@pytest.mark.skipif(GENERATOR is None, reason="prometheus-snmp-generator not installed")
def test_upstreams_generator_reads_the_mib_as_promgen_does(tmp_path):
    """Debian's prometheus-snmp-generator (0.21, net-snmp's MIB parser) from our generator.yml's walk and
    types: the same instances, OIDs, types and enumerations as our snmp.yml. 0.21's generator knows no
    ``auths``, ``name`` or ``scale``, so those are left out of its input (its metrics keep the MIB names)."""
    from snmplb.build import mibgen

    gen = yaml.safe_load((PROM / "generator.yml").read_text())["modules"]["snmplb"]
    types = {name: ov["type"] for name, ov in gen["overrides"].items() if "type" in ov}
    (tmp_path / "generator.yml").write_text(yaml.safe_dump(
        {"modules": {"snmplb": {"walk": gen["walk"], "version": 2,
                                "overrides": {name: {"type": t} for name, t in types.items()}}}}))
    r = subprocess.run([GENERATOR, "generate"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "MIBDIRS": ":".join(mibgen.mib_search_dirs())})
    assert r.returncode == 0, r.stdout + r.stderr
    theirs = yaml.safe_load((tmp_path / "snmp.yml").read_text())["snmplb"]
    ours = yaml.safe_load((PROM / "snmp.yml").read_text())[promgen.MODULE]
    assert sorted(theirs["get"]) == sorted(ours["get"])
    by_oid = {m["oid"]: m for m in theirs["metrics"]}
    assert set(by_oid) == {m["oid"] for m in ours["metrics"]}
    for m in ours["metrics"]:
        t = by_oid[m["oid"]]
        o = mib.obj(t["name"])  # theirs are named as in the MIB
        assert m["name"] == promgen.metric_name(o)
        assert m.get("enum_values") == t.get("enum_values"), o.name
        assert m["type"] == ("DisplayString" if o.hint == "d-2" else t["type"]), o.name  # loads: see promgen
        assert t["help"].startswith(" ".join(o.description.split())[:40]), o.name


PROMETHEUS = shutil.which("prometheus")


def _api(port: int, path: str) -> dict:
    with _LOCAL.open(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=10) as r:
        return json.loads(r.read())


def readme_prometheus_yml() -> dict:
    """nms/README.md's prometheus.yml example: the yaml block with the snmplb job."""
    text = (PROJECT / "nms" / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "job_name: snmplb" in b]
    return yaml.safe_load(block)


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed")
def test_prometheus_scrapes_through_the_exporter_and_evaluates_the_rules(binary, fleet, netsnmp, tmp_path):
    """A real Prometheus with nms/README.md's scrape job (module and auth: one job for every exporter) and
    the rules file: the draining server's and the dead target's alerts go pending (their ``for`` is
    minutes to hours), the idle server raises none."""
    idle = fleet.add("idle", FakeLoad(load1=1.5, cpus=4))
    drain = fleet.add("drain", admin=AdminSettings(state="draining"))
    for inst in (idle, drain):
        published(netsnmp, inst)  # start the agents
    exporter = Exporter(binary, deployed_configs(binary, tmp_path), tmp_path / "exporter.log")
    port = _free_tcp_port()
    config = readme_prometheus_yml()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "snmplb" and job["params"] == {"module": [promgen.MODULE], "auth": [promgen.AUTH]}
    assert config["rule_files"] == ["/etc/prometheus/snmplb-rules.yml"]
    (to_exporter,) = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    assert to_exporter["replacement"] == "127.0.0.1:9116"  # the exporter's default port, on loopback
    # Only the paths, the targets, the port and the intervals differ from the README's.
    config["global"] = {"scrape_interval": "2s", "evaluation_interval": "1s", "scrape_timeout": "2s"}
    config["rule_files"] = [str(PROM / "snmplb-rules.yml")]
    job["static_configs"] = [{"targets": [idle.address, drain.address, "127.0.0.60:1"]}]
    to_exporter["replacement"] = f"127.0.0.1:{exporter.port}"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def pending() -> set[tuple[str, str]]:
            try:
                alerts = _api(port, "alerts")["data"]["alerts"]
            except OSError:
                return set()
            return {(a["labels"]["alertname"], a["labels"]["instance"]) for a in alerts if "instance" in a["labels"]}

        want = {("SnmplbDrainingTooLong", drain.address), ("SnmplbServerDown", "127.0.0.60:1")}
        assert wait_for(lambda: want <= pending(), timeout=60), \
            (pending(), (tmp_path / "prometheus.log").read_text()[-3000:])
        assert not [a for a in pending() if a[1] == idle.address]

        def instant(query: str) -> dict[str, str]:
            return {r["metric"]["instance"]: r["value"][1] for r in _api(port, f"query?query={query}")["data"]["result"]}

        # One scrape that overran its timeout on a loaded machine writes staleness markers, and the
        # series vanishes from an instant query until the next good scrape: wait for a good one.
        want_up = {idle.address: "1", drain.address: "1", "127.0.0.60:1": "0"}
        assert wait_for(lambda: instant("up") == want_up, timeout=30), instant("up")
        assert wait_for(lambda: instant("snmplb_load1").get(idle.address) == "1.5", timeout=30), \
            instant("snmplb_load1")
    finally:
        prom.kill()
        prom.wait(timeout=10)
        log.close()
        exporter.stop()
