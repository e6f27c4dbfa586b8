"""`mig-extender serve --snapshot` as a user runs it: answers, then stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import DEMO_SNAPSHOT
from tests.support import free_port


def test_serve_a_snapshot_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extender",
            "serve",
            "--snapshot",
            str(DEMO_SNAPSHOT),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-format",
            "json",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "not ready in 30 s"
                time.sleep(0.1)
        body = json.dumps(
            {
                "Pod": {
                    "metadata": {"name": "p", "namespace": "ml"},
                    "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]},
                },
                "Nodes": None,
                "NodeNames": ["h100-exact", "a100-balanced"],
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/filter", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["NodeNames"] == ["h100-exact"]
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")]
    assert any(entry["message"] == "stopping on signal" for entry in lines)


def test_a_missing_snapshot_is_a_clear_error() -> None:
    result = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [
            sys.executable,
            "-m",
            "extender",
            "serve",
            "--snapshot",
            "/nonexistent.yaml",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot read snapshot /nonexistent.yaml: No such file or directory" in result.stderr


def test_leader_only_verbs_without_the_pods_name_is_a_clear_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "POD_NAME"}
    result = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [sys.executable, "-m", "extender", "serve", "--kubeconfig", str(kubeconfig), "--leader-only-verbs",
         "--host", "127.0.0.1", "--port", str(free_port())],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "leader_only_verbs needs the Pod's name in POD_NAME" in result.stderr
