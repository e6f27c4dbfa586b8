"""The controllers' reconcile loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def reconcile_forever(
    reconcile: Callable[[], Awaitable[None]], interval_s: float, on_error: Callable[[], None], what: str
) -> None:
    """Call ``reconcile`` every ``interval_s``; one that fails is logged and counted, and the next retries."""
    while True:
        try:
            await reconcile()
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad reconcile must not stop the controller
            on_error()
            log.exception("%s reconcile failed", what)
        await asyncio.sleep(interval_s)
