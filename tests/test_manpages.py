"""The manual pages (snmplb.build.mangen) hold to the code: every command installed has its page in its
package; every option of the parser a command parses with, every LB_* variable, agent.conf key and
admin.conf key is on its page with its default; every SNMPLB_* variable a script or module reads is
documented (and none that nothing reads); the documents the pages name are installed where they say;
man(1) renders every page without a warning. debian/rules makes the pages at every package build, so
the package ships what these tests check; tests/test_debian.py runs lintian and man on the installed ones.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from snmplb import adminfile
from snmplb.agent import config as agentconf
from snmplb.build import mangen
from snmplb.build.roff import Page
from snmplb.client.settings import VARIABLES
from snmplb.lab.fleet import PROJECT

DEBIAN = PROJECT / "debian"
# Commands installed besides the console scripts, and where they come from (debian/*.install).
SCRIPTS = {"get_hosts": "chroot/get_hosts", "snmplb-session": "sessions/snmplb-session",
           "snmplb-ssh-server": "sessions/snmplb-ssh-server", "check_snmplb": "nms/check_snmplb",
           "snmplb-pam-ssh-server": "sessions/snmplb-pam-ssh-server",
           "pam_snmplb": "usr/lib/*/security/pam_snmplb.so"}  # built by debian/rules from sessions/pam_snmplb.c
NOT_INSTALLED = {"snmplb-demo"}  # debian/not-installed: the lab
# Where each page's SNMPLB_* variables are read: a shell script's $SNMPLB_..., a module's "SNMPLB_..." literal.
READERS = {
    "get_hosts.8": ["chroot/get_hosts", "snmplb/client/*.py"],
    "snmplb.1": ["snmplb/client/[!g]*.py", "snmplb/login/command.py",  # client/ but gethosts.py (LDM's entry) "snmplb/login/pick.py", "snmplb/login/feed.py",
                 "snmplb/login/connect.py", "snmplb/login/mqueue.py", "snmplb/login/feedformat.py"],
    "snmplb-chooser.1": ["snmplb/client/clientconf.py", "snmplb/client/sources.py", "snmplb/login/chooser.py",
                         "snmplb/login/feed.py"],  # it polls by itself with driver.select and deadline.after
    "snmplb-update-sshkeys.8": ["snmplb/login/hostkeys.py"],
    "snmplb-session.1": ["sessions/snmplb-session"],
    "snmplb-ssh-server.8": ["sessions/snmplb-ssh-server"],
    "snmplb-pam-ssh-server.8": ["sessions/snmplb-pam-ssh-server"],
    "pam_snmplb.8": ["sessions/pam_snmplb.c"],
    "check_snmplb.1": ["nms/check_snmplb", "snmplb/nms/*.py"],
    "snmplb-agent.8": ["snmplb/agent/*.py"],
    "snmplb-agent-check.8": ["snmplb/agent/*.py"],
    "snmplb-admin.8": ["snmplb/admin/*.py"],
}
TEST_HOOKS = {"SNMPLB_CHOOSER_STATE"}  # the chooser's window content as JSON, for tests only (chooser.py)


@pytest.fixture(scope="module")
def pages() -> dict[str, tuple[Page, str]]:
    return {page.filename: (page, package) for page, package in mangen.pages()}


def rendered(page: Page) -> str:
    return page.render("9.9", "2000-01-01", mangen.SOURCE)


def plain(roff: str) -> str:
    """roff text as a reader sees it (fonts, escapes and the no-break space undone)."""
    text = re.sub(r"\\f[BIR]", "", roff)
    return text.replace("\\-", "-").replace("\\~", " ").replace("\\&", "").replace("\\e", "\\")


def sections(page: Page) -> dict[str, str]:
    """Each section's roff source."""
    out: dict[str, str] = {}
    title = ""
    for line in rendered(page).splitlines():
        if line.startswith(".SH "):
            title = line[4:].strip('"')
        out[title] = out.get(title, "") + line + "\n"
    return out


def definitions(roff: str) -> dict[str, str]:
    """A section's .TP items: plain term -> plain text."""
    lines = roff.splitlines()
    return {plain(lines[i + 1]): plain(lines[i + 2]) for i, line in enumerate(lines) if line == ".TP"}


def console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(PROJECT / "setup.cfg")
    entries = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.strip() for name, target in (e.split("=") for e in entries)}


