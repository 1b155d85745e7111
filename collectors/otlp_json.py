"""OTLP/JSON encoding of protobuf export requests, as the OTLP specification defines it.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters here:
trace and span ids are hex strings, not base64. Everything else (lowerCamelCase keys,
integer enums, 64-bit integers as decimal strings) is what `MessageToDict` already does.

`to_otlp_json_line` writes that text directly from the message: the fields that are set
(`ListFields`, in field-number order, as `MessageToDict` walks them), each through a writer
chosen once per field descriptor. It is byte-identical to `json.dumps(to_otlp_dict(m),
separators=(",", ":"))` (`reference_json_line`, asserted in tests/test_otlp_json.py) and
~10x faster, which is what makes capture files and the benchmark's generated JSON cheap.
Anything the direct writer does not cover (map fields, extensions, well-known types such as
`Any` with their special JSON forms) falls back to the `MessageToDict` path for that message.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps writes strings with

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.internal import type_checkers

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def to_otlp_dict(message: Message) -> dict:
    """The OTLP/JSON form of an Export*ServiceRequest (or TracesData/MetricsData)."""
    d = MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(d)
    return d


def to_otlp_json_line(message: Message) -> str:
    """One line of the Collector file exporter's `json` format (no trailing newline)."""
    try:
        return _message(message)
    except _Unsupported:
        return reference_json_line(message)


def reference_json_line(message: Message) -> str:
    """The same line through `MessageToDict` and `json.dumps`: the definition `to_otlp_json_line` meets."""
    return json.dumps(to_otlp_dict(message), separators=(",", ":"))


def _hex_ids(node: object) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


# ---- the direct writer

class _Unsupported(Exception):
    """A field the direct writer does not handle; the message goes through MessageToDict."""


Writer = Callable[[object], str]
_writers: dict[FieldDescriptor, Writer] = {}  # field -> writes '"jsonName":value'


def _message(message: Message) -> str:
    writers = _writers
    parts = []
    for field, value in message.ListFields():
        w = writers.get(field)
        if w is None:
            w = writers[field] = _writer_for(field)
        parts.append(w(value))
    return "{" + ",".join(parts) + "}"


_INT64 = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}
_INT32 = {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32}


def _double(v: float) -> str:
    # MessageToDict writes non-finite values as strings; json.dumps writes floats with repr.
    if math.isinf(v):
        return '"-Infinity"' if v < 0 else '"Infinity"'
    if math.isnan(v):
        return '"NaN"'
    return float.__repr__(v)


def _float(v: float) -> str:
    return _double(v) if math.isinf(v) or math.isnan(v) else float.__repr__(type_checkers.ToShortestFloat(v))


def _value_writer(field: FieldDescriptor) -> Writer:
    """How one value of `field` is written (without its name)."""
    t = field.cpp_type
    if t == FieldDescriptor.CPPTYPE_MESSAGE:
        if field.message_type.full_name.startswith("google.protobuf."):
            raise _Unsupported(field.full_name)  # well-known types have their own JSON forms
        return _special_writer(field.message_type) or _message
    if t == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            if field.json_name in _ID_KEYS:  # OTLP/JSON: ids in hex
                return lambda v: '"' + v.hex() + '"'
            return lambda v: '"' + base64.b64encode(v).decode("ascii") + '"'
        return _json_str
    if t in _INT64:
        return lambda v: '"' + str(v) + '"'
    if t in _INT32 or t == FieldDescriptor.CPPTYPE_ENUM:  # enums as integers
        return str
    if t == FieldDescriptor.CPPTYPE_BOOL:
        return lambda v: "true" if v else "false"
    if t == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if t == FieldDescriptor.CPPTYPE_FLOAT:
        return _float
    raise _Unsupported(field.full_name)


def _writer_for(field: FieldDescriptor) -> Writer:
    if field.is_extension or (field.message_type is not None and field.message_type.GetOptions().map_entry):
        raise _Unsupported(field.full_name)
    name = _json_str(field.json_name) + ":"
    value = _value_writer(field)
    if field.is_repeated:
        return lambda vs: name + "[" + ",".join(map(value, vs)) + "]"
    return lambda v: name + value(v)


# Attributes are most of an OTLP message's fields (KeyValue > AnyValue, several per span or point):
# these two skip the generic loop for their usual shapes (a key and a value; one oneof member).

def _key_value(kv: Message) -> str:
    fields = kv.ListFields()
    if len(fields) == 2 and fields[0][0] is _KV_KEY and fields[1][0] is _KV_VALUE:  # the usual case
        return '{"key":' + _json_str(fields[0][1]) + ',"value":' + _any_value(fields[1][1]) + "}"
    return _message(kv)


def _any_value(v: Message) -> str:
    fields = v.ListFields()
    if not fields:
        return "{}"
    (field, value), = fields  # a oneof: at most one is set
    w = _writers.get(field)
    if w is None:
        w = _writers[field] = _writer_for(field)
    return "{" + w(value) + "}"


def _special_writer(descriptor) -> Writer | None:
    global _KV_KEY, _KV_VALUE
    if descriptor.full_name == "opentelemetry.proto.common.v1.KeyValue":
        _KV_KEY, _KV_VALUE = descriptor.fields_by_name["key"], descriptor.fields_by_name["value"]
        return _key_value
    if (descriptor.full_name == "opentelemetry.proto.common.v1.AnyValue" and len(descriptor.oneofs) == 1
            and all(f.containing_oneof is descriptor.oneofs[0] for f in descriptor.fields)):
        return _any_value
    return None


_KV_KEY = _KV_VALUE = None  # KeyValue's key and value fields, set with its writer
