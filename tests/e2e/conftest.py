"""Fixtures for the end-to-end tests: one real control plane per session, a clean cluster per test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import NAMESPACE, ROOT, ControlPlane, Extender, Kube, default_bin_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = default_bin_dir()
    if not all((bin_dir / name).exists() for name in ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "etcd")):
        subprocess.run(["bash", str(ROOT / "scripts/build-control-plane.sh")], check=True, timeout=3600)
    control_plane = ControlPlane(tmp_path_factory.mktemp("plane"), bin_dir)
    with control_plane:
        Kube(control_plane).ensure_namespace(NAMESPACE)
        yield control_plane


@pytest.fixture
def kube(plane: ControlPlane) -> Iterator[Kube]:
    client = Kube(plane)
    client.clean()
    yield client
    client.clean()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def extender(plane: ControlPlane, kube: Kube, workdir: Path) -> Iterator[Extender]:
    process = Extender(plane, workdir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def schedulers(plane: ControlPlane, workdir: Path) -> Iterator[list[object]]:
    """Handles of kube-schedulers a test starts; all stopped at the end, even when the test fails."""
    handles: list[object] = []
    yield handles
    for handle in handles:
        plane.stop_scheduler(handle)  # type: ignore[arg-type]