def installed_by(source: str) -> str:
    """The package whose <package>.install names ``source`` (a console script's usr/bin path, or a file)."""
    found = [p.name.removesuffix(".install") for p in DEBIAN.glob("*.install")
             if any(line.split()[0] == source for line in p.read_text().splitlines() if line.strip())]
    assert len(found) == 1, (source, found)
    return found[0]


def test_every_installed_command_has_its_page_in_its_package(pages):
    commands = {name: f"usr/bin/{name}" for name in console_scripts() if name not in NOT_INSTALLED}
    commands.pop("check_snmplb")  # installed as the nms/check_snmplb wrapper (debian/not-installed)
    commands.update(SCRIPTS)
    named = {f.split(".")[0] for f in pages if not f.endswith(".5")}
    assert named == set(commands), named ^ set(commands)
    for filename, (_page, package) in pages.items():
        name = filename.rsplit(".", 1)[0]
        if name in commands:
            assert installed_by(commands[name]) == package, filename
    # debian/<package>.manpages install exactly these, each in its package.
    listed = {}
    for f in DEBIAN.glob("*.manpages"):
        for line in f.read_text().split():
            listed[line.removeprefix("debian/man/")] = f.name.removesuffix(".manpages")
    assert listed == {f: package for f, (_p, package) in pages.items()}
    assert "python3 -m snmplb.build.mangen --output debian/man" in (DEBIAN / "rules").read_text()


def test_every_command_page_has_the_sections_of_a_real_manual_page(pages):
    for filename, (page, _package) in pages.items():
        have = [title for title, _blocks in page.sections]
        need = ["SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO"] if not filename.endswith(
            ".5") else ["SYNOPSIS", "DESCRIPTION", "FILES", "EXAMPLES", "SEE ALSO"]
        assert [t for t in have if t in need] == need, (filename, have)


def _entry_parser(target: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a console script's main() parses with, caught as it parses (main([]))."""
    module_name, func = target.split(":")
    module = __import__(module_name, fromlist=[func])
    if module_name == "snmplb.agent.service":  # its main points fd 2 at /dev/null before parsing
        monkeypatch.setattr(module, "_silence_stderr", lambda: None)
    return mangen.parser_of(lambda: getattr(module, func)([]))


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    out = {o for a in parser._actions for o in a.option_strings}
    for name, (sub, _help) in mangen.subcommands(parser).items():
        out |= {name} | {o for a in sub._actions for o in a.option_strings}
    return out


def test_each_command_page_has_every_option_of_the_parser_its_main_parses_with(pages, monkeypatch):
    for name, target in console_scripts().items():
        if name in NOT_INSTALLED:
            continue
        parser = _entry_parser(target, monkeypatch)
        page = next(p for f, (p, _pkg) in pages.items() if f.rsplit(".", 1)[0] == name)
        roff = sections(page).get("OPTIONS", "") + sections(page).get("COMMANDS", "")
        terms = set(re.findall(r"(?<![\w-])(--?[\w-]+)", plain(roff)))
        terms |= set(re.findall(r'^\.SS "(.*)"$', plain(roff), re.M))  # the subcommands
        missing = _option_strings(parser) - terms
        assert not missing, (name, missing)
        synopsis = plain(sections(page)["SYNOPSIS"])
        assert name in synopsis and all(sub in synopsis for sub in mangen.subcommands(parser)), name


def test_the_client_page_lists_every_variable_with_its_default_and_meaning(pages):
    page, package = pages["snmplb-client.conf.5"]
    assert package == "snmplb-client"
    items = definitions(sections(page)["VARIABLES"])
    assert list(items) == [v.name for v in VARIABLES]
    for v in VARIABLES:
        assert items[v.name].startswith(f"Default: {v.default}. "), v.name
        words = plain(mangen.code_text(v.doc))
        assert words in items[v.name], v.name


def test_the_agent_page_lists_every_key_with_its_default_and_the_agent_takes_each_as_an_option(pages):
    page, _ = pages["snmplb-agent.conf.5"]
    items = definitions(sections(page)["KEYS"])
    assert list(items) == list(agentconf.KEYS)
    options = definitions(sections(pages["snmplb-agent.8"][0])["OPTIONS"])
    for f in agentconf.FIELDS:
        default = str(f.default) or "empty"
        assert items[f.name].startswith(f"Default: {default}. "), f.name
        option = f"--{f.name.replace('_', '-')} VALUE"
        assert option in options and (f"(default {default})" in options[option] or not f.default), f.name


def test_the_admin_page_lists_every_key_with_its_default_and_what_a_bad_one_means(pages):
    page, package = pages["snmplb-admin.conf.5"]
    assert package == "snmplb-agent"
    items = definitions(sections(page)["KEYS"])
    assert list(items) == [f.name for f in adminfile.FIELDS]
    for f in adminfile.FIELDS:
        assert items[f.name].startswith(f"Default: {f.default}. "), f.name
        choices = f.parse.accepts.removeprefix("one of: ").split(", ")  # listed once: by the doc, else "Takes"
        assert f.parse.accepts in items[f.name] or all(c in items[f.name] for c in choices), f.name
        if f.if_bad:
            assert f"A bad value means {f.if_bad[1]}." in items[f.name]
    assert "state = draining" not in plain(sections(page)["EXAMPLES"])  # the file snmplb-admin writes
    assert f"weight = 200" in plain(sections(page)["EXAMPLES"])


def _variables_read(pattern: str) -> set[str]:
    found = set()
    for path in sorted(PROJECT.glob(pattern)):
        text = path.read_text()
        if path.suffix == ".c":  # a C string literal naming the variable (pam_snmplb's ENV_NAME)
            found |= set(re.findall(r'"(SNMPLB_[A-Z0-9_]+)"', text))
        elif path.suffix == ".py":
            found |= {n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant)
                      and isinstance(n.value, str) and re.fullmatch(r"SNMPLB_[A-Z0-9_]+", n.value)}
        else:
            found |= set(re.findall(r"\$\{?(SNMPLB_[A-Z0-9_]+)", text))
    return found


