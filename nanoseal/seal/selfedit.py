"""
SEAL's self-edits for ARC few-shot learning: the prompt that asks for one, the strict JSON schema, the parser,
the fixed recipes used by the baselines, and batched sampling of K self-edits from a policy.

A self-edit is a JSON object choosing TTT data augmentations and training settings (SEAL's schema):

    {"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false,
                         "use_chain_augmentations": false, "use_repeat_augmentations": false},
     "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.001, "num_train_epochs": 2}}

Usage:
    ids = selfedit_prompt_ids(tokenizer, task, style="compact", max_tokens=1024)   # None if it cannot fit
    edit, reason = parse_self_edit(text, max_epochs=10, max_steps=375, n_examples=250, batch_size=2)
    samples = sample_self_edits(engine, tokenizer, task, k=8, temperature=0.8)   # dicts: raw/self_edit/reason/...
    DEFAULT_SELF_EDIT, recipe_grid(), random_self_edit_text(random.Random(0))

Strictness of `parse_self_edit` (it never raises; a failure is (None, one-line reason)):
  - the text, after stripping surrounding whitespace, must be exactly one JSON object: leading text, trailing
    text after the object, arrays/strings/numbers at the top level, truncated JSON are all rejected;
  - only standard JSON: NaN / Infinity / -Infinity (which Python's json accepts) and duplicate keys are rejected;
  - exactly the schema's keys at every level (a missing key or an unknown key names the key);
  - flags are JSON booleans (not 0/1, not "true"); strategy is one of the two strings;
  - learning_rate is a finite JSON number (not a bool, not a string) with 0 < lr <= MAX_LEARNING_RATE (0.1);
  - num_train_epochs is a JSON integer (a float such as 2.5 *or* 3.0 is rejected) with 1 <= epochs <= max_epochs.
    SEAL treats a failed edit as zero epochs (no training, reward 0); here 0 epochs is simply invalid;
  - with max_steps and n_examples given: ceil(n_examples / batch_size) * epochs <= max_steps (SEAL drops edits over
    375 steps at batch size 2), the same step count nanoseal.seal.ttt schedules.

The self-edit prompt shows the task's demonstrations (never its test input) and SEAL's instruction, paraphrased.
"""

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nanoseal.arc.augment import AugmentationFlags
from nanoseal.arc.data import Task
from nanoseal.arc.grids import get_format
from nanoseal.arc.prompts import demo_text

log = logging.getLogger(__name__)

STRATEGIES = ("train_using_all_tokens", "train_using_output_tokens")
FLAG_KEYS = ("use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations",
             "use_repeat_augmentations")
TRAINING_KEYS = ("strategy", "learning_rate", "num_train_epochs")
TOP_KEYS = ("data_generation", "training")
MAX_LEARNING_RATE = 0.1
DEFAULT_MAX_EPOCHS = 10

# the prior of random_self_edit_text (SFT data that teaches a policy the format)
PRIOR_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
PRIOR_MAX_EPOCHS = 5
# "flat": every flag and the strategy 50/50 (the policy's output rows for true/false and for the two strategies end
# up the same vector: no short update moves those fields, dev/LOG.md). "fields": the same prior with the flags and
# the strategy a little off 1/2, in the directions the development seeds' rewards favour, so SFT must tell the
# four flag positions apart and sets the rows apart (P(true) per flag in SelfEdit order; P(output-token loss))
PRIORS = ("flat", "fields")
FIELDS_PRIOR_TRUE = (0.6, 0.4, 0.4, 0.4)  # basic, size, chain, repeat
FIELDS_PRIOR_OUTPUT = 0.6

