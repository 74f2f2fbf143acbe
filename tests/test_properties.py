"""Property-based checks of the parsers every request goes through: cursors, ids, timestamps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from insights_audit.errors import BadRequest
from insights_audit.trail.cursors import TrailPosition, decode_cursor, encode_cursor
from insights_audit.web.schemas import (
    format_timestamp,
    parse_audit_id,
    parse_target_id,
    parse_timestamp,
)

instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)
KEY = bytes(32)
object_ids = st.text(alphabet="0123456789abcdef", min_size=24, max_size=24)


@given(instants, object_ids)
def test_every_position_survives_its_cursor(at: datetime, entry_id: str) -> None:
    position = TrailPosition(at, entry_id)
    assert decode_cursor(encode_cursor(position, "org", KEY), "org", KEY) == position


@given(instants, object_ids, st.text(max_size=40), st.text(max_size=40))
def test_a_cursor_is_refused_for_any_other_org(
    at: datetime, entry_id: str, minted_for: str, used_by: str
) -> None:
    cursor = encode_cursor(TrailPosition(at, entry_id), minted_for, KEY)
    if used_by != minted_for:
        with pytest.raises(ValueError):
            decode_cursor(cursor, used_by, KEY)


@given(st.text())
def test_any_text_is_a_valid_cursor_or_a_value_error(raw: str) -> None:
    try:
        position = decode_cursor(raw, "org", KEY)
    except ValueError:
        return
    assert len(position.id) == 24 and position.created_at.tzinfo is not None


@given(instants, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_formatted_timestamps_parse_back_to_the_millisecond(at: datetime, offset: int) -> None:
    shifted = at.astimezone(timezone(timedelta(minutes=offset)))
    text = format_timestamp(shifted)
    assert text.endswith("Z") and len(text) == 24
    assert abs(parse_timestamp(text) - at) < timedelta(milliseconds=1)
    assert parse_timestamp(shifted.isoformat()) == at


@given(st.text())
def test_any_text_is_a_timestamp_or_a_value_error(raw: str) -> None:
    try:
        parsed = parse_timestamp(raw)
    except ValueError:
        return
    assert parsed.tzinfo is not None


@given(st.uuids(), st.booleans())
def test_uuids_in_any_case_parse_to_lowercase(value: uuid.UUID, upper: bool) -> None:
    text = str(value).upper() if upper else str(value)
    assert str(parse_target_id(text, "kpi")) == str(value)


@given(st.text())
def test_any_text_is_an_id_or_a_bad_request(raw: str) -> None:
    for parse in (lambda: parse_target_id(raw, "dashboard"), lambda: parse_audit_id(raw)):
        try:
            parse()
        except BadRequest as error:
            assert error.message in ("Invalid dashboard ID format", "Invalid audit log ID format")
        except Exception as error:  # pragma: no cover - the failure this test looks for
            pytest.fail(f"{raw!r} raised {error!r}")
