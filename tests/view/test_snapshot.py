"""Snapshots: the forms kubectl prints, errors that name the file, and large files parsed in a child."""

from __future__ import annotations

from pathlib import Path

import pytest

from extender.view import snapshot
from extender.view.snapshot import SnapshotError, load_snapshot, load_snapshot_text
from extender.view.store import ClusterView
from tests.conftest import DEMO_SNAPSHOT


def test_large_files_are_parsed_in_a_child_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    in_process = ClusterView()
    counts = load_snapshot(in_process, str(DEMO_SNAPSHOT))
    monkeypatch.setattr(snapshot, "CHILD_PARSE_BYTES", 1)
    in_child = ClusterView()
    assert load_snapshot(in_child, str(DEMO_SNAPSHOT)) == counts == {"nodes": 8, "pods": 40, "configmap": 1}
    assert in_child.nodes == in_process.nodes and in_child.pods == in_process.pods
    assert in_child.mig_parted_source == "ConfigMap gpu-operator/default-mig-parted-config"
    assert in_child.static


def test_errors_from_the_child_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"items": [1, 2')
    monkeypatch.setattr(snapshot, "CHILD_PARSE_BYTES", 1)
    with pytest.raises(SnapshotError, match=f"{broken}: not valid JSON"):
        load_snapshot(ClusterView(), str(broken))


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("kind: NodeList\nitems:\n- metadata: {name: a}\n", {"nodes": 1, "pods": 0, "configmap": 0}),
        (
            "kind: Node\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: p}\n",
            {"nodes": 1, "pods": 1, "configmap": 0},
        ),
        (
            '[{"kind": "Pod", "metadata": {"name": "p"}}, {"kind": "Service", "metadata": {"name": "s"}}]',
            {"nodes": 0, "pods": 1, "configmap": 0},
        ),
    ],
    ids=["typed-list", "documents", "json-array"],
)
def test_the_forms_kubectl_prints(text: str, counts: dict[str, int]) -> None:
    assert load_snapshot_text(ClusterView(), text) == counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: List\nitems: {}\n", "'items' must be a list"),
        ("items:\n- 3\n", r"items\[0\] is not an object"),
        ("just text", "expected a Kubernetes List"),
        ("a: [", "not valid YAML"),
    ],
)
def test_bad_snapshots_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        load_snapshot_text(ClusterView(), text)
