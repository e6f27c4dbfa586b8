"""scripts/bench with binds: the cluster in a loopback API server, the pods answered bound, others deleted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_small_run_binds_the_answered_pods_and_deletes_as_many(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable, str(REPO / "scripts" / "bench"), "--nodes", "10", "--requests", "20", "--no-node-list",
            "--demands", "4", "--sample-nodes", "0.5-1", "--binds", "1000", "--json", str(out),
        ],
        check=False, capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, "no node holds more than it has"
    figures = json.loads(out.read_text())
    done = figures["binds_done"]
    assert set(done) <= {"bound", "deleted", "left pending", "ballast", "ballast skipped"}, done
    assert done["bound"] == done["deleted"] > 0
    assert done["ballast"] > 0, "writes that change no node while the floor runs"
    # every pod some node passed for (warm-up included); a pod no node passes for stays pending
    assert done["bound"] + done.get("left pending", 0) <= 20 + 4
    assert figures["binds_per_s"] == 1000 and figures["pods_in_view"] > 0 and figures["p99_ms"] > 0
