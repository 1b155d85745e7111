"""The shipped JSON Schema of the report, and validation against it."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import jsonschema


@cache
def report_schema() -> dict:
    return json.loads(resources.files("analyzer").joinpath("schema/report-v1.json").read_text())


def validate_report(report: dict) -> None:
    """Raise jsonschema.ValidationError when `report` breaks the v1 contract."""
    jsonschema.validate(report, report_schema(), format_checker=jsonschema.FormatChecker())
