"""snmplb-update-sshkeys against a real sshd on a loopback port with its own host keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN
from farm import SSHD, Sshd
from snmplb.login.hostkeys import Target, merge, parse_extraservers

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server not installed")]


@pytest.fixture
def sshd(tmp_path):
    d = tmp_path / "sshd"
    d.mkdir()
    s = Sshd(d, "127.0.0.21")
    s.start()
    yield s
    s.stop()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snmplb-update-sshkeys"), "--timeout", "3", *args], capture_output=True,
                          text=True, timeout=60)


def key_lines(path: Path, name: str) -> set[str]:
    return {" ".join(ln.split()[1:3]) for ln in path.read_text(errors="surrogateescape").splitlines() if ln.split()[:1] == [name]}


def test_scan_merge_key_change_and_unreachable_server(sshd, tmp_path):
    chroot = tmp_path / "chroot"
    (chroot / "etc/ssh").mkdir(parents=True)
    known = chroot / "etc/ssh/ssh_known_hosts"
    other = "server.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    dead_entry = "[127.0.0.22]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNZYmC7n4Xdkgp8Fvp2v2u0xq1b0d4Fe0W7o6c7wX9a"
    known.write_text(f"# managed by hand\n{other}\n{dead_entry}\n")
    extra = tmp_path / "extraservers"
    extra.write_text(f"# extra application servers\n\n{sshd.host}:{sshd.port}\n127.0.0.22:2222  # down\n")
    name = f"[{sshd.host}]:{sshd.port}"

    r = run("--extraservers", str(extra), "--chroot", str(chroot))
    assert r.returncode == 1, r.stderr  # one server could not be scanned
    assert "[127.0.0.22]:2222" in r.stderr and "kept" in r.stderr
    assert key_lines(known, name) == sshd.public_keys() and len(sshd.public_keys()) == 3
    text = known.read_text()
    assert "# managed by hand" in text and other in text and dead_entry in text  # everything else kept
    assert known.stat().st_mode & 0o777 == 0o644
    # A real ssh client finds the server's key under the name it will look up.
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(known)], capture_output=True, text=True)
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout

    # The server's keys change: dry-run shows it and writes nothing; the real run replaces them.
    old = sshd.public_keys()
    sshd.stop()
    sshd.new_keys()
    sshd.start()
    before = known.read_text()
    r = run("--extraservers", str(extra), "--chroot", str(chroot), "--dry-run")
    assert known.read_text() == before
    assert any(ln.startswith("-" + name) for ln in r.stdout.splitlines())
    assert any(ln.startswith("+" + name) for ln in r.stdout.splitlines())
    run("--extraservers", str(extra), "--chroot", str(chroot))
    assert key_lines(known, name) == sshd.public_keys() and not (key_lines(known, name) & old)
    assert other in known.read_text() and dead_entry in known.read_text()

    # Unreachable now: its keys are kept, exit status says so.
    sshd.stop()
    r = run("--extraservers", str(extra), "--chroot", str(chroot))
    assert r.returncode == 1 and key_lines(known, name) == sshd.public_keys()


def test_hashed_and_multi_name_entries_are_replaced_for_that_name_only():
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, b"app1", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    existing = (f"{hashed} ssh-rsa OLDHASHED\napp1,10.0.0.1 ssh-ed25519 OLDMULTI\napp2 ssh-rsa KEEP\n"
                "@cert-authority *.example ssh-rsa CA\n")
    new = merge(existing, {"app1": ["app1 ssh-ed25519 NEW"]})
    assert "OLDHASHED" not in new and "10.0.0.1 ssh-ed25519 OLDMULTI" in new and "app1,10.0.0.1" not in new
    assert "app2 ssh-rsa KEEP" in new and "@cert-authority *.example ssh-rsa CA" in new
    assert new.endswith("app1 ssh-ed25519 NEW\n")
    assert merge(new, {"app1": ["app1 ssh-ed25519 NEW"]}) == new  # idempotent


def test_extraservers_parsing():
    targets, problems = parse_extraservers("# c\n\napp1\napp2:2222 # x\n[fe80::1]:22\nbad host\napp1\n:99\n")
    assert targets == [Target("app1"), Target("app2", 2222), Target("fe80::1")]
    assert len(problems) == 2 and problems[0].startswith("line 6")
    assert Target("app2", 2222).known_hosts_name == "[app2]:2222" and Target("app1").known_hosts_name == "app1"


def test_non_utf8_known_hosts_is_merged_and_its_foreign_lines_survive_byte_for_byte(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    latin1 = b"caf\xe9.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    comment = b"# \xff\xfe written by a Latin-1 editor\n"
    name = f"[{sshd.host}]:{sshd.port}"
    stale = f"{name} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNZYmC7n4Xdkgp8Fvp2v2u0xq1b0d4Fe0W7o6c7wX9a\n".encode()
    known.write_bytes(comment + latin1 + stale)
    r = run("--extraservers", "/nonexistent", "--known-hosts", str(known), f"{sshd.host}:{sshd.port}")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "not UTF-8" in r.stderr
    data = known.read_bytes()
    assert data.startswith(comment + latin1) and stale not in data
    assert key_lines(known, name) == sshd.public_keys()
    r = run("--extraservers", "/nonexistent", "--known-hosts", str(known), "--dry-run", f"{sshd.host}:{sshd.port}")
    assert r.returncode == 0 and "Traceback" not in r.stderr and known.read_bytes() == data


def test_without_ssh_keyscan_says_so_and_writes_nothing(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_bytes(b"app9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    before = known.read_bytes()
    r = subprocess.run([str(BIN / "snmplb-update-sshkeys"), "--extraservers", "/nonexistent", "--known-hosts",
                        str(known), "127.0.0.1"], capture_output=True, text=True, timeout=60,
                       env={"PATH": str(tmp_path / "empty-bin")})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "ssh-keyscan" in r.stderr and "Traceback" not in r.stderr
    assert known.read_bytes() == before


def test_help_is_plain_text_for_a_terminal_and_help2man():
    """Issue 21: the module docstring, which is --help's text (and the man page's, through help2man), had
    reStructuredText's ``literal`` quotes."""
    from snmplb.login.hostkeys import _parser

    text = _parser().format_help()
    assert "``" not in text and "[host]:port when ssh listens elsewhere than 22" in text
    assert "--extraservers FILE" in text and "--timeout SECONDS" in text
