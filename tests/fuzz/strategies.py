"""Hypothesis strategies for outside input (any JSON-like value, valid documents with one part spoiled),
and validators for the answers that ``docs/openapi.yaml`` describes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import yaml
from hypothesis import strategies as st

from tests.conftest import ROOT

OPENAPI = ROOT / "docs" / "openapi.yaml"
DOCUMENT = yaml.safe_load(OPENAPI.read_text())


def schema_validator(name: str) -> Any:
    """A validator of ``#/components/schemas/<name>`` of the OpenAPI document."""
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    )


ANSWER_SCHEMAS = {
    "filter": schema_validator("ExtenderFilterResult"),
    "prioritize": schema_validator("HostPriorityList"),
}
ERROR_SCHEMA = schema_validator("ErrorBody")

# Every code point, lone surrogates included: JSON text may carry them as \ud800 escapes.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: YAML (.nan, .inf) and Python's json module produce them
    | TEXT
    | st.sampled_from(["1", "-1", "1e400", "99999999999999999999", "0x10", "1Ki", "", " ", "all", "v1"])
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position inside a JSON-like value, the value itself first."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with the part at ``path`` replaced by ``new`` (the original is left alone)."""
    if not path:
        return new
    copied = copy.copy(value)
    copied[path[0]] = replaced(value[path[0]], path[1:], new)
    return copied


@st.composite
def spoiled(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid value with one part (possibly the whole) replaced by any JSON-like value, or dropped."""
    value = draw(valid)
    path = draw(st.sampled_from(list(paths(value))))
    if path and isinstance(parent := _at(value, path[:-1]), dict) and draw(st.booleans()):
        trimmed = {k: v for k, v in parent.items() if k != path[-1]}
        return replaced(value, path[:-1], trimmed)
    return replaced(value, path, draw(JSON))


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value
