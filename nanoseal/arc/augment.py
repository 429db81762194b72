"""
Invertible grid transforms and SEAL's augmentation groups (from marc's `get_augmenters`):

  basic   rot90, rot270, rot180, flip_ud, flip_lr, the 4 reflect-concatenations (grid + its mirror below,
          above, right, left), a cyclic translation (shift drawn per task from the seed), transpose  (11)
  size    upscale2 (2x resolution), stretch_h2 (2x height), stretch_w2 (2x width)                  (3)
  chain   rot90 / rot270 / rot180 / flip_ud / flip_lr / transpose, each followed by upscale2         (6)
  repeat  tile_v2 (2x vertical), tile_h2 (2x horizontal), tile_hv2 (both)                           (3)

plus a colour permutation that keeps 0 (the background) fixed and demonstration-order shuffles.
Rotations follow numpy: rot90 turns counter-clockwise like np.rot90(g, 1).

A `Transform` has `name`, `category` (its geometric part; colour permutations do not change it, so votes
are grouped by geometry), `apply(grid)` and `inverse(grid)`. Every transform here is invertible on its own
outputs; `inverse` returns None for a grid that no input maps to (an odd-sized grid under upscale2, tiles
that differ under tile_h2, ...), which is how a malformed augmented prediction drops out of voting.
A transform is applied to inputs and outputs together (`apply_to_task`); a task with any grid over 30x30
after the transform is dropped (None).

Grids are tuples of tuples, and the transforms are pure-Python tuple operations: for ARC's small grids
that is faster than a numpy round trip and keeps results hashable.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from nanoseal.arc.data import MAX_SIDE, Grid, Task

# ---------------------------------------------------------------------------------------------------------
# grid primitives (tuple of tuples in, tuple of tuples out)


def rot90(g: Grid) -> Grid:
    """Rotate counter-clockwise (np.rot90(g, 1))."""
    return tuple(zip(*g))[::-1]


def rot180(g: Grid) -> Grid:
    """Rotate by 180 degrees."""
    return tuple(row[::-1] for row in g[::-1])


def rot270(g: Grid) -> Grid:
    """Rotate clockwise (np.rot90(g, 3))."""
    return tuple(zip(*g[::-1]))


def flip_ud(g: Grid) -> Grid:
    """Mirror top-bottom (np.flipud)."""
    return g[::-1]


def flip_lr(g: Grid) -> Grid:
    """Mirror left-right (np.fliplr)."""
    return tuple(row[::-1] for row in g)


def transpose(g: Grid) -> Grid:
    """Swap rows and columns."""
    return tuple(zip(*g))


def _roll(seq: tuple, shift: int) -> tuple:
    k = shift % len(seq)
    return seq[len(seq) - k:] + seq[:len(seq) - k] if k else seq


def roll(g: Grid, dy: int, dx: int) -> Grid:
    """Cyclic shift by dy rows down and dx columns right (np.roll over both axes)."""
    return _roll(tuple(_roll(row, dx) for row in g), dy)


def upscale(g: Grid, f: int) -> Grid:
    """Each cell becomes an f x f block."""
    return tuple(tuple(c for c in row for _ in range(f)) for row in g for _ in range(f))


def stretch_h(g: Grid, f: int) -> Grid:
    """Each row repeated f times."""
    return tuple(row for row in g for _ in range(f))


def stretch_w(g: Grid, f: int) -> Grid:
    """Each column repeated f times."""
    return tuple(tuple(c for c in row for _ in range(f)) for row in g)


def tile(g: Grid, ny: int, nx: int) -> Grid:
    """The grid repeated ny times vertically and nx times horizontally."""
    return tuple(row * nx for row in g) * ny


def recolour(g: Grid, mapping: tuple[int, ...]) -> Grid:
    """Every cell c replaced by mapping[c]."""
    return tuple(tuple(mapping[c] for c in row) for row in g)


def grid_ok(g: Grid) -> bool:
    """A non-empty rectangular grid within 30x30."""
    return 0 < len(g) <= MAX_SIDE and 0 < len(g[0]) <= MAX_SIDE and all(len(r) == len(g[0]) for r in g)


# ---------------------------------------------------------------------------------------------------------
# transforms


@dataclass(frozen=True)
class Transform:
    """A named grid transform with its inverse; equality and hashing go by name."""

    name: str
    forward: Callable[[Grid], Grid] = field(compare=False, repr=False)
    backward: Callable[[Grid], Grid | None] = field(compare=False, repr=False)
    category: str = ""

    def apply(self, grid: Grid) -> Grid:
        """The transformed grid."""
        return self.forward(grid)

    def inverse(self, grid: Grid) -> Grid | None:
        """The grid this transform maps onto `grid`, or None if there is none."""
        return self.backward(grid)


def _checked(down: Callable[[Grid], Grid], up: Callable[[Grid], Grid]) -> Callable[[Grid], Grid | None]:
    """An inverse that undoes `up` with `down` and accepts the result only if `up` reproduces the grid."""
    def inverse(g: Grid) -> Grid | None:
        if not g or not g[0]:
            return None
        candidate = down(g)
        if not candidate or not candidate[0] or up(candidate) != g:
            return None
        return candidate
    return inverse


def _make(name: str, forward, backward, category: str | None = None) -> Transform:
    return Transform(name, forward, backward, name if category is None else category)


IDENTITY = _make("identity", lambda g: g, lambda g: g)
ROT90 = _make("rot90", rot90, rot270)
ROT180 = _make("rot180", rot180, rot180)
ROT270 = _make("rot270", rot270, rot90)
FLIP_UD = _make("flip_ud", flip_ud, flip_ud)
FLIP_LR = _make("flip_lr", flip_lr, flip_lr)
TRANSPOSE = _make("transpose", transpose, transpose)


def _half_rows(g: Grid, second: bool) -> Grid:
    return g[len(g) // 2:] if second else g[:len(g) // 2]


def _half_cols(g: Grid, second: bool) -> Grid:
    w = len(g[0]) // 2
    return tuple(row[w:] if second else row[:w] for row in g)


def _reflect(axis: int, reverse: bool) -> Transform:
    """marc's Reflect(axis, reverse): the grid concatenated with its mirror (mirror first if reverse)."""
    if axis == 0:
        def up(g):
            return g[::-1] + g if reverse else g + g[::-1]
        name = "reflect_ud_rev" if reverse else "reflect_ud"
        return _make(name, up, _checked(lambda g: _half_rows(g, reverse), up))

    def up(g):
        return tuple(r[::-1] + r if reverse else r + r[::-1] for r in g)
    name = "reflect_lr_rev" if reverse else "reflect_lr"
    return _make(name, up, _checked(lambda g: _half_cols(g, reverse), up))


