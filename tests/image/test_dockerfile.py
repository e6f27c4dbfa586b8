"""The Dockerfile read as text (no builder needed): a pinned base, the lock honoured, nothing of the build stage
in the runtime stage, the user, entrypoint and command the manifests expect; the build context; and the image
name that kustomize's ``images:`` (``kustomize edit set image``) and the chart's ``image.repository`` address."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm import chart
from tests.image.builder import ROOT, container_image

DOCKERFILE = (ROOT / "Dockerfile").read_text()
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", re.sub(r"^\s*#.*\n", "", DOCKERFILE, flags=re.MULTILINE))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line]


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def test_base_is_pinned_by_version_and_digest_in_both_stages() -> None:
    (arg,) = [args for name, args in instructions() if name == "ARG" and args.startswith("PYTHON_IMAGE=")]
    image = arg.partition("=")[2]
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    assert container_image.SUITE in image  # the stand-in base of tests/image is the same Debian release
    build, runtime = stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE}")


def test_dependencies_come_from_uv_lock_with_the_projects_uv() -> None:
    build, _ = stages()
    runs = [args for name, args in build if name == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) == 2 and all("--locked" in run and "--no-editable" in run for run in syncs), syncs
    assert "--no-install-project" in syncs[0]  # the dependency layer, before the sources are copied
    assert not any(re.search(r"\bpip install\b(?!.*\buv==)", run) for run in runs), runs  # only uv comes from pip
    assert not any("--extra" in run or "--all-extras" in run for run in syncs)  # no dev or sim extras
    setup = re.search(r'^UV_VERSION="([^"]+)"', (ROOT / "scripts" / "setup.sh").read_text(), re.MULTILINE)
    assert setup is not None
    assert ("ARG", f"UV_VERSION={setup[1]}") in build
    env = " ".join(args for name, args in build if name == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env and "UV_PROJECT_ENVIRONMENT=/opt/venv" in env


def test_runtime_stage_takes_only_the_virtualenv() -> None:
    _, runtime = stages()
    names = [name for name, _ in runtime]
    assert "RUN" not in names  # nothing installed or built in the runtime stage
    assert [args for name, args in runtime if name == "COPY"] == ["--from=build /opt/venv /opt/venv"]
    env = " ".join(args for name, args in runtime if name == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PATH=/opt/venv/bin:$PATH" in env


def deployment_container(path: str, name: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "manifests" / path).read_text())
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    found: dict[str, Any] = container
    return found


def test_user_entrypoint_and_command_match_the_deployment() -> None:
    _, runtime = stages()
    config = dict(runtime[1:])
    container = deployment_container("base/deployment.yaml", "mig-extender")
    security = container["securityContext"]
    assert config["USER"] == f"{security['runAsUser']}:{security['runAsGroup']}" == "65532:65532"
    assert config["ENTRYPOINT"] == '["mig-extender"]'
    assert config["CMD"] == "[" + ", ".join(f'"{arg}"' for arg in container["args"]) + "]"
    assert config["EXPOSE"] == str(container["ports"][0]["containerPort"])
    assert f'org.opencontainers.image.version="{VERSION}"' in config["LABEL"]


def test_build_context_is_an_allowlist_of_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert allowed == set(container_image.CONTEXT) - {"Dockerfile", ".dockerignore"}
    build, _ = stages()
    copied = {
        source for name, args in build if name == "COPY" and not args.startswith("--") for source in args.split()[:-1]
    }
    assert copied == allowed


@pytest.mark.parametrize(
    ("path", "container"),
    [("base/deployment.yaml", "mig-extender"), ("secondary-scheduler/deployment.yaml", "mig-extender")],
)
def test_manifests_name_the_image_that_kustomize_images_replace(path: str, container: str) -> None:
    assert deployment_container(path, container)["image"] == f"mig-extender:{VERSION}"


def test_chart_defaults_to_the_same_image() -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    chart_yaml = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == "mig-extender"
    assert values["image"]["tag"] == ""
    assert chart_yaml["appVersion"] == VERSION


@pytest.mark.helm
@pytest.mark.parametrize("overlay", ["extender-mode", "secondary-scheduler"])
def test_kustomize_edit_set_image_points_an_overlay_at_a_registry(overlay: str, tmp_path: Path) -> None:
    """The README's recipe: an overlay of one's own, ``kustomize edit set image``, every extender container moved."""
    (tmp_path / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        f"  - {os.path.relpath(ROOT / 'manifests' / overlay, tmp_path)}\n"  # kustomize takes no absolute path
    )
    subprocess.run(
        [str(chart.tools().kustomize), "edit", "set", "image", "mig-extender=registry.example.com/mig-extender:1.2.3"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    images = {
        c["name"]: c["image"]
        for doc in chart.kustomize(tmp_path)
        if doc["kind"] == "Deployment"
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    assert images["mig-extender"] == "registry.example.com/mig-extender:1.2.3"
    assert all(image.startswith("registry.k8s.io/") for name, image in images.items() if name != "mig-extender")
    readme = (ROOT / "README.md").read_text()
    assert "kustomize edit set image mig-extender=" in readme
