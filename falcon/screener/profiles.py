"""Screen profiles: YAML documents that say what to screen for, how to rank it and when.

A profile (see ``falcon/screener/profiles/*.yaml`` for the built-ins)::

    name: momentum_breakout                 # [a-z0-9_], unique
    description: Close above the prior 20-day high on relative volume >= 1.5.
    universe:                               # all keys optional
      min_price: 5                          # close on the screened session
      max_price: 1000
      min_avg_volume: 100000                # shares, 20-session average
      min_avg_dollar_volume: 5000000        # close*volume, 20-session average (default $5M)
      exclude: [SPY, QQQ]                   # tickers never picked
      types: [CS]                           # reference data (falcon reference ...)
      sectors: [software]                   # case-insensitive substring of the SIC description
      exclude_sectors: [blank checks]
    conditions:                             # all must hold on the session (expression language)
      - expr: close > highest(close, 20)[1]
        reason: "close {left} above 20-day high {right}"   # optional; {left} {right} {<factor>}
      - volume >= 1.5 * sma(volume, 20)[1]  # a bare string is fine too
    factors:                                # weighted, normalised across the day's candidates
      - name: breakout_pct
        expr: (close / highest(close, 20)[1] - 1) * 100
        weight: 0.5                         # < 0: lower is better; 0: shown, not scored
        normalize: rank                     # rank (percentile 0..1) | zscore (clipped) | none
        clip: 3                             # zscore only: |z| <= clip
    top_n: 10
    levels:                                 # what the paper trader acts on
      atr_period: 14
      entry_atr: 0.25                       # entry range close ± 0.25*ATR (or entry_pct: 1.0)
      stop_atr: 2.0                         # stop close - 2*ATR
      target_atr: 3.0                       # target close + 3*ATR (or target_r: 2 = 2x risk)
    schedule: ["16:30"]                     # America/New_York, NYSE sessions; HH:MM or 5-field cron
    llm: {enabled: false, candidates: 20}   # optional LLM re-ranking of the top candidates
    warmup_bars: 250                        # optional; default from the expressions' periods

Built-ins ship in the package; user profiles live in ``/etc/falcon/profiles`` and
``$FALCON_HOME/profiles`` (later wins, so a user can replace a built-in by its name). Every
problem is reported with the file and the key (``momentum.yaml: factors[1].weight: ...``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import jsonschema
import yaml

from falcon.config import Settings
from falcon.errors import NotFound, ValidationError
from falcon.screener import lang

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_MIN_DOLLAR_VOLUME",
    "SYSTEM_DIR",
    "Condition",
    "Factor",
    "LLMOptions",
    "Levels",
    "Profile",
    "Universe",
    "load_profile",
    "load_profiles",
    "parse_profile",
    "profile_dirs",
]

BUILTIN_DIR = Path(__file__).with_name("profiles")
SYSTEM_DIR = Path("/etc/falcon/profiles")
#: The liquidity floor every profile gets unless it says otherwise: below this, fills are fiction.
DEFAULT_MIN_DOLLAR_VOLUME = 5_000_000.0
DEFAULT_SCHEDULE = ("16:30",)

Normalize = Literal["rank", "zscore", "none"]

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
#: The JSON Schema of a profile document (checked first; the explicit checks below follow).
SCHEMA: dict[str, Any] = json.loads(
    Path(__file__).with_name("profile.schema.json").read_text(encoding="utf-8"))

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@dataclass(frozen=True)
class Universe:
    """Which tickers a profile considers at all (before its conditions)."""

    min_price: float | None = None
    max_price: float | None = None
    min_avg_volume: float = 0.0
    min_avg_dollar_volume: float = DEFAULT_MIN_DOLLAR_VOLUME
    exclude: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    sectors: tuple[str, ...] = ()
    exclude_sectors: tuple[str, ...] = ()

    @property
    def needs_reference(self) -> bool:
        """True when the filters need the ``tickers`` table (types or sectors)."""
        return bool(self.types or self.sectors or self.exclude_sectors)


@dataclass(frozen=True)
class Condition:
    """One rule that must hold on the session, with an optional reason template."""

    expr: str
    reason: str | None = None


@dataclass(frozen=True)
class Factor:
    """A scoring factor: an expression, its weight and how it is normalised across candidates."""

    name: str
    expr: str
    weight: float
    normalize: Normalize = "rank"
    clip: float = 3.0
    label: str | None = None


@dataclass(frozen=True)
class Levels:
    """How entry range, stop and target are set from the close and the ATR."""

    atr_period: int = 14
    entry_atr: float | None = 0.25
    entry_pct: float | None = None
    stop_atr: float = 2.0
    target_atr: float | None = 3.0
    target_r: float | None = None


@dataclass(frozen=True)
class LLMOptions:
    """Optional LLM re-ranking."""

    enabled: bool = False
    candidates: int = 20


@dataclass(frozen=True)
class Profile:
    """A validated screen profile (build with :func:`parse_profile` or :func:`load_profile`)."""

    name: str
    conditions: tuple[Condition, ...]
    description: str = ""
    universe: Universe = field(default_factory=Universe)
    factors: tuple[Factor, ...] = ()
    top_n: int = 10
    levels: Levels = field(default_factory=Levels)
    schedule: tuple[str, ...] = DEFAULT_SCHEDULE
    llm: LLMOptions = field(default_factory=LLMOptions)
    warmup_bars: int = 0
    source: str = "<memory>"

    @property
    def expressions(self) -> list[str]:
        """Every expression the profile evaluates (conditions, then factors)."""
        return [c.expr for c in self.conditions] + [f.expr for f in self.factors]

    def to_dict(self) -> dict[str, Any]:
        """The profile as the plain document it was parsed from (defaults filled in)."""
        u, lv = self.universe, self.levels
        universe: dict[str, Any] = {
            "min_avg_volume": u.min_avg_volume,
            "min_avg_dollar_volume": u.min_avg_dollar_volume,
            "exclude": list(u.exclude),
            "types": list(u.types),
            "sectors": list(u.sectors),
            "exclude_sectors": list(u.exclude_sectors),
        }
        if u.min_price is not None:
            universe["min_price"] = u.min_price
        if u.max_price is not None:
            universe["max_price"] = u.max_price
        levels: dict[str, Any] = {"atr_period": lv.atr_period, "stop_atr": lv.stop_atr}
        for key in ("entry_atr", "entry_pct", "target_atr", "target_r"):
            if getattr(lv, key) is not None:
                levels[key] = getattr(lv, key)
        return {
            "name": self.name,
            "description": self.description,
            "universe": universe,
            "conditions": [
                {"expr": c.expr, **({"reason": c.reason} if c.reason else {})}
                for c in self.conditions
            ],
            "factors": [
                {"name": f.name, "expr": f.expr, "weight": f.weight, "normalize": f.normalize,
                 **({"clip": f.clip} if f.normalize == "zscore" else {}),
                 **({"label": f.label} if f.label else {})}
                for f in self.factors
            ],
            "top_n": self.top_n,
            "levels": levels,
            "schedule": list(self.schedule),
            "llm": {"enabled": self.llm.enabled, "candidates": self.llm.candidates},
            "warmup_bars": self.warmup_bars,
        }


# --- parsing -----------------------------------------------------------------------------------


def _where(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _schema_problems(doc: Any) -> list[str]:
    problems = []
    for err in sorted(_VALIDATOR.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        message = err.message
        if err.validator == "oneOf":  # jsonschema's oneOf message repeats the whole value
            message = "must be an expression string or a mapping with 'expr' (and 'reason')"
        elif err.validator == "additionalProperties":
            message = message.replace("Additional properties are not allowed", "unknown key")
        problems.append(f"{_where(err.absolute_path)}: {message}")
    return problems


def _check_schedule(entry: str) -> str | None:
    """None when ``entry`` is HH:MM or a 5-field cron expression, else what is wrong."""
    if _TIME.match(entry):
        return None
    fields = entry.split()
    if len(fields) != 5:
        return f"{entry!r} is neither HH:MM nor a 5-field cron expression"
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(entry, timezone="America/New_York")
    except ValueError as exc:
        return f"{entry!r}: {exc}"
    return None


def _reason_problem(template: str, factor_names: set[str], sides: bool) -> str | None:
    import string

    allowed = factor_names | ({"left", "right"} if sides else set())
    try:
        for _text, name, spec, _conv in string.Formatter().parse(template):
            if name is None:
                continue
            if name not in allowed:
                hint = "" if sides else " (the condition is not a single comparison)"
                choices = ", ".join("{" + n + "}" for n in sorted(allowed))
                return f"unknown placeholder {{{name}}}{hint}" + (
                    f"; use {choices}" if choices else "")
            if spec:
                format(1.5, spec)
    except ValueError as exc:
        return f"bad template: {exc}"
    return None


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def parse_profile(doc: Any, *, source: str = "<memory>") -> Profile:
    """Validate a profile document (parsed YAML) and build a :class:`Profile`.

    Raises :class:`ValidationError` whose message names ``source`` and whose ``problems`` each
    name the key (``factors[1].weight: ...``).
    """
    problems = _schema_problems(doc)
    if problems:
        raise ValidationError(f"{source}: invalid profile: {problems[0]}",
                              [f"{source}: {p}" for p in problems])
    doc = cast(dict[str, Any], doc)  # the schema guarantees a mapping
    extra: list[str] = []

    def bad(key: str, message: str) -> None:
        extra.append(f"{key}: {message}")

    for key, value in _walk_numbers(doc):
        if not _finite(value):
            bad(key, f"{value!r} is not a finite number")

    u = doc.get("universe", {})
    if (u.get("min_price") is not None and u.get("max_price") is not None
            and u["min_price"] > u["max_price"]):
        bad("universe.max_price", f"{u['max_price']} is below min_price {u['min_price']}")

    factor_docs = doc.get("factors", [])
    names = [f["name"] for f in factor_docs]
    for i, name in enumerate(names):
        if name in names[:i]:
            bad(f"factors[{i}].name", f"duplicate factor name {name!r}")
    for i, f in enumerate(factor_docs):
        if "clip" in f and f.get("normalize", "rank") != "zscore":
            bad(f"factors[{i}].clip", "only applies to normalize: zscore")
        problem = lang.check(f["expr"])
        if problem:
            bad(f"factors[{i}].expr", problem)

    conditions = []
    for i, c in enumerate(doc["conditions"]):
        cond = Condition(expr=c) if isinstance(c, str) else Condition(c["expr"], c.get("reason"))
        key = f"conditions[{i}]" + ("" if isinstance(c, str) else ".expr")
        problem = lang.check(cond.expr)
        if problem:
            bad(key, problem)
        elif cond.reason:
            problem = _reason_problem(cond.reason, set(names), lang.split_comparison(cond.expr)
                                      is not None)
            if problem:
                bad(f"conditions[{i}].reason", problem)
        conditions.append(cond)

    lv = doc.get("levels", {})
    if "entry_atr" in lv and "entry_pct" in lv:
        bad("levels.entry_pct", "give entry_atr or entry_pct, not both")
    if "target_atr" in lv and "target_r" in lv:
        bad("levels.target_r", "give target_atr or target_r, not both")

    for i, entry in enumerate(doc.get("schedule", DEFAULT_SCHEDULE)):
        problem = _check_schedule(entry)
        if problem:
            bad(f"schedule[{i}]", problem)

    if extra:
        raise ValidationError(f"{source}: invalid profile: {extra[0]}",
                              [f"{source}: {p}" for p in extra])

    levels = Levels(
        atr_period=lv.get("atr_period", 14),
        entry_atr=lv.get("entry_atr", None if "entry_pct" in lv else 0.25),
        entry_pct=lv.get("entry_pct"),
        stop_atr=float(lv.get("stop_atr", 2.0)),
        target_atr=lv.get("target_atr", None if "target_r" in lv else 3.0),
        target_r=lv.get("target_r"),
    )
    llm = doc.get("llm", {})
    profile = Profile(
        name=doc["name"],
        description=doc.get("description", ""),
        universe=Universe(
            min_price=u.get("min_price"),
            max_price=u.get("max_price"),
            min_avg_volume=float(u.get("min_avg_volume", 0.0)),
            min_avg_dollar_volume=float(u.get("min_avg_dollar_volume", DEFAULT_MIN_DOLLAR_VOLUME)),
            exclude=tuple(t.upper() for t in u.get("exclude", [])),
            types=tuple(u.get("types", [])),
            sectors=tuple(u.get("sectors", [])),
            exclude_sectors=tuple(u.get("exclude_sectors", [])),
        ),
        conditions=tuple(conditions),
        factors=tuple(
            Factor(name=f["name"], expr=f["expr"], weight=float(f["weight"]),
                   normalize=f.get("normalize", "rank"), clip=float(f.get("clip", 3.0)),
                   label=f.get("label"))
            for f in factor_docs
        ),
        top_n=doc.get("top_n", 10),
        levels=levels,
        schedule=tuple(doc.get("schedule", DEFAULT_SCHEDULE)),
        llm=LLMOptions(enabled=llm.get("enabled", False), candidates=llm.get("candidates", 20)),
        warmup_bars=doc.get("warmup_bars", 0),
        source=source,
    )
    if not profile.warmup_bars:
        profile = _with_warmup(profile)
    return profile


def _with_warmup(profile: Profile) -> Profile:
    from dataclasses import replace

    # lookback = bars before the first value; the value itself needs one more.
    need = max([lang.lookback(e) + 1 for e in profile.expressions]
               + [profile.levels.atr_period + 1, 20])
    # Recursive smoothings (EMA, RSI, ATR) converge to the full-history value after a few times
    # their period; 50 more sessions keeps SMA200 at the 250 sessions a person would pick.
    return replace(profile, warmup_bars=need + 50)


def _walk_numbers(doc: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            yield from _walk_numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _walk_numbers(v, f"{path}[{i}]")
    elif isinstance(doc, float):
        yield path, doc


# --- files -------------------------------------------------------------------------------------


def load_profile(path: Path) -> Profile:
    """Read and validate one YAML profile file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValidationError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}"
                              ) from None
    profile = parse_profile(doc, source=str(path))
    if profile.name != path.stem:
        raise ValidationError(
            f"{path}: name: {profile.name!r} differs from the file name {path.stem!r}")
    return profile


def profile_dirs(settings: Settings) -> list[Path]:
    """Where profiles are found, in order (later wins on a name clash)."""
    return [BUILTIN_DIR, SYSTEM_DIR, settings.home / "profiles"]


def load_profiles(settings: Settings, *, dirs: list[Path] | None = None) -> dict[str, Profile]:
    """Every profile by name: built-ins, then /etc/falcon/profiles, then $FALCON_HOME/profiles.

    One bad user file fails the whole load with its file and key named: a screen that silently
    skips a profile is worse than one that refuses to start.
    """
    found: dict[str, Profile] = {}
    for folder in dirs if dirs is not None else profile_dirs(settings):
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            profile = load_profile(path)
            found[profile.name] = profile
    return found


def select_profiles(available: Mapping[str, Profile], names: Iterable[str]) -> list[Profile]:
    """The profiles called ``names`` (NotFound naming the missing one and what exists)."""
    out = []
    for name in names:
        if name not in available:
            raise NotFound(f"no profile {name!r}; have: {', '.join(sorted(available)) or 'none'}")
        out.append(available[name])
    return out
