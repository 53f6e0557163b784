"""Property-based checks of /api/v1 against its own OpenAPI document (schemathesis, in-process).

Every documented operation gets generated requests with a valid API token; responses must never be
5xx and must match the documented status codes, content types and schemas.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from falcon.db.models import ApiToken
from falcon.web import users
from falcon.web.api.v1 import openapi_document
from falcon.web.extensions import db

from .conftest import PASSWORD, make_app, sessions_of
from .factories import gen_everything

TOKEN = "falcon_schemathesis_token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api_schema(_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The served OpenAPI document, bound to one app per module with data and a known token."""
    db_file = tmp_path_factory.mktemp("schemathesis") / "falcon.db"
    shutil.copyfile(_sqlite_template, db_file)
    app = make_app(f"sqlite:///{db_file}")
    with sessions_of(app).begin() as s:
        user = users.create_user(s, "fuzz", PASSWORD, is_admin=True)  # reaches admin-only ops
        s.add(
            ApiToken(
                user_id=user.id,
                name="schemathesis",
                token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
            )
        )
        gen_everything(s)
    yield schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, headers=HEADERS)
    with app.app_context():
        db.engine.dispose()


# schemathesis' own pytest plugin (``@schema.parametrize()``) does not run under pytest 9, so each
# documented operation is a parametrised test that drives hypothesis itself.
OPERATIONS = [(m.upper(), p) for p, ops in openapi_document()["paths"].items() for m in ops]


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_conforms_to_its_schema(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    # A backtest request can be schema-valid and still wrong (start after end, an unknown
    # strategy): the API answers 422/404 for those, which is right, not a rejection of valid data.
    excluded = [positive_data_acceptance] if path == "/backtests" else []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=10 if mode is GenerationMode.POSITIVE else 5,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=HEADERS, excluded_checks=excluded)

    check()
