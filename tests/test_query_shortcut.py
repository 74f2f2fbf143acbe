"""The query shortcut answers exactly what webargs answers, or leaves the query to webargs."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, request
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException

from insights_audit.dashboards.schemas import (
    MostViewedQuery,
    RecentQuery,
    RelatedQuery,
    StatsQuery,
    TrendingQuery,
)
from insights_audit.trail.schemas import TrailQuery
from insights_audit.web.api import ArgumentsParser, QueryShortcut
from insights_audit.web.schemas import NoQuery

SCHEMAS = [RecentQuery(), MostViewedQuery(), StatsQuery(), TrendingQuery(), RelatedQuery()]
SCHEMAS += [TrailQuery(exclude=["cursor"]), NoQuery()]
APP = Flask(__name__)
PARSER = ArgumentsParser()

values = st.one_of(
    st.integers(-5, 5000).map(str),
    st.sampled_from(["", "0", "00", "010", "+5", " 5", "5 ", "5.0", "1e2", "٣", "9" * 12]),
    st.text(max_size=6),
)
queries = st.lists(
    st.tuples(st.sampled_from(["limit", "days", "since", "action", "Limit", "x"]), values),
    max_size=3,
)


def by_webargs(schema: ma.Schema, query: list[tuple[str, str]]) -> dict[str, Any] | None:
    """What webargs itself answers (None for its 400)."""
    with APP.test_request_context(query_string=query):
        try:
            return super(ArgumentsParser, PARSER).parse(schema, location="query")
        except HTTPException as exc:
            assert exc.code == 400
            return None


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: type(schema).__name__)
@settings(max_examples=300, deadline=None)
@given(query=queries)
def test_the_shortcut_answers_as_webargs_does(
    schema: ma.Schema, query: list[tuple[str, str]]
) -> None:
    with APP.test_request_context(query_string=query):
        shortcut = QueryShortcut(schema).load(request.args)
    expected = by_webargs(schema, query)
    if shortcut is not None:
        assert shortcut == expected
    if expected is None:
        assert shortcut is None


def test_common_queries_take_the_shortcut() -> None:
    with APP.test_request_context(query_string="days=30&limit=5"):
        assert QueryShortcut(MostViewedQuery()).load(request.args) == {"days": 30, "limit": 5}
        assert QueryShortcut(TrailQuery()).load(request.args) is None
    with APP.test_request_context():
        assert QueryShortcut(TrailQuery()).load(request.args) == {"limit": 100}
        assert QueryShortcut(StatsQuery()).load(request.args) == {"days": 30}


def test_out_of_range_and_repeated_values_go_to_webargs() -> None:
    for query in ("limit=101", "limit=0", "limit=5&limit=6", "days=007", "limit=5&x=1"):
        with APP.test_request_context(query_string=query):
            assert QueryShortcut(MostViewedQuery()).load(request.args) is None, query
