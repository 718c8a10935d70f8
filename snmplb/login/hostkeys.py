"""snmplb-update-sshkeys: put the ssh host keys of extra application servers into the LTSP chroot.

LDM logs in over ssh, so the chroot's /etc/ssh/ssh_known_hosts must hold every
application server's host key, under the name get_hosts prints (the host as
written in LB_SERVERS; [host]:port when ssh listens elsewhere than 22).
In the spirit of LTSP's ltsp-update-sshkeys: read /etc/ltsp/extraservers (one
host or host:port per line, the ssh port; comments and blank lines
allowed), scan each server with ssh-keyscan (rsa, ecdsa, ed25519; bounded
timeout), and merge the keys into each chroot's file: a scanned server's old
keys are replaced (plain or hashed entries), everything else is kept, and the
file is replaced atomically. A server that does not answer is reported and
its existing keys are kept. --dry-run shows the change as a diff.

    snmplb-update-sshkeys                         # every chroot under /opt/ltsp
    snmplb-update-sshkeys --chroot /opt/ltsp/amd64 --dry-run
    snmplb-update-sshkeys --known-hosts FILE app4 app5:2222
"""

from __future__ import annotations

import argparse
import base64
import difflib
import hashlib
import hmac
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from snmplb.kvfile import write_atomic
from snmplb.errors import ConfigError
from snmplb.client.settings import is_host

KEY_TYPES = "rsa,ecdsa,ed25519"
_KEY_ALGOS = ("ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-ed25519")
EXTRASERVERS = Path("/etc/ltsp/extraservers")
LTSP_ROOT = Path("/opt/ltsp")