def test_every_snmplb_variable_a_command_reads_is_on_its_page_and_no_other(pages):
    for filename, patterns in READERS.items():
        read = set().union(*(_variables_read(p) for p in patterns)) - TEST_HOOKS
        page = pages[filename][0]
        documented = set(re.findall(r"SNMPLB_[A-Z0-9_]+", plain(sections(page).get("ENVIRONMENT", ""))))
        assert read == documented, (filename, read ^ documented)


def test_the_pages_name_each_other_and_the_documents_as_installed(pages):
    ours = {f.rsplit(".", 1)[0]: f.rsplit(".", 1)[1] for f in pages}
    for filename, (page, _package) in pages.items():
        text = plain(rendered(page))
        for name, section in re.findall(r"\b((?:snmplb|get_hosts|check_snmplb)[\w.-]*)\((\d)\)", text):
            assert ours.get(name) == section, (filename, name, section)
        assert "docs/" not in text.replace("/usr/share/doc/", ""), filename  # the repository's paths
        assert "README" not in text.replace(mangen.DOCS["nms/README.md"], ""), filename
    for source, installed in mangen.DOCS.items():
        package, name = installed.removeprefix("/usr/share/doc/").split("/")
        assert source in (DEBIAN / f"{package}.docs").read_text().split(), source
        # dh_compress gzips the documents over 4 KiB: the page names the file as installed
        assert name.endswith(".gz") == ((PROJECT / source).stat().st_size > 4096), source
        assert name.removesuffix(".gz") == Path(source).name


def test_the_constants_the_generator_restates_are_the_code_s():
    from snmplb.client.gethosts import IDENT

    assert mangen.GET_HOSTS_TAG == IDENT


def test_the_files_the_installed_configuration_names_are_the_pages():
    drop_in = (PROJECT / "snmpd.d/snmplb.conf").read_text()
    assert "README" not in drop_in and "snmplb-agent(8)" in drop_in and "snmplb-agent.conf(5)" in drop_in
    unit = (PROJECT / "systemd/snmplb-agent-check.service").read_text()
    assert re.search(r"^Documentation=man:snmplb-agent-check\(8\)", unit, re.M), unit
    assert f"SNMPLB_CHECK_LISTEN=127.0.0.1:{mangen.AGENT_CHECK_PORT}" in unit and "--listen ${SNMPLB_CHECK_LISTEN}" in unit
    socket = (PROJECT / "systemd/snmplb-agent-check.socket").read_text()
    assert f"ListenStream=127.0.0.1:{mangen.AGENT_CHECK_PORT}" in socket
    assert "README" not in adminfile.render_admin(adminfile.AdminSettings())


