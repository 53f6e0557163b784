"""Strategies as data: a versioned JSON Schema, a rule language, and its compiler to polars.

The public API, used by the backtester and the paper trader::

    spec = load_spec("my_strategy.json", params={"fast": 5})   # or builtin_spec("sma_cross")
    signals = compile_signals(spec, bars)    # + entry_long, exit_long, entry_short, exit_short
    stream = SignalStream(spec)               # the same signals, one batch of bars at a time
    spec.risk                                # falcon.domain.rules.RiskRules
    spec.warmup_bars                         # history the rules need before their first value

Rules are strings in a small whitelisted language (``falcon.strategy.expr``); nothing a user,
a web form or an LLM writes is ever run as Python.
"""

from falcon.strategy.compile import SIGNAL_COLUMNS, compile_expressions, compile_signals
from falcon.strategy.library import builtin_document, builtin_names, builtin_spec
from falcon.strategy.lookahead import lookahead_check
from falcon.strategy.spec import (
    SCHEMA_ID,
    ParamSpec,
    StrategySpec,
    Universe,
    load_document,
    load_spec,
    schema,
)
from falcon.strategy.stream import BatchSignals, ExpressionStream, SignalStream

__all__ = [
    "SCHEMA_ID",
    "SIGNAL_COLUMNS",
    "BatchSignals",
    "ExpressionStream",
    "ParamSpec",
    "SignalStream",
    "StrategySpec",
    "Universe",
    "builtin_document",
    "builtin_names",
    "builtin_spec",
    "compile_expressions",
    "compile_signals",
    "load_document",
    "load_spec",
    "lookahead_check",
    "schema",
]
