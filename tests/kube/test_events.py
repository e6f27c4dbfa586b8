"""Events as the extender writes them: one reporting controller, one note limit, one MicroTime format."""

from __future__ import annotations

import datetime
import re

from hypothesis import given
from hypothesis import strategies as st

from extender.kube.events import (
    NOTE_LIMIT_BYTES,
    REPORTING_CONTROLLER,
    event_body,
    node_reference,
    pod_reference,
    truncate,
)
from extender.kube.times import micro_time, parse_time

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def test_a_pod_event_names_the_pod_and_the_one_reporting_controller() -> None:
    body = event_body(
        pod_reference("team-a", "train", "uid-1"),
        "MigNoLayoutFits",
        "Warning",
        "1x 3g.40gb: no node",
        action="Scheduling",
        instance="mig-extender-0",
        now=NOW,
    )
    assert body["reportingController"] == REPORTING_CONTROLLER == "mig-extender.io/extender"
    assert body["metadata"] == {"generateName": "train-", "namespace": "team-a"}
    assert body["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "team-a",
        "name": "train",
        "uid": "uid-1",
    }
    assert (body["action"], body["reason"], body["type"]) == ("Scheduling", "MigNoLayoutFits", "Warning")
    assert body["note"] == "1x 3g.40gb: no node" and body["reportingInstance"] == "mig-extender-0"
    assert body["eventTime"] == "2026-01-02T03:04:05.000000Z"


def test_a_node_event_lives_in_the_default_namespace() -> None:
    body = event_body(
        node_reference("gpu-a"), "MigRelayoutStarted", "Normal", "x", action="Relayout", instance="i", now=NOW
    )
    assert body["metadata"]["namespace"] == "default" and body["regarding"]["kind"] == "Node"


def test_micro_time_has_six_fraction_digits_in_utc_and_reads_back() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    moment = datetime.datetime(2026, 1, 2, 5, 4, 5, 120, tzinfo=plus_two)
    text = micro_time(moment)
    assert MICRO_TIME.match(text) and text == "2026-01-02T03:04:05.000120Z"
    assert parse_time(text) == moment
    assert parse_time("") is None and parse_time("yesterday") is None


def test_a_long_note_keeps_its_start_and_its_end_within_one_kib() -> None:
    note = "1x 3g.40gb: " + "node gpu-%d is full; " * 200 + "no layout fits"
    short = truncate(note)
    assert len(short.encode()) <= NOTE_LIMIT_BYTES and len(short.encode()) >= NOTE_LIMIT_BYTES - 4
    assert short.startswith("1x 3g.40gb: ") and short.endswith("no layout fits") and "..." in short
    assert truncate("fits") == "fits" and truncate("x" * NOTE_LIMIT_BYTES) == "x" * NOTE_LIMIT_BYTES


def test_the_note_limit_counts_bytes_as_the_api_server_does() -> None:
    note = "é" * 600  # 600 characters, 1,200 bytes: over the limit though short in characters
    short = truncate(note)
    assert len(short.encode()) <= NOTE_LIMIT_BYTES and short.startswith("é") and short.endswith("é")


@given(st.text(max_size=1500), st.integers(min_value=8, max_value=1100))
def test_truncation_never_exceeds_the_limit_nor_splits_a_character(text: str, limit: int) -> None:
    short = truncate(text, limit)
    assert len(short.encode()) <= limit
    assert short == text or short.count("...") >= 1
    if len(text.encode()) <= limit:
        assert short == text


def test_short_fields_are_cut_to_128_bytes() -> None:
    body = event_body(node_reference("n"), "R" * 300, "Normal", "x", action="A" * 300, instance="i" * 300, now=NOW)
    assert len(body["reason"]) == len(body["action"]) == len(body["reportingInstance"]) == 128
