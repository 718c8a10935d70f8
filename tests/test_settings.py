"""lts.conf variables: every bad value names its variable and falls back; lts.conf sections; client id."""

from __future__ import annotations

import pytest

from snmplb.client import ltsconf
from snmplb.client.clientid import default_mac, default_route_interface
from snmplb.client.settings import VARIABLES, ClientSettings, Server, from_env, parse_servers, refusal

BASE = {"LB_SERVERS": "app1"}


def test_defaults_and_documented_table():
    s, problems = from_env(BASE)
    assert problems == []
    assert s.servers == (Server("app1", 161),)
    assert (s.algorithm, s.timeout_ms, s.max_load, s.max_response_ms, s.skip_swapping, s.snmp_version) == \
        ("balanced", 1000, 2.0, 500, True, "2c")
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names)) and all(n.startswith("LB_") for n in names)
    assert set(v.attr for v in VARIABLES) <= set(ClientSettings._fields)


def test_each_field_has_its_variables_value_as_default():
    """ClientSettings names its fields twice (in the record call, for mypy, and in _FIELDS, for the defaults'
    order): each field's default must be its own variable's value, in VARIABLES."""
    from snmplb.client import settings

    assert ClientSettings._fields == tuple(settings._FIELDS.split())
    assert ClientSettings._field_defaults == {v.attr: v.value for v in VARIABLES}


@pytest.mark.parametrize("var, value", [
    ("LB_ALGORITHM", "bestest"), ("LB_TIMEOUT_MS", "soon"), ("LB_TIMEOUT_MS", "0"), ("LB_TIMEOUT_MS", "99999999"),
    ("LB_MAX_LOAD", "nan"), ("LB_MAX_LOAD", "-1"), ("LB_MAX_RESPONSE_MS", "1.5"), ("LB_SKIP_SWAPPING", "maybe"),
    ("LB_SNMP_AUTH_PROTOCOL", "MD5"), ("LB_SNMP_PRIV_PROTOCOL", "DES"),
    ("LB_LBSERVER_URL", "ftp://x/"), ("LB_SNMP_PORT", "70000"), ("LB_RETRIES", "-1"), ("LB_MAX_HOSTS", "x"),
    ("LB_SNMP_COMMUNITY", "bad\x01char"), ("LB_SEED", "seed"),
])
def test_a_bad_value_names_the_variable_and_uses_the_default(var, value):
    s, problems = from_env({**BASE, var: value})
    assert len(problems) == 1 and problems[0].startswith(var + ":") and "default" in problems[0]
    default = ClientSettings()
    attr = next(v.attr for v in VARIABLES if v.name == var)
    assert getattr(s, attr) == getattr(default, attr)


def test_good_values_are_taken():
    s, problems = from_env({**BASE, "LB_ALGORITHM": "Sticky", "LB_TIMEOUT_MS": "250", "LB_MAX_LOAD": "1.5",
                            "LB_SKIP_SWAPPING": "no", "LB_SNMP_AUTH_PROTOCOL": "sha-256", "LB_SNMP_PORT": "1161",
                            "LB_LBSERVER_URL": "http://lbs:8008/", "LB_CLIENT_ID": "room3-pc7"})
    assert problems == []
    assert (s.algorithm, s.timeout_ms, s.max_load, s.skip_swapping, s.auth_protocol) == \
        ("sticky", 250, 1.5, False, "SHA-256")
    assert s.servers == (Server("app1", 1161),) and s.client_id == "room3-pc7"


