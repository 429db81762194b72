"""
ARC prompts as nanochat conversations, in SEAL's layout (marc's GPTTextMessageRepresenterV2):

    system     "Figure out the underlying transformation in the following examples and apply it to the test
               case. Here are some examples from this transformation, your answer must follow the format.\\n"
               + "The input-output grids are provided as python arrays:\\n"
               + for each demonstration: "<input> -> <output>#\\n"
    user       "<test input> -> "
    assistant  "<test output>#"      (training; left out when prompting for a prediction)

nanochat has no system role: the tokenizer's `render_conversation` folds the system text into the first
user message ("system + \\n\\n + user") and renders bos, user_start..user_end, assistant_start..assistant_end.
`conversation_tokens` counts exactly that with any `count_tokens(text) -> int` callable, so budgets work
with whichever tokenizer is in use (tests use `len`).

`few_shot_prompt` fits a task's prompt into a token budget by dropping whole demonstrations (the most
expensive first), never cutting a grid; every drop is recorded in the result and logged.
`training_conversation` turns a TTT example (context demonstrations + one query pair) into a conversation
whose assistant message is the query's output grid. SEAL's two training strategies map to the tokenizer's
loss masks via `train_on_for_strategy`: train_using_output_tokens -> "assistant" (loss on the answer only),
train_using_all_tokens -> "all".
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nanoseal.arc.data import Grid, Task
from nanoseal.arc.grids import format_example, get_format
from nanoseal.common import NanosealError

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "Figure out the underlying transformation in the following examples and apply it to the test case. "
    "Here are some examples from this transformation, your answer must follow the format.\n"
)
# special tokens nanochat adds: bos, then user_start/user_end and assistant_start/assistant_end
BOS_TOKENS = 1
TOKENS_PER_MESSAGE = 2

TRAIN_ON = {"train_using_output_tokens": "assistant", "train_using_all_tokens": "all"}


def train_on_for_strategy(strategy: str) -> str:
    """The tokenizer's train_on value ("assistant" or "all") for a SEAL training strategy."""
    if strategy not in TRAIN_ON:
        raise NanosealError(f"unknown training strategy {strategy!r}; expected one of {', '.join(TRAIN_ON)}")
    return TRAIN_ON[strategy]


def demo_text(inp: Grid, out: Grid, style: str = "seal") -> str:
    """One demonstration as it appears in the system text: query + answer + newline."""
    query, answer = format_example(inp, out, style)
    return query + answer + "\n"


def task_conversation(
    demos: Sequence[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None, style: str = "seal"
) -> dict:
    """{"messages": [system, user, (assistant)]} for demonstrations, a query input and optionally its answer."""
    fmt = get_format(style)
    system = SYSTEM_PROMPT + fmt.description + "".join(demo_text(i, o, style) for i, o in demos)
    query_text, answer_text = format_example(query, answer, style)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": query_text}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer_text})
    return {"messages": messages}


def conversation_tokens(conv: dict, count_tokens: Callable[[str], int]) -> int:
    """Tokens of the conversation as nanochat renders it (system folded into the first user message)."""
    messages = conv["messages"]
    contents = [m["content"] for m in messages]
    if messages and messages[0]["role"] == "system" and len(messages) > 1:
        contents = [contents[0] + "\n\n" + contents[1]] + contents[2:]
    return BOS_TOKENS + sum(TOKENS_PER_MESSAGE + count_tokens(c) for c in contents)


def training_conversation(example: Task, style: str = "seal") -> dict:
    """A TTT example (context demos in `train`, one labelled query in `test`) as a training conversation."""
    assert len(example.test) == 1, f"a TTT example has one query pair, got {len(example.test)}"
    query, answer = example.test[0]
    assert answer is not None, f"TTT example {example.id} has no query output"
    return task_conversation(example.train, query, answer, style)


@dataclass
class FewShotPrompt:
    """A budgeted prompt: the conversation, which demonstrations it kept/dropped, and its token count."""

    conversation: dict
    kept: list[int]
    dropped: list[int] = field(default_factory=list)
    tokens: int = 0  # prompt tokens, plus the answer (or the reserve for it)
    fits: bool = True  # False: over budget even at min_demos; the caller should skip the task


def few_shot_prompt(
    task: Task,
    test_index: int = 0,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] = len,
    style: str = "seal",
    include_answer: bool = False,
    reserve_tokens: int | None = None,
    min_demos: int = 1,
) -> FewShotPrompt:
    """The few-shot prompt for one test input within max_tokens, dropping whole demonstrations if needed.

    Without the answer, room is reserved for generating it: `reserve_tokens`, by default the largest
    demonstration answer's token count plus assistant_start/assistant_end.
    """
    query, truth = task.test[test_index]
    answer = truth if include_answer else None
    if answer is None and reserve_tokens is None:
        answers = [format_example(i, o, style)[1] for i, o in task.train]
        reserve_tokens = TOKENS_PER_MESSAGE + max(count_tokens(a) for a in answers)
    reserve = 0 if answer is not None else reserve_tokens
    costs = {k: count_tokens(demo_text(i, o, style)) for k, (i, o) in enumerate(task.train)}
    kept = list(range(len(task.train)))
    dropped: list[int] = []

    def build() -> tuple[dict, int]:
        conv = task_conversation([task.train[k] for k in kept], query, answer, style)
        return conv, conversation_tokens(conv, count_tokens) + reserve

    conv, tokens = build()
    while max_tokens is not None and tokens > max_tokens and len(kept) > min_demos:
        victim = max(kept, key=lambda k: (costs[k], k))  # the most expensive, the last one on ties
        kept.remove(victim)
        dropped.append(victim)
        log.info("task %s test %d: dropped demonstration %d (%d tokens) to fit %d tokens",
                 task.id, test_index, victim, costs[victim], max_tokens)
        conv, tokens = build()
    fits = max_tokens is None or tokens <= max_tokens
    if not fits:
        log.info("task %s test %d: %d tokens with %d demonstration(s), over the budget of %d",
                 task.id, test_index, tokens, len(kept), max_tokens)
    return FewShotPrompt(conv, kept, dropped, tokens, fits)
