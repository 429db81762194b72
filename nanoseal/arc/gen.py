"""
Procedural ARC-like task families: unlimited seeded instances of simple rules, as `Task`s.

Each `Family` has a parameter sampler (per task: which colours, which direction...), an input sampler and
a `rule(grid, params) -> grid`; an instance is k demonstrations + n_test test pairs whose outputs are the
rule applied to the inputs. Inputs are 3x3 to 10x10 by default. Instances are deterministic per
(family, seed): every random choice comes from `random.Random(f"{family}/{seed}")`, never the global RNG.
Within an instance the inputs are distinct and at least one pair changes its grid.

Families are split for training vs held-out evaluation: EVAL_FAMILIES are each the unseen sibling of a
training family (rotate_180 vs rotate_cw, gravity_left vs gravity_right/down/up, mirror_down vs
mirror_right, scale_up3 vs scale_up2, and_halves vs xor_halves, keep_colour vs recolour, move_to_corner
vs shift_right/down, count_colours vs count_cells, bbox_outline vs draw_border, flip_ud vs flip_lr), so
evaluation measures transfer to new rules built from familiar parts.

    python -m nanoseal.arc.gen                  # lists the families
    nanoseal arc gen gravity_down --seed 3      # shows one instance
"""

import functools
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nanoseal.arc.augment import flip_lr, flip_ud, rot180, rot270, tile, transpose, upscale
from nanoseal.arc.data import Grid, Task
from nanoseal.common import NanosealError


class _Retry(Exception):
    """Raised by an input sampler that drew an unusable configuration; the instance builder redraws."""


@dataclass(frozen=True)
class Family:
    """A task family: per-task params, an input sampler and the rule mapping input to output."""

    name: str
    description: str
    params: Callable[[random.Random], dict]
    make_input: Callable[[random.Random, dict, int, int], Grid]  # (rng, params, min side, max side)
    rule: Callable[[Grid, dict], Grid]
    min_side: int = 1  # the family's own bounds on input sides, intersected with the caller's
    max_side: int = 30


# ---------------------------------------------------------------------------------------------------------
# helpers


def _freeze(rows) -> Grid:
    return tuple(tuple(r) for r in rows)


def _blank(h: int, w: int) -> list[list[int]]:
    return [[0] * w for _ in range(h)]


def _colours(rng: random.Random, k: int, exclude: tuple[int, ...] = ()) -> list[int]:
    return rng.sample([c for c in range(1, 10) if c not in exclude], k)