def test_secrets_are_never_echoed():
    secret = "short"
    s, problems = from_env({**BASE, "LB_SNMP_VERSION": "3", "LB_SNMP_AUTH_PASSPHRASE": secret,
                            "LB_SNMP_PRIV_PASSPHRASE": "priv-pass-ok"})
    assert not any(secret in p for p in problems)
    # Refused, never downgraded to SNMPv2c in clear: nothing is polled (settings.refusal).
    assert s.snmp_version == "3" and any(p.startswith("LB_SNMP_VERSION: 3 needs") for p in problems)
    assert "not polling" in refusal(s) and "LB_SNMP_AUTH_PASSPHRASE" in refusal(s)
    s, _ = from_env({**BASE, "LB_SNMP_VERSION": "3", "LB_SNMP_AUTH_PASSPHRASE": "auth-pass-ok",
                     "LB_SNMP_PRIV_PASSPHRASE": "priv-pass-ok", "LB_SNMP_COMMUNITY": "commun1ty"})
    assert s.snmp_version == "3"
    assert "auth-pass-ok" not in repr(s) and "priv-pass-ok" not in repr(s) and "commun1ty" not in repr(s)


def test_server_list_forms_and_bad_entries():
    servers, problems = parse_servers("app1 app2:1161 10.0.0.5 [fe80::1]:1162 ::1 app1 bad;rm host:x [::1", 161)
    assert servers == (Server("app1"), Server("app2", 1161), Server("10.0.0.5"), Server("fe80::1", 1162),
                       Server("::1"))
    assert len(problems) == 3 and all(p.startswith("LB_SERVERS:") for p in problems)
    s, problems = from_env({"SERVER": "192.0.2.1"})  # LB_SERVERS unset: $SERVER (not contacted here)
    assert s.servers == (Server("192.0.2.1"),) and problems == []
    s, problems = from_env({})
    assert s.servers == () and problems == ["LB_SERVERS: no server configured and SERVER is empty"]


LTS_CONF = """
# LTSP configuration
[Default]
    LB_SERVERS = "app1 app2"
    LB_ALGORITHM = thresholded
    SCREEN_07 = ldm

[lab]
    LB_ALGORITHM = sticky
    LB_MAX_LOAD = 3

[52:54:00:12:34:56]
    LIKE = lab
    LB_SERVERS = 'app3'

[10.0.0.7]
    LB_TIMEOUT_MS=500
"""


def test_lts_conf_sections_the_clients_own_wins():
    assert ltsconf.resolve(LTS_CONF, [])[0]["LB_ALGORITHM"] == "thresholded"
    env, problems = ltsconf.resolve(LTS_CONF, ["pc7", "10.0.0.7", "52:54:00:12:34:56"])
    assert env["LB_SERVERS"] == "app3" and env["LB_ALGORITHM"] == "sticky" and env["LB_MAX_LOAD"] == "3"
    assert env["LB_TIMEOUT_MS"] == "500" and "LIKE" not in env and problems == []
    assert ltsconf.resolve(LTS_CONF, ["52:54:00:AB:CD:EF"])[0]["LB_SERVERS"] == "app1 app2"
    loop = "[Default]\nLIKE = a\n[a]\nLIKE = b\n[b]\nLIKE = a\nX = 1\n"
    env, problems = ltsconf.resolve(loop, [])
    assert env["X"] == "1"
    assert len(problems) == 1 and "LIKE" in problems[0] and "loop" in problems[0] and "[a]" in problems[0]


def test_lts_conf_inline_comments_quotes_and_bom():
    text = ("\ufeff[Default]\n"
            "LB_SERVERS = app1 app2   # the two big ones\n"
            "LB_SNMP_COMMUNITY = \"pub # lic\"  # quoted: the # inside stays\n"
            "LB_CLIENT_ID = 'a # b'#no space before: part of the value\n"
            "LB_ALGORITHM=fixed#no space: part of the value\n"
            "LB_MAX_LOAD = # nothing but a comment\n"
            "LB_SNMP_USER =\t\"nms\"\t#tab\r\n")
    env, problems = ltsconf.resolve(text, [])
    assert env["LB_SERVERS"] == "app1 app2"
    assert env["LB_SNMP_COMMUNITY"] == "pub # lic"
    assert env["LB_ALGORITHM"] == "fixed#no space: part of the value"  # as a shell reads it: # starts a word
    assert env["LB_CLIENT_ID"] == "'a # b'#no space before: part of the value"
    assert env["LB_MAX_LOAD"] == "" and env["LB_SNMP_USER"] == "nms"
    assert problems == []
    assert ltsconf.parse("\ufeff[default]\nX = 1\n") == {"default": {"X": "1"}}  # the BOM is not part of a name


