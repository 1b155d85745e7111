"""The JSON report: the versioned contract `profile-first.report/v1`.

Strings stay as they came (it is data, for scripts), but the document is always valid UTF-8: a
lone surrogate (from a `"\\ud800"` in the input, or a non-UTF-8 file name) is written as its
`\\uXXXX` escape, which every JSON parser reads back to the same string.
"""

from __future__ import annotations

import json
import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(report: dict) -> str:
    text = json.dumps(report, indent=2, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"
