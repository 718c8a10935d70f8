"""The BER codec and SNMP messages of get_hosts, cross-checked against pysnmp and the RFCs."""

from __future__ import annotations

import hashlib
import random

import pytest
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type.univ import OctetString
from pysnmp.proto import api
from pysnmp.proto.secmod.rfc3414.localkey import hash_passphrase, localize_key as pysnmp_localize

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib
from snmplb.client.ber import BerError

P = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
ROW = mib.ROW.instance


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**31 - 1, -(2**31), 2**40])
def test_integers_round_trip_and_match_pyasn1(n):
    ours = ber.enc_int(n)
    if -(2**31) <= n < 2**31:  # pysnmp's Integer is Integer32
        assert ours == encoder.encode(P.Integer(n))
    if -(2**31) <= n < 2**31:
        assert ber.as_int(ber.decode(ours)) == n
    else:  # SNMP's INTEGER is Integer32 (RFC 2578 7.1.1): anything wider is malformed where it is decoded
        with pytest.raises(BerError):
            ber.as_int(ber.decode(ours))


@pytest.mark.parametrize("tag,good,bad", [
    (ber.GAUGE32, 2**32 - 1, 2**32), (ber.COUNTER32, 0, 2**32), (ber.TIMETICKS, 2**32 - 1, 2**33),
    (ber.COUNTER64, 2**64 - 1, 2**64), (ber.INTEGER, -(2**31), -(2**31) - 1)])
def test_every_integer_type_is_range_checked_where_it_is_decoded(tag, good, bad):
    size = lambda n: max(1, (n.bit_length() + 8) // 8)  # noqa: E731
    assert ber.as_int(ber.decode(ber.tlv(tag, good.to_bytes(size(good), "big", signed=True))), tag) == good
    with pytest.raises(BerError):
        ber.as_int(ber.decode(ber.tlv(tag, bad.to_bytes(size(bad), "big", signed=True))), tag)
    with pytest.raises(BerError):  # a caller's narrower range holds too
        ber.as_int(ber.decode(ber.enc_int(5)), ber.INTEGER, low=6)


@pytest.mark.parametrize("oid", [(1, 3), (1, 3, 6, 1, 4, 1, 8072, 9999, 9999, 377, 1, 26, 0), (2, 100, 3),
                                 (1, 3, 6, 1, 2**32 - 1, 0, 127, 128, 16383, 16384)])
def test_oids_round_trip_and_match_pyasn1(oid):
    assert ber.enc_oid(oid) == encoder.encode(P.ObjectIdentifier(oid))
    assert ber.as_oid(ber.decode(ber.enc_oid(oid))) == oid


def test_oids_decoded_and_encoded_once_per_process_give_the_same_answers_and_errors():
    # A poll asks every server the same OIDs (a user's question: two of 38 arcs): both directions keep them.
    from snmplb import affinity

    oids = [ROW, *affinity.instances(bytes(range(200, 224)))]
    fresh = [ber.enc_seq(ber.enc_oid(o), ber.enc_null()) for o in oids]
    for rid in (1, 2):
        pdu = snmpcodec.encode_pdu(ber.GET_REQUEST, rid, oids)
        assert pdu == ber.enc_seq(ber.enc_int(rid), ber.enc_int(0), ber.enc_int(0), ber.enc_seq(b"".join(fresh)),
                                  tag=ber.GET_REQUEST)
        assert [o for o, _ in snmpcodec.decode_pdu(ber.decode(pdu)).varbinds] == oids
    for _ in range(2):  # what fails to decode is never kept: it fails again
        with pytest.raises(BerError):
            ber.as_oid(ber.Tlv(ber.OID, b"\x2b\x86"))
    many = [(1, 3, 6, 1, 4, 1, n) for n in range(200)]  # more than are kept: still right
    assert [ber.as_oid(ber.decode(ber.enc_oid(o))) for o in many] == many
    assert snmpcodec.decode_pdu(ber.decode(snmpcodec.encode_pdu(ber.GET_REQUEST, 3, many))).varbinds[-1][0] == many[-1]


def test_v2c_get_is_what_pysnmp_decodes():
    data = snmpcodec.v2c_get(b"s3cret", 12345, [ROW, (1, 3, 6, 1, 2, 1, 1, 3, 0)])
    msg, rest = decoder.decode(data, asn1Spec=P.Message())
    assert rest == b""
    assert str(P.apiMessage.get_community(msg)) == "s3cret"
    pdu = P.apiMessage.get_pdu(msg)
    assert int(P.apiPDU.get_request_id(pdu)) == 12345
    assert [tuple(o) for o, _ in P.apiPDU.get_varbinds(pdu)] == [ROW, (1, 3, 6, 1, 2, 1, 1, 3, 0)]


def _pysnmp_response(rid: int, community: str, varbinds: list, error_status: int = 0) -> bytes:
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, rid)
    P.apiPDU.set_error_status(pdu, error_status)
    P.apiPDU.set_varbinds(pdu, varbinds)
    msg = P.Message()
    P.apiMessage.set_defaults(msg)
    P.apiMessage.set_community(msg, community)
    P.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def test_pysnmp_responses_decode_with_every_value_type():
    vbs = [((1, 3, 1), P.Integer(-5)), ((1, 3, 2), P.OctetString(b"row")), ((1, 3, 3), P.Gauge32(2**32 - 1)),
           ((1, 3, 4), P.Counter64(2**64 - 1)), ((1, 3, 5), P.TimeTicks(7)), ((1, 3, 6), P.IpAddress("10.0.0.1")),
           ((1, 3, 7), P.NoSuchInstance("")), ((1, 3, 8), P.ObjectIdentifier((1, 3, 6)))]
    pdu = snmpcodec.v2c_parse(_pysnmp_response(77, "c", vbs), b"c")
    assert pdu.tag == ber.RESPONSE and pdu.request_id == 77 and pdu.error_status == 0
    values = dict(pdu.varbinds)
    assert ber.as_int(values[(1, 3, 1)]) == -5
    assert ber.as_bytes(values[(1, 3, 2)]) == b"row"
    assert ber.as_int(values[(1, 3, 3)], ber.GAUGE32) == 2**32 - 1
    assert ber.as_int(values[(1, 3, 4)], ber.COUNTER64) == 2**64 - 1
    assert values[(1, 3, 7)].tag == ber.NO_SUCH_INSTANCE
    with pytest.raises(BerError):
        snmpcodec.v2c_parse(_pysnmp_response(77, "c", vbs), b"other community")