def test_one_reader_for_every_key_value_file():
    """agent.conf/admin.conf (PLAIN), client.conf and lts.conf are read by one reader (kvfile): quotes, a
    BOM, comment lines and bad lines are handled alike; the dialects differ only in the case of keys,
    sections, inline comments and whether a bad line may be quoted."""
    from snmplb.kvfile import CLIENT_CONF, PLAIN, parse_kv_bytes

    body = b"# comment\n\nLb_One = 'quoted value'\nlb_two=\"2\"\n  LB_THREE  =  three  \nsecret-ish line\n"
    plain, plain_problems = parse_kv_bytes(b"\xef\xbb\xbf" + body, PLAIN)
    client, client_problems = parse_kv_bytes(b"\xef\xbb\xbf" + body, CLIENT_CONF)
    lts = ltsconf.parse("\ufeff[Default]\n" + body.decode())["default"]
    assert plain == {"lb_one": "quoted value", "lb_two": "2", "lb_three": "three"}
    assert client == lts == {k.upper(): v for k, v in plain.items()}
    assert plain_problems == ["line 6: expected 'key = value', got 'secret-ish line'"]
    assert client_problems == ["line 6: expected 'key = value'"]  # never quoted: it may be a secret
    assert parse_kv_bytes(b"X = caf\xe9\n", CLIENT_CONF)[1] == ["line 1: not valid UTF-8"]  # nor its byte
    assert parse_kv_bytes(b"X = a # b\n", PLAIN)[0] == {"x": "a # b"}
    assert ltsconf.parse("[Default]\nX = a # b\n; c\n") == {"default": {"X": "a"}}
    assert [ltsconf.parse(t) for t in ("X = 1\n[Empty]\n",)] == [{"empty": {}}]  # LIKE may name it


def test_client_conf_uses_its_good_lines_and_names_the_bad_ones_without_a_value(tmp_path):
    from snmplb.client.clientconf import read_client_conf

    conf = tmp_path / "client.conf"
    conf.write_bytes(b"export LB_SNMP_COMMUNITY = 'c0mmunity'\nLB_SNMP_AUTH_PASSPHRASE = caf\xe9-secret\n"
                     b"LB_NOPE = s3cret-value\nno pair here\nlb_max_hosts = 2\n")
    conf.chmod(0o600)
    known = frozenset(v.name for v in VARIABLES)
    values, problems = read_client_conf({"SNMPLB_CLIENT_CONF": str(conf)}, known)
    assert values == {"LB_SNMP_COMMUNITY": "c0mmunity", "LB_MAX_HOSTS": "2"}
    assert problems == [f"{conf}: line 2: not valid UTF-8; skipped", f"{conf}: line 3: not a known LB_* name; skipped",
                        f"{conf}: line 4: expected 'key = value'; skipped"]
    assert not any(w in " ".join(problems) for w in ("caf", "secret", "s3cret", "pair"))


def test_a_bad_value_in_client_conf_is_named_never_quoted(tmp_path):
    """client.conf holds the SNMPv3 passphrases: a mistyped line may hold one, so a bad value read from
    it is named by its key and not one character of it is shown (the environment's are quoted)."""
    from snmplb.client.sources import load as settings_for

    conf = tmp_path / "client.conf"
    conf.write_text("LB_SNMP_VERSION = 3   # auth is hunter2hunter2\nLB_MAX_LOAD = hunter2hunter2\n"
                    "LB_LBSERVER_URL = ftp://user:hunter2@lb/\nLB_SERVERS = app1 bad;hunter2 app2\n"
                    "LB_SAMPLE_WEIGHTS = app1=hunter2\nLB_TIMEOUT_MS = 5\n")
    conf.chmod(0o600)
    settings, problems = settings_for({"SNMPLB_CLIENT_CONF": str(conf), "LB_MAX_HOSTS": "lots"})
    text = "\n".join(problems)
    assert "hunter2" not in text and "unter" not in text and "ftp" not in text, text
    for key in ("LB_SNMP_VERSION", "LB_MAX_LOAD", "LB_LBSERVER_URL", "LB_SERVERS", "LB_SAMPLE_WEIGHTS",
                "LB_TIMEOUT_MS"):
        assert any(p.startswith(f"{key}: ") for p in problems), (key, problems)
    assert "'lots'" in text  # the environment's own values are still quoted (lts.conf holds no secret)
    assert [s.host for s in settings.servers] == ["app1", "app2"] and settings.max_load == 2.0


