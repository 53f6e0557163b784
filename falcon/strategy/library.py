"""Built-in strategies: JSON documents shipped in ``falcon/strategy/builtins/``, same format as
any user's strategy."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from falcon.domain.rules import Direction
from falcon.errors import NotFound
from falcon.strategy.spec import StrategySpec, load_spec

__all__ = ["builtin_document", "builtin_names", "builtin_spec"]


def builtin_names() -> list[str]:
    """Names of the built-in strategies, sorted."""
    folder = resources.files("falcon.strategy").joinpath("builtins")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir()
                  if p.name.endswith(".json"))


def builtin_document(name: str) -> dict[str, Any]:
    """The raw JSON document of a built-in strategy."""
    if name not in builtin_names():
        raise NotFound(f"no built-in strategy {name!r} (have: {', '.join(builtin_names())})")
    text = resources.files("falcon.strategy").joinpath(f"builtins/{name}.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def builtin_spec(
    name: str,
    params: dict[str, float] | None = None,
    *,
    direction: Direction | str | None = None,
) -> StrategySpec:
    """A built-in strategy, validated, with ``params`` overriding its defaults.

    ``direction="long_short"`` turns on the short rules of a built-in that has them.
    """
    doc = builtin_document(name)
    if direction is not None:
        doc["direction"] = str(Direction(direction))
    return load_spec(doc, params)
