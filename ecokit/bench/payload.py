"""What a bench message carries: run, phase, publisher, sequence number and send time.

``binary`` (default): a 24-byte header, then padding up to the payload size::

    offset  size  field
    0       2     magic b"EB"
    2       1     format version (1)
    3       1     phase index
    4       4     run id (unsigned, big endian; the same for every message of one run)
    8       4     publisher index
    12      4     sequence number of the publisher (1, 2, 3, ... across phases)
    16      8     send time, nanoseconds since the epoch (CLOCK_REALTIME)

``json``: ``{"bench": "<run id, 8 hex digits>", "phase": n, "pub": n, "seq": n, "ts": ns,
"pad": "..."}`` padded to the payload size, for brokers whose rules need JSON.

The send time is wall-clock time, so sender and receiver may be different processes on one
host (ecokit bench runs publishers and subscribers in separate processes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ecokit.config.bench import BINARY_HEADER, JSON_MIN

MAGIC = b"EB"
VERSION = 1
HEADER = struct.Struct("!2sBBIIIQ")
assert HEADER.size == BINARY_HEADER
_JSON_PAD_OVERHEAD = len(',"pad":""')


@dataclass(frozen=True, slots=True)
class Stamp:
    run: int
    phase: int
    publisher: int
    seq: int
    sent_ns: int


class PayloadError(ValueError):
    """A message that is not a bench payload (or not of this run's format)."""


def run_tag(run_id: str) -> int:
    """The 32-bit run id carried in each message, from the run's 8-hex-digit id."""
    return int(run_id, 16) & 0xFFFFFFFF


def binary_encoder(run: int, size: int) -> Callable[[int, int, int, int], bytes]:
    """``encode(phase, publisher, seq, sent_ns) -> bytes`` of exactly ``size`` bytes."""
    if size < BINARY_HEADER:
        raise ValueError(f"a binary bench payload needs at least {BINARY_HEADER} bytes, not {size}")
    pack = HEADER.pack
    padding = bytes(size - BINARY_HEADER)

    def encode(phase: int, publisher: int, seq: int, sent_ns: int) -> bytes:
        return pack(MAGIC, VERSION, phase, run, publisher, seq, sent_ns) + padding

    return encode


def json_encoder(run: int, size: int) -> Callable[[int, int, int, int], bytes]:
    """``encode(...)`` of a JSON object padded to exactly ``size`` bytes."""
    if size < JSON_MIN:
        raise ValueError(f"a json bench payload needs at least {JSON_MIN} bytes, not {size}")
    tag = f"{run:08x}"

    def encode(phase: int, publisher: int, seq: int, sent_ns: int) -> bytes:
        head = f'{{"bench":"{tag}","phase":{phase},"pub":{publisher},"seq":{seq},"ts":{sent_ns}'
        pad = size - len(head) - _JSON_PAD_OVERHEAD - 1
        if pad >= 0:
            return f'{head},"pad":"{"x" * pad}"}}'.encode()
        return (head + "}").encode()

    return encode


# -- pre-encoded payloads for the fast publish path -------------------------------------------------

BINARY_STAMP = struct.Struct("!IQ")  # seq, sent_ns at offset 12 of the binary header
JSON_STAMP = struct.Struct("19s7s10s")  # send time, ',"seq":', sequence number (space-padded: JSON whitespace)
_JSON_SEQ_KEY = b',"seq":'


@dataclass(frozen=True)
class PayloadTemplate:
    """One publisher's payload for one phase with the sequence number and send time left to stamp:
    ``stamp`` packs them at ``offset`` (``values(seq, sent_ns)`` gives what it packs)."""

    payload: bytes
    stamp: struct.Struct
    offset: int
    binary: bool

    def values(self, seq: int, sent_ns: int) -> tuple[object, ...]:
        if self.binary:
            return seq, sent_ns
        return b"%19d" % sent_ns, _JSON_SEQ_KEY, b"%10d" % seq


def payload_template(fmt: str, run: int, size: int, phase: int, publisher: int) -> PayloadTemplate:
    """The payload of ``size`` bytes with everything but the sequence number and send time filled in.

    The JSON form puts the send time and the sequence number side by side, fixed width (spaces
    before the number are JSON whitespace), so both forms are patched in place."""
    if fmt == "binary":
        if size < BINARY_HEADER:
            raise ValueError(f"a binary bench payload needs at least {BINARY_HEADER} bytes, not {size}")
        data = HEADER.pack(MAGIC, VERSION, phase, run, publisher, 0, 0) + bytes(size - BINARY_HEADER)
        return PayloadTemplate(data, BINARY_STAMP, 12, True)
    head = f'{{"bench":"{run:08x}","phase":{phase},"pub":{publisher},"ts":'.encode()
    body = head + b"0" * 19 + _JSON_SEQ_KEY + b"0" * 10
    pad = size - len(body) - _JSON_PAD_OVERHEAD - 1
    if pad < 0:
        raise ValueError(f"a json bench payload needs at least {len(body) + _JSON_PAD_OVERHEAD + 1} bytes, not {size}")
    data = body + b',"pad":"' + b"x" * pad + b'"}'
    return PayloadTemplate(data, JSON_STAMP, len(head), False)


def encoder(fmt: str, run: int, size: int) -> Callable[[int, int, int, int], bytes]:
    return binary_encoder(run, size) if fmt == "binary" else json_encoder(run, size)


def decode_binary(payload: bytes) -> Stamp:
    if len(payload) < BINARY_HEADER or payload[:2] != MAGIC:
        raise PayloadError("not an ecokit bench payload")
    _, version, phase, run, publisher, seq, sent_ns = HEADER.unpack_from(payload)
    if version != VERSION:
        raise PayloadError(f"bench payload version {version} (this ecokit reads {VERSION})")
    return Stamp(run, phase, publisher, seq, sent_ns)


def decode_json(payload: bytes) -> Stamp:
    try:
        doc = orjson.loads(payload)
        return Stamp(int(doc["bench"], 16), int(doc["phase"]), int(doc["pub"]), int(doc["seq"]), int(doc["ts"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise PayloadError("not an ecokit bench payload") from None


def decoder(fmt: str) -> Callable[[bytes], Stamp]:
    return decode_binary if fmt == "binary" else decode_json