def test_lts_conf_lines_ltsp_ignores_are_reported_by_number_never_quoted(tmp_path):
    """Junk lines and variables before the first section are ignored, as getltscfg ignores them, and each
    is named by its line number (the status view and pick show these problems): the text never appears."""
    text = ("LB_SNMP_AUTH_PASSPHRASE = hunter2hunter2\n"  # before any section
            "# a comment\n"
            "[Default]\n"
            "    LB_SERVERS = app1 app2\n"
            "hunter2 pasted here by mistake\n"
            "= s3cret\n"
            "[pc7]\n"
            "    LB_MAX_LOAD = 3\n")
    env, problems = ltsconf.resolve(text, ["pc7"])
    assert env == {"LB_SERVERS": "app1 app2", "LB_MAX_LOAD": "3"}
    assert [p.split(":", 1)[0] for p in problems] == ["line 1", "line 5", "line 6"], problems
    assert "before the first [section]" in problems[0] and all("ignored" in p for p in problems)
    joined = " ".join(problems)
    assert not any(w in joined for w in ("hunter2", "unter", "s3cret", "pasted", "PASSPHRASE")), problems
    # A file of junk is summed up, not listed line by line; clean files have no problem.
    many = "".join(f"junk {i}\n" for i in range(40)) + "[Default]\nX = 1\n"
    env, problems = ltsconf.resolve(many, [])
    assert env == {"X": "1"} and len(problems) == ltsconf.MAX_REPORTED + 1 and "35 more" in problems[-1]
    assert ltsconf.resolve(LTS_CONF, ["pc7"])[1] == []
    # Through the settings' one way in (`--lts-conf FILE`, as `snmplb status` and pick read it): named by file.
    from snmplb.client.sources import load as settings_for

    conf = tmp_path / "lts.conf"
    conf.write_text(text)
    settings, problems = settings_for({"SNMPLB_CLIENT_CONF": "/nonexistent"}, lts_conf=str(conf), clients=["pc7"])
    assert [s.host for s in settings.servers] == ["app1", "app2"] and settings.max_load == 3.0
    assert [p for p in problems if p.startswith(f"{conf}: line ")] == [f"{conf}: {p}" for p in
                                                                        ltsconf.resolve(text, ["pc7"])[1]]
    assert "hunter2" not in " ".join(problems)


