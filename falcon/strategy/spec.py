"""Strategy documents: reading, validating against the versioned JSON Schema, resolving params.

``load_spec`` is the one way in. It reports every problem at once, each prefixed with its path in
the document (``entry.all[1]: 'rsi(close, 14' is not a valid expression: ...``), and returns a
frozen :class:`StrategySpec` whose rules are parsed ASTs and whose risk settings are the
``falcon.domain.rules`` types the engines consume.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from falcon.domain.rules import Direction, Level, RiskRules, Sizing, SizingKind, StopKind
from falcon.errors import NotFound, ValidationError
from falcon.strategy.expr import BinOp, ExprError, Node, Not, parse, to_text
from falcon.strategy.functions import analyze

__all__ = [
    "SCHEMA_ID",
    "ParamSpec",
    "StrategySpec",
    "Universe",
    "load_document",
    "load_spec",
    "schema",
]

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_CONDITION_DEPTH = 16
_RULES = {"entry": "entry_long", "exit": "exit_long",
          "short_entry": "entry_short", "short_exit": "exit_short"}


@cache
def schema() -> dict[str, Any]:
    """The strategy JSON Schema (version 1) shipped in the package."""
    text = resources.files("falcon.strategy").joinpath("schema/strategy-v1.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


SCHEMA_ID: str = schema()["$id"]


@dataclass(frozen=True)
class ParamSpec:
    """A tunable parameter: its default and the range an optimiser may sweep."""

    default: float
    min: float | None = None
    max: float | None = None
    step: float | None = None
    description: str = ""


@dataclass(frozen=True)
class Universe:
    """Which tickers a strategy trades: fixed ``tickers``, a ``screener`` profile's daily picks,
    or neither (the caller decides, e.g. ``falcon backtest --tickers``)."""

    tickers: tuple[str, ...] | None = None
    screener: str | None = None


@dataclass(frozen=True)
class StrategySpec:
    """A validated strategy with its parameters resolved. Build it with :func:`load_spec`."""

    name: str
    description: str
    version: str
    timeframe: str  # "day" or "minute"
    universe: Universe
    params: dict[str, float]
    param_specs: dict[str, ParamSpec]
    risk: RiskRules
    rules: dict[str, Node]  # entry_long, exit_long, entry_short, exit_short -> AST (absent: never)
    warmup_bars: int  # bars before the first one on which every rule and ATR level has a value
    raw: dict[str, Any] = field(repr=False)
    uses_session: bool = False

    @property
    def direction(self) -> Direction:
        """Which sides the strategy trades."""
        return self.risk.direction

    @property
    def atr_period(self) -> int | None:
        """The ATR period of the ATR-based stop/target/trailing levels, if there are any."""
        for level in (self.risk.stop_loss, self.risk.take_profit, self.risk.trailing_stop):
            if level is not None and level.kind is StopKind.ATR:
                return level.atr_period
        return None

    def resolved_document(self) -> dict[str, Any]:
        """The document with every ``$param`` replaced by its value and rules in canonical form."""
        doc = copy.deepcopy(self.raw)
        for key in _RULES:
            if key in doc:
                doc[key] = _resolve_condition(doc[key], self.params)
        for key, value in list(doc.items()):
            if key not in _RULES and key != "params":
                doc[key] = _resolve_numbers(value, self.params)
        for name, spec in doc.get("params", {}).items():
            spec["value"] = self.params[name]
        return doc


def _resolve_numbers(value: Any, params: dict[str, float]) -> Any:
    if isinstance(value, str) and value.startswith("$") and value[1:] in params:
        return params[value[1:]]
    if isinstance(value, dict):
        return {k: _resolve_numbers(v, params) for k, v in value.items()}
    return value


def _resolve_condition(cond: Any, params: dict[str, float]) -> Any:
    if isinstance(cond, str):
        return to_text(parse(cond), params)
    if isinstance(cond, dict):
        return {k: (_resolve_condition(v, params) if k != "op" else v) for k, v in cond.items()}
    if isinstance(cond, list):
        return [_resolve_condition(c, params) for c in cond]
    return cond


# --- reading -----------------------------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: a few aliases can expand into a huge document."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed in strategies", event.start_mark
            )
        return super().compose_node(parent, index)


def _parse_text(text: str, yaml_ok: bool, origin: str) -> Any:
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise ValidationError(f"{origin}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        if text.lstrip().startswith(("{", "[")) or not yaml_ok:
            return json.loads(text)
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"{origin}: not valid JSON/YAML", [f"(document): {exc}"]) from exc
    except RecursionError as exc:
        raise ValidationError(f"{origin}: nested too deeply", ["(document): nested too deeply"]) \
            from exc


def load_document(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The raw document from a dict, a file path (.json, .yaml, .yml) or JSON/YAML text."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    looks_like_text = "\n" in source if isinstance(source, str) else False
    if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
        looks_like_text = True
    if isinstance(source, Path) or not looks_like_text:
        path = Path(source)
        if not path.is_file():
            raise NotFound(f"no strategy file {path}")
        doc = _parse_text(path.read_text(encoding="utf-8"),
                          path.suffix.lower() in (".yaml", ".yml"), str(path))
    else:
        doc = _parse_text(source, True, "strategy text")
    if not isinstance(doc, dict):
        raise ValidationError("a strategy must be a JSON object",
                              ["(document): expected an object at the top"])
    return doc


# --- validation --------------------------------------------------------------------------------


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _schema_problems(doc: dict[str, Any]) -> list[str]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema())
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        # For anyOf/oneOf, the most relevant alternative's message says more than "not valid
        # under any of the given schemas".
        # The deepest sub-error is in the alternative the author meant (its keys were present).
        chosen = error
        if error.context:
            deepest = max(len(e.absolute_path) for e in error.context)
            candidates = [e for e in error.context if len(e.absolute_path) == deepest]
            detail = best_match(candidates)
            if detail is not None and deepest > len(error.absolute_path):
                chosen = detail
        message = chosen.message
        if len(message) > 300:
            message = message[:300] + "..."
        problems.append(f"{_path(chosen.absolute_path)}: {message}")
    return problems


def _resolve_params(
    doc: dict[str, Any], overrides: dict[str, float] | None, problems: list[str]
) -> tuple[dict[str, float], dict[str, ParamSpec]]:
    specs: dict[str, ParamSpec] = {}
    values: dict[str, float] = {}
    for name, p in doc.get("params", {}).items():
        spec = ParamSpec(p["default"], p.get("min"), p.get("max"), p.get("step"),
                         p.get("description", ""))
        specs[name] = spec
        values[name] = spec.default
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            problems.append(f"params.{name}: min {spec.min:g} is above max {spec.max:g}")
    for name, value in (overrides or {}).items():
        if name not in specs:
            known = ", ".join(specs) or "none"
            problems.append(f"params.{name}: unknown parameter (this strategy has: {known})")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"params.{name}: expected a number, got {value!r}")
            continue
        values[name] = value
    for name, value in values.items():
        spec = specs[name]
        if spec.min is not None and value < spec.min:
            problems.append(f"params.{name}: {value:g} is below its minimum {spec.min:g}")
        if spec.max is not None and value > spec.max:
            problems.append(f"params.{name}: {value:g} is above its maximum {spec.max:g}")
    # Keep integers integers: periods and counts must be whole numbers.
    return {k: int(v) if float(v).is_integer() and isinstance(specs[k].default, int) else v
            for k, v in values.items()}, specs


class _Rules:
    """Parses condition trees into one AST each, collecting problems with their paths."""

    def __init__(self, params: dict[str, float], timeframe: str, problems: list[str]) -> None:
        self.params, self.timeframe, self.problems = params, timeframe, problems
        self.lookback = 0
        self.session = False

    def expression(self, text: Any, path: str, want: str) -> Node | None:
        if isinstance(text, int | float):
            text = repr(text)
        try:
            node = parse(text)
            info = analyze(node, self.params, self.timeframe)
        except ExprError as exc:
            self.problems.append(f"{path}: {text!r} is not a valid expression: {exc}")
            return None
        if info.kind != want:
            what = "a condition (true/false)" if want == "bool" else "a number"
            self.problems.append(f"{path}: {text!r} is not a valid expression: "
                                 f"expected {what}, got a {info.kind}")
            return None
        self.lookback = max(self.lookback, info.lookback)
        self.session = self.session or info.session
        return node

    def condition(self, cond: Any, path: str, depth: int = 0) -> Node | None:
        if depth > MAX_CONDITION_DEPTH:
            self.problems.append(f"{path}: conditions nested more than {MAX_CONDITION_DEPTH} deep")
            return None
        if isinstance(cond, str):
            return self.expression(cond, path, "bool")
        if "left" in cond:
            left = self.expression(cond["left"], f"{path}.left", "num")
            right = self.expression(cond["right"], f"{path}.right", "num")
            node = BinOp(cond["op"], left, right) if left and right else None
            if node is not None and cond["op"].startswith("crosses_"):
                info = analyze(node, self.params, self.timeframe)
                self.lookback = max(self.lookback, info.lookback)
            return node
        if "not" in cond:
            inner = self.condition(cond["not"], f"{path}.not", depth + 1)
            return Not(inner) if inner is not None else None
        key = "all" if "all" in cond else "any"
        parts = [self.condition(c, f"{path}.{key}[{i}]", depth + 1)
                 for i, c in enumerate(cond[key])]
        if any(p is None for p in parts):
            return None
        tree: Node = parts[0]  # type: ignore[assignment]  # checked: none is None
        for part in parts[1:]:
            tree = BinOp("and" if key == "all" else "or", tree, part)  # type: ignore[arg-type]
        return tree


def _rule_text_problems(doc: dict[str, Any]) -> list[str]:
    """Problems of every rule string in a document that failed the schema (best effort)."""
    raw_params = doc.get("params")
    declared: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    params: dict[str, float] = {}
    for name, spec in declared.items():
        default = spec.get("default") if isinstance(spec, dict) else spec
        number = isinstance(default, int | float) and not isinstance(default, bool)
        params[str(name)] = float(default) if number else 1.0  # type: ignore[arg-type]
    timeframe = str(doc.get("timeframe")) if doc.get("timeframe") in ("day", "minute") else "day"
    problems: list[str] = []

    def walk(cond: Any, path: str, depth: int) -> None:
        if depth > MAX_CONDITION_DEPTH:
            return
        if isinstance(cond, str):
            try:
                analyze(parse(cond), params, timeframe)
            except ExprError as exc:
                problems.append(f"{path}: {cond!r} is not a valid expression: {exc}")
        elif isinstance(cond, dict):
            for key in ("all", "any"):
                if isinstance(cond.get(key), list):
                    for i, part in enumerate(cond[key]):
                        walk(part, f"{path}.{key}[{i}]", depth + 1)
            if "not" in cond:
                walk(cond["not"], f"{path}.not", depth + 1)

    for key in _RULES:
        if key in doc:
            walk(doc[key], key, 0)
    return problems


def _number(value: Any, params: dict[str, float]) -> float:
    if isinstance(value, str):
        return params[value[1:]]
    return float(value)


def _check_refs(doc: Any, params: dict[str, float], path: str, problems: list[str]) -> None:
    """Every "$name" used as a number must be a declared parameter."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            _check_refs(v, params, f"{path}.{k}" if path else k, problems)
    elif isinstance(doc, str) and doc.startswith("$") and doc[1:] not in params:
        problems.append(f"{path}: unknown parameter {doc} (declare it under params)")


