"""The JSON report: the versioned contract `profile-first.report/v1`."""

from __future__ import annotations

import json


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
