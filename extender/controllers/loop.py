"""The controllers' reconcile loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..supervise import run_supervised


async def reconcile_forever(
    reconcile: Callable[[], Awaitable[None]], interval_s: float, on_error: Callable[[], None], what: str
) -> None:
    """Call ``reconcile`` every ``interval_s``; one that fails is logged and counted, and the next retries."""

    async def reconcile_then_wait() -> None:
        await reconcile()
        await asyncio.sleep(interval_s)

    await run_supervised(
        reconcile_then_wait,
        what=f"{what} reconcile",
        on_error=on_error,
        after_error=lambda: asyncio.sleep(interval_s),
    )