REFLECT_UD_REV = _reflect(0, True)
REFLECT_LR_REV = _reflect(1, True)
REFLECT_UD = _reflect(0, False)
REFLECT_LR = _reflect(1, False)


def translate(dy: int, dx: int) -> Transform:
    """Cyclic translation by (dy, dx); its inverse shifts back."""
    return _make(f"translate_{dy}_{dx}", lambda g: roll(g, dy, dx), lambda g: roll(g, -dy, -dx), "translate")


def _sized(name: str, up: Callable[[Grid], Grid], down: Callable[[Grid], Grid]) -> Transform:
    """A size-changing transform whose inverse is `down`, accepted only when `up` reproduces the grid."""
    return _make(name, up, _checked(down, up))


UPSCALE2 = _sized("upscale2", lambda g: upscale(g, 2), lambda g: tuple(r[::2] for r in g[::2]))
STRETCH_H2 = _sized("stretch_h2", lambda g: stretch_h(g, 2), lambda g: g[::2])
STRETCH_W2 = _sized("stretch_w2", lambda g: stretch_w(g, 2), lambda g: tuple(r[::2] for r in g))
TILE_V2 = _sized("tile_v2", lambda g: tile(g, 2, 1), lambda g: _half_rows(g, False))
TILE_H2 = _sized("tile_h2", lambda g: tile(g, 1, 2), lambda g: _half_cols(g, False))
TILE_HV2 = _sized("tile_hv2", lambda g: tile(g, 2, 2), lambda g: _half_cols(_half_rows(g, False), False))


def chain(*transforms: Transform) -> Transform:
    """Apply transforms left to right; the inverse undoes them right to left (None if any step fails)."""
    def forward(g: Grid) -> Grid:
        for t in transforms:
            g = t.apply(g)
        return g

    def backward(g: Grid) -> Grid | None:
        for t in reversed(transforms):
            g = t.inverse(g)
            if g is None:
                return None
        return g

    parts = [t for t in transforms if t.name != "identity"]
    name = "+".join(t.name for t in parts) or "identity"
    category = "+".join(t.category for t in parts if t.category != "colour") or "identity"
    return Transform(name, forward, backward, category)


def colour_permutation(mapping: tuple[int, ...]) -> Transform:
    """Recolour by mapping (a permutation of 0..9); its inverse maps back."""
    assert sorted(mapping) == list(range(10)), f"not a permutation of 0..9: {mapping}"
    inverse = tuple(mapping.index(c) for c in range(10))
    name = "colours_" + "".join(map(str, mapping))
    return _make(name, lambda g: recolour(g, mapping), lambda g: recolour(g, inverse), "colour")


