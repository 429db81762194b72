"""Tests for nanoseal.arc.grids: SEAL (numpy-str) and compact grid text, and forgiving parsing.

Run: pytest tests/test_arc_grids.py
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoseal.arc.grids import format_example, format_grid, parse_grid


def grids(max_side: int = 30):
    """Hypothesis strategy: valid ARC grids up to max_side per side."""
    return st.integers(1, max_side).flatmap(
        lambda w: st.lists(st.lists(st.integers(0, 9), min_size=w, max_size=w), min_size=1, max_size=max_side)
    ).map(lambda rows: tuple(tuple(r) for r in rows))


def test_seal_style_is_numpy_str():
    g = ((0, 1, 2), (3, 4, 5))
    assert format_grid(g) == "[[0 1 2]\n [3 4 5]]"
    assert format_grid(g, "compact") == "012\n345"
    assert format_example(g, ((7,),)) == ("[[0 1 2]\n [3 4 5]] -> ", "[[7]]#")
    assert format_example(g, ((7,),), "compact") == ("012\n345\n->\n", "7#")


@settings(max_examples=60, deadline=None)
@given(grids())
def test_seal_matches_numpy_for_every_size(g):
    assert format_grid(g) == str(np.array(g)), "marc writes grids with str(np.array)"


@settings(max_examples=100, deadline=None)
@given(grids(), st.sampled_from(["seal", "compact"]))
def test_roundtrip(g, style):
    assert parse_grid(format_grid(g, style), style) == (g, None)
    query, answer = format_example(g, g, style)
    assert parse_grid(answer + "trailing junk after the footer", style) == (g, None)


def test_seal_parse_is_lenient_about_commas_and_spacing():
    assert parse_grid("[[1, 2], [3, 4]]") == (((1, 2), (3, 4)), None)
    assert parse_grid("  [[1 2]\n\n [3 4]]#\n") == (((1, 2), (3, 4)), None)


@pytest.mark.parametrize("text, style, reason", [
    ("", "seal", "empty output"),
    ("   #[[1]]", "seal", "empty output"),
    ("[[1 2]\n [3]]", "seal", "row 1 has 1 cells, expected 2"),
    ("[[1 a]]", "seal", "row 0: 'a' is not a digit 0-9"),
    ("[[1 12]]", "seal", "row 0: '12' is not a digit 0-9"),
    ("[[1 2] [3 4]", "seal", "not a bracketed grid"),
    ("hello", "seal", "not a bracketed grid"),
    ("[[1] x [2]]", "seal", "not a bracketed grid"),
    ("[[]]", "seal", "row 0 is empty"),
    ("[" + "\n ".join(["[1]"] * 31) + "]", "seal", "31 rows, at most 30"),
    ("[[" + " ".join(["1"] * 31) + "]]", "seal", "31 columns, at most 30"),
    ("12\n3", "compact", "row 1 has 1 cells, expected 2"),
    ("12\n\n34", "compact", "row 1 is empty"),
    ("1x", "compact", "row 0: 'x' is not a digit 0-9"),
    ("\n".join(["1"] * 31), "compact", "31 rows, at most 30"),
    ("", "compact", "empty output"),
])
def test_parse_reasons(text, style, reason):
    grid, why = parse_grid(text, style)
    assert grid is None and why is not None and reason in why, f"{text!r}: got {why!r}, expected {reason!r}"


def test_parse_never_raises_on_garbage():
    for text in ["[[", "]]", "[[[1]]]", "[[1 2]]]]", "#", "\x00", "[[-1]]", "[[1.5]]", 3]:
        grid, why = parse_grid(text)
        assert (grid is None) == (why is not None)
