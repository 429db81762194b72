"""
Grids as text, both ways: `format_grid(grid, style)` and `parse_grid(text, style)`.

Two styles:
  seal     SEAL's / marc's representation: numpy's `str()` of the grid (marc's PythonListGridRepresenter
           prints `str(np.array)`), e.g. "[[0 1 2]\\n [3 4 5]]". In a prompt an example is written
           "<input> -> " + "<output>#" (marc's TextExampleRepresenter with io_sep=" -> ", no headers,
           output_footer="#"), and the system text says "The input-output grids are provided as python
           arrays:".
  compact  one digit per cell, one line per row, e.g. "012\\n345": about half the tokens, for small models.
           An example is written "<input>\\n->\\n" + "<output>#".

`parse_grid` never raises on model output: it returns (grid, None) or (None, reason) with reasons such as
"empty output", "row 2 has 3 cells, expected 4", "row 0: 'a' is not a digit 0-9", "31 rows, at most 30".
The answer footer "#" and anything after it are ignored, so a sampled continuation can be parsed directly.

    python -c "from nanoseal.arc.grids import format_grid; print(format_grid(((0, 1), (2, 3))))"
"""

import re
from dataclasses import dataclass

from nanoseal.arc.data import MAX_SIDE, Grid

STYLES = ("seal", "compact")


@dataclass(frozen=True)
class GridFormat:
    """How one style writes an example: query = grid + io_sep; answer = grid + output_footer."""

    style: str
    io_sep: str
    output_footer: str
    description: str  # appended to the system prompt, introducing the grids


FORMATS = {
    "seal": GridFormat("seal", " -> ", "#", "The input-output grids are provided as python arrays:\n"),
    "compact": GridFormat("compact", "\n->\n", "#", "The input-output grids are provided as digit rows:\n"),
}


def get_format(style: str) -> GridFormat:
    """The GridFormat of a style name (seal or compact)."""
    assert style in FORMATS, f"grid style must be one of {STYLES}, got {style!r}"
    return FORMATS[style]


def format_grid(grid: Grid, style: str = "seal") -> str:
    """A grid as text in the given style (seal: numpy str of the array; compact: digit rows)."""
    if style == "compact":
        return "\n".join("".join(map(str, row)) for row in grid)
    assert style == "seal", f"grid style must be one of {STYLES}, got {style!r}"
    return "[" + "\n ".join("[" + " ".join(map(str, row)) + "]" for row in grid) + "]"


def format_example(inp: Grid, out: Grid | None, style: str = "seal") -> tuple[str, str]:
    """(query, answer) text of one example: query ends with the io separator, answer with the footer."""
    fmt = get_format(style)
    answer = "" if out is None else format_grid(out, style) + fmt.output_footer
    return format_grid(inp, style) + fmt.io_sep, answer


_ROW = re.compile(r"\[([^\[\]]*)\]")


def _check_rows(rows: list[list[int]]) -> tuple[Grid | None, str | None]:
    if len(rows) > MAX_SIDE:
        return None, f"{len(rows)} rows, at most {MAX_SIDE}"
    width = len(rows[0])
    if width > MAX_SIDE:
        return None, f"{width} columns, at most {MAX_SIDE}"
    for r, row in enumerate(rows):
        if len(row) != width:
            return None, f"row {r} has {len(row)} cells, expected {width}"
    return tuple(tuple(row) for row in rows), None


def _digits(tokens, r: int) -> tuple[list[int] | None, str | None]:
    row = []
    for tok in tokens:
        if len(tok) != 1 or tok not in "0123456789":
            return None, f"row {r}: {tok!r} is not a digit 0-9"
        row.append(ord(tok) - 48)
    return row, None


def _parse_seal(body: str) -> tuple[Grid | None, str | None]:
    if not (body.startswith("[") and body.endswith("]")):
        return None, "not a bracketed grid like [[0 1]\\n [2 3]]"
    inner = body[1:-1]
    raw_rows = _ROW.findall(inner)
    if not raw_rows or _ROW.sub("", inner).strip(" ,\n\t\r"):
        return None, "not a bracketed grid like [[0 1]\\n [2 3]]"
    rows = []
    for r, raw in enumerate(raw_rows):
        tokens = [t for t in re.split(r"[\s,]+", raw) if t]
        if not tokens:
            return None, f"row {r} is empty"
        row, reason = _digits(tokens, r)
        if reason:
            return None, reason
        rows.append(row)
    return _check_rows(rows)


def _parse_compact(body: str) -> tuple[Grid | None, str | None]:
    rows = []
    for r, line in enumerate(body.split("\n")):
        line = line.strip()
        if not line:
            return None, f"row {r} is empty"
        row, reason = _digits(line, r)
        if reason:
            return None, reason
        rows.append(row)
    return _check_rows(rows)


def parse_grid(text: str, style: str = "seal") -> tuple[Grid | None, str | None]:
    """Parse model output into a grid: (grid, None), or (None, reason) for malformed text - never raises."""
    fmt = get_format(style)
    if not isinstance(text, str):
        return None, f"expected text, got {type(text).__name__}"
    body = text.split(fmt.output_footer, 1)[0].strip()
    if not body:
        return None, "empty output"
    return _parse_seal(body) if style == "seal" else _parse_compact(body)
