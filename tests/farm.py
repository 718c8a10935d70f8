"""An ssh login farm on loopback for tests: real sshd processes, one per fleet instance's address,
sharing one host key (the farm's, checked under HostKeyAlias farm), each telling who it is through
SetEnv SNMPLB_TEST_SERVER=NAME; and a client config whose ProxyCommand is `snmplb connect %p`."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import BIN

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class FarmSshd:
    """A real sshd on ``host``:``port`` with the farm's host key; ``start``/``stop`` as often as needed."""

    def __init__(self, base: Path, name: str, host: str, port: int, host_key: Path, authorized: Path) -> None:
        self.dir, self.name, self.host, self.port = base / name, name, host, port
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "sshd_config"
        self.conf.write_text(
            f"ListenAddress {host}\nPort {port}\nPidFile {self.dir / 'sshd.pid'}\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"SetEnv SNMPLB_TEST_SERVER={name}\nPrintMotd no\nPrintLastLog no\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_sshd(self.conf, self.host, self.port, self.dir / "sshd.log")

    def stop(self) -> None:
        stop_sshd(self.proc)


def start_sshd(conf: Path, host: str, port: int, log: Path) -> subprocess.Popen:
    """A real sshd in the foreground with ``conf`` (its messages appended to ``log``); returns once it
    accepts connections on ``host``:``port``, 10 s at most."""
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    with open(log, "ab") as err:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop_sshd(proc)
    raise RuntimeError(f"sshd on {host}:{port} did not start: {log.read_text(errors='replace')[-1000:]}")


def stop_sshd(proc: subprocess.Popen | None) -> None:
    if proc and proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def free_port(hosts: list[str]) -> int:
    """A TCP port free on every one of ``hosts`` (the farm's servers share their ssh port, as in real life)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        try:
            for h in hosts[1:]:
                with socket.socket() as t:
                    t.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


class Farm:
    """sshd on each host, one ssh client config with Host farm -> snmplb connect."""

    def __init__(self, base: Path, hosts: dict[str, str], shared_key: bool = True) -> None:
        """``shared_key``: one host key on every server; else each its own, all listed under "farm"."""
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.host_key, self.user_key = base / "farm_host_key", base / "user_key"
        keygen(self.host_key)
        keygen(self.user_key)
        keys = {name: self.host_key for name in hosts}
        if not shared_key:
            keys = {name: base / f"{name}_host_key" for name in hosts}
            for k in keys.values():
                keygen(k)
        authorized = base / "authorized_keys"
        authorized.write_text(self.user_key.with_suffix(".pub").read_text())
        # One alias, one key for the whole farm: whichever server answers, ssh checks it under "farm".
        self.known = base / "known_hosts"
        self.known.write_text("".join("farm " + " ".join(k.with_suffix(".pub").read_text().split()[:2]) + "\n"
                                      for k in dict.fromkeys(keys.values())))
        self.port = free_port(list(hosts.values()))
        self.servers = {name: FarmSshd(base, name, host, self.port, keys[name], authorized)
                        for name, host in hosts.items()}
        self.config = base / "ssh_config"
        self.config.write_text(
            "Host farm\n"
            f"  ProxyCommand {BIN / 'snmplb'} connect --connect-timeout 3 %p\n"
            f"  Port {self.port}\n  User root\n  IdentityFile {self.user_key}\n  IdentitiesOnly yes\n"
            f"  HostKeyAlias farm\n  UserKnownHostsFile {self.known}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n")

    def __enter__(self) -> Farm:
        for s in self.servers.values():
            s.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.servers.values():
            s.stop()

    def ssh(self, command: str, env: dict[str, str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """``ssh -F config farm COMMAND`` with ``env`` (the LB_* settings) for the ProxyCommand."""
        full = {"PATH": os.environ["PATH"], "HOME": str(self.base), **env}
        return subprocess.run(["ssh", "-F", str(self.config), "farm", command], env=full, timeout=timeout, **kw)

    def who(self, env: dict[str, str]) -> str:
        """Which server took this login (its SetEnv name)."""
        r = self.ssh("echo $SNMPLB_TEST_SERVER", env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()


class Sshd:
    """A real sshd on ``host``:free port, with fresh rsa, ecdsa and ed25519 host keys."""

    def __init__(self, base: Path, host: str) -> None:
        self.base, self.host = base, host
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None
        self.new_keys()

    def new_keys(self) -> None:
        for kind in ("rsa", "ecdsa", "ed25519"):
            key = self.base / f"ssh_host_{kind}_key"
            for f in (key, key.with_suffix(".pub")):
                f.unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)]
                           + (["-b", "2048"] if kind == "rsa" else []), check=True)

    def public_keys(self) -> set[str]:
        return {" ".join(p.read_text().split()[:2]) for p in self.base.glob("ssh_host_*_key.pub")}

    def start(self) -> None:
        conf = self.base / "sshd_config"
        conf.write_text(f"ListenAddress {self.host}\nPort {self.port}\nPidFile {self.base / 'sshd.pid'}\n"
                        "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
                        + "".join(f"HostKey {self.base / f'ssh_host_{k}_key'}\n" for k in ("rsa", "ecdsa", "ed25519")))
        self.proc = start_sshd(conf, self.host, self.port, self.base / "sshd.log")

    def stop(self) -> None:
        stop_sshd(self.proc)
