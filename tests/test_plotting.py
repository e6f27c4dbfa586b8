"""The optional matplotlib (extra ``sim``): one import helper for ``report --png`` and ``simulate --plot``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from extender.plotting import MATPLOTLIB_MISSING, MatplotlibMissing, pyplot


@pytest.fixture
def without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError


def test_pyplot_draws_without_a_display() -> None:
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"


@pytest.mark.usefixtures("without_matplotlib")
def test_without_matplotlib_the_error_names_the_extra() -> None:
    with pytest.raises(MatplotlibMissing) as raised:
        pyplot()
    assert str(raised.value) == MATPLOTLIB_MISSING == "matplotlib is not installed (pip install '.[sim]')"


@pytest.mark.usefixtures("without_matplotlib")
def test_simulate_plot_without_matplotlib_is_skipped(tmp_path: Path) -> None:
    from extender.simulate.run import plot

    # matplotlib is looked for before the output is read
    assert plot(None, tmp_path / "plot.png") is False  # type: ignore[arg-type]
    assert not (tmp_path / "plot.png").exists()
