"""Benchmark: one full-row GET through snmpd to snmplb-agent, against a GET of sysUpTime.

Starts a real snmpd with the project's drop-in and agent on loopback (the
same fleet as the tests), then, in the same run and alternating so that
machine noise hits both alike:
- latency: round trip of one SNMPv2c GET over one UDP socket of
  sysUpTime.0 (built into snmpd, the baseline), of lbRow.0 (the full row as
  thin clients read it: one varbind), and of all the other scalars in one GET
  (what an NMS reading every object pays);
- throughput: GETs per second of each, with 4 requests outstanding.

    .venv/bin/python bench/agent_latency.py [--rounds N] [--seconds S] [--json FILE]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from snmplb import mib  # noqa: E402
from snmplb.lab.fleet import SYS_UPTIME, FakeLoad, Fleet  # noqa: E402

P = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def encode_get(oids: list[str], request_id: int, community: str) -> bytes:
    pdu = P.GetRequestPDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, request_id)
    P.apiPDU.set_varbinds(pdu, [(o.lstrip("."), P.Null("")) for o in oids])
    msg = P.Message()
    P.apiMessage.set_defaults(msg)
    P.apiMessage.set_community(msg, community)
    P.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def decode(data: bytes) -> tuple[int, int]:
    """(request id, number of varbinds with a value) of a response."""
    msg, _ = decoder.decode(data, asn1Spec=P.Message())
    pdu = P.apiMessage.get_pdu(msg)
    good = sum(1 for _, v in P.apiPDU.get_varbinds(pdu) if v.tagSet not in (P.NoSuchInstance.tagSet, P.NoSuchObject.tagSet))
    return int(P.apiPDU.get_request_id(pdu)), good


def round_trip(sock: socket.socket, packet: bytes) -> float:
    t0 = time.perf_counter()
    sock.send(packet)
    sock.recv(65535)
    return time.perf_counter() - t0


def throughput(sock: socket.socket, oids: list[str], community: str, seconds: float, outstanding: int) -> float:
    """Full-row GETs answered per second with ``outstanding`` requests in flight."""
    packets = [encode_get(oids, 10_000 + i, community) for i in range(outstanding)]
    sock.settimeout(2.0)
    for p in packets:
        sock.send(p)
    done = 0
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end and done < 10_000_000:
        data = sock.recv(65535)
        if done == 0:
            decode(data)  # the first answer must be a well-formed response
        done += 1
        sock.send(packets[done % outstanding])
    elapsed = time.perf_counter() - t0
    for _ in range(outstanding):  # drain what is still in flight
        try:
            sock.recv(65535)
        except socket.timeout:
            break
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000, help="latency samples per request kind")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    community = "snmplb-ltsp"
    scalars = [mib.oid_str(o.instance) for o in mib.OBJECTS if o is not mib.ROW]
    row = [mib.oid_str(mib.ROW.instance)]
    with tempfile.TemporaryDirectory() as tmp, Fleet(Path(tmp)) as fleet:
        inst = fleet.add("bench", FakeLoad(load1=1.5, sessions=(("u1", "h1"), ("u2", "h2"))))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((inst.host, inst.port))
        sock.settimeout(2.0)
        kinds = {"sysUpTime": [SYS_UPTIME], "lbRow": row, "all_scalars": scalars}
        packets = {k: encode_get(oids, 2, community) for k, oids in kinds.items()}
        for k, oids in kinds.items():
            _, good = decode((sock.send(packets[k]), sock.recv(65535))[1])
            assert good == len(oids), f"{k}: {good} of {len(oids)} objects answered"
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for i in range(args.rounds + 200):  # the first 200 are warm-up
            for k in kinds:
                t = round_trip(sock, packets[k])
                if i >= 200:
                    times[k].append(t)
        rates = {k: throughput(sock, oids, community, args.seconds, 4) for k, oids in kinds.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"rounds": args.rounds, "scalars_in_all_scalars": len(scalars)}
    for k in kinds:
        res[f"{k}_median_ms"] = round(med[k] * 1e3, 3)
        res[f"{k}_p90_ms"] = round(statistics.quantiles(times[k], n=10)[-1] * 1e3, 3)
        res[f"{k}_ratio_to_sysUpTime"] = round(med[k] / med["sysUpTime"], 2)
        res[f"{k}_gets_per_s"] = round(rates[k])
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
