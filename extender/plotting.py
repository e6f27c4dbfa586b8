"""matplotlib, which is optional (extra ``sim``): imported on first use, on the headless Agg backend.

Shared by ``simulate --plot`` and ``report --png`` so both name the missing extra alike.
"""

from __future__ import annotations

import importlib
from typing import Any

MATPLOTLIB_MISSING = "matplotlib is not installed (pip install '.[sim]')"


class MatplotlibMissing(RuntimeError):
    """matplotlib cannot be imported; the message says which extra provides it."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed); raises :class:`MatplotlibMissing`."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:
        raise MatplotlibMissing(MATPLOTLIB_MISSING) from exc
