"""Demo data generators: a registry so each data source (product events, billing, surveys, tickets...)
adds its own part of the demo without touching the others.

A generator is a function ``(ws, project, rng, persons, days) -> None`` that writes its data for
``project`` into the workspace ``ws``:

* ``rng`` is a :class:`numpy.random.Generator` of its own, seeded from the demo seed and the generator's
  name, so adding or changing one generator never changes what another one produces;
* ``persons`` is the shared :class:`~kpilot.demo.persons.DemoPersons` (who exists, who signed up when, on
  which plan, who churned...), so billing, surveys and tickets line up with the product events;
* ``days`` is the list of demo days (UTC dates, oldest first).

Register with the decorator; modules inside ``kpilot.demo`` are imported automatically by
:func:`load_generators`, so a new ``src/kpilot/demo/<source>.py`` with an ``@register(...)`` is enough.
A generator may call :func:`report_progress` with a fraction in ``[0, 1]`` to move the progress bar.
"""

from __future__ import annotations

import importlib
import pkgutil
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from kpilot.demo.persons import DemoPersons
    from kpilot.workspace import ProjectInfo, Workspace

__all__ = [
    "DemoGenerator",
    "Registered",
    "generator_rng",
    "load_generators",
    "register",
    "report_progress",
]


class DemoGenerator(Protocol):
    def __call__(
        self,
        ws: Workspace,
        project: ProjectInfo,
        rng: np.random.Generator,
        persons: DemoPersons,
        days: list[date],
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    fn: DemoGenerator
    order: int
    description: str
    metrics: tuple[str, ...]
    """Catalog metrics worth showing once this generator's data exists."""


_REGISTRY: dict[str, Registered] = {}
_PROGRESS: ContextVar[Callable[[float], None] | None] = ContextVar("demo_progress", default=None)


def register(
    name: str, *, order: int = 100, description: str = "", metrics: tuple[str, ...] = ()
) -> Callable[[DemoGenerator], DemoGenerator]:
    """Register ``fn`` under ``name``; generators run by ``order`` (product events are 0), then name."""

    def decorate(fn: DemoGenerator) -> DemoGenerator:
        _REGISTRY[name] = Registered(name, fn, order, description, tuple(metrics))
        return fn

    return decorate


def load_generators() -> list[Registered]:
    """Import every module of ``kpilot.demo`` (so their ``@register`` run) and list generators in order."""
    import kpilot.demo as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return sorted(_REGISTRY.values(), key=lambda g: (g.order, g.name))


def generator_rng(seed: int, name: str) -> np.random.Generator:
    """The generator's own random stream: depends only on the demo seed and the generator name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def report_progress(fraction: float) -> None:
    """Tell the demo's progress bar how far the running generator is (``0.0`` .. ``1.0``)."""
    hook = _PROGRESS.get()
    if hook is not None:
        hook(min(max(fraction, 0.0), 1.0))


@contextmanager
def progress_hook(hook: Callable[[float], None]) -> Iterator[None]:
    token = _PROGRESS.set(hook)
    try:
        yield
    finally:
        _PROGRESS.reset(token)
