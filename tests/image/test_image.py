"""The Dockerfile built by buildah (on a stand-in base made from Debian's packages where no registry is
reachable) and the image run as the Deployment runs it: as uid 65532, on a read-only root filesystem with a
writable /tmp (the Deployment's emptyDir), with the image's own entrypoint, environment and working directory.

``scripts/container_image.py`` builds and runs it. Where the builder cannot run (no root, no Debian
bookworm apt sources, buildah unable to mount or to run a container) every test here is skipped, naming the
reason; a build that fails fails them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests import support
from tests.image.builder import ROOT, container_image

pytestmark = pytest.mark.image

Buildah = container_image.Buildah
Built = container_image.Built
DEMO = ROOT / "examples" / "demo-cluster.yaml"
READY_TIMEOUT_S = 120.0

# kube-scheduler's calls as scripts/demo.sh makes them: a pod asking for one 3g.40gb instance.
POD = {
    "metadata": {"name": "vision-3", "namespace": "ml", "uid": "image-test-1"},
    "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]},
}
NODES = ["a100-balanced", "h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact", "h200-balanced"]


@pytest.fixture(scope="module")
def image() -> tuple[Buildah, Built]:
    try:
        buildah = container_image.builder()
        return buildah, container_image.build(buildah)
    except container_image.BuilderUnavailable as exc:
        pytest.skip(f"the image cannot be built on this machine: {exc}")


def run(image: tuple[Buildah, Built], args: list[str] | None, **options: Any) -> subprocess.CompletedProcess[str]:
    buildah, built = image
    return container_image.run(buildah, built.image, args, **options)


def deployment_args() -> list[str]:
    docs = yaml.safe_load_all((ROOT / "manifests" / "base" / "deployment.yaml").read_text())
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in container["args"]]


def test_configuration_is_what_the_deployment_expects(image: tuple[Buildah, Built]) -> None:
    buildah, built = image
    config = buildah.config(built.image)
    env = dict(item.partition("=")[::2] for item in config["Env"])
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["mig-extender"]
    assert config["Cmd"] == deployment_args()
    assert set(config["ExposedPorts"]) == {"8888/tcp"}
    assert config["WorkingDir"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert config["Labels"]["org.opencontainers.image.version"] == version


@pytest.mark.parametrize(
    ("entrypoint", "args", "tmp", "code", "output"),
    [
        # The entrypoint as the image declares it, with nothing writable at all (not even /tmp).
        (None, ["--help"], False, 0, r"usage: mig-extender .*\bserve\b"),
        (None, ["--version"], True, 0, r"\b0\.1\.0\b"),
        (["id"], [], True, 0, r"^uid=65532 gid=65532 groups=65532$"),
        # The root filesystem is read-only (the virtualenv included); /tmp only with the emptyDir.
        (["touch"], ["/opt/venv/lib/written"], True, 1, r"Read-only file system"),
        (["touch"], ["/tmp/written"], False, 1, r"Read-only file system"),
        (["touch"], ["/tmp/written"], True, 0, r"^$"),
    ],
)
def test_runs_as_65532_on_a_read_only_root(
    image: tuple[Buildah, Built], entrypoint: list[str] | None, args: list[str], tmp: bool, code: int, output: str
) -> None:
    result = run(image, args, entrypoint=entrypoint, tmp=tmp)
    assert result.returncode == code, result
    assert re.search(output, (result.stdout + result.stderr).strip(), re.DOTALL), result


CONTENTS = r"""
import importlib.metadata, importlib.util, json, os, platform, shutil, sys
import extender.cli
print(json.dumps({
    "python": platform.python_version(),
    "dont_write_bytecode": sys.flags.dont_write_bytecode,
    "prefix": sys.prefix,
    "distributions": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()},
    "compiled": os.path.isfile(importlib.util.cache_from_source(extender.cli.__file__)),
    "package": extender.cli.__file__,
    "present": [p for p in ("/opt/uv", "/src", "/root/.cache/uv") if os.path.exists(p)],
    "tools": {t: shutil.which(t) for t in ("uv", "gcc", "cc", "make", "git")},
    "venv_bin": sorted(os.listdir(sys.prefix + "/bin")),
}))
"""


def locked_runtime(python_version: str) -> dict[str, str]:
    """The runtime dependencies uv.lock pins (no extras), for this Python, as ``uv export`` lists them."""
    version = re.search(r'^UV_VERSION="([^"]+)"', (ROOT / "scripts" / "setup.sh").read_text(), re.MULTILINE)
    assert version is not None
    cache = os.environ.get("MIG_EXTENDER_CACHE") or str(Path.home() / ".cache" / "mig-extender")
    uv = Path(cache) / f"uv-{version[1]}" / "bin" / "uv"
    assert uv.is_file(), f"{uv} is missing: bash scripts/setup.sh installs it"
    exported = subprocess.run(
        [str(uv), "export", "--locked", "--no-emit-project", "--no-hashes", "--no-header", "--no-annotate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "UV_NO_PROGRESS": "1", "UV_PYTHON_DOWNLOADS": "never"},
    ).stdout
    environment = {"python_full_version": python_version, "python_version": ".".join(python_version.split(".")[:2])}
    pins: dict[str, str] = {}
    for line in exported.splitlines():
        requirement, _, marker = line.partition(";")
        if not requirement.strip() or requirement.startswith("#"):
            continue
        name, _, pinned = requirement.strip().partition("==")
        if not marker.strip() or Marker(marker).evaluate(environment):
            pins[canonicalize_name(name)] = pinned
    return pins


def test_holds_the_locked_runtime_and_no_build_tools(image: tuple[Buildah, Built]) -> None:
    result = run(image, ["-c", CONTENTS], entrypoint=["python"])
    assert result.returncode == 0, result
    found = json.loads(result.stdout)
    installed = {canonicalize_name(name): version for name, version in found["distributions"].items()}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # Exactly uv.lock's runtime closure and the package: no dev or sim extras, no pip, no setuptools, no uv.
    assert installed == {**locked_runtime(found["python"]), "mig-extender": version}
    assert found["prefix"] == "/opt/venv"
    assert found["package"].startswith("/opt/venv/lib/"), found["package"]  # installed, not linked to /src
    assert found["compiled"], "extender/cli.py has no .pyc: the read-only image would compile it on every start"
    assert found["dont_write_bytecode"] == 1
    assert found["present"] == []
    assert found["tools"] == {"uv": None, "gcc": None, "cc": None, "make": None, "git": None}
    assert not {"pip", "pip3", "uv"} & set(found["venv_bin"]), found["venv_bin"]


def http(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(raw) if is_json else raw.decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, None


@pytest.fixture
def serving(image: tuple[Buildah, Built], tmp_path: Path) -> Iterator[str]:
    """The image serving the demo snapshot (copied into its /tmp) on a free loopback port; stopped after."""
    buildah, built = image
    port = support.free_port()
    log = tmp_path / "serve.log"
    args = ["serve", "--snapshot", "/tmp/demo-cluster.yaml", "--host", "127.0.0.1", "--port", str(port)]
    with (
        log.open("w") as output,
        container_image.started(buildah, built.image, args, files={"demo-cluster.yaml": DEMO}, output=output) as proc,
    ):
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"
            return http(url + "/readyz")[0] == 200

        support.wait_for("the image's server ready on the demo snapshot", ready, timeout=READY_TIMEOUT_S)
        yield url
        assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"


def test_serves_the_demo_snapshot_read_only(serving: str) -> None:
    assert http(serving + "/healthz")[0] == 200
    status, answer = http(serving + "/filter", {"Pod": POD, "Nodes": None, "NodeNames": NODES})
    assert status == 200, answer
    assert answer["NodeNames"] and set(answer["NodeNames"]) < set(NODES), answer
    assert not answer.get("Error"), answer
    status, metrics = http(serving + "/metrics")
    assert status == 200 and "mig_extender_" in metrics


def test_virtualenv_stays_small(image: tuple[Buildah, Built]) -> None:
    """What the image adds to its base: the virtualenv (122 MB on 2026-12-02, most of it kubernetes-asyncio's
    models, protobuf and the CEL library). The stand-in base is bigger than python:3.11-slim."""
    _, built = image
    added = built.size - built.base_size
    took = f"built in {built.seconds:.0f} s" if built.seconds else "cached"
    print(f"\n{built.image}: {built.size / 1e6:.0f} MB, {added / 1e6:.0f} MB over its base; {took}")
    assert 0 < added < 250e6, f"the image adds {added / 1e6:.0f} MB to its base: a dependency brought in more"
