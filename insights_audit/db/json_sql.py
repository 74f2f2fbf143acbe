"""JSON text written by PostgreSQL: responses served without converting rows in Python.

Each helper builds a SQL expression of JSON text in the exact form the API sends (the
response schemas' form), so that a page or a list is one text value the service wraps in its
envelope as it is. CSV cells (exports, reports) are written the same way, at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    Text,
    case,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by

from insights_audit.models import TimestampTZ


def api_timestamp(column: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """``column`` as the API writes a time: RFC 3339 in UTC, milliseconds, ``Z``."""
    return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')


def constant(text: str) -> ColumnElement[str]:
    """``text`` written into the SQL (a bind parameter costs each execution); an E'' string
    means the same whatever ``standard_conforming_strings`` says."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return literal_column(f"E'{escaped}'", Text)


def joined(parts: Sequence[ColumnElement[str]], separator: str = "") -> ColumnElement[str]:
    """The parts joined by ``||`` (PostgreSQL runs it faster than ``concat``)."""
    line = parts[0]
    for part in parts[1:]:
        line = line + constant(separator) + part if separator else line + part
    return line


def json_value(value: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """``value`` as JSON text ('null' for null)."""
    return func.coalesce(cast(func.to_json(value), Text), constant("null"))


def json_string(value: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """A value the service writes itself (an id, a uuid, a time): nothing in it to escape
    ('null' for null)."""
    return func.coalesce(constant('"') + cast(value, Text) + constant('"'), constant("null"))


def json_object(fields: Mapping[str, ColumnElement[str]]) -> ColumnElement[str]:
    """A JSON object of ``fields`` (each one's JSON text), keys in their order. Joining the
    fields' JSON with || costs PostgreSQL half of what ``json_build_object`` does."""
    members = [constant(f'"{key}":') + value for key, value in fields.items()]
    return joined([constant("{"), joined(members, ","), constant("}")])


def json_number(value: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """An integer as JSON ('null' for null)."""
    return func.coalesce(cast(value, Text), constant("null"))


def sql_text(expression: ColumnElement[Any]) -> str:
    """``expression`` as PostgreSQL text, constants written in, for a ``text()`` statement."""
    compiled = expression.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def json_list(items: ColumnElement[str]) -> ColumnElement[str]:
    """``items`` (JSON texts joined by ``,``, or null for none) as a JSON array."""
    return constant("[") + func.coalesce(items, constant("")) + constant("]")


def sql_piece(expression: str) -> ColumnElement[Any]:
    """A piece of a ``text()`` statement, by its SQL text, for the helpers here."""
    return literal_column(expression)


def json_time(expression: str) -> ColumnElement[str]:
    """The time ``expression`` (SQL text) as the JSON the API writes ('null' for null)."""
    return json_string(api_timestamp(literal_column(expression, TimestampTZ)))


def json_rows(item: ColumnElement[str], order: str, source: str) -> ColumnElement[str]:
    """The JSON array of ``item`` over the rows of ``source`` (a table or CTE of the
    statement), in ``order`` (SQL text)."""
    items = f"string_agg({sql_text(item)}, ',' ORDER BY {order})"
    return json_list(literal_column(f"(SELECT {items} FROM {source})"))


def json_items(item: ColumnElement[str], order: Sequence[Any]) -> list[ColumnElement[Any]]:
    """The columns ``json_array`` reads: each row's JSON text and its place in ``order`` (the
    order its select sorts by)."""
    return [item.label("item"), func.row_number().over(order_by=order).label("n")]


def json_array(rows: Select[Any]) -> Select[Any]:
    """One row, one column ``data``: the JSON array of the items of ``rows`` (a select of
    ``json_items``), in their order."""
    listed = rows.subquery("listed")
    items = func.string_agg(listed.c.item, aggregate_order_by(constant(","), listed.c.n))
    return select(json_list(items).label("data"))


# Spreadsheets run a cell as a formula when it starts with one of these, even after leading
# white space (any Unicode space) or in their full-width forms; a tab or a line end first is
# guarded too. Such cells get a leading '. The spaces are Python's ``str.isspace()`` set,
# spelled out because PostgreSQL's [[:space:]] depends on the locale.
SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
FORMULA_PATTERN = f"^([\t\r\n]|[{SPACES}]*[=+\\-@\uff1d\uff0b\uff0d\uff20])"


def quoted(text: ColumnElement[str]) -> ColumnElement[str]:
    """``text`` between double quotes, its own doubled (RFC 4180)."""
    return constant('"') + func.replace(text, constant('"'), constant('""')) + constant('"')


def csv_cell(text: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """A text column as one quoted RFC 4180 cell (so that neither a ``,`` nor a ``;`` list
    separator splits it), guarded against formula injection; null is an empty quoted cell."""
    starts_formula = text.op("~")(constant(FORMULA_PATTERN))
    guarded = case((starts_formula, constant("'") + text), else_=text)
    return func.coalesce(quoted(guarded), constant('""'))
