"""Which function runs a job of each kind.

A handler is ``handler(payload, progress) -> dict | None``: it gets the job's JSON payload and a
:class:`Progress` callback, and returns a JSON-able result. Handlers are named by import path
(``"falcon.backtest.jobs:run_backtest_job"``) and imported only when a job of their kind first
runs, so that a worker starts fast and a broken or missing module fails that kind's jobs with a
clear error instead of stopping the worker.

Where handlers come from, later wins:

1. :data:`BUILTIN_HANDLERS` below (the kinds Falcon itself submits);
2. ``$FALCON_JOB_HANDLERS``: ``kind=module:function`` pairs separated by commas (extensions, tests);
3. :meth:`HandlerRegistry.register` calls in code.

Example::

    from falcon.jobs.registry import registry

    registry.register("report", "myplugin.reports:build_report")
    handler = registry.resolve("report")   # imports myplugin.reports now
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from falcon.errors import FalconError, NotFound, ValidationError

__all__ = [
    "BUILTIN_HANDLERS",
    "ENV_VAR",
    "Handler",
    "HandlerImportError",
    "HandlerRegistry",
    "Progress",
    "UnknownJobKind",
    "registry",
]

ENV_VAR = "FALCON_JOB_HANDLERS"

#: Kinds Falcon submits itself. The backtest and research modules provide these functions;
#: until they exist, jobs of those kinds fail with an import error that names the path.
BUILTIN_HANDLERS: dict[str, str] = {
    "noop": "falcon.jobs.builtin:noop",
    "sleep": "falcon.jobs.builtin:sleep",
    "backtest": "falcon.backtest.jobs:run_backtest_job",
    "optimize": "falcon.backtest.jobs:run_optimize_job",
    "walkforward": "falcon.backtest.jobs:run_walkforward_job",
    "research": "falcon.research.jobs:run_research_job",
}


class Progress(Protocol):
    """The callback a handler reports progress through (and learns whether to stop).

    Calling it may raise :class:`~falcon.jobs.queue.JobCancelled` when the job was cancelled,
    taken over by another worker or must be released because the worker is shutting down; a
    handler should let that propagate.
    """

    job_id: int
    worker_id: str
    attempt: int

    def __call__(self, fraction: float | None = None, note: str | None = None) -> None:
        """Report ``fraction`` (0..1) done and an optional one-line ``note``."""

    @property
    def stopping(self) -> bool:
        """True when the handler should stop as soon as it can."""


Handler = Callable[[dict[str, Any], Progress], dict[str, Any] | None]


class UnknownJobKind(NotFound):
    """No handler is registered for a job's kind."""


class HandlerImportError(FalconError):
    """A handler's import path does not lead to a callable."""


def _parse_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, path = item.partition("=")
        if not sep or ":" not in path:
            raise ValidationError(f"{ENV_VAR}: {item!r} is not kind=module:function")
        out[kind.strip()] = path.strip()
    return out


def _import(path: str) -> Handler:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerImportError(f"handler {path} cannot be imported: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise HandlerImportError(f"handler {path}: {module_name} has no {attr}")
    if not callable(target):
        raise HandlerImportError(f"handler {path} is not callable")
    return target


class HandlerRegistry:
    """A mapping of job kind to handler, resolved lazily from import paths."""

    def __init__(
        self,
        handlers: Mapping[str, str | Handler] | None = None,
        *,
        use_environment: bool = True,
    ) -> None:
        self._base: dict[str, str | Handler] = dict(handlers or {})
        self._registered: dict[str, str | Handler] = {}
        self._resolved: dict[tuple[str, str], Handler] = {}
        self._use_env = use_environment
        self._lock = threading.Lock()

    def register(self, kind: str, target: str | Handler) -> None:
        """Map ``kind`` to ``target``: a callable or a ``"module:function"`` path."""
        if not kind or len(kind) > 32:
            raise ValidationError(f"job kind must be 1 to 32 characters, got {kind!r}")
        if isinstance(target, str) and ":" not in target:
            raise ValidationError(f"handler path {target!r} is not module:function")
        with self._lock:
            self._registered[kind] = target

    def _table(self) -> dict[str, str | Handler]:
        table = dict(self._base)
        if self._use_env:
            table.update(_parse_env(os.environ.get(ENV_VAR, "")))
        with self._lock:
            table.update(self._registered)
        return table

    def kinds(self) -> list[str]:
        """Every kind with a handler (imported or not), sorted."""
        return sorted(self._table())

    def target(self, kind: str) -> str:
        """Where ``kind``'s handler lives, for messages (``module:function``)."""
        found = self._table().get(kind)
        if found is None:
            raise UnknownJobKind(f"unknown job kind {kind!r} (known: {', '.join(self.kinds())})")
        if isinstance(found, str):
            return found
        return f"{getattr(found, '__module__', '?')}:{getattr(found, '__qualname__', found)}"

    def resolve(self, kind: str) -> Handler:
        """The handler for ``kind``, importing it on first use."""
        found = self._table().get(kind)
        if found is None:
            raise UnknownJobKind(f"unknown job kind {kind!r} (known: {', '.join(self.kinds())})")
        if not isinstance(found, str):
            return found
        with self._lock:
            cached = self._resolved.get((kind, found))
        if cached is None:
            cached = _import(found)
            with self._lock:
                self._resolved[(kind, found)] = cached
        return cached


#: The registry workers use unless given another.
registry = HandlerRegistry(BUILTIN_HANDLERS)
