"""A new user's mistakes: each answered by one line naming it and what to do, exit code 2, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extender import __version__
from extender.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TINY = ["simulate", "--synthetic", "uniform", "--synthetic-nodes", "1", "--synthetic-pods", "20", "--no-bound"]


def one_line_error(text: str) -> str:
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return one_line_error(capsys.readouterr().err)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_on_a_port_in_use_names_it(taken_port: int) -> None:
    args = ["serve", "--snapshot", str(REPO / "examples/demo-cluster.yaml"), "--host", "127.0.0.1"]
    done = subprocess.run(
        [sys.executable, "-m", "extender", *args, "--port", str(taken_port), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr
    assert f"mig-extender: 127.0.0.1:{taken_port} is already in use: stop what listens there or pass --port" in (
        done.stderr.splitlines()
    )


def test_a_kubeconfig_that_cannot_be_read_is_named_not_taken_for_a_port(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "extender",
            "serve",
            "--kubeconfig",
            str(tmp_path),
            "--host",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr
    assert done.stderr.splitlines() == [f"mig-extender: cannot read kubeconfig {tmp_path}: Is a directory"]


def test_unknown_layout_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--layout", "bogus"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("mig-extender: no --layout 'bogus' for H100-80GB; known: ")
    assert "all-balanced" in line and "all-1g.10gb" in line and "all-1g.5gb" not in line  # an A100 profile


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--synthetic-nodes", "0", "must be a whole number of at least 1, not '0'"),
        ("--synthetic-pods", "many", "must be a whole number of at least 1, not 'many'"),
        ("--arrival", "-1", "must be a number above 0, not '-1'"),
        ("--node-startup", "-5", "must be seconds, 0 or more, not '-5'"),
    ],
)
def test_impossible_numbers_are_refused_before_the_run(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error([*TINY, flag, value], capsys)
    assert line == f"mig-extender simulate: argument {flag}: {says} (see mig-extender simulate --help)"


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_unwritable_output_is_refused_before_the_run(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    assert main([*TINY, "--synthetic-pods", "50000", flag, str(tmp_path / "missing" / "out")]) == 2
    assert time.perf_counter() - started < 5  # not after 50 000 pods
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        one_line_error(captured.err)
        == f"mig-extender: cannot write {flag}: folder {tmp_path / 'missing'} does not exist"
    )
    assert main([*TINY, flag, str(tmp_path)]) == 2
    assert one_line_error(capsys.readouterr().err) == f"mig-extender: cannot write {flag}: {tmp_path} is a folder"


def test_a_closed_pipe_is_not_a_traceback() -> None:
    reader = subprocess.Popen(
        [sys.executable, "-m", "extender", "profiles", "--gpu", "H100-80GB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # as `| head -1` does, before the command has printed
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 1
    assert stderr == ""


@pytest.mark.parametrize(
    ("name", "candidates"),
    [
        ("A100", "A100-40GB, A100-80GB"),
        ("NVIDIA-H100", "H100-80GB, H100-NVL-94GB, H100-96GB"),
        ("GH200", "H100-96GB, GH200-144GB"),
    ],
)
def test_an_ambiguous_gpu_name_lists_the_candidates(
    name: str, candidates: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error(["profiles", "--gpu", name], capsys)
    assert f"ambiguous GPU model {name!r}: say which of {candidates}" in line


def test_unambiguous_family_and_product_names_still_resolve(capsys: pytest.CaptureFixture[str]) -> None:
    for name, model in [("H20", "H100-96GB"), ("NVIDIA-A100-SXM4-80GB", "A100-80GB"), ("h200-141gb", "H200-141GB")]:
        assert main(["profiles", "--gpu", name]) == 0
        assert capsys.readouterr().out.startswith(f"# {model}:")


def test_an_unknown_gpu_lists_the_known_models(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(["simulate", "--synthetic", "uniform", "--gpu", "T4"], capsys)
    assert "unknown GPU model 'T4'; known models: A30-24GB, A100-40GB, A100-80GB, H100-80GB" in line


def test_an_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'simulte'" in usage_error(["simulte"], capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"mig-extender {__version__}\n"


def test_every_command_is_described_and_shows_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag: no default cut at a hyphen
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    for name, command in commands.items():
        assert command.description, name
    help_text = " ".join(commands["simulate"].format_help().split())
    for default in ["(default: 100)", "(default: 1.3)", "(default: H100-80GB)", "(default: all-balanced)"]:
        assert default in help_text
    assert "default: None" not in commands["serve"].format_help()


def test_profiles_has_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--gpu", "H100-80GB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("# profile"))
    row = next(line for line in lines if line.startswith("3g.40gb "))
    assert row.index("id") == header.index("nvml") and row.index("max") == header.index("limit")
    assert row.index("{") == header.index("placements")


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(TINY) == 0
    assert capsys.readouterr().err == ""
