"""The little of the protobuf wire format that moving weights without parsing them needs.

A message is a run of fields, each a varint tag (field number << 3 | wire type) and a value; a
length-delimited value (strings, bytes, sub-messages) is a varint length and that many bytes. Field
numbers are read from the onnx descriptors, never spelled here.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import onnx

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


class Field(NamedTuple):
    number: int
    wire_type: int
    start: int  # first byte of the tag
    value_start: int  # first byte of the value (after the length, for LEN fields)
    end: int  # one past the value


def number(message: type, name: str) -> int:
    """Field number of ``message.name`` (``number(onnx.TensorProto, "raw_data") == 9``)."""
    return message.DESCRIPTOR.fields_by_name[name].number


def read_varint(buf, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``."""
    value = shift = 0
    while True:
        try:
            byte = buf[pos]
        except IndexError:
            raise WireError("truncated varint") from None
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def header(field_number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field."""
    return encode_varint(field_number << 3 | LEN) + encode_varint(length)


def fields(buf, start: int, end: int) -> Iterator[Field]:
    """The fields of the message in ``buf[start:end]``; ``WireError`` where it is malformed."""
    pos = start
    while pos < end:
        tag, p = read_varint(buf, pos)
        field_number, wire_type = tag >> 3, tag & 7
        if wire_type == VARINT:
            value_start, (_, stop) = p, read_varint(buf, p)
        elif wire_type == I64:
            value_start, stop = p, p + 8
        elif wire_type == I32:
            value_start, stop = p, p + 4
        elif wire_type == LEN:
            length, value_start = read_varint(buf, p)
            stop = value_start + length
        else:
            raise WireError(f"wire type {wire_type} (groups) not supported")
        if field_number == 0 or stop > end:
            raise WireError("field runs past its message")
        yield Field(field_number, wire_type, pos, value_start, stop)
        pos = stop


def string_entries(buf, start: int, end: int) -> dict[str, str]:
    """A ``StringStringEntryProto`` (key 1, value 2) as ``{key: value}``."""
    entry = {}
    for f in fields(buf, start, end):
        if f.wire_type == LEN and f.number in (_KEY, _VALUE):
            entry["key" if f.number == _KEY else "value"] = bytes(buf[f.value_start:f.end]).decode("utf-8", "replace")
    return entry


_KEY = number(onnx.StringStringEntryProto, "key")
_VALUE = number(onnx.StringStringEntryProto, "value")