def test_malformed_input_only_ever_raises_berror():
    good = _pysnmp_response(1, "c", [(ROW, P.OctetString(b"1 2 3"))])
    rng = random.Random(7)
    samples = [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80", b"\x1f\x01\x00", b"\x30" + b"\x30\x00" * 3,
               b"\x30\x02\x30\x02"] + [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 80)))
                                       for _ in range(3000)]
    samples += [good[:i] for i in range(len(good))]  # every truncation
    samples += [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:] for i in range(len(good))]  # every byte flipped
    nested = b"\x30\x00"
    for _ in range(20):
        nested = ber.enc_seq(nested)
    samples.append(nested)
    for data in samples:
        for parse in (lambda d: snmpcodec.v2c_parse(d, b"c"), snmpcodec.v3_parse):
            try:
                parse(data)
            except BerError:
                pass


def test_key_localization_matches_rfc3414_and_pysnmp():
    # RFC 3414 A.3.2: SHA, "maplesyrup", engine id 00..02
    engine = bytes.fromhex("000000000000000000000002")
    ku = snmpcodec.password_to_key(b"maplesyrup", "SHA")
    assert ku.hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    assert snmpcodec.localize_key(ku, engine, "SHA").hex() == "6695febc9288e36282235fc7151f128497b38f3f"
    for auth, fn in (("SHA", hashlib.sha1), ("SHA-256", hashlib.sha256), ("SHA-512", hashlib.sha512)):
        for secret in (b"maplesyrup", b"x" * 8, b"a much longer passphrase that does not divide 65536"):
            ku = snmpcodec.password_to_key(secret, auth)
            assert ku == bytes(hash_passphrase(secret, fn))
            assert snmpcodec.localize_key(ku, engine, auth) == bytes(pysnmp_localize(ku, OctetString(engine), fn))


def test_v3_get_authenticates_and_encrypts_what_v3_parse_verifies_and_decrypts():
    engine = b"\x80\x00\x1f\x88\x80engine-id"
    auth_key = snmpcodec.localize_key(snmpcodec.password_to_key(b"auth-secret", "SHA-256"), engine, "SHA-256")
    priv_key = snmpcodec.localize_key(snmpcodec.password_to_key(b"priv-secret", "SHA-256"), engine, "SHA-256")
    data = snmpcodec.v3_get(5, 6, [ROW], engine_id=engine, boots=3, time=1000, user=b"snmplb", auth="SHA-256",
                          auth_key=auth_key, priv_key=priv_key, salt=b"12345678")
    reply = snmpcodec.v3_parse(data)
    assert reply.msg_id == 5 and reply.flags == 0x07 and reply.usm.engine_id == engine
    assert len(reply.usm.auth_params.value) == 24
    assert snmpcodec.v3_verify(data, reply, "SHA-256", auth_key)
    assert not snmpcodec.v3_verify(data, reply, "SHA-256", priv_key)
    tampered = bytearray(data)
    tampered[-3] ^= 1
    assert not snmpcodec.v3_verify(bytes(tampered), snmpcodec.v3_parse(bytes(tampered)), "SHA-256", auth_key)
    pdu = snmpcodec.v3_pdu(reply, priv_key)
    assert pdu.tag == ber.GET_REQUEST and pdu.request_id == 6 and [o for o, _ in pdu.varbinds] == [ROW]
    with pytest.raises(BerError):  # the wrong key decrypts to noise
        snmpcodec.v3_pdu(reply, auth_key)


def test_discovery_message_is_a_reportable_empty_get():
    reply = snmpcodec.v3_parse(snmpcodec.v3_discovery(9, 10))
    assert reply.flags == 0x04 and reply.usm.engine_id == b"" and reply.usm.user == b""
    pdu = snmpcodec.v3_pdu(reply, None)
    assert pdu.tag == ber.GET_REQUEST and pdu.varbinds == ()
