"""
Test-time-training data for one task, SEAL/marc style (marc's get_test_time_train_data and
process_task_for_ttt), driven by a self-edit's four augmentation flags:

  1. leave-one-out: each demonstration in turn is the query, the others the context (N examples);
     leave-two-out: each demonstration is the query with one more left out of the context (N*(N-1),
     only where the context stays non-empty). A task with a single demonstration gives one example with
     an empty context (as marc does).
  2. each selected augmentation (augment.augmentation_transforms) is applied to every example, inputs and
     outputs together; examples with a grid over 30x30 are dropped; the originals are kept.
  3. the union gets one colour-permuted (0 fixed) + demonstration-shuffled copy of each example (with
     every group off, marc adds shuffled copies only, without recolouring; so does this).
  4. de-duplicated (by content, first occurrence kept, so the order is deterministic).
  5. examples whose training conversation exceeds `max_tokens` (counted with the `count_tokens`
     callable, nanochat rendering) are dropped and counted.
  6. leave-one-out examples first; if fewer than n_max, topped up with (shuffled) leave-two-out ones;
     if more, a seeded random n_max of them.

    from nanoseal.arc.ttt_data import make_ttt_data
    examples, stats = make_ttt_data(task, AugmentationFlags(basic=True, size=False, chain=False,
                                    repeat=True), count_tokens=lambda s: len(tok.encode(s)),
                                    max_tokens=2048)
    conv = examples[0].conversation   # tokenizer.render_conversation(conv, train_on=...)
"""

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nanoseal.arc.augment import (
    ALL_GROUPS,
    IDENTITY,
    AugmentationFlags,
    Transform,
    apply_to_task,
    augmentation_transforms,
    random_colour_permutation,
    shuffle_demos,
)
from nanoseal.arc.data import Task
from nanoseal.arc.prompts import conversation_tokens, training_conversation


@dataclass(frozen=True)
class TTTExample:
    """One training example: context demos + one query pair, with its conversation and token count."""

    task: Task  # train = context demonstrations, test = ((query input, query output),)
    origin: str  # "loo" or "l2o"
    transform: str  # how it was made: "identity", "rot90", "rot90+colours_0318...+shuffled", ...
    conversation: dict
    tokens: int | None  # None when no count_tokens was given


@dataclass
class TTTStats:
    """Counts per stage (see the module docstring)."""

    loo: int = 0  # leave-one-out examples before augmentation
    l2o: int = 0  # leave-two-out examples before augmentation
    augmented: int = 0  # all examples generated (originals + augmented + permuted copies), before de-dup
    dropped_oversize: int = 0  # augmented examples with a grid over 30x30
    dedup: int = 0  # after de-duplication
    dropped_over_budget: int = 0  # over max_tokens
    before_cap: int = 0  # usable examples: dedup - dropped_over_budget
    capped: int = 0  # returned after the leave-two-out top-up and the n_max cap

    def as_dict(self) -> dict:
        """The stats as a plain dict (for logs)."""
        return asdict(self)


def leave_n_out(task: Task, n: int) -> list[Task]:
    """Examples with one demonstration as the query and n-1 more left out of the context (marc's order)."""
    assert n in (1, 2), f"leave-n-out supports n=1 or n=2, got {n}"
    demos = task.train
    out = []
    for q in range(len(demos)):
        others = [k for k in range(len(demos)) if k != q]
        drops = [None] if n == 1 else others
        for drop in drops:
            context = tuple(demos[k] for k in others if k != drop)
            if n == 2 and not context:
                continue
            suffix = f"l1o{q}" if n == 1 else f"l2o{q}_{drop}"
            out.append(Task(f"{task.id}/{suffix}", context, (demos[q],)))
    return out


def _expand(
    base: list[Task], transforms: list[Transform], rng: random.Random, stats: TTTStats
) -> list[tuple[Task, str]]:
    """Augment, union with the originals, add one colour-permuted + shuffled copy each, de-duplicate."""
    views = [(t, IDENTITY.name) for t in base]
    for transform in transforms:
        for t in base:
            augmented = apply_to_task(t, transform)
            if augmented is None:
                stats.dropped_oversize += 1
            else:
                views.append((augmented, transform.name))
    copies = []
    for t, name in _dedup(views):
        if transforms:  # marc recolours only when some augmentation group is on; it always shuffles
            colours = random_colour_permutation(rng)
            t, name = apply_to_task(t, colours), f"{name}+{colours.name}"  # recolouring keeps sizes
        copies.append((shuffle_demos(t, rng), name + "+shuffled"))
    stats.augmented += len(views) + len(copies)
    return _dedup(views + copies)


def _dedup(items: list[tuple[Task, str]]) -> list[tuple[Task, str]]:
    seen, out = set(), []
    for t, name in items:
        key = (t.train, t.test)
        if key not in seen:
            seen.add(key)
            out.append((t, name))
    return out


def make_ttt_data(
    task: Task,
    flags: AugmentationFlags = ALL_GROUPS,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
    n_max: int = 250,
    seed: int = 0,
    style: str = "seal",
) -> tuple[list[TTTExample], TTTStats]:
    """The task's TTT examples (at most n_max) and the per-stage counts."""
    assert max_tokens is None or count_tokens is not None, "a max_tokens budget needs count_tokens"
    rng = random.Random(seed)
    transforms = augmentation_transforms(flags, seed=seed)
    stats = TTTStats()
    pools = {}
    for origin, n in (("loo", 1), ("l2o", 2)):
        base = leave_n_out(task, n)
        setattr(stats, origin, len(base))
        expanded = _expand(base, transforms, rng, stats)
        stats.dedup += len(expanded)
        examples = []
        for t, name in expanded:
            conv = training_conversation(t, style)
            tokens = None if count_tokens is None else conversation_tokens(conv, count_tokens)
            if max_tokens is not None and tokens > max_tokens:
                stats.dropped_over_budget += 1
                continue
            examples.append(TTTExample(t, origin, name, conv, tokens))
        pools[origin] = examples
    stats.before_cap = len(pools["loo"]) + len(pools["l2o"])
    chosen = list(pools["loo"])
    if len(chosen) > n_max:
        rng.shuffle(chosen)
        chosen = chosen[:n_max]
    elif len(chosen) < n_max:
        top_up = list(pools["l2o"])
        rng.shuffle(top_up)
        chosen += top_up[: n_max - len(chosen)]
    stats.capped = len(chosen)
    return chosen, stats