SELFEDIT_INTRO = (
    "You are given the demonstrations of an abstract reasoning task: each one maps an input grid to an output "
    "grid by the same hidden rule.\n"
)
SELFEDIT_INSTRUCTION = (
    "Before solving this task, a copy of you will be fine-tuned on these demonstrations. "
    "Configure that fine-tuning by picking from the available tools.\n"
    "1. Data generation: set each option to true or false.\n"
    "- use_basic_augmentations: rotations, flips, transposition and translation of the grids\n"
    "- use_size_augmentations: grids scaled up 2x in height, width or both\n"
    "- use_chain_augmentations: a geometric transform followed by 2x scaling\n"
    "- use_repeat_augmentations: grids tiled twice vertically, horizontally or both\n"
    "2. Training: choose the strategy, either \"train_using_all_tokens\" (loss on the whole example) or "
    "\"train_using_output_tokens\" (loss on the output grid only), a learning_rate (a number) and "
    "num_train_epochs (an integer).\n"
    "Reply with one JSON object and nothing else, shaped like this:\n"
    '{"data_generation": {"use_basic_augmentations": true or false, "use_size_augmentations": true or false, '
    '"use_chain_augmentations": true or false, "use_repeat_augmentations": true or false}, '
    '"training": {"strategy": "...", "learning_rate": number, "num_train_epochs": integer}}'
)


def votes_note(votes: list) -> str:
    """The self-edit prompt's optional line (`nanoseal seal --prompt-votes`): how self-consistent the writing
    model's own answer is before any fine-tuning, from its inference views' votes ([top count, views] per test)."""
    assert votes and all(len(v) == 2 and 0 <= v[0] <= v[1] for v in votes), f"votes must be [top, views] pairs: {votes}"
    counts = ", ".join(f"{top} of {n}" for top, n in votes)
    return f"Before fine-tuning, the views that agree on your answer: {counts}."