def _risk(doc: dict[str, Any], params: dict[str, float], problems: list[str]) -> RiskRules | None:
    levels: dict[str, Level | None] = {}
    for key in ("stop_loss", "take_profit", "trailing_stop"):
        spec = doc.get(key)
        levels[key] = None
        if spec is None:
            continue
        try:
            if "percent" in spec:
                percent = _number(spec["percent"], params)
                levels[key] = Level(kind=StopKind.PERCENT, value=percent / 100)
            else:
                period = _number(spec.get("atr_period", 14), params)
                if not float(period).is_integer():
                    raise ValueError(f"atr_period must be a whole number, got {period:g}")
                levels[key] = Level(kind=StopKind.ATR, value=_number(spec["atr"], params),
                                    atr_period=int(period))
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
    periods = {lv.atr_period for lv in levels.values()
               if lv is not None and lv.kind is StopKind.ATR}
    if len(periods) > 1:
        problems.append("stop_loss/take_profit/trailing_stop: ATR levels must share one atr_period")
    sizing_doc = doc.get("sizing", {"kind": "all_in"})
    try:
        kind = SizingKind(sizing_doc["kind"])
        if kind is not SizingKind.ALL_IN and "value" not in sizing_doc:
            raise ValueError(f"{kind} sizing needs a value")
        sizing = Sizing(kind=kind, value=_number(sizing_doc.get("value", 1.0), params))
        if kind is SizingKind.SHARES and not sizing.value.is_integer():
            raise ValueError("shares sizing needs a whole number of shares")
        if kind is SizingKind.RISK and levels["stop_loss"] is None:
            raise ValueError("risk sizing needs a stop_loss to measure the risk from")
    except ValueError as exc:
        problems.append(f"sizing: {exc}")
        return None
    try:
        max_bars = doc.get("max_bars")
        return RiskRules(
            **levels,
            max_bars=int(_number(max_bars, params)) if max_bars is not None else None,
            max_positions=int(_number(doc.get("max_positions", 1), params)),
            direction=Direction(doc.get("direction", "long_only")),
            sizing=sizing,
        )
    except ValueError as exc:
        problems.append(f"(document): {exc}")
        return None