@dataclass(frozen=True)
class Target:
    """A server to scan: its name as LB_SERVERS writes it, and its ssh port."""

    host: str
    port: int = 22

    @property
    def known_hosts_name(self) -> str:
        """How ssh looks the server up in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_target(entry: str) -> Target:
    host, port = entry, 22
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest:
            port = int(rest.lstrip(":")) if rest.startswith(":") and rest[1:].isdigit() else -1
    elif entry.count(":") == 1:
        host, p = entry.split(":")
        port = int(p) if p.isdigit() else -1
    if not is_host(host) or not 0 < port < 65536:
        raise ConfigError(f"{entry!r} is not host or host:port")
    return Target(host, port)


def parse_extraservers(text: str) -> tuple[list[Target], list[str]]:
    """Targets from an extraservers file, and one problem per bad line."""
    targets: list[Target] = []
    problems = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            t = parse_target(line)
        except ConfigError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if t not in targets:
            targets.append(t)
    return targets, problems


def parse_scan(output: str, target: Target) -> list[str]:
    """ssh-keyscan's key lines, renamed to the target's known_hosts name; anything else is dropped."""
    keys = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) != 3 or line.startswith("#") or fields[1] not in _KEY_ALGOS:
            continue
        try:
            base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        keys.append(f"{target.known_hosts_name} {fields[1]} {fields[2]}")
    return sorted(set(keys))


def scan_all(targets: list[Target], timeout: int) -> dict[Target, list[str] | str]:
    """Key lines per target, or why it could not be scanned. All scans run at once, each bounded."""
    procs = {}
    out: dict[Target, list[str] | str] = {}
    for t in targets:
        try:
            procs[t] = subprocess.Popen(["ssh-keyscan", "-T", str(timeout), "-t", KEY_TYPES, "-p", str(t.port), t.host],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        except OSError as exc:
            out[t] = f"cannot run ssh-keyscan ({exc.strerror})"
    for t, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            out[t] = "ssh-keyscan did not finish in time"
            continue
        keys = parse_scan(stdout, t)
        reason = " ".join(ln for ln in stderr.splitlines() if not ln.startswith("#"))[:200]
        out[t] = keys if keys else f"no host keys ({reason or 'no answer'})"
    return out


def _matches(pattern: str, name: str) -> bool:
    """A known_hosts host pattern against a name: plain, or hashed (|1|salt|hmac-sha1)."""
    if pattern.startswith("|1|"):
        try:
            _, _, salt, digest = pattern.split("|")
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:
            return False
    return pattern == name


def merge(existing: str, fresh: dict[str, list[str]]) -> str:
    """The known_hosts text with the names in ``fresh`` replaced by their new key lines."""
    out = []
    for line in existing.splitlines():
        fields = line.split(None, 1)
        if not fields or line.lstrip().startswith("#") or len(fields) < 2 or fields[0].startswith("@"):
            out.append(line)  # comments, blanks, @cert-authority/@revoked markers: kept as they are
            continue
        patterns = [p for p in fields[0].split(",") if not any(_matches(p, n) for n in fresh)]
        if patterns:
            out.append(",".join(patterns) + " " + fields[1])
    for name in fresh:
        out.extend(fresh[name])
    return "\n".join(out) + "\n" if out else ""


def not_utf8_lines(text: str) -> int:
    """How many lines of a surrogateescape-decoded text held bytes that are not UTF-8."""
    return sum(1 for line in text.splitlines() if any("\udc80" <= c <= "\udcff" for c in line))


def _printable(text: str) -> str:
    """Text read with surrogateescape, safe to print (undecodable bytes shown as \\xNN)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def update_file(path: Path, fresh: dict[str, list[str]], dry_run: bool) -> tuple[bool, str, int]:
    """Merge into ``path`` (atomically); returns (changed, unified diff, lines that are not UTF-8).

    The file is read and written as bytes (surrogateescape): a line in another
    encoding (a Latin-1 comment or host name) is kept byte for byte, never
    re-encoded or lost.
    """
    try:
        old = path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        old = ""
    new = merge(old, fresh)
    diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), str(path)))
    if new != old and not dry_run:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        write_atomic(path, new.encode("utf-8", "surrogateescape"), mode=mode)
    return new != old, _printable(diff), not_utf8_lines(old)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="snmplb-update-sshkeys", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("servers", nargs="*", help="host or host:port to scan besides the extraservers file")
    ap.add_argument("--extraservers", type=Path, default=EXTRASERVERS, metavar="FILE",
                    help=f"the servers to scan, one a line (default {EXTRASERVERS})")
    ap.add_argument("--chroot", type=Path, action="append", default=[], metavar="DIR",
                    help=f"an LTSP chroot (repeatable; default: every chroot under {LTSP_ROOT})")
    ap.add_argument("--known-hosts", type=Path, action="append", default=[], metavar="FILE",
                    help="a known_hosts file to update (repeatable)")
    ap.add_argument("--timeout", type=int, default=5, metavar="SECONDS", help="ssh-keyscan timeout per server, seconds (5)")
    ap.add_argument("--dry-run", action="store_true", help="show the change, write nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit 0: all scanned and merged; 1: some servers could not be scanned (their keys kept); 2: usage."""
    args = _parser().parse_args(argv)
    targets: list[Target] = []
    if args.extraservers.exists():
        targets, problems = parse_extraservers(args.extraservers.read_text(errors="replace"))
        for p in problems:
            print(f"snmplb-update-sshkeys: {args.extraservers}: {p}", file=sys.stderr)
    elif args.extraservers != EXTRASERVERS or not args.servers:
        print(f"snmplb-update-sshkeys: {args.extraservers}: no such file", file=sys.stderr)
    for entry in args.servers:
        try:
            t = parse_target(entry)
        except ConfigError as exc:
            print(f"snmplb-update-sshkeys: {exc}", file=sys.stderr)
            return 2
        if t not in targets:
            targets.append(t)
    files = list(args.known_hosts) + [c / "etc/ssh/ssh_known_hosts" for c in args.chroot]
    if not files:
        files = [c / "etc/ssh/ssh_known_hosts" for c in sorted(LTSP_ROOT.glob("*")) if (c / "etc/ssh").is_dir()]
    if not targets or not files:
        print("snmplb-update-sshkeys: nothing to do (no servers, or no chroot/known_hosts file)", file=sys.stderr)
        return 2
    if shutil.which("ssh-keyscan") is None:
        print("snmplb-update-sshkeys: ssh-keyscan not found on PATH (install openssh-client); nothing changed",
              file=sys.stderr)
        return 2
    scanned = scan_all(targets, args.timeout)
    fresh = {t.known_hosts_name: v for t, v in scanned.items() if isinstance(v, list)}
    failed = {t: v for t, v in scanned.items() if isinstance(v, str)}
    for t, why in failed.items():
        print(f"snmplb-update-sshkeys: {t.known_hosts_name}: {why}; its existing keys are kept", file=sys.stderr)
    for path in files:
        try:
            changed, diff, foreign = update_file(path, fresh, args.dry_run)
        except OSError as exc:
            print(f"snmplb-update-sshkeys: {path}: {exc.strerror}", file=sys.stderr)
            return 2
        if foreign:
            print(f"snmplb-update-sshkeys: {path}: {foreign} line(s) are not UTF-8; kept as they are",
                  file=sys.stderr)
        if args.dry_run:
            print(diff or f"{path}: no change", end="" if diff else "\n")
        else:
            print(f"{path}: {'updated' if changed else 'unchanged'} ({len(fresh)} servers scanned)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
