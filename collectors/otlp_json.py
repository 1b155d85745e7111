"""OTLP/JSON encoding of protobuf export requests, as the OTLP specification defines it.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters here:
trace and span ids are hex strings, not base64. Everything else (lowerCamelCase keys,
integer enums, 64-bit integers as decimal strings) is what `MessageToDict` already does.
"""

from __future__ import annotations

import base64
import json

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def to_otlp_dict(message: Message) -> dict:
    """The OTLP/JSON form of an Export*ServiceRequest (or TracesData/MetricsData)."""
    d = MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(d)
    return d


def to_otlp_json_line(message: Message) -> str:
    """One line of the Collector file exporter's `json` format (no trailing newline)."""
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
