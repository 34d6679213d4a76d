"""Line protocol formatting (as EMQX templates render values) and parsing (as influxd 1.x reads it)."""

from __future__ import annotations

import pytest

from ecokit.rules.lineproto import (
    LineProtocolError,
    escape_string,
    escape_tag,
    format_float,
    merge_points,
    parse_line,
    tag_problem,
)


@pytest.mark.parametrize(("value", "text"), [
    (52.1, "52.1"), (0.0, "0.0"), (-0.0, "-0.0"), (1e-12, "0.0"), (1e20, "100000000000000000000.0"),
    (52.123456789012345, "52.123456789"), (0.00000000005, "0.0000000001"), (-13.5, "-13.5"),
])
def test_floats_render_like_erlang_float_to_binary_10_decimals_compact(value: float, text: str) -> None:
    assert format_float(value) == text


def test_tag_escaping_keeps_backslashes() -> None:
    assert escape_tag("a b,c=d\\e") == "a\\ b\\,c\\=d\\e"
    assert parse_line(f"m,t={escape_tag('a b,c=d')} v=1 1").tags == {"t": "a b,c=d"}


@pytest.mark.parametrize("value", ["", "a\x01", "a\nb", "ends\\"])
def test_values_influxdb_cannot_store_as_tags(value: str) -> None:
    assert tag_problem(value) is not None


def test_string_fields_round_trip_quotes_and_backslashes() -> None:
    text = 'he said "hi" \\o/'
    assert parse_line(f'm s="{escape_string(text)}" 1').fields == {"s": text}


def test_parsing_types_and_precision() -> None:
    point = parse_line('m,a=1 f=1.5,i=2i,b=true,s="x y" 1700000000', precision="s")
    assert point.fields == {"f": 1.5, "i": 2, "b": True, "s": "x y"}
    assert point.time_ns == 1_700_000_000_000_000_000


@pytest.mark.parametrize("line", ["m,t=a=b v=1 1", "m v=1u 1", "m", "m,t= v=1 1"])
def test_lines_influxdb_refuses(line: str) -> None:
    with pytest.raises(LineProtocolError):
        parse_line(line)


def test_points_with_one_identity_merge_fields() -> None:
    merged = merge_points([parse_line("m,t=a x=1 5"), parse_line("m,t=a y=2 5"), parse_line("m,t=a x=3 5")])
    assert len(merged) == 1
    assert merged[0].fields == {"x": 3.0, "y": 2.0}
