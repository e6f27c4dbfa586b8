"""Background loops that outlive their failures: the annotator's scan and the controllers' reconciles.

Each runs as a root task of the process (``extender/server/run.py``), and a root task that ends takes the process
down with it: right for a fatal condition, wrong for one bad iteration. So an iteration that raises is logged and
counted, and the loop goes on after a pause. Only the standard library here: notify and the controllers both
import it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

log = logging.getLogger(__name__)


async def run_supervised(
    step: Callable[[], Awaitable[None]],
    *,
    what: str,
    on_error: Callable[[], None],
    after_error: Callable[[], Awaitable[None]],
) -> NoReturn:
    """Await ``step`` again and again. One that raises is logged, counted (``on_error``) and followed by
    ``after_error`` (a pause or a backoff) before the next; cancellation still ends the loop."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad iteration must not end the loop, and with it the process
            on_error()
            log.exception("%s failed", what)
            await after_error()
