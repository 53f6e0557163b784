"""The OpenAPI 3 document of /api/v1, served at /api/v1/openapi.json.

Written by hand next to the routes; tests check that it lists every route of the blueprint and
that responses conform to it (schemathesis).
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.wrappers import Response

from falcon import __version__
from falcon.web.actions import MAX_REASON, MAX_URL, YOUTUBE_URL_PATTERN
from falcon.web.api.v1._bp import bp
from falcon.web.api.v1.params import MAX_LIMIT

MAX_ID = 2**63 - 1
JsonDict = dict[str, Any]


def _ref(name: str) -> JsonDict:
    return {"$ref": f"#/components/schemas/{name}"}


def _n(schema: JsonDict) -> JsonDict:
    return {**schema, "nullable": True}


def _obj(props: JsonDict) -> JsonDict:
    return {"type": "object", "required": sorted(props), "properties": props}


_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_TS = {"type": "string", "format": "date-time"}
_DATE = {"type": "string", "format": "date"}
_ANY: JsonDict = {}  # a JSON document read whole (spec, metrics, LLM notes ...)
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def _list_of(name: str) -> JsonDict:
    return _obj({"items": {"type": "array", "items": _ref(name)}, "next_before_id": _n(_INT)})


SCHEMAS: dict[str, JsonDict] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": _STR, "problems": {"type": "array", "items": _STR}},
    },
    "User": _obj({"username": _STR, "is_admin": _BOOL, "totp": _BOOL}),
    "Account": _obj(
        {
            "id": _INT,
            "name": _STR,
            "starting_cash": _NUM,
            "cash": _NUM,
            "equity": _NUM,
            "open_positions": _INT,
            "long_only": _BOOL,
            "halted": _BOOL,
            "halt_reason": _n(_STR),
            "last_bar_ts": _n(_TS),
            "created_at": _TS,
        }
    ),
    "HeldEntry": _obj(
        {
            "kind": {"type": "string", "enum": ["quiet_retry", "if_flat"]},
            "strategy": _n(_STR),
            "ticker": _STR,
            "side": _STR,
            "cause": _n(_STR),
            "count": _n(_INT),
            "first_ts": _n(_TS),
            "last_ts": _n(_TS),
            "first_client_order_id": _n(_STR),
            "waiting": _BOOL,
            "client_order_id": _n(_STR),
        }
    ),
    "Position": _obj(
        {
            "account_id": _INT,
            "ticker": _STR,
            "qty": _INT,
            "avg_cost": _NUM,
            "realized_pnl": _NUM,
            "strategy": _n(_STR),
            "opened_at": _TS,
            "updated_at": _TS,
        }
    ),
    "Order": _obj(
        {
            "id": _INT,
            "account_id": _INT,
            "client_order_id": _STR,
            "ticker": _STR,
            "side": _STR,
            "type": _STR,
            "qty": _INT,
            "limit_price": _n(_NUM),
            "stop_price": _n(_NUM),
            "trail_pct": _n(_NUM),
            "time_in_force": _STR,
            "status": _STR,
            "parent_id": _n(_INT),
            "oco_group": _n(_STR),
            "strategy": _n(_STR),
            "reason": _n(_STR),
            "reject_reason": _n(_STR),
            "filled_qty": _INT,
            "avg_fill_price": _n(_NUM),
            "created_at": _TS,
            "updated_at": _TS,
        }
    ),
    "Fill": _obj(
        {
            "id": _INT,
            "order_id": _INT,
            "account_id": _INT,
            "ticker": _STR,
            "side": _STR,
            "qty": _INT,
            "price": _NUM,
            "fee": _NUM,
            "ts": _TS,
        }
    ),
    "ScreenRun": _obj(
        {
            "id": _INT,
            "profile": _STR,
            "as_of": _DATE,
            "status": _STR,
            "universe_size": _INT,
            "candidates": _INT,
            "ranking": _STR,
            "ranking_note": _n(_STR),
            "error": _n(_STR),
            "started_at": _TS,
            "finished_at": _n(_TS),
        }
    ),
    "ScreenPick": _obj(
        {
            "id": _INT,
            "run_id": _INT,
            "ticker": _STR,
            "rank": _INT,
            "score": _NUM,
            "close": _NUM,
            "factors": {"type": "object"},
            "reasons": {"type": "array"},
            "entry_low": _n(_NUM),
            "entry_high": _n(_NUM),
            "stop": _n(_NUM),
            "target": _n(_NUM),
            "fresh_until": _n(_TS),
            "llm": _ANY,
        }
    ),
    "Strategy": _obj(
        {
            "id": _INT,
            "name": _STR,
            "source": _STR,
            "status": _STR,
            "status_reason": _n(_STR),
            "provenance": _ANY,
            "created_at": _TS,
            "updated_at": _TS,
        }
    ),
    "Backtest": _obj(
        {
            "id": _INT,
            "strategy_id": _n(_INT),
            "strategy_name": _STR,
            "symbols": {"type": "array"},
            "start": _n(_DATE),
            "end": _n(_DATE),
            "status": _STR,
            "metrics": _ANY,
            "error": _n(_STR),
            "created_at": _TS,
        }
    ),
    "BacktestTrade": _obj(
        {
            "ticker": _STR,
            "side": _STR,
            "qty": _INT,
            "entry_ts": _TS,
            "entry_price": _NUM,
            "exit_ts": _n(_TS),
            "exit_price": _n(_NUM),
            "pnl": _n(_NUM),
            "return_pct": _n(_NUM),
            "exit_reason": _n(_STR),
        }
    ),
    "Job": _obj(
        {
            "id": _INT,
            "kind": _STR,
            "status": _STR,
            "payload": {"type": "object"},
            "progress": _NUM,
            "progress_note": _n(_STR),
            "attempts": _INT,
            "result": _ANY,
            "error": _n(_STR),
            "created_at": _TS,
            "started_at": _n(_TS),
            "finished_at": _n(_TS),
        }
    ),
    "AlertRule": _obj(
        {
            "id": _INT,
            "name": _STR,
            "kind": _STR,
            "params": {"type": "object"},
            "channels": {"type": "array"},
            "cooldown_s": _INT,
            "market_hours_only": _BOOL,
            "enabled": _BOOL,
            "last_fired_at": _n(_TS),
            "created_at": _TS,
        }
    ),
    "AlertEvent": _obj(
        {
            "id": _INT,
            "rule_id": _n(_INT),
            "ticker": _n(_STR),
            "message": _STR,
            "latency_ms": _n(_NUM),
            "created_at": _TS,
        }
    ),
    "HaltRequest": {
        "type": "object",
        "properties": {
            "account_id": {
                **_ID,
                "nullable": True,
                "description": "omit to apply to every account",
            },
            "reason": {"type": "string", "maxLength": 500},
        },
    },
    "BacktestRequest": {
        "type": "object",
        "required": ["strategy_id", "symbols"],
        "properties": {
            "strategy_id": _ID,
            "symbols": {
                "type": "array",
                "minItems": 1,
                "maxItems": 500,
                "items": {"type": "string", "pattern": "^[A-Z][A-Z0-9.-]{0,15}$"},
            },
            "start": _n(_DATE),
            "end": _n(_DATE),
            "params": {"type": "object"},
        },
        "additionalProperties": False,
    },
    "ResearchRequest": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "maxLength": MAX_URL, "pattern": YOUTUBE_URL_PATTERN},
        },
        "additionalProperties": False,
    },
    "ReasonRequest": {
        "type": "object",
        "required": ["reason"],
        "properties": {
            # Some character that is not white space, and no NUL (PostgreSQL refuses it).
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_REASON,
                "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$",
            },
        },
    },
}
SCHEMAS["ScreenRunDetail"] = {
    "allOf": [_ref("ScreenRun"), _obj({"picks": {"type": "array", "items": _ref("ScreenPick")}})]
}
SCHEMAS["StrategyDetail"] = {"allOf": [_ref("Strategy"), _obj({"spec": _ANY})]}
SCHEMAS["BacktestDetail"] = {
    "allOf": [
        _ref("Backtest"),
        _obj(
            {
                "spec": _ANY,
                "params": {"type": "object"},
                "trades": {"type": "array", "items": _ref("BacktestTrade")},
            }
        ),
    ]
}
SCHEMAS["BacktestQueued"] = _obj({"job": _ref("Job"), "status_url": _STR})
SCHEMAS["ResearchQueued"] = _obj({"job": _ref("Job"), "status_url": _STR})
for _name in (
    "Account",
    "Position",
    "Order",
    "Fill",
    "ScreenRun",
    "ScreenPick",
    "Strategy",
    "Backtest",
    "AlertRule",
    "AlertEvent",
):
    SCHEMAS[f"{_name}List"] = _list_of(_name)

SCHEMAS["AccountDetail"] = _obj(
    {
        **SCHEMAS["Account"]["properties"],
        "held_entries": {"type": "array", "items": _ref("HeldEntry")},
        "held_entries_warning": _n(_STR),
    }
)


def _query(name: str, schema: JsonDict, description: str) -> JsonDict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path_id(name: str) -> JsonDict:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


_PAGING = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "rows, default 100"),
    _query("before_id", _ID, "only rows with a smaller id (the previous next_before_id)"),
]


_REQUIRED_BODIES = frozenset({"BacktestRequest", "ResearchRequest", "ReasonRequest"})


def _op(
    summary: str,
    schema: str,
    *,
    status: str = "200",
    params: list[JsonDict] | None = None,
    body: str | None = None,
) -> JsonDict:
    operation: JsonDict = {
        "summary": summary,
        "parameters": params or [],
        "responses": {
            status: {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(schema)}},
            },
            "default": {
                "description": "Error",
                "content": {"application/json": {"schema": _ref("Error")}},
            },
        },
    }
    if body:
        operation["requestBody"] = {
            "required": body in _REQUIRED_BODIES,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _paths() -> JsonDict:
    account = _query("account_id", _ID, "only this paper account")
    short = {"type": "string", "maxLength": 16}
    return {
        "/me": {"get": _op("Who the credentials belong to", "User")},
        "/accounts": {"get": _op("Paper accounts", "AccountList")},
        "/accounts/{account_id}": {
            "get": _op("One paper account, with the entries held in memory", "AccountDetail",
                       params=[_path_id("account_id")])
        },
        "/positions": {"get": _op("Open positions", "PositionList", params=[account])},
        "/orders": {
            "get": _op(
                "Orders, newest first",
                "OrderList",
                params=[account, _query("status", short, "only this status"), *_PAGING],
            )
        },
        "/orders/{order_id}": {"get": _op("One order", "Order", params=[_path_id("order_id")])},
        "/orders/{order_id}/cancel": {
            "post": _op(
                "Cancel an open order (409 when final; admins only, else 403)",
                "Order",
                params=[_path_id("order_id")],
            )
        },
        "/fills": {"get": _op("Fills, newest first", "FillList", params=[account, *_PAGING])},
        "/paper/halt": {
            "post": _op(
                "Halt one account or all (admins only, else 403)", "AccountList", body="HaltRequest"
            )
        },
        "/paper/resume": {
            "post": _op(
                "Resume one account or all (admins only, else 403)",
                "AccountList",
                body="HaltRequest",
            )
        },
        "/screener/runs": {
            "get": _op(
                "Screen runs",
                "ScreenRunList",
                params=[
                    _query("profile", {"type": "string", "maxLength": 64}, "only this profile"),
                    *_PAGING,
                ],
            )
        },
        "/screener/runs/{run_id}": {
            "get": _op("One run with its picks", "ScreenRunDetail", params=[_path_id("run_id")])
        },
        "/screener/runs/{run_id}/picks": {
            "get": _op("A run's picks by rank", "ScreenPickList", params=[_path_id("run_id")])
        },
        "/strategies": {
            "get": _op(
                "Strategies",
                "StrategyList",
                params=[
                    _query("source", short, "builtin, user or research"),
                    _query("status", short, "only this status"),
                    *_PAGING,
                ],
            )
        },
        "/strategies/{strategy_id}": {
            "get": _op(
                "One strategy with its spec", "StrategyDetail", params=[_path_id("strategy_id")]
            )
        },
        "/backtests": {
            "get": _op(
                "Backtests with metrics",
                "BacktestList",
                params=[_query("strategy_id", _ID, "only this strategy"), *_PAGING],
            ),
            "post": _op(
                "Queue a backtest job", "BacktestQueued", status="202", body="BacktestRequest"
            ),
        },
        "/backtests/{run_id}": {
            "get": _op("One backtest with trades", "BacktestDetail", params=[_path_id("run_id")])
        },
        "/jobs/{job_id}": {"get": _op("A job's status", "Job", params=[_path_id("job_id")])},
        "/research/submissions": {
            "get": _op(
                "Strategies extracted by research",
                "StrategyList",
                params=[_query("status", short, "only this status"), *_PAGING],
            )
        },
        "/research": {
            "post": _op(
                "Queue a research job for a YouTube video",
                "ResearchQueued",
                status="202",
                body="ResearchRequest",
            )
        },
        "/research/{strategy_id}/promote": {
            "post": _op(
                "Promote a backtested, look-ahead-clean strategy to paper"
                " (409 when refused; admins only)",
                "Strategy",
                params=[_path_id("strategy_id")],
                body="ReasonRequest",
            )
        },
        "/research/{strategy_id}/retire": {
            "post": _op(
                "Retire a researched strategy (409 when already retired; admins only)",
                "Strategy",
                params=[_path_id("strategy_id")],
                body="ReasonRequest",
            )
        },
        "/alerts/rules": {"get": _op("Alert rules", "AlertRuleList", params=_PAGING)},
        "/alerts/events": {
            "get": _op(
                "Alerts that fired",
                "AlertEventList",
                params=[_query("rule_id", _ID, "only this rule"), *_PAGING],
            )
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "default": {
                        "description": "Error",
                        "content": {"application/json": {"schema": _ref("Error")}},
                    },
                },
            }
        },
    }


def openapi_document() -> JsonDict:
    """The OpenAPI 3.0 document (a fresh dict each call)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Falcon API",
            "version": __version__,
            "description": "Session cookie (with X-CSRF-Token on POST) or Bearer token "
            "(`falcon user token NAME --name LABEL`).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "falcon_session"},
            },
            "schemas": SCHEMAS,
        },
        "paths": _paths(),
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """This API's OpenAPI document."""
    return jsonify(openapi_document())
