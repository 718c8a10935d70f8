"""chroot/snmplb-feed.h, the C greeters' parser of `snmplb feed` messages, under the sanitizers.

The header is compiled here with gcc's -fsanitize=address,undefined (plus float-cast-overflow and
float-divide-by-zero, which -fsanitize=undefined leaves out: a 1e300 read into a long is one) and
-fno-sanitize-recover=all: any undefined behaviour or out-of-bounds access aborts the program. Every
message is parsed from a heap buffer of its exact size. Two programs: tests/c/feed_reader.c (the greeter
stand-in of tests/test_feed.py, one message from stdin) for the named cases, and tests/c/feed_fuzz.c
(mutations of well-formed messages, seeded) for the rest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from snmplb.login import feedformat
from snmplb.login.feedformat import FeedRow, Snapshot

pytestmark = pytest.mark.fleet  # compiles and runs C programs (conftest.py: markers)

PROJECT = Path(__file__).resolve().parent.parent
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow,float-divide-by-zero", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g", "-O1"]
RUN_ENV = {"PATH": os.environ["PATH"], "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1"}


def compile_c(tmp_path_factory: pytest.TempPathFactory, source: str) -> Path:
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("no gcc (apt-get install gcc)")
    out = tmp_path_factory.mktemp("c") / Path(source).stem
    r = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *SANITIZE, f"-I{PROJECT / 'chroot'}",
                        "-o", str(out), str(PROJECT / "tests" / "c" / source), "-lrt"],
                       capture_output=True, text=True, timeout=180)
    if r.returncode != 0 and "libasan" in r.stderr + r.stdout:
        pytest.skip(f"gcc cannot link the sanitizers here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    return compile_c(tmp_path_factory, "feed_reader.c")


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    return compile_c(tmp_path_factory, "feed_fuzz.c")


def parse(reader: Path, message: bytes) -> subprocess.CompletedProcess:
    r = subprocess.run([str(reader), "-"], input=message, capture_output=True, timeout=30, env=RUN_ENV)
    assert b"runtime error" not in r.stderr and b"AddressSanitizer" not in r.stderr, r.stderr.decode()[-2000:]
    return r


HEAD = b"SNMPLB-FEED 1 1700000000 a 1\n"


def line(host=b"a", state=b"Idle", usable=b"1", load=b"0.20", free=b"1024", sessions=b"2", ms=b"1.5",
         reason=b"-") -> bytes:
    return b"\t".join((host, state, usable, load, free, sessions, ms, reason)) + b"\n"


BAD = {
    "1e300 free MiB": HEAD + line(free=b"1e300"),
    "1e300 load": HEAD + line(load=b"1e300"),
    "nan sessions": HEAD + line(sessions=b"nan"),
    "nan answer time": HEAD + line(ms=b"nan"),
    "inf load": HEAD + line(load=b"inf"),
    "a negative count": HEAD + line(sessions=b"-5"),
    "a 10^30 refresh time": b"SNMPLB-FEED 1 1" + b"0" * 30 + b" a 1\n" + line(),
    "a 10^30 server count": b"SNMPLB-FEED 1 1 a 1" + b"0" * 30 + b"\n" + line(),
    "a 10^30 sessions": HEAD + line(sessions=b"1" + b"0" * 30),
    "a negative refresh time": b"SNMPLB-FEED 1 -5 a 1\n" + line(),
    "an empty host": HEAD + line(host=b""),
    "an empty state": HEAD + line(state=b""),
    "an empty load": HEAD + line(load=b""),
    "an empty reason": HEAD + line(reason=b""),
    "an empty usable": HEAD + line(usable=b""),
    "usable 2": HEAD + line(usable=b"2"),
    "an empty recommended": b"SNMPLB-FEED 1 1  1\n" + line(),
    "two spaces in the header": b"SNMPLB-FEED  1 1 a 1\n" + line(),
    "a 65,000-byte host": HEAD + line(host=b"h" * 65000),
    "a 256-byte host": HEAD + line(host=b"h" * 256),
    "a 121-byte reason": HEAD + line(reason=b"r" * 121),
    "a 16-byte state": HEAD + line(state=b"s" * 16),
    "a 65,000-byte recommended host": b"SNMPLB-FEED 1 1 " + b"h" * 65000 + b" 1\n" + line(),
    "a NUL in a host": HEAD + line(host=b"a\0b"),
    "a control byte in a reason": HEAD + line(reason=b"bad\x1b[2J"),
    "an exponent": HEAD + line(free=b"1e3"),
    "a hexadecimal number": HEAD + line(free=b"0x10"),
    "blanks around a number": HEAD + line(free=b" 12"),
    "a point without digits": HEAD + line(load=b"1."),
    "more lines than counted": HEAD + line() + line(host=b"b"),
    "fewer lines than counted": b"SNMPLB-FEED 1 1 a 2\n" + line(),
}


@pytest.mark.parametrize("message", BAD.values(), ids=BAD.keys())
def test_a_malformed_message_is_refused_without_undefined_behaviour(reader, message):
    """Today: a 1e300 or nan read into a long (undefined: UBSan aborts), a 10^30 time read by sscanf, empty
    fields accepted, a long host cut to 255 bytes without a word: all parsed as if well-formed."""
    r = parse(reader, message)
    assert (r.returncode, r.stdout) == (3, b"unparsable\n"), r.stdout[:300]


def test_what_the_feed_sends_still_parses_whole(reader):
    """The edges of the format as the feed writes them: a 255-byte host and recommended host, a 120-byte
    reason, the largest gauges, unknown numbers, no reason."""
    host = "h" * 255
    rows = (FeedRow(host, "Unavailable", False, 42949672.95, 4194303, 4294967295, 99999.9, "r" * 120),
            FeedRow("b", "Down", False, None, None, None, None, ""),
            FeedRow("fd00::7", "Idle", True, 0.0, 0, 0, 0.0, ""))
    data = feedformat.encode(Snapshot(1_700_000_000, host, rows))
    r = parse(reader, data)
    assert r.returncode == 0, r.stdout
    out = r.stdout.decode().splitlines()
    assert out[0] == f"refreshed=1700000000 recommended={host} count=3"
    assert out[1] == f"{host}|Unavailable|usable=0|load=42949672.95|free=4194303|sessions=4294967295|ms=yes|reason={'r' * 120}"
    assert out[2] == "b|Down|usable=0|load=-1.00|free=-1|sessions=-1|ms=no|reason="
    assert out[3] == "fd00::7|Idle|usable=1|load=0.00|free=0|sessions=0|ms=yes|reason="


def test_the_largest_messages_the_feed_sends_parse(reader):
    long_rows = tuple(FeedRow(f"server-{i:03d}." + "x" * 200, "Unavailable", False, None, None, None, None, "r" * 300)
                      for i in range(50))
    short_rows = tuple(FeedRow(f"s{i}", "Down", False, 1.25, 10, 3, 0.5, "") for i in range(400))
    for rows in (long_rows, short_rows):
        data = feedformat.encode(Snapshot(1, rows[0].host, rows))
        r = parse(reader, data)
        assert r.returncode == 0
        assert r.stdout.decode().splitlines()[0].endswith(f"count={len(feedformat.decode(data).rows)}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_under_asan_and_ubsan(fuzzer, seed):
    """30,000 mutated messages a seed (bytes changed, fields replaced by 1e300, nan, 10^30, empty..., long
    runs inserted, lines cut): each parsed or refused cleanly, and every parsed one keeps the header's
    promises (strings within their buffers, no control byte, numbers -1 or finite)."""
    r = subprocess.run([str(fuzzer), str(seed), "30000"], capture_output=True, text=True, timeout=300, env=RUN_ENV)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.startswith("fuzz: 30000 messages") and " 0 parsed" not in r.stdout, r.stdout
