"""
Training data for the tiny policies, generated on the fly: procedural ARC-style tasks (nanoseal.arc.gen) and
ARC-AGI-1 training tasks, under random geometric views, colour permutations and demonstration orders, rendered
as chat documents (ids, loss mask) for nanoseal.train.loop.train.

    tasks = task_stream(TRAIN_FAMILIES, seed=0, max_side=6)                  # endless, seeded
    docs = grid_documents(tasks, tokenizer, max_tokens=512, seed=0)          # few-shot grid answers
    docs = selfedit_documents(tasks, tokenizer, max_tokens=512, seed=0)      # self-edit prompt -> prior JSON
    docs = mix([docs_a, docs_b], [0.5, 0.5], seed=0)

The self-edit documents teach the format only: the answer is drawn from a broad prior over settings
(nanoseal.seal.selfedit.random_self_edit_text), independent of the task, so the policy starts with no idea
which settings work; ReST-EM is what teaches it that.
"""

import random
from collections.abc import Iterator, Sequence

from nanoseal.arc.augment import GEOMETRIC_VIEWS, apply_to_task, random_colour_permutation, shuffle_demos
from nanoseal.arc.data import Task
from nanoseal.arc.gen import feasible_families, make_task
from nanoseal.arc.prompts import task_conversation
from nanoseal.seal.selfedit import random_self_edit_text, selfedit_conversation

STYLE = "compact"
# procedural instances for training draw seeds from here up: far from gen-train (0..) and gen-eval (1e6..)
TRAIN_SEED_OFFSET = 10_000_000

Doc = tuple[list[int], list[int]]


def task_stream(families: Sequence[str], seed: int, min_side: int = 3, max_side: int = 6, k: int = 3,
                pool: Sequence[Task] = (), pool_frac: float = 0.0) -> Iterator[Task]:
    """Endless seeded stream of fresh procedural instances (k demos + 1 test), a pool_frac share from pool."""
    rng = random.Random(f"tasks/{seed}")
    families = feasible_families(families, min_side, max_side)
    while True:
        if pool and rng.random() < pool_frac:
            yield rng.choice(pool)
            continue
        family = rng.choice(families)
        yield make_task(family, TRAIN_SEED_OFFSET + rng.randrange(2**31), k=k, min_side=min_side, max_side=max_side)


def augment(task: Task, rng: random.Random) -> Task:
    """A random geometric view, colour permutation (0 fixed) and demonstration order of a task."""
    task = apply_to_task(task, rng.choice(GEOMETRIC_VIEWS)) or task
    task = apply_to_task(task, random_colour_permutation(rng)) or task
    return shuffle_demos(task, rng)


def grid_documents(tasks: Iterator[Task], tokenizer, max_tokens: int, seed: int, train_on: str = "assistant"
                   ) -> Iterator[Doc]:
    """Augmented few-shot documents (demos in the system turn, test answer by the assistant) that fit."""
    rng = random.Random(f"grid/{seed}")
    for task in tasks:
        task = augment(task, rng)
        inp, out = task.test[0]
        conv = task_conversation(task.train, inp, out, style=STYLE)
        ids, mask = tokenizer.render_conversation(conv, max_tokens=max_tokens + 1, train_on=train_on)
        if len(ids) <= max_tokens + 1:
            yield ids, mask


def selfedit_documents(tasks: Iterator[Task], tokenizer, max_tokens: int, seed: int, prior: str = "flat"
                       ) -> Iterator[Doc]:
    """Self-edit prompts answered with a self-edit drawn from the broad prior (loss on the answer only)."""
    rng = random.Random(f"selfedit/{seed}")
    for task in tasks:
        task = augment(task, rng)
        conv = selfedit_conversation(task, STYLE)
        conv["messages"].append({"role": "assistant", "content": random_self_edit_text(rng, prior)})
        ids, mask = tokenizer.render_conversation(conv, max_tokens=max_tokens + 1, train_on="assistant")
        if len(ids) <= max_tokens + 1:
            yield ids, mask


def mix(streams: Sequence[Iterator[Doc]], weights: Sequence[float], seed: int) -> Iterator[Doc]:
    """Interleave document streams at random with the given weights (seeded)."""
    assert len(streams) == len(weights) and streams, "one weight per stream"
    rng = random.Random(f"mix/{seed}")
    while True:
        yield next(rng.choices(streams, weights)[0])


def tokenizer_corpus(tasks: Iterator[Task], n: int, seed: int) -> Iterator[str]:
    """Texts for tokenizer training: n tasks, each as a few-shot conversation and as a self-edit exchange."""
    rng = random.Random(f"corpus/{seed}")
    for _, task in zip(range(n), tasks):
        inp, out = task.test[0]
        conv = task_conversation(task.train, inp, out, style=STYLE)
        yield "\n\n".join(m["content"] for m in conv["messages"])
        yield selfedit_conversation(task, STYLE)["messages"][0]["content"] + "\n" + random_self_edit_text(rng)