def random_colour_permutation(rng: random.Random) -> Transform:
    """A random permutation of colours 1..9 with 0 (background) fixed."""
    rest = list(range(1, 10))
    rng.shuffle(rest)
    return colour_permutation((0, *rest))


# ---------------------------------------------------------------------------------------------------------
# SEAL's augmentation groups


def basic_transforms(rng: random.Random) -> list[Transform]:
    """The 11 basic augmentations in marc's order; the translation's shift (1..3 per axis) comes from rng."""
    shift = translate(rng.randint(1, 3), rng.randint(1, 3))
    return [ROT90, ROT270, ROT180, FLIP_UD, FLIP_LR, REFLECT_UD_REV, REFLECT_LR_REV, REFLECT_UD, REFLECT_LR,
            shift, TRANSPOSE]


SIZE_TRANSFORMS = [UPSCALE2, STRETCH_H2, STRETCH_W2]
CHAIN_TRANSFORMS = [chain(t, UPSCALE2) for t in (ROT90, ROT270, ROT180, FLIP_UD, FLIP_LR, TRANSPOSE)]
REPEAT_TRANSFORMS = [TILE_V2, TILE_H2, TILE_HV2]
# the views used for augmented inference: invertible on any grid, so every prediction can be mapped back
GEOMETRIC_VIEWS = [IDENTITY, ROT90, ROT180, ROT270, FLIP_UD, FLIP_LR, TRANSPOSE]


@dataclass(frozen=True)
class AugmentationFlags:
    """Which augmentation groups a self-edit turns on (SEAL's `data_generation` block)."""

    basic: bool = True
    size: bool = True
    chain: bool = True
    repeat: bool = True

    @classmethod
    def from_self_edit(cls, data_generation: dict) -> "AugmentationFlags":
        """From {"use_basic_augmentations": bool, ...} (or a whole self-edit with a data_generation block)."""
        d = data_generation.get("data_generation", data_generation)
        groups = ("basic", "size", "chain", "repeat")
        return cls(*(bool(d.get(f"use_{g}_augmentations", False)) for g in groups))

    def label(self) -> str:
        """A short name like 'basic+chain' ('none' when every group is off)."""
        return "+".join(g for g in ("basic", "size", "chain", "repeat") if getattr(self, g)) or "none"


ALL_GROUPS = AugmentationFlags()
NO_GROUPS = AugmentationFlags(False, False, False, False)


def augmentation_transforms(flags: AugmentationFlags = ALL_GROUPS, seed: int = 0) -> list[Transform]:
    """The transforms of the groups the flags select, in marc's order (basic, size, chain, repeat)."""
    rng = random.Random(seed)
    out = basic_transforms(rng) if flags.basic else []
    out += SIZE_TRANSFORMS if flags.size else []
    out += CHAIN_TRANSFORMS if flags.chain else []
    out += REPEAT_TRANSFORMS if flags.repeat else []
    return out


def all_transforms(seed: int = 0) -> list[Transform]:
    """Every augmentation of the four groups (23)."""
    return augmentation_transforms(ALL_GROUPS, seed=seed)


def inference_views(colour_permutations: int = 1, seed: int = 0) -> list[Transform]:
    """Views for augmented inference: the 7 geometric views, each also with n random colour permutations.

    Identity comes first (vote ties favour it); every view is invertible on any grid.
    """
    rng = random.Random(seed)
    views = list(GEOMETRIC_VIEWS)
    for _ in range(colour_permutations):
        views += [chain(v, random_colour_permutation(rng)) for v in GEOMETRIC_VIEWS]
    return views


# ---------------------------------------------------------------------------------------------------------
# tasks


def apply_to_task(task: Task, transform: Transform) -> Task | None:
    """The transform applied to every input and output; None if any grid ends up over 30x30."""
    def fits(g: Grid) -> bool:
        return len(g) <= MAX_SIDE and len(g[0]) <= MAX_SIDE

    train = tuple((transform.apply(i), transform.apply(o)) for i, o in task.train)
    test = tuple((transform.apply(i), None if o is None else transform.apply(o)) for i, o in task.test)
    if not all(fits(i) and fits(o) for i, o in train) or not all(
        fits(i) and (o is None or fits(o)) for i, o in test
    ):
        return None
    return Task(task.id, train, test)


def shuffle_demos(task: Task, rng: random.Random) -> Task:
    """The task with its demonstrations in a random order."""
    train = list(task.train)
    rng.shuffle(train)
    return Task(task.id, tuple(train), task.test)
