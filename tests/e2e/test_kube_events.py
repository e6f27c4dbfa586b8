"""The one Event writer against the real kube-apiserver: its note limit, MicroTime and reporting controller."""

from __future__ import annotations

import asyncio

from extender.kube.api import KubeApi
from extender.kube.client import make_api_client
from extender.kube.events import NOTE_LIMIT_BYTES, REPORTING_CONTROLLER, pod_reference
from tests.e2e.harness import NAMESPACE, ControlPlane, Kube


async def _post(plane: ControlPlane, notes: dict[str, str]) -> None:
    api = await make_api_client(str(plane.kubeconfig))
    try:
        kube = KubeApi(api)
        for name, note in notes.items():
            await kube.post_event(
                pod_reference(NAMESPACE, name, f"uid-{name}"), "MigProbe", "Normal", note, "Scheduling"
            )
    finally:
        await api.close()


def test_the_api_server_takes_every_note_the_writer_sends(plane: ControlPlane, kube: Kube) -> None:
    # The API server measures the 1 KiB in bytes: 600 two-byte characters are 1,200 bytes, over the limit.
    notes = {"note-ascii": "1x 3g.40gb: " + "x" * 3000 + " the end", "note-accented": "é" * 600, "note-short": "fits"}
    asyncio.run(_post(plane, notes))
    for name, note in notes.items():
        (event,) = kube.events_for(name)
        assert event["reportingController"] == REPORTING_CONTROLLER
        assert len(event["note"].encode()) <= NOTE_LIMIT_BYTES
        assert event["note"] == note if len(note.encode()) <= NOTE_LIMIT_BYTES else event["note"].count("...") == 1
        assert event["eventTime"].endswith("Z") and len(event["eventTime"].split(".")[1]) == 7  # six digits and Z
    assert kube.events_for("note-ascii")[0]["note"].endswith(" the end")
