"""Go's math/rand/v2 PCG draws, bit for bit: against figures Go printed, and against Go itself when it is here."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from extender.simulate.gorand import GoRand, go_log

REFERENCE = Path(__file__).resolve().parents[1] / "gorand_reference"
SEED = 20260914
GOLDEN = 0x9E3779B97F4A7C15  # MIGBench's second seed word: seed ^ this


def draws(rng: GoRand) -> tuple[str, str, str, str]:
    """One line of the reference program: Uint64, Float64, NormFloat64, ExpFloat64 in turn."""
    return (str(rng.uint64()), rng.float64().hex(), rng.norm_float64().hex(), rng.exp_float64().hex())


# Printed by tests/gorand_reference (go1.26.8, linux/amd64) for seeds (20260914, 20260914 ^ GOLDEN).
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (0, ("12075331272669568944", "0x1.24c0a1f1c59b2p-1", "-0x1.8727cb5a95d9ap-3", "0x1.5a118c7f420cap+1")),
        (1, ("6905593155680537874", "0x1.f16f97de3a7e4p-1", "-0x1.17446338ae398p+0", "0x1.35835d84a9240p-4")),
        (2, ("12785375572561760619", "0x1.4862ae40d71a8p-2", "0x1.9c9d956fe6390p-3", "0x1.22695e444d6a5p+0")),
        # the exponential's tail (re - log U): Go's Log, not the C library's, gives its last bit
        (35140, ("4296832718074538513", "0x1.2f8c3222e6f50p-2", "0x1.a97ad9f1ac99cp-1", "0x1.4458cf69fd072p+3")),
        # the normal's tail (r + x, x from logarithms)
        (164271, ("16908810587047348669", "0x1.7eacf5c6c6cfdp-1", "0x1.e72960d4386c6p+1", "0x1.5abfed78b58b2p-1")),
    ],
)  # fmt: skip
def test_draws_equal_the_ones_go_printed(line: int, expected: tuple[str, str, str, str]) -> None:
    rng = GoRand(SEED, SEED ^ GOLDEN)
    for _ in range(line):
        draws(rng)
    assert draws(rng) == expected


@pytest.mark.parametrize("x", [1e-300, 0.1, 0.5, 0.7071067811865476, 1.0, 2.0, 600000.0, 1e300])
def test_go_log_is_a_logarithm(x: float) -> None:
    assert go_log(x) == pytest.approx(math.log(x), rel=1e-15, abs=1e-300)


def test_draws_equal_go_itself(tmp_path: Path) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain in PATH to build tests/gorand_reference")
    binary = tmp_path / "gorand-reference"
    subprocess.run([go, "build", "-buildvcs=false", "-o", str(binary), "."], cwd=REFERENCE, check=True, timeout=300)
    for seed in (SEED, 1, 2**63 + 12345):
        second = seed ^ GOLDEN
        printed = subprocess.run(
            [str(binary), str(seed), str(second), "20000"], capture_output=True, text=True, check=True, timeout=120
        ).stdout.splitlines()
        rng = GoRand(seed, second)
        for number, text in enumerate(printed):
            u, f, n, e = text.split()
            wanted = (u, float.fromhex(f).hex(), float.fromhex(n).hex(), float.fromhex(e).hex())
            assert draws(rng) == wanted, f"seed {seed}, line {number}"
