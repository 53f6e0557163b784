"""The one place research touches :mod:`falcon.strategy`: its schema, its validator, an example.

Kept small on purpose: if the strategy package changes how it ships its schema, only this module
follows it.
"""

from __future__ import annotations

import copy
from typing import Any

from falcon.errors import ValidationError

__all__ = ["EXAMPLE_BUILTIN", "example_spec", "spec_problems", "strategy_schema", "validate"]

#: The built-in shown to the LLM as an example of the format.
EXAMPLE_BUILTIN = "rsi_reversion"


def strategy_schema() -> dict[str, Any]:
    """The strategy spec JSON Schema shipped in :mod:`falcon.strategy` (a fresh copy)."""
    from falcon.strategy import schema

    return copy.deepcopy(schema())


def validate(spec: dict[str, Any]) -> Any:
    """``load_spec(spec)``: the parsed :class:`~falcon.strategy.StrategySpec`, or
    :class:`ValidationError` with its problems.

    Only a dict is ever passed: ``load_spec`` reads a string as a file path or as JSON/YAML text,
    and a string from an LLM must not choose a file.
    """
    if not isinstance(spec, dict):
        raise ValidationError("a strategy spec must be a JSON object")
    from falcon.strategy import load_spec

    return load_spec(copy.deepcopy(spec))


def spec_problems(spec: dict[str, Any]) -> list[str]:
    """What is wrong with ``spec`` (empty when it is valid)."""
    try:
        validate(spec)
    except ValidationError as exc:
        return list(exc.problems) or [str(exc)]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        # A validator that trips over an odd document is still telling us it is invalid.
        return [f"{type(exc).__name__}: {exc}"]
    return []


def example_spec() -> dict[str, Any] | None:
    """A built-in spec to show the LLM the format (None when the package has none)."""
    from falcon.strategy import builtin_document, builtin_names

    if EXAMPLE_BUILTIN not in builtin_names():
        return None
    return builtin_document(EXAMPLE_BUILTIN)
