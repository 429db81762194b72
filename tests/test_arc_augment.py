"""Tests for nanoseal.arc.augment: numpy-equivalent transforms, exact inverses (hypothesis), SEAL's groups,
and every augmentation on every ARC-AGI-1 task keeping grids valid.

Run: pytest tests/test_arc_augment.py
"""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoseal.arc import augment as A
from nanoseal.arc.data import Task, as_grid, check_grid, load_arc


def grids(max_side: int):
    """Hypothesis strategy: valid ARC grids up to max_side per side."""
    return st.integers(1, max_side).flatmap(
        lambda w: st.lists(st.lists(st.integers(0, 9), min_size=w, max_size=w), min_size=1, max_size=max_side)
    ).map(lambda rows: tuple(tuple(r) for r in rows))


NUMPY_EQUIVALENTS = {
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "flip_ud": np.flipud,
    "flip_lr": np.fliplr,
    "transpose": np.transpose,
    "reflect_ud": lambda a: np.concatenate([a, np.flipud(a)], 0),
    "reflect_ud_rev": lambda a: np.concatenate([np.flipud(a), a], 0),
    "reflect_lr": lambda a: np.concatenate([a, np.fliplr(a)], 1),
    "reflect_lr_rev": lambda a: np.concatenate([np.fliplr(a), a], 1),
    "translate_2_3": lambda a: np.roll(a, (2, 3), axis=(0, 1)),
    "upscale2": lambda a: np.repeat(np.repeat(a, 2, 0), 2, 1),
    "stretch_h2": lambda a: np.repeat(a, 2, 0),
    "stretch_w2": lambda a: np.repeat(a, 2, 1),
    "tile_v2": lambda a: np.concatenate([a, a], 0),
    "tile_h2": lambda a: np.concatenate([a, a], 1),
    "tile_hv2": lambda a: np.tile(a, (2, 2)),
    "rot90+upscale2": lambda a: np.repeat(np.repeat(np.rot90(a), 2, 0), 2, 1),
}


def every_transform() -> list[A.Transform]:
    """All SEAL augmentations plus identity, a fixed translation and a colour permutation."""
    return A.all_transforms() + [A.IDENTITY, A.translate(2, 3), A.random_colour_permutation(random.Random(1))]


def test_groups_match_seal():
    rng = random.Random(0)
    assert len(A.basic_transforms(rng)) == 11
    assert len(A.SIZE_TRANSFORMS) == 3 and len(A.CHAIN_TRANSFORMS) == 6 and len(A.REPEAT_TRANSFORMS) == 3
    assert len(A.all_transforms()) == 23 and len({t.name for t in A.all_transforms()}) == 23
    flags = A.AugmentationFlags(basic=False, size=True, chain=False, repeat=True)
    assert [t.name for t in A.augmentation_transforms(flags)] == [
        "upscale2", "stretch_h2", "stretch_w2", "tile_v2", "tile_h2", "tile_hv2"]
    assert A.augmentation_transforms(A.NO_GROUPS) == []
    assert A.all_transforms(seed=3) == A.all_transforms(seed=3), "the translation is seeded"


def test_flags_from_self_edit():
    edit = {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                                "use_chain_augmentations": True, "use_repeat_augmentations": False}}
    flags = A.AugmentationFlags.from_self_edit(edit)
    assert flags == A.AugmentationFlags(True, False, True, False) and flags.label() == "basic+chain"
    assert A.AugmentationFlags.from_self_edit(edit["data_generation"]) == flags
    assert A.NO_GROUPS.label() == "none"


@pytest.mark.parametrize("name", sorted(NUMPY_EQUIVALENTS))
def test_matches_numpy(name):
    transforms = {t.name: t for t in every_transform()}
    grid = as_grid(np.random.default_rng(0).integers(0, 10, (3, 5)))
    assert transforms[name].apply(grid) == as_grid(NUMPY_EQUIVALENTS[name](np.array(grid)))


@settings(max_examples=40, deadline=None)
@given(grids(max_side=12), st.integers(0, 1000))
def test_inverse_undoes_every_transform(g, seed):
    rng = random.Random(seed)
    transforms = every_transform() + [A.random_colour_permutation(rng), A.translate(rng.randint(-5, 5), 7)]
    for t in transforms:
        assert t.inverse(t.apply(g)) == g, f"{t.name}: inverse(apply(g)) != g"
    view = A.chain(A.ROT90, A.random_colour_permutation(rng))
    assert view.inverse(view.apply(g)) == g and view.category == "rot90"


@settings(max_examples=40, deadline=None)
@given(grids(max_side=8))
def test_colour_permutation_keeps_background(g):
    t = A.random_colour_permutation(random.Random(hash(g)))
    out = t.apply(g)
    assert all((a == 0) == (b == 0) for ra, rb in zip(g, out) for a, b in zip(ra, rb))


def test_inverse_rejects_grids_outside_the_image():
    assert A.UPSCALE2.inverse(((1, 2), (3, 4))) is None, "2x2 of distinct cells is not an upscaled grid"
    assert A.UPSCALE2.inverse(((1,),)) is None, "odd size"
    assert A.TILE_H2.inverse(((1, 2),)) is None and A.TILE_H2.inverse(((1, 1),)) == ((1,),)
    assert A.REFLECT_UD.inverse(((1,), (2,))) is None and A.REFLECT_UD.inverse(((1,), (1,))) == ((1,),)
    chained = A.CHAIN_TRANSFORMS[0]
    assert chained.inverse(((1, 2, 3),)) is None


def test_apply_to_task_drops_oversize_and_keeps_unlabelled():
    big = Task("big", [(((1,) * 16,) * 16, ((2,),))], [(((3,),), None)])
    assert A.apply_to_task(big, A.UPSCALE2) is None, "32x32 after upscaling must be dropped"
    rotated = A.apply_to_task(big, A.ROT90)
    assert rotated is not None and rotated.test[0][1] is None
    shuffled = A.shuffle_demos(load_arc("arcagi1", "train")[0], random.Random(0))
    assert sorted(shuffled.train) == sorted(load_arc("arcagi1", "train")[0].train)


@pytest.mark.slow
def test_every_augmentation_on_every_arcagi1_task():
    tasks = load_arc("arcagi1", "train") + load_arc("arcagi1", "eval")
    transforms = A.all_transforms() + [A.random_colour_permutation(random.Random(0))]
    kept = dropped = 0
    for task in tasks:
        for t in transforms:
            out = A.apply_to_task(task, t)
            if out is None:
                dropped += 1
                assert any(len(t.apply(g)) > 30 or len(t.apply(g)[0]) > 30 for g in task.grids()), t.name
                continue
            kept += 1
            for (i, o), (ai, ao) in zip(task.train + task.test, out.train + out.test):
                assert check_grid(ai) is None and check_grid(ao) is None, f"{task.id} {t.name}"
                assert t.inverse(ai) == i and t.inverse(ao) == o, f"{task.id} {t.name}: inverse failed"
    assert kept > 10000 and dropped > 0, (kept, dropped)
