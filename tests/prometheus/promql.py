"""What the Prometheus tests need of PromQL and of the shipped dashboard and rules, without Prometheus.

``operands`` splits an alert expression at its top-level comparisons and set operators (``and``, ``or``,
``unless``), so that each vector an alert compares can be evaluated on its own: an alert that is normally
false must still be built from series that exist. ``absent(X)`` is looked into: X must exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "grafana" / "mig-extender-dashboard.json"
RULES = ROOT / "manifests" / "prometheus" / "prometheusrule.yaml"

# Grafana's variables, as a person looking at the whole fleet over the last minutes would have them.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$model": ".*"}

_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(\s*bool\b)?")
_SET_OPERATOR = re.compile(r"(and|or|unless)(?=[\s(])")
_MATCHING = re.compile(r"^\s*(?:(?:on|ignoring|group_left|group_right)\s*(?:\([^)]*\))?\s*)+")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _top_level_parts(expr: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    quote: str | None = None
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            before = expr[i - 1] if i else " "
            match = _COMPARISON.match(expr, i)
            if match is None and (before.isspace() or before == ")"):
                match = _SET_OPERATOR.match(expr, i)
            if match is not None:
                parts.append(expr[start:i])
                i = start = match.end()
                continue
        i += 1
    parts.append(expr[start:])
    return parts


def operands(expr: str) -> list[str]:
    """The vector operands of ``expr``'s top-level comparisons and set operations (numbers dropped)."""
    found: list[str] = []
    for raw in _top_level_parts(expr):
        part = _MATCHING.sub("", raw).strip()
        if not part or _NUMBER.match(part):
            continue
        inner = re.fullmatch(r"absent\s*\((.*)\)", part, re.S)
        if inner:
            found.extend(operands(inner.group(1)))
        else:
            found.append(part)
    return found


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panel_queries() -> list[tuple[str, str]]:
    """(panel title / refId, expr with Grafana's variables substituted) for every target of every panel."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets") or []:
            queries.append((f"{panel['title']} / {target['refId']}", substitute(target["expr"])))
    return queries


def rule_groups() -> dict[str, Any]:
    """``spec`` of the PrometheusRule: a Prometheus rule file."""
    (document,) = [d for d in yaml.safe_load_all(RULES.read_text()) if d]
    assert document["kind"] == "PrometheusRule"
    spec = document["spec"]
    assert isinstance(spec, dict)
    return spec


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"] if "alert" in rule]