@dataclass(frozen=True)
class SelfEdit:
    """A valid self-edit, SEAL's nested schema flattened."""

    basic: bool
    size: bool
    chain: bool
    repeat: bool
    strategy: str
    learning_rate: float
    num_train_epochs: int

    def __post_init__(self):
        for name in ("basic", "size", "chain", "repeat"):
            assert type(getattr(self, name)) is bool, f"{name} must be a bool, got {getattr(self, name)!r}"
        assert self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}, got {self.strategy!r}"
        lr = self.learning_rate
        assert type(lr) in (int, float) and math.isfinite(lr) and 0 < lr <= MAX_LEARNING_RATE, \
            f"learning_rate must be in (0, {MAX_LEARNING_RATE}], got {lr!r}"
        assert type(self.num_train_epochs) is int and self.num_train_epochs >= 1, \
            f"num_train_epochs must be an int >= 1, got {self.num_train_epochs!r}"

    def to_json(self) -> dict:
        """The nested JSON schema as a dict."""
        return {
            "data_generation": {
                "use_basic_augmentations": self.basic,
                "use_size_augmentations": self.size,
                "use_chain_augmentations": self.chain,
                "use_repeat_augmentations": self.repeat,
            },
            "training": {
                "strategy": self.strategy,
                "learning_rate": self.learning_rate,
                "num_train_epochs": self.num_train_epochs,
            },
        }

    def canonical(self) -> str:
        """Compact deterministic JSON text (sorted keys, no spaces): equal edits give equal strings."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @property
    def flags(self) -> AugmentationFlags:
        """The augmentation groups this edit turns on."""
        return AugmentationFlags(self.basic, self.size, self.chain, self.repeat)

    def label(self) -> str:
        """A short human label, e.g. 'basic+size/output/lr=0.001/ep=2'."""
        strategy = "all" if self.strategy == "train_using_all_tokens" else "output"
        return f"{self.flags.label()}/{strategy}/lr={self.learning_rate:g}/ep={self.num_train_epochs}"


# A fixed recipe for the "TTT fixed default" baseline. SEAL's released recipes use LoRA learning rates around 1e-4
# on 1B models; tiny CPU models need larger ones (1e-3..3e-3 trains LoRA visibly in a few steps), so 1e-3 here.
# Basic (geometric) augmentations only and loss on the output grid, 2 epochs: cheap and rarely harmful.
DEFAULT_SELF_EDIT = SelfEdit(basic=True, size=False, chain=False, repeat=False,
                             strategy="train_using_output_tokens", learning_rate=1e-3, num_train_epochs=2)


ORACLE_GRIDS = ("seal", "prior")


def recipe_grid(kind: str = "seal") -> list[SelfEdit]:
    """The Oracle's grid. "seal", 24 recipes: flags {basic only, all four groups} x both strategies
    x learning rate {1e-4, 1e-3, 3e-3} x epochs {1, 3}. "prior", 10 recipes (cheap, for CPU demos): basic
    augmentations, loss on outputs, every learning rate of the SFT prior x epochs {1, 3}."""
    assert kind in ORACLE_GRIDS, f"oracle grid must be one of {ORACLE_GRIDS}, got {kind!r}"
    if kind == "prior":
        return [SelfEdit(True, False, False, False, strategy="train_using_output_tokens", learning_rate=lr,
                         num_train_epochs=epochs) for lr in PRIOR_LEARNING_RATES for epochs in (1, 3)]
    flag_sets = ((True, False, False, False), (True, True, True, True))
    grid = []
    for flags in flag_sets:
        for strategy in STRATEGIES:
            for lr in (1e-4, 1e-3, 3e-3):
                for epochs in (1, 3):
                    grid.append(SelfEdit(*flags, strategy=strategy, learning_rate=lr, num_train_epochs=epochs))
    return grid


def random_self_edit_text(rng: random.Random, prior: str = "flat") -> str:
    """A valid self-edit (canonical JSON) from a broad prior: each flag Bernoulli(0.5), strategy 50/50 ("fields":
    Bernoulli(FIELDS_PRIOR_TRUE) and P(output tokens) = FIELDS_PRIOR_OUTPUT), learning rate uniform over
    PRIOR_LEARNING_RATES (log-spaced 1e-4..1e-2), epochs uniform in 1..5."""
    assert prior in PRIORS, f"prior must be one of {PRIORS}, got {prior!r}"
    if prior == "flat":
        flags = [rng.random() < 0.5 for _ in range(4)]
        strategy = rng.choice(STRATEGIES)
    else:
        flags = [rng.random() < p for p in FIELDS_PRIOR_TRUE]
        strategy = STRATEGIES[1] if rng.random() < FIELDS_PRIOR_OUTPUT else STRATEGIES[0]
    edit = SelfEdit(*flags, strategy=strategy, learning_rate=rng.choice(PRIOR_LEARNING_RATES),
                    num_train_epochs=rng.randint(1, PRIOR_MAX_EPOCHS))
    return edit.canonical()


# ---------------------------------------------------------------------------------------------------------
# parsing


class _Reject(Exception):
    """A parse failure with its one-line reason (internal: parse_self_edit turns it into (None, reason))."""


def _json_type(value) -> str:
    """JSON's name for a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value) -> str:
    """A value as JSON text, cut to 40 characters, for reasons."""
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reject_constant(name: str):
    raise _Reject(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise _Reject(f"duplicate key {k!r}")
    return dict(pairs)


def _decode_object(text: str) -> dict:
    """The one JSON object the text must consist of (surrounding whitespace allowed)."""
    body = text.strip()
    if not body:
        raise _Reject("empty output")
    if body[0] != "{":
        if body[0] in '["-0123456789tfn':
            try:
                value = json.loads(body, parse_constant=_reject_constant)
            except (ValueError, RecursionError):
                raise _Reject(f"not JSON: unexpected text {_short(body[:20])}") from None
            raise _Reject(f"top level is a JSON {_json_type(value)}, expected an object")
        raise _Reject(f"not JSON: unexpected text {_short(body[:20])}")
    decoder = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    try:
        obj, end = decoder.raw_decode(body)
    except json.JSONDecodeError as e:
        if e.pos >= len(body) or e.msg.startswith("Unterminated string"):
            raise _Reject("truncated JSON (ends before the object closes)") from None
        raise _Reject(f"invalid JSON: {e.msg} at char {e.pos}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer with too many digits, absurd nesting
        raise _Reject(f"invalid JSON: {type(e).__name__}") from None
    if end != len(body):
        raise _Reject(f"extra text after the JSON object: {_short(body[end:end + 20])}")
    return obj


def _check_keys(obj, expected: Sequence[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise _Reject(f"{where} must be a JSON object, got {_json_type(obj)}")
    for key in expected:
        if key not in obj:
            raise _Reject(f"missing key {key!r} in {where}")
    for key in obj:
        if key not in expected:
            raise _Reject(f"unknown key {key!r} in {where}")


def _validate(obj, max_epochs: int, max_steps: int | None, n_examples: int | None, batch_size: int) -> SelfEdit:
    _check_keys(obj, TOP_KEYS, "self-edit")
    data, training = obj["data_generation"], obj["training"]
    _check_keys(data, FLAG_KEYS, "data_generation")
    _check_keys(training, TRAINING_KEYS, "training")
    for key in FLAG_KEYS:
        if not isinstance(data[key], bool):
            raise _Reject(f"{key} must be true or false, got {_short(data[key])}")
    strategy = training["strategy"]
    if not isinstance(strategy, str):
        raise _Reject(f"strategy must be a string, got {_json_type(strategy)}")
    if strategy not in STRATEGIES:
        raise _Reject(f"unknown strategy {_short(strategy)}; expected {' or '.join(STRATEGIES)}")
    lr = training["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise _Reject(f"learning_rate must be a number, got {_json_type(lr)} {_short(lr)}")
    if not math.isfinite(lr):
        raise _Reject(f"learning_rate {lr} is not finite")
    if not 0 < lr <= MAX_LEARNING_RATE:
        raise _Reject(f"learning_rate {lr:g} out of range (0, {MAX_LEARNING_RATE:g}]")
    epochs = training["num_train_epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise _Reject(f"num_train_epochs must be an integer, got {_json_type(epochs)} {_short(epochs)}")
    if not 1 <= epochs <= max_epochs:
        raise _Reject(f"num_train_epochs {_short(epochs)} out of range [1, {max_epochs}]")
    if max_steps is not None and n_examples is not None:
        steps = math.ceil(n_examples / batch_size) * epochs
        if steps > max_steps:
            raise _Reject(f"{steps} training steps (ceil({n_examples}/{batch_size}) x {epochs} epochs) "
                          f"over the budget of {max_steps}")
    flags = [data[key] for key in FLAG_KEYS]
    return SelfEdit(*flags, strategy=strategy, learning_rate=lr, num_train_epochs=epochs)


def parse_self_edit(text: str, max_epochs: int = DEFAULT_MAX_EPOCHS, max_steps: int | None = None,
                    n_examples: int | None = None, batch_size: int = 2) -> tuple[SelfEdit | None, str | None]:
    """(SelfEdit, None) for a valid self-edit, else (None, a one-line reason). Never raises; see the module doc."""
    assert batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"
    if not isinstance(text, str):
        return None, f"expected text, got {type(text).__name__}"
    try:
        return _validate(_decode_object(text), max_epochs, max_steps, n_examples, batch_size), None
    except _Reject as e:
        return None, str(e)


# ---------------------------------------------------------------------------------------------------------
# the prompt


def selfedit_conversation(task: Task, style: str = "compact", demo_indices: Sequence[int] | None = None,
                          note: str = "") -> dict:
    """The self-edit prompt as a one-user-message conversation: the demonstrations (all, or demo_indices) and
    SEAL's instruction asking for a JSON configuration; `note`, if given (votes_note), on a line of its own between
    them (a prompt that ends otherwise than in SFT throws the tiny policy off its JSON). The test inputs are never
    shown."""
    fmt = get_format(style)
    indices = range(len(task.train)) if demo_indices is None else demo_indices
    demos = "".join(demo_text(*task.train[i], style) for i in indices)
    content = SELFEDIT_INTRO + fmt.description + demos + "\n" + (f"{note}\n" if note else "") + SELFEDIT_INSTRUCTION
    return {"messages": [{"role": "user", "content": content}]}


def fit_selfedit_conversation(tokenizer, task: Task, style: str = "compact", max_tokens: int | None = None,
                              reserve_tokens: int = 0, min_demos: int = 1, note: str = "") -> dict | None:
    """The self-edit conversation whose completion prompt plus reserve_tokens fits max_tokens, dropping whole
    demonstrations (the most expensive first, the last on ties); None if min_demos demonstrations do not fit."""
    kept = list(range(len(task.train)))
    costs = {i: len(tokenizer.encode(demo_text(*task.train[i], style))) for i in kept}
    while True:
        conv = selfedit_conversation(task, style, kept, note)
        tokens = len(tokenizer.render_for_completion(conv)) + reserve_tokens
        if max_tokens is None or tokens <= max_tokens:
            return conv
        if len(kept) <= min_demos:
            log.info("task %s: self-edit prompt needs %d tokens with %d demonstration(s), over the budget of %d",
                     task.id, tokens, len(kept), max_tokens)
            return None
        victim = max(kept, key=lambda i: (costs[i], i))
        kept.remove(victim)
        log.info("task %s: dropped demonstration %d (%d tokens) from the self-edit prompt to fit %d tokens",
                 task.id, victim, costs[victim], max_tokens)


def selfedit_prompt_ids(tokenizer, task: Task, style: str = "compact", max_tokens: int | None = None,
                        reserve_tokens: int = 0, note: str = "") -> list[int] | None:
    """Token ids of the self-edit prompt, ready to sample from (ends with <|assistant_start|>); None if it
    cannot fit max_tokens (minus reserve_tokens for the answer) even with a single demonstration."""
    conv = fit_selfedit_conversation(tokenizer, task, style, max_tokens, reserve_tokens, note=note)
    return None if conv is None else tokenizer.render_for_completion(conv)


# ---------------------------------------------------------------------------------------------------------
# sampling


def sample_self_edits(engine, tokenizer, task: Task, k: int, temperature: float = 0.8, max_tokens: int = 128,
                      seed: int = 0, style: str = "compact", max_resamples: int = 1,
                      max_prompt_tokens: int | None = None, note: str = "", **parse_kwargs) -> list[dict]:
    """K self-edits for a task from the policy in `engine`, one batched generate call per round.

    Returns one dict per sample: {"raw": text, "self_edit": SelfEdit | None, "reason": str | None,
    "attempts": int, "seconds": float}. Invalid samples are redrawn in at most max_resamples further rounds
    (one batched call for all of them, seed + round); the dict keeps the last attempt. "seconds" is the
    sample's share of the wall time of the batched calls it took part in. The prompt must fit
    max_prompt_tokens (default: the model's sequence_len minus max_tokens); if it cannot, no call is made and
    every sample is invalid with attempts 0. `note` goes into the prompt (selfedit_conversation). parse_kwargs go to
    parse_self_edit (max_epochs, max_steps, ...).
    """
    assert k >= 1, f"k must be >= 1, got {k}"
    assert max_resamples >= 0, f"max_resamples must be >= 0, got {max_resamples}"
    if max_prompt_tokens is None:
        max_prompt_tokens = engine.model.config.sequence_len - max_tokens
    results = [{"raw": "", "self_edit": None, "reason": None, "attempts": 0, "seconds": 0.0} for _ in range(k)]
    prompt = selfedit_prompt_ids(tokenizer, task, style, max_prompt_tokens, note=note) \
        if max_prompt_tokens > 0 else None
    if prompt is None:
        for r in results:
            r["reason"] = f"self-edit prompt does not fit {max_prompt_tokens} tokens"
        return results
    pending = list(range(k))
    for round_index in range(1 + max_resamples):
        if not pending:
            break
        t0 = time.perf_counter()
        sequences, _ = engine.generate_batch(prompt, num_samples=len(pending), max_tokens=max_tokens,
                                             temperature=temperature, seed=seed + round_index)
        share = (time.perf_counter() - t0) / len(pending)
        for i, seq in zip(pending, sequences):
            raw = tokenizer.decode(seq[len(prompt):])
            edit, reason = parse_self_edit(raw, **parse_kwargs)
            results[i].update(raw=raw, self_edit=edit, reason=reason, attempts=results[i]["attempts"] + 1,
                              seconds=results[i]["seconds"] + share)
        pending = [i for i in pending if results[i]["self_edit"] is None]
    return results