def test_lts_conf_says_when_it_stops_following_like():
    chain = "[Default]\nLIKE = s1\n" + "".join(f"[s{i}]\nLIKE = s{i + 1}\nV{i} = {i}\n" for i in range(1, 9))
    env, problems = ltsconf.resolve(chain, [])
    assert env["V1"] == "1" and env["V5"] == "5" and "V6" not in env  # five levels followed
    assert len(problems) == 1 and "deeper than 5" in problems[0] and "[s6]" in problems[0]
    env, problems = ltsconf.resolve("[Default]\nLIKE = nowhere\nX = 1\n", [])
    assert env == {"X": "1"} and "[nowhere]" in problems[0]
    env, problems = ltsconf.resolve("[Default]\nLIKE = Default\nX = 1\n", [])  # itself
    assert env == {"X": "1"} and "loop" in problems[0]


ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
"""


def test_client_id_is_the_mac_of_the_default_route_interface(tmp_path):
    assert default_route_interface(ROUTE) == "eth0"
    assert default_route_interface(ROUTE.splitlines()[0]) is None
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "route").write_text(ROUTE)
    (tmp_path / "sys" / "class" / "net" / "eth0").mkdir(parents=True)
    (tmp_path / "sys" / "class" / "net" / "eth0" / "address").write_text("52:54:00:AB:cd:01\n")
    assert default_mac(str(tmp_path / "proc"), str(tmp_path / "sys")) == "52:54:00:ab:cd:01"
    (tmp_path / "sys" / "class" / "net" / "eth0" / "address").write_text("garbage\n")
    assert default_mac(str(tmp_path / "proc"), str(tmp_path / "sys")) == ""
    assert default_mac(str(tmp_path / "nowhere"), str(tmp_path / "sys")) == ""


def test_readme_documents_every_variable_with_its_default():
    from snmplb.lab.fleet import PROJECT

    readme = (PROJECT / "README.md").read_text()
    for v in VARIABLES:
        default = v.default if v.default.startswith(("$", "(", "MAC")) else f"`{v.default}`"
        assert f"| `{v.name}` | {default} | {v.doc} |" in readme, v.name


# Secrets made of characters that appear in no message, so that not even one of them can slip through.
_SECRET_CHARS = "\u00e6\u00f8\u00e5\u0416\u0429\u05d0"


@pytest.mark.parametrize("var", ["LB_SNMP_COMMUNITY", "LB_SNMP_AUTH_PASSPHRASE", "LB_SNMP_PRIV_PASSPHRASE"])
@pytest.mark.parametrize("raw", [
    b"caf\xe9-latin1-secret".decode("utf-8", "surrogateescape"),  # an lts.conf saved in Latin-1
    "\u00e6\u00f8\u00e5\x01\u0416\u0429\u05d0\u0416",  # a control character
    "\u00e6" * 65536,  # 128 KiB of UTF-8
])
def test_a_bad_secret_names_its_variable_and_shows_no_part_of_it(var, raw):
    s, problems = from_env({**BASE, "LB_SNMP_VERSION": "3", "LB_SNMP_AUTH_PASSPHRASE": "auth-pass-ok",
                            "LB_SNMP_PRIV_PASSPHRASE": "priv-pass-ok", var: raw})
    mine = [p for p in problems if p.startswith(var + ":")]
    assert mine, problems
    text = " ".join(problems) + repr(s)
    assert not set(text) & (set(_SECRET_CHARS) | {"\udce9"}), text
    assert "position" not in text and all(len(p) < 300 for p in problems)


def test_long_bad_values_are_cut_in_messages():
    _, problems = from_env({**BASE, "LB_TIMEOUT_MS": "9" * 131072, "LB_ALGORITHM": "x" * 100000,
                            "LB_SERVERS": " ".join(["bad!host"] * 5000), "LB_LBSERVER_URL": "http://" + "a" * 9000})
    assert all(len(p) < 300 for p in problems), [len(p) for p in problems]
    assert sum(p.startswith("LB_SERVERS:") for p in problems) <= 7  # five, a count, "no server configured"
    assert any(p.startswith("LB_TIMEOUT_MS:") and "131072 characters" in p for p in problems)


@pytest.mark.parametrize("url", ["http://lb:99999/", "http://lb:0/", "http://lb:-1/", "http://lb:x/",
                                 "http://[::1/", "http://user@lb/"])
def test_an_lbserver_url_with_an_impossible_port_is_refused_by_name(url):
    s, problems = from_env({**BASE, "LB_ALGORITHM": "lbserver", "LB_LBSERVER_URL": url})
    assert s.lbserver_url == "" and any(p.startswith("LB_LBSERVER_URL:") for p in problems)


def test_the_lbserver_client_never_raises_on_a_bad_url():
    from snmplb.client.lbserver import ask_lbserver

    for url in ("http://lb:99999/", "http://[::1/", "ftp://x/"):
        host, why = ask_lbserver(url, 0.0, clock=lambda: -1.0)
        assert host is None and why.startswith("LB_LBSERVER_URL")


@pytest.mark.parametrize("version", ["v3", "SNMPv3", "3c", "2", "x" * 500])
def test_a_mistyped_snmp_version_polls_nothing_rather_than_fall_back_to_clear_text(version):
    s, problems = from_env({**BASE, "LB_SNMP_VERSION": version, "LB_SNMP_AUTH_PASSPHRASE": "auth-pass-ok",
                            "LB_SNMP_PRIV_PASSPHRASE": "priv-pass-ok"})
    assert "not polling" in refusal(s)
    assert [p for p in problems if p.startswith("LB_SNMP_VERSION:")] and all(len(p) < 300 for p in problems)
    assert not any("using the default (2c)" in p for p in problems)


@pytest.mark.parametrize("text,ok", [("::1", True), ("fe80::1", True), ("2001:db8::8:800:200c:417a", True),
                                     ("1.2.3.4:5:6", False), ("127.0.0.1:99999", False), (":::", False),
                                     ("1:2:3:4:5:6:7:8:9", False), ("app1", True), ("10.0.0.1", True)])
def test_only_real_ipv6_literals_pass_as_addresses(text, ok):
    from snmplb.client.settings import is_host

    assert is_host(text) is ok


def test_every_front_end_reads_the_same_bad_client_conf_alike_and_never_quotes_it(fleet, tmp_path):
    """get_hosts, `snmplb pick`, `snmplb status`, `snmplb feed` and the chooser read one client.conf with
    mistyped lines (each may hold a passphrase): each names the same problems, none shows a character of
    the values. Every front end reads its settings through one way in (``sources.load``)."""
    import os
    import subprocess
    import sys

    from conftest import BIN, COMMUNITY

    a = fleet.add("a")
    conf = tmp_path / "client.conf"
    conf.write_text(f"LB_SERVERS = {a.address}\nLB_SNMP_COMMUNITY = {COMMUNITY}\n"
                    "LB_SNMP_AUTH_PASSPHRAS = Zq8xhunter2Zq8x\n"  # a mistyped name
                    "LB_MAX_LOAD = Zq8xhunter2Zq8x\n"  # a passphrase pasted on the wrong line
                    "LB_TIMEOUT_MS = Zq8x-5000\n"
                    "LB_SNMP_PRIV_PASSPHRASE = short\n")
    conf.chmod(0o600)
    env = {"PATH": os.environ["PATH"], "SNMPLB_CLIENT_CONF": str(conf), "HOME": str(tmp_path)}

    def run(argv: list[str], **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env={**env, **extra}, capture_output=True, text=True, timeout=60)

    outputs = {
        "get_hosts": run([sys.executable, "-I", "-c", "from snmplb.client.gethosts import main; main()"]),
        "pick": run([str(BIN / "snmplb"), "pick"]),
        "status": run([str(BIN / "snmplb"), "status"]),
        "feed": run([str(BIN / "snmplb"), "feed", "--no-queue", "--json", str(tmp_path / "feed.json"),
                     "--count", "1"]),
        "chooser": run([str(BIN / "snmplb-chooser"), "--queue", ""], DISPLAY=""),  # no display: exits 2
    }
    prefixes = ("get_hosts: ", "snmplb: ", "snmplb feed: ", "snmplb-chooser: ", "  ")
    found = {}
    for name, r in outputs.items():
        text = r.stdout + r.stderr
        assert "Zq8x" not in text and "hunter" not in text and "short" not in text, (name, text)
        bare = [next((ln[len(p):] for p in prefixes if ln.startswith(p)), ln) for ln in text.splitlines()]
        found[name] = sorted(ln for ln in bare if ln.startswith((str(conf), "LB_")))
    expected = found["get_hosts"]
    assert len(expected) == 4, expected  # the mistyped name, the two bad values, the short passphrase
    assert any("LB_MAX_LOAD" in ln for ln in expected) and any("LB_TIMEOUT_MS" in ln for ln in expected)
    for name, lines in found.items():
        assert lines == expected, (name, lines, expected)
    assert outputs["get_hosts"].stdout.split() == [a.host]
    assert outputs["chooser"].returncode == 2