def _summary(problems: list[str]) -> str:
    """One line for the CLI's error handler: the first problems, then how many more."""
    more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
    return "invalid strategy: " + "; ".join(problems[:2]) + more


def load_spec(
    source: str | Path | dict[str, Any], params: dict[str, float] | None = None
) -> StrategySpec:
    """Read and validate a strategy; ``params`` override the parameters' defaults.

    ``source`` is a dict, a path to a .json/.yaml file, or JSON/YAML text. Raises
    :class:`falcon.errors.ValidationError` whose ``problems`` list every error with its path, or
    :class:`falcon.errors.NotFound` for a missing file.
    """
    doc = load_document(source)
    problems = _schema_problems(doc)
    if problems:
        # Report the rules' own mistakes in the same pass, so that fixing the schema errors
        # does not reveal a second round of errors.
        problems.extend(p for p in _rule_text_problems(doc) if p not in problems)
        raise ValidationError(_summary(problems), problems)
    values, specs = _resolve_params(doc, params, problems)
    for key in ("stop_loss", "take_profit", "trailing_stop", "sizing", "max_bars", "max_positions"):
        if key in doc:
            _check_refs(doc[key], values, key, problems)
    timeframe = doc.get("timeframe", "day")
    direction = doc.get("direction", "long_only")
    parser = _Rules(values, timeframe, problems)
    rules: dict[str, Node] = {}
    for key, column in _RULES.items():
        if key in doc:
            node = parser.condition(doc[key], key)
            if node is not None:
                rules[column] = node
    if direction == "long_short" and "short_entry" not in doc:
        problems.append("short_entry: a long_short strategy needs a short entry rule")
    if direction == "long_only":
        # Short rules of a long-only strategy are kept in the document but never signal.
        rules.pop("entry_short", None)
        rules.pop("exit_short", None)
    risk = _risk(doc, values, problems) if not problems else None
    if problems or risk is None:
        raise ValidationError(_summary(problems), problems)
    universe = doc.get("universe", {})
    tickers = universe.get("tickers")
    atr_periods = [lv.atr_period for lv in (risk.stop_loss, risk.take_profit, risk.trailing_stop)
                   if lv is not None and lv.kind is StopKind.ATR]
    return StrategySpec(
        name=doc["name"],
        description=doc.get("description", ""),
        version=str(doc.get("version", "1")),
        timeframe=timeframe,
        universe=Universe(tuple(tickers) if tickers else None, universe.get("screener")),
        params=values,
        param_specs=specs,
        risk=risk,
        rules=rules,
        warmup_bars=max([parser.lookback, *atr_periods]),
        raw=doc,
        uses_session=parser.session,
    )
