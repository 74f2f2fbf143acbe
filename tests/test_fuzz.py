"""Property-based fuzzing of the whole API from its OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid, with a valid token: none may get a
5xx, and every response must match the documented status codes, content types, headers and
body schemas. ``FUZZ_EXAMPLES`` (default 25) bounds the examples per operation.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.conftest import TokenFactory, bearer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def admin(make_token: TokenFactory) -> str:
    return make_token(roles=("Administrator",), scopes=("api",))


def test_generated_requests_get_documented_answers_and_never_a_5xx(
    app: Flask, admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A live tail ends at once here, after its head and backlog: the client reads it whole.
    brief = dataclasses.replace(app.config["SETTINGS"], stream_max_seconds=0.01)
    monkeypatch.setitem(app.config, "SETTINGS", brief)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 29

    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            # An invalid id that spells a sibling path reaches that operation instead.
            assume((case.path_parameters or {}).get("id") != "integrity")
            case.call_and_validate(headers=bearer(admin), checks=CHECKS)

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing to get wrong in an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, operation.label


def test_every_undocumented_method_is_405_with_allow(client: FlaskClient, admin: str) -> None:
    spec = client.get("/openapi.json").json
    for template, operations in spec["paths"].items():
        path = template
        for parameter in operations.get("parameters", []):
            path = path.replace("{" + parameter["name"] + "}", parameter["example"])
        documented = {method for method in operations if method in METHODS}
        for method in set(METHODS) - documented:
            response = client.open(path, method=method.upper(), headers=bearer(admin))
            assert response.status_code == 405, (method, path)
            allowed = {value.strip().lower() for value in response.headers["Allow"].split(",")}
            assert documented <= allowed, (method, path, allowed)
            assert response.json["code"] == 405
