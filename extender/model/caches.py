"""The process-wide caches of the model and the view, by name: their sizes, their bounds, one ``clear()``.

Each module registers its caches here when it is imported, so that tests and diagnostics enumerate them all
rather than a list kept by hand. Sizes and bounds are read when asked (a test may shrink a bound or swap a
table for a small one), through the callables each module gives.

The caches have one owner: the thread that runs the model. In the service that is the event loop's thread
(``/filter``, ``/prioritize``, the verdict scan and the controllers all run there; the verdict scan yields
between slices instead of running in a worker thread); in the simulator and the report, their only thread.
They take no locks, so nothing may call the model from another thread: cachetools' ``LRUCache`` is not
thread-safe (two threads evicting the same least recently used key raise ``KeyError``), and the dicts'
check-then-clear bounds are not atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Table(Protocol):
    """A dict, or a cachetools cache."""

    def __len__(self) -> int: ...

    def clear(self) -> None: ...


class FunctionCache(Protocol):
    """What ``functools.lru_cache`` and ``functools.cache`` add to a function."""

    def cache_info(self) -> Any: ...

    def cache_clear(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheInfo:
    name: str
    size: int
    """Entries held now."""
    bound: int | None
    """Most entries it may hold; None when its keys are finite by construction (GPU models x occupied masks)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    size: Callable[[], int]
    bound: Callable[[], int | None]
    clear: Callable[[], None]


class Caches:
    """The registry: one per process (:data:`CACHES`)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(
        self, name: str, *, size: Callable[[], int], bound: Callable[[], int | None], clear: Callable[[], None]
    ) -> None:
        """``name`` as ``module._TABLE`` (a module imported again, as a test may, registers it again)."""
        self._entries[name] = _Entry(size, bound, clear)

    def register_table(self, name: str, table: Callable[[], Table], bound: Callable[[], int | None]) -> None:
        """A table given as a callable returning it (read when asked: a test may swap the module attribute)."""
        self.register(name, size=lambda: len(table()), bound=bound, clear=lambda: table().clear())

    def register_function(self, name: str, function: Callable[[], FunctionCache]) -> None:
        """A ``functools.lru_cache`` or ``cache``, given as a callable returning it (read when asked, so that a
        test that replaces the module attribute is seen)."""
        self.register(
            name,
            size=lambda: function().cache_info().currsize,
            bound=lambda: function().cache_info().maxsize,
            clear=lambda: function().cache_clear(),
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def info(self) -> list[CacheInfo]:
        return [CacheInfo(name, e.size(), e.bound()) for name, e in sorted(self._entries.items())]

    def clear(self) -> None:
        """Empty every cache: answers are the same afterwards, only slower to come at first."""
        for entry in self._entries.values():
            entry.clear()


CACHES = Caches()
