"""The command-line tools run as processes: snmplb-demo (the README's main job) and snmplb-admin."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import BIN
from snmplb import mib

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)


def test_demo_runs_a_fleet_and_reads_every_server_by_name():
    r = subprocess.run([str(BIN / "snmplb-demo")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("app")}
    assert rows["app1"][2] == "idle" and rows["app2"][2] == "busy"
    assert rows["app3"][2] == "swapping" and rows["app4"][2] == "draining"
    walked = [ln.split(".0 = ")[0] for ln in lines if ln.startswith(mib.MODULE + "::") and ".0 = " in ln]
    assert walked[: len(mib.OBJECTS)] == [f"{mib.MODULE}::{o.name}" for o in mib.OBJECTS]
    choices = [ln for ln in lines if ln.strip().startswith("LB_ALGORITHM=")]
    assert len(choices) == 7
    for ln in choices:
        hosts = ln.split("'")[1].split(" ")
        assert sorted(hosts) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"], ln  # not draining .14, not dead .99
    assert any(ln.startswith("127.0.0.99:161") and "Down" in ln for ln in lines)
    assert r.stdout.rstrip().endswith("fleet stopped.")


def test_create_v3_user_reads_secrets_from_stdin_into_a_private_file(tmp_path):
    target = tmp_path / "snmpd.conf"
    cmd = [str(BIN / "snmplb-admin"), "create-v3-user", "nms", "--snmpd-file", str(target)]
    r = subprocess.run(cmd, input="auth-pass-123\npriv-pass-456\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == 'createUser nms SHA "auth-pass-123" AES "priv-pass-456"\n'
    assert target.stat().st_mode & 0o777 == 0o600
    assert "pass-123" not in r.stdout + r.stderr
    r = subprocess.run(cmd, input="short\npriv-pass-456\n", capture_output=True, text=True)
    assert r.returncode == 2 and "8 characters" in r.stderr and "short" not in r.stderr
    r = subprocess.run(cmd, input='has"quote\npriv-pass-456\n', capture_output=True, text=True)
    assert r.returncode == 2 and "quotes" in r.stderr
    r = subprocess.run(cmd, input="only-one-line\n", capture_output=True, text=True)
    assert r.returncode == 2 and "two lines" in r.stderr
    assert target.read_text().count("createUser") == 1


def test_create_v3_user_tightens_an_existing_persistent_file_to_0600(tmp_path):
    """snmpd's persistent file may already exist world-readable (0644): the passphrases must not land in it so."""
    target = tmp_path / "snmpd.conf"
    target.write_text("engineBoots 3\n")
    target.chmod(0o644)
    cmd = [str(BIN / "snmplb-admin"), "create-v3-user", "nms", "--snmpd-file", str(target)]
    r = subprocess.run(cmd, input="auth-pass-123\npriv-pass-456\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text() == 'engineBoots 3\ncreateUser nms SHA "auth-pass-123" AES "priv-pass-456"\n'
    assert "0600" in r.stdout and "pass-123" not in r.stdout + r.stderr


@pytest.mark.parametrize("option, value", [("--auth-protocol", "MD5"), ("--priv-protocol", "DES"),
                                           ("--auth-protocol", "SHA-999"), ("--priv-protocol", "AES-256")])
def test_create_v3_user_refuses_a_protocol_get_hosts_cannot_poll_with(tmp_path, option, value):
    """net-snmp would make an MD5 or DES user, which no thin client could poll: a clear error naming the
    option and what is accepted, nothing written, and get_hosts refuses the same value by name."""
    from snmplb import usm
    from snmplb.client.settings import from_env

    target = tmp_path / "snmpd.conf"
    cmd = [str(BIN / "snmplb-admin"), "create-v3-user", "nms", option, value, "--snmpd-file", str(target)]
    r = subprocess.run(cmd, input="auth-pass-123\npriv-pass-456\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    accepted = usm.AUTH_PROTOCOLS if option == "--auth-protocol" else usm.PRIV_PROTOCOLS
    assert option in r.stderr and repr(value) in r.stderr and ", ".join(accepted) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "pass-" not in r.stdout + r.stderr
    assert not target.exists()
    variable = "LB_SNMP_AUTH_PROTOCOL" if option == "--auth-protocol" else "LB_SNMP_PRIV_PROTOCOL"
    _, problems = from_env({"LB_SERVERS": "127.0.0.1", variable: value})
    assert any(p.startswith(variable + ":") for p in problems), problems


@pytest.mark.parametrize("auth", ["SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512", "sha-256"])
def test_create_v3_user_makes_users_with_every_protocol_get_hosts_speaks(tmp_path, auth):
    from snmplb import usm
    from snmplb.client.settings import from_env

    assert auth.upper() in usm.AUTH_PROTOCOLS
    target = tmp_path / "snmpd.conf"
    cmd = [str(BIN / "snmplb-admin"), "create-v3-user", "nms", "--auth-protocol", auth, "--priv-protocol", "aes",
           "--snmpd-file", str(target)]
    r = subprocess.run(cmd, input="auth-pass-123\npriv-pass-456\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == f'createUser nms {auth.upper()} "auth-pass-123" AES "priv-pass-456"\n'
    settings, problems = from_env({"LB_SERVERS": "127.0.0.1", "LB_SNMP_AUTH_PROTOCOL": auth,
                                   "LB_SNMP_PRIV_PROTOCOL": "aes"})
    assert problems == [] and (settings.auth_protocol, settings.priv_protocol) == (auth.upper(), "AES")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e400", "x", "1e9"])
def test_status_watch_rejects_non_positive_and_non_finite_seconds(value):
    r = subprocess.run([str(BIN / "snmplb"), "status", "--watch", value, "--count", "1"], capture_output=True,
                       text=True, timeout=60, env={"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:1",
                                                   "LB_TIMEOUT_MS": "50"})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "--watch" in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("user,secret", [
    ("nms", "tab\tinside-pass"), ("nms", "x" * 1025), ("nms", "trailing-space "), ("nms", " leading-space"),
    ("nms", "ctrl\x01-passphrase"), ("u" * 40, "good-pass-123"), ("usér", "good-pass-123"), ("", "good-pass-123"),
    ("nms", "short"), ("nms", 'quote"-pass-123'),
    ("nms", "good-pass-123"), ("a" * 32, "é-unicode-pass"), ("nms-2_b", "x" * 1024)])
def test_create_v3_user_makes_only_users_get_hosts_can_use_as_they_are(user, secret):
    """Whatever create-v3-user accepts, get_hosts takes unchanged (through the key = value reader too);
    what it refuses, it says why without a character of the secret (snmplb.usm holds the one rule)."""
    from snmplb.admin.v3user import create_user_line
    from snmplb.client.settings import from_env
    from snmplb.errors import ConfigError
    from snmplb.kvfile import CLIENT_CONF, parse_kv

    try:
        create_user_line(user, secret, secret)
    except ConfigError as exc:
        assert secret[:8] not in str(exc), exc
        return
    text = f"LB_SNMP_USER = {user}\nLB_SNMP_AUTH_PASSPHRASE = {secret}\nLB_SNMP_PRIV_PASSPHRASE = {secret}\n"
    env = {"LB_SERVERS": "127.0.0.1", "LB_SNMP_VERSION": "3", **parse_kv(text, CLIENT_CONF)[0]}
    settings, problems = from_env(env)
    assert problems == [] and settings.user == user and settings.auth_passphrase == secret, problems