def test_a_default_or_an_option_without_words_stops_the_generator():
    # A docstring whose default is not the code's: the page would say two things.
    with pytest.raises(mangen.MangenError, match="interval"):
        mangen.meaning("seconds between samples (2.0).", "1.0", "interval")
    assert mangen.meaning("seconds between samples (1).", "1.0", "interval") == "Seconds between samples."
    assert mangen.meaning("MiB below which (100; 0: no check).", "100", "m") == "MiB below which (0: no check)."
    assert mangen.meaning("log here (empty: syslog).", "", "log_file") == "Log here (empty: syslog)."
    # A key without words, or words for no key.
    with pytest.raises(mangen.MangenError, match="keys without words"):
        mangen.settings_items(agentconf.FIELDS, {}, "agent.conf")
    # An option without help and without words here.
    ap = argparse.ArgumentParser(prog="x")
    ap.add_argument("--quiet-thing", action="store_true")
    with pytest.raises(mangen.MangenError, match="--quiet-thing"):
        mangen.option_items(ap, lambda a: None)
    command = mangen.Command("x", 1, "snmplb-client", "x", lambda: ap, option_words={"nothing": "words"},
                             more=lambda a: "words")
    with pytest.raises(mangen.MangenError, match="nothing"):
        command.page()


def test_roff_escapes_and_marks():
    from snmplb.build.roff import inline

    assert inline("`--file` {FILE} see snmplb-agent.conf(5)") == \
        "\\fB\\-\\-file\\fR \\fIFILE\\fR see \\fBsnmplb\\-agent.conf\\fR(5)"
    assert inline("a\\b {x}", placeholders=False) == "a\\eb {x}"
    page = Page("x", 1, "y")
    page.add("DESCRIPTION", mangen.P(".starts with a dot"), mangen.Example(("'quoted", "")))
    assert "\n\\&.starts with a dot\n" in page.render("1", "d", "s") and "\n\\&'quoted\n" in page.render("1", "d", "s")


@pytest.mark.fleet
@pytest.mark.skipif(not shutil.which("man") or not shutil.which("lexgrog"), reason="needs man-db")
def test_man_renders_every_page_without_a_warning_and_whatis_reads_its_name(tmp_path):
    assert mangen.main(["--output", str(tmp_path), "--date", "2000-01-01"]) == 0
    made = sorted(tmp_path.iterdir())
    assert len(made) == len(mangen.pages())
    for path in made:
        r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(path)], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LANG": "C.UTF-8"}, timeout=60)
        assert (r.returncode, r.stderr) == (0, ""), path.name
        assert "\\f" not in r.stdout and "`" not in r.stdout, path.name  # no mark left unconverted
        # lintian's bad-whatis-entry: lexgrog must find "name - summary" in NAME
        r = subprocess.run(["lexgrog", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and f'"{path.name.rsplit(".", 1)[0]} - ' in r.stdout, (path.name, r.stdout)


def test_the_nms_readme_names_the_files_where_the_package_installs_them():
    """nms/README.md is installed (snmplb-nms): its commands copy the installed files, not the source tree's
    (only the venv's plugin and the generators, which no package holds, are taken from a checkout)."""
    readme = (PROJECT / "nms/README.md").read_text()
    moved = readme.index("**A moved MIB root**")
    outside = readme[:moved] + readme[readme.index("\n\n", readme.index("generator generate", moved)):]
    assert not re.findall(r"(?<![\w/.-])nms/[\w.-]+/", outside)
    install = (DEBIAN / "snmplb-nms.install").read_text().splitlines()
    named = set(re.findall(r"/usr/share/snmplb/nms/([\w./-]+\w)", readme))
    assert {"nagios/snmplb.cfg", "icinga2/snmplb.conf", "zabbix/snmplb_template.yaml",
            "prometheus/snmp.yml", "prometheus/snmplb-rules.yml", "grafana/snmplb-dashboard.json"} <= named
    for path in named:
        assert (PROJECT / "nms" / path).is_file(), path
        assert f"nms/{path.split('/')[0]} usr/share/snmplb/nms" in install, path
    assert mangen.DOCS["nms/README.md"] in readme and mangen.DOCS["docs/snmpwalk.md"] in readme
