"""scripts/container_image.py as the image tests use it: the builder, the build, runs of the built image."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import container_image  # noqa: E402

__all__ = ["ROOT", "container_image"]