def _shape(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    return rng.randint(lo, hi), rng.randint(lo, hi)


def _noise(rng: random.Random, h: int, w: int, colours: list[int], density: float) -> Grid:
    """Each cell a random colour from `colours` with probability density, else 0; never all zero."""
    g = _freeze([[rng.choice(colours) if rng.random() < density else 0 for _ in range(w)] for _ in range(h)])
    if not any(any(row) for row in g):
        raise _Retry("empty grid")
    return g


def _random_noise(rng: random.Random, p: dict, lo: int, hi: int, density: float = 0.5) -> Grid:
    h, w = _shape(rng, lo, hi)
    return _noise(rng, h, w, p.get("palette") or _colours(rng, 3), density)


def _sprite(rng: random.Random, size: int) -> list[tuple[int, int]]:
    """A random 4-connected set of `size` cells, normalised to start at (0, 0)."""
    cells = {(0, 0)}
    while len(cells) < size:
        y, x = rng.choice(sorted(cells))
        cells.add(rng.choice(((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1))))
    y0, x0 = min(y for y, _ in cells), min(x for _, x in cells)
    return sorted((y - y0, x - x0) for y, x in cells)


def _place(rng: random.Random, grid: list[list[int]], cells, colour: int, margin: int = 0,
           apart: bool = True) -> tuple[int, int]:
    """Paint a sprite at a random free spot (not 4-touching other cells if apart); returns its offset."""
    h, w = len(grid), len(grid[0])
    sh, sw = max(y for y, _ in cells) + 1, max(x for _, x in cells) + 1
    if sh + 2 * margin > h or sw + 2 * margin > w:
        raise _Retry("sprite does not fit")
    for _ in range(50):
        oy, ox = rng.randint(margin, h - sh - margin), rng.randint(margin, w - sw - margin)
        spots = [(oy + y, ox + x) for y, x in cells]
        near = spots + [(y + dy, x + dx) for y, x in spots for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        if all(not (0 <= y < h and 0 <= x < w) or grid[y][x] == 0 for y, x in (near if apart else spots)):
            for y, x in spots:
                grid[y][x] = colour
            return oy, ox
    raise _Retry("no free spot")


def components(g: Grid) -> list[tuple[int, list[tuple[int, int]]]]:
    """4-connected same-colour components of non-zero cells: (colour, cells), in reading order."""
    h, w = len(g), len(g[0])
    seen, out = set(), []
    for r in range(h):
        for c in range(w):
            if g[r][c] == 0 or (r, c) in seen:
                continue
            colour, stack, cells = g[r][c], [(r, c)], []
            seen.add((r, c))
            while stack:
                y, x = stack.pop()
                cells.append((y, x))
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < h and 0 <= nx < w and (ny, nx) not in seen and g[ny][nx] == colour:
                        seen.add((ny, nx))
                        stack.append((ny, nx))
            out.append((colour, sorted(cells)))
    return out


def _bbox(g: Grid) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) inclusive bounds of the non-zero cells."""
    rows = [r for r, row in enumerate(g) if any(row)]
    cols = [c for c in range(len(g[0])) if any(row[c] for row in g)]
    return rows[0], rows[-1], cols[0], cols[-1]


def _map_cells(g: Grid, fn: Callable[[int], int]) -> Grid:
    return tuple(tuple(fn(c) for c in row) for row in g)


# ---------------------------------------------------------------------------------------------------------
# rules


def _beside(a: Grid, b: Grid) -> Grid:
    return tuple(x + y for x, y in zip(a, b))


def _colour_swap(g: Grid, p: dict) -> Grid:
    a, b = p["palette"][:2]
    return _map_cells(g, lambda c: b if c == a else a if c == b else c)


def _gravity_row(row: tuple[int, ...], towards_end: bool) -> tuple[int, ...]:
    cells = [c for c in row if c]
    pad = (0,) * (len(row) - len(cells))
    return pad + tuple(cells) if towards_end else tuple(cells) + pad


def gravity(g: Grid, direction: str) -> Grid:
    """Non-zero cells slide to one edge (down/up/left/right), keeping their order."""
    if direction in ("left", "right"):
        return tuple(_gravity_row(row, direction == "right") for row in g)
    return transpose(gravity(transpose(g), "right" if direction == "down" else "left"))


def _fill_enclosed(g: Grid, p: dict) -> Grid:
    h, w = len(g), len(g[0])
    outside = set()
    stack = [(r, c) for r in range(h) for c in range(w) if (r in (0, h - 1) or c in (0, w - 1)) and g[r][c] == 0]
    outside.update(stack)
    while stack:
        y, x = stack.pop()
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < h and 0 <= nx < w and g[ny][nx] == 0 and (ny, nx) not in outside:
                outside.add((ny, nx))
                stack.append((ny, nx))
    return tuple(
        tuple(p["fill"] if g[r][c] == 0 and (r, c) not in outside else g[r][c] for c in range(w)) for r in range(h)
    )


def _draw_border(g: Grid, p: dict) -> Grid:
    h, w = len(g), len(g[0])
    return tuple(
        tuple(p["colour"] if r in (0, h - 1) or c in (0, w - 1) else g[r][c] for c in range(w)) for r in range(h)
    )


def _hollow_out(g: Grid, p: dict) -> Grid:
    h, w = len(g), len(g[0])

    def interior(r, c):
        return 0 < r < h - 1 and 0 < c < w - 1 and all(
            g[y][x] for y, x in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1))
        )
    return tuple(tuple(0 if g[r][c] and interior(r, c) else g[r][c] for c in range(w)) for r in range(h))


def _crop(g: Grid, p: dict) -> Grid:
    top, bottom, left, right = _bbox(g)
    return tuple(row[left:right + 1] for row in g[top:bottom + 1])


def _symmetrize_lr(g: Grid, p: dict) -> Grid:
    w = len(g[0])
    return tuple(tuple(row[c] if c < (w + 1) // 2 else row[w - 1 - c] for c in range(w)) for row in g)


def _shift(g: Grid, dy: int, dx: int) -> Grid:
    """Move content by (dy, dx) >= 0, filling with 0 and dropping what leaves the grid."""
    h, w = len(g), len(g[0])
    return tuple(
        tuple(g[r - dy][c - dx] if r >= dy and c >= dx else 0 for c in range(w)) for r in range(h)
    )


def _move_to_corner(g: Grid, p: dict) -> Grid:
    top, bottom, left, right = _bbox(g)
    h, w = len(g), len(g[0])
    return tuple(
        tuple(g[r + top][c + left] if r + top < h and c + left < w else 0 for c in range(w)) for r in range(h)
    )


def _count_cells(g: Grid, p: dict) -> Grid:
    counts = Counter(c for row in g for c in row if c)
    colour = min(counts, key=lambda c: (-counts[c], c))
    return ((colour,) * sum(counts.values()),)


def _ranked_colours(g: Grid) -> list[int]:
    counts = Counter(c for row in g for c in row if c)
    return sorted(counts, key=lambda c: (-counts[c], c))


def _recolour_largest(g: Grid, p: dict) -> Grid:
    comps = components(g)
    biggest = max(len(cells) for _, cells in comps)
    cells = {cell for _, cs in comps if len(cs) == biggest for cell in cs}
    return tuple(tuple(p["target"] if (r, c) in cells else v for c, v in enumerate(row)) for r, row in enumerate(g))


def _remove_singletons(g: Grid, p: dict) -> Grid:
    lonely = {cells[0] for _, cells in components(g) if len(cells) == 1}
    return tuple(tuple(0 if (r, c) in lonely else v for c, v in enumerate(row)) for r, row in enumerate(g))


def _extend_down(g: Grid, p: dict) -> Grid:
    out = [list(row) for row in g]
    for c in range(len(g[0])):
        current = 0
        for r in range(len(g)):
            current = g[r][c] or current
            out[r][c] = g[r][c] or current
    return _freeze(out)


def _row_fill(g: Grid, p: dict) -> Grid:
    return tuple((next((c for c in row if c), 0),) * len(row) for row in g)


def _halves(g: Grid, p: dict, both: bool) -> Grid:
    """Compare the halves left and right of the divider column: cells set in both (and) / in one (xor)."""
    w = (len(g[0]) - 1) // 2
    out = []
    for row in g:
        left, right = row[:w], row[w + 1:]
        out.append(tuple(
            p["colour"] if ((a != 0 and b != 0) if both else ((a != 0) != (b != 0))) else 0
            for a, b in zip(left, right)
        ))
    return tuple(out)


def _bbox_outline(g: Grid, p: dict) -> Grid:
    top, bottom, left, right = _bbox(g)
    top, bottom, left, right = top - 1, bottom + 1, left - 1, right + 1
    out = [list(row) for row in g]
    for r in range(max(top, 0), min(bottom, len(g) - 1) + 1):
        for c in range(max(left, 0), min(right, len(g[0]) - 1) + 1):
            if (r in (top, bottom) or c in (left, right)) and out[r][c] == 0:
                out[r][c] = p["colour"]
    return _freeze(out)


# ---------------------------------------------------------------------------------------------------------
# input samplers


def _no_params(rng: random.Random) -> dict:
    return {}


def _sparse(rng, p, lo, hi):
    return _random_noise(rng, p, lo, hi, density=0.3)


def _enclosures(rng, p, lo, hi):
    h, w = _shape(rng, max(lo, 5), hi)
    g = _blank(h, w)
    for _ in range(rng.randint(1, 2)):
        bh, bw = rng.randint(3, min(5, h)), rng.randint(3, min(5, w))
        box = [(y, x) for y in range(bh) for x in range(bw) if y in (0, bh - 1) or x in (0, bw - 1)]
        try:
            _place(rng, g, box, p["wall"])
        except _Retry:
            break
    if rng.random() < 0.5:  # a stray wall cell, so that not every wall encloses something
        y, x = rng.randrange(h), rng.randrange(w)
        g[y][x] = g[y][x] or p["wall"]
    if not any(any(row) for row in g):
        raise _Retry("no enclosure")
    return _freeze(g)


def _solid_rects(rng, p, lo, hi):
    h, w = _shape(rng, max(lo, 3), hi)
    g = _blank(h, w)
    for colour in _colours(rng, rng.randint(1, 3)):
        bh, bw = rng.randint(3, min(5, h)), rng.randint(3, min(5, w))
        try:
            _place(rng, g, [(y, x) for y in range(bh) for x in range(bw)], colour)
        except _Retry:
            break
    if not any(any(row) for row in g):
        raise _Retry("no rectangle")
    return _freeze(g)


def _one_sprite(margin: int):
    def make(rng, p, lo, hi):
        h, w = _shape(rng, lo, hi)
        g = _blank(h, w)
        cells = _sprite(rng, rng.randint(2, max(2, min(h, w) + 1)))
        colours = _colours(rng, 2)
        _place(rng, g, cells, colours[0], margin=margin)
        for y in range(h):  # a second colour sprinkled over the sprite makes crops less trivial
            for x in range(w):
                if g[y][x] and rng.random() < 0.3:
                    g[y][x] = colours[1]
        return _freeze(g)
    return make


def _upscaled(rng, p, lo, hi):
    top = max(1, hi // 2)
    h, w = _shape(rng, min(top, max(1, (lo + 1) // 2)), top)
    return upscale(_noise(rng, h, w, _colours(rng, 3), 0.5), 2)


def _half_erased(rng, p, lo, hi):
    g = _symmetrize_lr(_random_noise(rng, p, lo, hi), p)
    w = len(g[0])
    return tuple(tuple(0 if c >= (w + 1) // 2 and rng.random() < 0.5 else v for c, v in enumerate(row)) for row in g)


def _clear_edge(rows: int, cols: int):
    """Noise whose last `rows` rows / `cols` columns are empty, so a shift keeps everything."""
    def make(rng, p, lo, hi):
        g = _random_noise(rng, p, lo, hi, density=0.35)
        k_rows, k_cols = p.get("dy", rows), p.get("dx", cols)
        h, w = len(g), len(g[0])
        g = tuple(tuple(0 if r >= h - k_rows or c >= w - k_cols else v for c, v in enumerate(row))
                  for r, row in enumerate(g))
        if not any(any(row) for row in g):
            raise _Retry("empty after clearing the edge")
        return g
    return make


def _scattered(rng, p, lo, hi):
    h, w = _shape(rng, lo, hi)
    n = rng.randint(1, min(9, h * w))
    g = _blank(h, w)
    colour = rng.randint(1, 9)
    for y, x in rng.sample([(y, x) for y in range(h) for x in range(w)], n):
        g[y][x] = colour
    return _freeze(g)


def _distinct_counts(max_colours: int):
    """Noise in 1..max_colours colours whose counts all differ (so the ranking is unambiguous)."""
    def make(rng, p, lo, hi):
        h, w = _shape(rng, lo, hi)
        g = _noise(rng, h, w, _colours(rng, rng.randint(1, max_colours)), rng.uniform(0.3, 0.8))
        counts = Counter(c for row in g for c in row if c)
        if len(set(counts.values())) != len(counts):
            raise _Retry("tied colour counts")
        return g
    return make


def _objects_of_sizes(rng, p, lo, hi):
    h, w = _shape(rng, max(lo, 5), hi)
    g = _blank(h, w)
    sizes = rng.sample(range(1, 7), rng.randint(2, 4))
    for s in sizes:
        _place(rng, g, _sprite(rng, s), p["colour"])
    return _freeze(g)


def _blobs_and_dots(rng, p, lo, hi):
    h, w = _shape(rng, max(lo, 4), hi)
    g = _blank(h, w)
    colours = _colours(rng, 2)
    for _ in range(rng.randint(1, 2)):
        _place(rng, g, _sprite(rng, rng.randint(2, 5)), rng.choice(colours))
    for _ in range(rng.randint(1, 4)):
        try:
            _place(rng, g, [(0, 0)], rng.choice(colours))
        except _Retry:
            break
    return _freeze(g)


def _top_dots(rng, p, lo, hi):
    h, w = _shape(rng, lo, hi)
    g = _blank(h, w)
    for _ in range(rng.randint(1, w)):
        g[rng.randrange(max(1, h // 2))][rng.randrange(w)] = rng.randint(1, 9)
    return _freeze(g)


def _row_dots(rng, p, lo, hi):
    h, w = _shape(rng, lo, hi)
    g = _blank(h, w)
    for _ in range(rng.randint(1, h)):
        g[rng.randrange(h)][rng.randrange(w)] = rng.randint(1, 9)
    return _freeze(g)


def _two_halves(rng, p, lo, hi):
    h, half = rng.randint(lo, hi), rng.randint(max(1, (lo - 1) // 2), max(1, (hi - 1) // 2))
    left = _noise(rng, h, half, [p["left"]], 0.5)
    right = _noise(rng, h, half, [p["right"]], 0.5)
    return tuple(a + (p["divider"],) + b for a, b in zip(left, right))


def _swap_params(rng):
    return {"palette": _colours(rng, 3)}


def _recolour_params(rng):
    a, b, target = _colours(rng, 3)
    return {"palette": [a, b], "target": target}


def _background_params(rng):
    a, b, colour = _colours(rng, 3)
    return {"palette": [a, b], "colour": colour}


def _one_colour_params(rng):
    return {"colour": rng.randint(1, 9)}


def _two_colour_params(*names: str):
    def params(rng):
        return dict(zip(names, _colours(rng, len(names))))
    return params


def _step_params(rng):
    return {"dy": rng.randint(1, 2)}


def _halves_params(rng):
    left, right, divider, colour = _colours(rng, 4)
    return {"left": left, "right": right, "divider": divider, "colour": colour}


# ---------------------------------------------------------------------------------------------------------
# the families


def _fam(name, description, make_input, rule, params=_no_params, min_side=1, max_side=30) -> Family:
    return Family(name, description, params, make_input, rule, min_side, max_side)


FAMILIES: dict[str, Family] = {f.name: f for f in [
    _fam("rotate_cw", "rotate 90 degrees clockwise", _random_noise, lambda g, p: rot270(g)),
    _fam("rotate_180", "rotate 180 degrees", _random_noise, lambda g, p: rot180(g)),
    _fam("flip_lr", "mirror left-right", _random_noise, lambda g, p: flip_lr(g)),
    _fam("flip_ud", "mirror top-bottom", _random_noise, lambda g, p: flip_ud(g)),
    _fam("transpose", "swap rows and columns", _random_noise, lambda g, p: transpose(g)),
    _fam("colour_swap", "swap two colours", _random_noise, _colour_swap, params=_swap_params),
    _fam("recolour", "one colour becomes another (new) colour", _random_noise,
         lambda g, p: _map_cells(g, lambda c: p["target"] if c == p["palette"][0] else c), params=_recolour_params),
    _fam("keep_colour", "keep one colour, clear the others", _random_noise,
         lambda g, p: _map_cells(g, lambda c: c if c == p["palette"][0] else 0), params=_swap_params),
    _fam("fill_background", "the background becomes a colour", _random_noise,
         lambda g, p: _map_cells(g, lambda c: c or p["colour"]), params=_background_params),
    _fam("gravity_down", "cells fall down", _sparse, lambda g, p: gravity(g, "down")),
    _fam("gravity_up", "cells rise up", _sparse, lambda g, p: gravity(g, "up")),
    _fam("gravity_left", "cells slide left", _sparse, lambda g, p: gravity(g, "left")),
    _fam("gravity_right", "cells slide right", _sparse, lambda g, p: gravity(g, "right")),
    _fam("fill_enclosed", "fill the inside of closed outlines", _enclosures, _fill_enclosed,
         params=_two_colour_params("wall", "fill"), min_side=5),
    _fam("draw_border", "paint the grid's outer ring", _sparse, _draw_border,
         params=_one_colour_params),
    _fam("hollow_out", "clear the inside of solid shapes", _solid_rects, _hollow_out, min_side=3),
    _fam("crop_object", "crop to the object's bounding box", _one_sprite(0), _crop),
    _fam("scale_up2", "each cell becomes 2x2", _random_noise, lambda g, p: upscale(g, 2), max_side=15),
    _fam("scale_up3", "each cell becomes 3x3", _random_noise, lambda g, p: upscale(g, 3), max_side=10),
    _fam("scale_down2", "halve the resolution", _upscaled, lambda g, p: tuple(r[::2] for r in g[::2]),
         min_side=2),
    _fam("tile_2x2", "tile the grid 2x2", _random_noise, lambda g, p: tile(g, 2, 2), max_side=15),
    _fam("tile_row3", "repeat the grid 3 times side by side", _random_noise, lambda g, p: tile(g, 1, 3),
         max_side=10),
    _fam("tile_mirror", "2x2 of the grid and its mirror images", _random_noise,
         lambda g, p: _beside(g, flip_lr(g)) + _beside(flip_ud(g), rot180(g)), max_side=15),
    _fam("mirror_right", "append the left-right mirror image", _random_noise,
         lambda g, p: _beside(g, flip_lr(g)), max_side=15),
    _fam("mirror_down", "append the top-bottom mirror image", _random_noise, lambda g, p: g + flip_ud(g),
         max_side=15),
    _fam("symmetrize_lr", "complete the left-right symmetry from the left half", _half_erased, _symmetrize_lr,
         min_side=2),
    _fam("shift_right", "move everything one cell right", _clear_edge(0, 1), lambda g, p: _shift(g, 0, 1),
         min_side=2),
    _fam("shift_down", "move everything down by a fixed step", _clear_edge(1, 0),
         lambda g, p: _shift(g, p["dy"], 0), params=_step_params, min_side=3),
    _fam("move_to_corner", "move the content to the top-left corner", _one_sprite(1), _move_to_corner,
         min_side=3),
    _fam("count_cells", "a 1xN row, N = number of coloured cells", _scattered, _count_cells),
    _fam("count_colours", "a column of the colours, most frequent first", _distinct_counts(4),
         lambda g, p: tuple((c,) for c in _ranked_colours(g))),
    _fam("majority_colour", "a 1x1 grid of the most frequent colour", _distinct_counts(3),
         lambda g, p: ((_ranked_colours(g)[0],),)),
    _fam("recolour_largest", "the largest object changes colour", _objects_of_sizes, _recolour_largest,
         params=_two_colour_params("colour", "target"), min_side=5),
    _fam("remove_singletons", "delete isolated cells", _blobs_and_dots, _remove_singletons, min_side=4),
    _fam("extend_down", "each coloured cell drips down to the bottom", _top_dots, _extend_down, min_side=2),
    _fam("row_fill", "rows with a coloured cell fill with its colour", _row_dots, _row_fill),
    _fam("xor_halves", "cells set in exactly one of the two halves", _two_halves,
         lambda g, p: _halves(g, p, both=False), params=_halves_params, min_side=3),
    _fam("and_halves", "cells set in both halves", _two_halves, lambda g, p: _halves(g, p, both=True),
         params=_halves_params, min_side=3),
    _fam("bbox_outline", "draw a box around the object", _one_sprite(1), _bbox_outline,
         params=_one_colour_params, min_side=4),
]}

EVAL_FAMILIES = (
    "rotate_180", "flip_ud", "gravity_left", "mirror_down", "scale_up3",
    "and_halves", "keep_colour", "move_to_corner", "count_colours", "bbox_outline",
)
TRAIN_FAMILIES = tuple(name for name in FAMILIES if name not in EVAL_FAMILIES)


# ---------------------------------------------------------------------------------------------------------
# instances


def _valid(g: Grid) -> bool:
    return 0 < len(g) <= 30 and 0 < len(g[0]) <= 30 and all(len(r) == len(g[0]) for r in g)


def make_instance(
    family: str, seed: int, k: int = 3, n_test: int = 1, min_side: int = 3, max_side: int = 10
) -> tuple[Task, dict]:
    """One task of a family (k demonstrations + n_test tests) and the params its rule used."""
    if family not in FAMILIES:
        raise NanosealError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    lo, hi = max(min_side, fam.min_side), min(max_side, fam.max_side)
    if lo > hi:
        raise NanosealError(f"family {family} needs input sides in {fam.min_side}..{fam.max_side}, "
                            f"asked for {min_side}..{max_side}")
    rng = random.Random(f"{family}/{seed}")
    for _ in range(100):
        params = fam.params(rng)
        pairs, inputs = [], set()
        for _ in range(2000):
            if len(pairs) == k + n_test:
                break
            try:
                inp = fam.make_input(rng, params, lo, hi)
            except _Retry:
                continue
            if inp in inputs:
                continue
            out = fam.rule(inp, params)
            if _valid(inp) and _valid(out):
                inputs.add(inp)
                pairs.append((inp, out))
        if len(pairs) == k + n_test and any(i != o for i, o in pairs):
            task_id = instance_id(family, seed, min_side, max_side)
            return Task(task_id, tuple(pairs[:k]), tuple(pairs[k:])), params
    raise RuntimeError(f"family {family} seed {seed}: could not draw {k + n_test} distinct valid pairs")


def instance_id(family: str, seed: int, min_side: int = 3, max_side: int = 10) -> str:
    """The id of a procedural instance: "<family>-<seed>", plus "-s<lo>-<hi>" for non-default grid sides."""
    sides = "" if (min_side, max_side) == (3, 10) else f"-s{min_side}-{max_side}"
    return f"{family}-{seed}{sides}"


def parse_instance_id(task_id: str) -> dict | None:
    """make_task's keyword arguments for an instance id (see instance_id), or None if it is not one."""
    m = re.fullmatch(r"(\w+)-(\d+)(?:-s(\d+)-(\d+))?", task_id)
    if not m or m.group(1) not in FAMILIES:
        return None
    sides = {"min_side": int(m.group(3)), "max_side": int(m.group(4))} if m.group(3) else {}
    return {"family": m.group(1), "seed": int(m.group(2)), **sides}


def make_task(family: str, seed: int, k: int = 3, n_test: int = 1, min_side: int = 3, max_side: int = 10) -> Task:
    """One seeded task instance of a family (id "<family>-<seed>")."""
    return make_instance(family, seed, k, n_test, min_side, max_side)[0]


def make_tasks(families: tuple[str, ...] | list[str], n_per_family: int, seed: int = 0, **kwargs) -> list[Task]:
    """n_per_family instances of each family, seeds seed..seed+n-1."""
    return [make_task(f, seed + i, **kwargs) for f in families for i in range(n_per_family)]



def feasible_families(families: Sequence[str], min_side: int, max_side: int) -> list[str]:
    """The families that can draw inputs with sides in min_side..max_side (an error if none can)."""
    ok = [f for f in families if max(min_side, FAMILIES[f].min_side) <= min(max_side, FAMILIES[f].max_side)
          and _draws(f, min_side, max_side)]
    if not ok:
        raise NanosealError(f"no task family draws grids with sides {min_side}..{max_side}")
    return ok


@functools.lru_cache(maxsize=None)
def _draws(family: str, min_side: int, max_side: int) -> bool:
    """Whether a family can draw a task with these sides (a few tiny grids have too few distinct inputs)."""
    try:
        make_task(family, 0, min_side=min_side, max_side=max_side)
        return True
    except RuntimeError:
        return False

if __name__ == "__main__":
    for name, fam in FAMILIES.items():
        print(f"{name:18s} {'eval ' if name in EVAL_FAMILIES else 'train'}  {fam.description}")
