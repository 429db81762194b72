"""
The models behind the web UI: one base checkpoint loaded once, LoRA adapters hot-swapped on it, the round
policies of SEAL runs loaded on demand and cached (bounded), and a gate that runs one generation at a time
with a small queue behind it.

    hub = ModelHub.load("~/.cache/nanoseal", adapters_dir="adapters", runs_dir="runs")
    ref = hub.parse("adapter:flip_lr")          # "base" | "adapter:<name>" | "policy:<run>/<round>"
    if hub.admit():                             # False: the queue is full (HTTP 503)
        with hub.open(ref) as session:          # waits its turn, then makes ref's model the one that runs
            with session.context():             # autocast, inference mode, LoRA disabled for "base"
                ...session.model, session.tokenizer...

Names are resolved only inside the configured folders (nanoseal.chat.resolve_inside): an absolute path or a
'..' is a BadName, a well-formed name that names nothing is NotFound. Round policies are served with the
base checkpoint's tokenizer (they are fine-tunes of it); one whose vocabulary differs is refused.
"""

import contextlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from nanoseal.chat import AdapterBank, BadName, NotFound, resolve_inside
from nanoseal.common import NanosealError, autocast_ctx


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for (defaults: nanochat chat_web's), and on the generation queue."""

    max_messages: int = 500  # messages per chat request
    max_message_chars: int = 8000  # characters per message
    max_total_chars: int = 32000  # characters per conversation
    max_tokens: int = 4096  # a request's max_tokens is in 1..max_tokens
    max_temperature: float = 2.0  # temperature in 0..max_temperature
    max_top_k: int = 200  # top_k in 0..max_top_k (0: no top-k filtering)
    max_queue: int = 4  # generations waiting behind the running one; one more gets HTTP 503
    max_body_bytes: int = 1_000_000  # request bodies over this get HTTP 413
    max_views: int = 7  # inference views of an ARC prediction (the 7 geometric views)
    max_rows: int = 1000  # self-edit rows per page


class Busy(NanosealError):
    """The generation queue is full."""


@dataclass(frozen=True)
class ModelRef:
    """A model the UI can pick: the base checkpoint, an adapter folder on it, or a SEAL round's policy."""

    id: str  # "base", "adapter:<name>", "policy:<run>/<round>"
    kind: str  # base | adapter | policy
    path: str | None = None  # adapter folder or run directory (real paths)
    round: int | None = None


class Session:
    """The right to run one model until closed: holds the hub's run lock and a place in its queue."""

    def __init__(self, hub: "ModelHub", ref: ModelRef, model, tokenizer):
        self.hub, self.ref, self.model, self.tokenizer = hub, ref, model, tokenizer
        self._closed = False

    def context(self) -> contextlib.ExitStack:
        """Enter in the thread that runs the model: autocast, inference mode, LoRA layers off for the base."""
        stack = contextlib.ExitStack()
        stack.enter_context(autocast_ctx(self.hub.device, self.hub.dtype))
        stack.enter_context(torch.inference_mode())
        if self.ref.kind == "base":
            stack.enter_context(self.hub.bank.base_context())
        return stack

    def close(self) -> None:
        """Release the model and the queue place (idempotent)."""
        if not self._closed:
            self._closed = True
            self.hub._run_lock.release()
            self.hub.leave()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ModelHub:
    """Base model + adapter bank + cached round policies + the generation gate; counters for /stats."""

    def __init__(self, model, tokenizer, meta: dict, device, dtype: str = "auto", adapters_dir: str | None = None,
                 runs_dir: str | None = None, limits: Limits | None = None, max_policies: int = 2,
                 max_adapters: int = 8):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta
        self.device, self.dtype = torch.device(device), dtype
        self.adapters_dir = os.path.abspath(adapters_dir) if adapters_dir else None
        self.runs_dir = os.path.abspath(runs_dir) if runs_dir else None
        self.limits = limits or Limits()
        self.base_params = model.num_params()  # counted before any LoRA layer is attached
        self.bank = AdapterBank(model, self.adapters_dir, max_cached=max_adapters)
        self.max_policies = max(1, max_policies)
        self.policies: OrderedDict[tuple[str, int], torch.nn.Module] = OrderedDict()
        self._run_lock = threading.Lock()  # one model run at a time (LoRA state lives on the layers)
        self._gate_lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self.started = time.time()
        self.counters = {"chat_requests": 0, "chat_completed": 0, "chat_cancelled": 0, "chat_errors": 0,
                         "tokens_generated": 0, "predictions": 0, "rejected_busy": 0, "policy_loads": 0}

    @classmethod
    def load(cls, checkpoint: str, step: int | None = None, source: str | None = None, device=None,
             **kwargs) -> "ModelHub":
        """Load the base checkpoint (nanoseal.checkpoint.load_model) and build a hub around it."""
        from nanoseal.checkpoint import load_model
        from nanoseal.common import autodetect_device

        device = autodetect_device(device)
        model, tokenizer, meta = load_model(checkpoint, step=step, device=device, source=source)
        return cls(model, tokenizer, meta, device, **kwargs)

    # ------------------------------------------------------------------ the gate

    def admit(self) -> bool:
        """Take a place in the queue (running + waiting <= 1 + max_queue); False when it is full."""
        with self._gate_lock:
            if self._admitted >= 1 + self.limits.max_queue:
                self.counters["rejected_busy"] += 1
                return False
            self._admitted += 1
            return True

    def leave(self) -> None:
        """Give a queue place back."""
        with self._gate_lock:
            self._admitted -= 1

    def count(self, key: str, n: int = 1) -> None:
        """Add n to a /stats counter."""
        with self._gate_lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def open(self, ref: ModelRef) -> Session:
        """Wait for the model (blocking), make `ref` the model that runs, return the session (caller admitted)."""
        self._run_lock.acquire()
        try:
            if ref.kind == "policy":
                model = self._policy(ref.path, ref.round)
            else:
                self.bank.activate(ref.path if ref.kind == "adapter" else None)
                model = self.model
        except BaseException:
            self._run_lock.release()
            raise
        return Session(self, ref, model, self.tokenizer)

    # ------------------------------------------------------------------ names

    def parse(self, model_id: str | None) -> ModelRef:
        """A model id ("base", "adapter:<name>", "policy:<run>/<round>") checked against the folders."""
        if model_id in (None, "", "base"):
            return ModelRef("base", "base")
        if not isinstance(model_id, str):
            raise BadName(f"bad model {model_id!r}")
        kind, sep, name = model_id.partition(":")
        if kind == "adapter" and sep:
            folder = self.bank.resolve(name)
            return ModelRef(f"adapter:{name}", "adapter", folder)
        if kind == "policy" and sep:
            run_name, slash, rnd = name.rpartition("/")
            if not slash or not rnd.isdigit() or len(rnd) > 6:
                raise BadName(f"bad model {model_id!r}: expected policy:<run>/<round>")
            run_path = self.run_path(run_name)
            folder = os.path.join(run_path, "rounds", str(int(rnd)), "policy")
            if not os.path.isfile(os.path.join(folder, "meta_000000.json")):
                raise NotFound(f"run {run_name!r} has no saved policy for round {int(rnd)}")
            return ModelRef(f"policy:{run_name}/{int(rnd)}", "policy", run_path, int(rnd))
        raise BadName(f"bad model {model_id!r}: expected base, adapter:<name> or policy:<run>/<round>")

    def run_path(self, name: str) -> str:
        """The directory of run `name` inside --runs-dir (BadName / NotFound otherwise)."""
        if not self.runs_dir:
            raise NotFound(f"run {name!r}: no runs folder is configured (--runs-dir)")
        path = resolve_inside(self.runs_dir, name, "run name", max_depth=1)
        if not os.path.isdir(path) or not any(os.path.exists(os.path.join(path, f))
                                              for f in ("config.json", "results.json")):
            raise NotFound(f"run {name!r} not found in {self.runs_dir}")
        return path

    def run_names(self) -> list[str]:
        """Run directories (holding config.json or results.json) under --runs-dir, newest first."""
        if not self.runs_dir or not os.path.isdir(self.runs_dir):
            return []
        names = []
        for entry in os.scandir(self.runs_dir):
            if entry.is_dir(follow_symlinks=False) and any(
                    os.path.exists(os.path.join(entry.path, f)) for f in ("config.json", "results.json")):
                names.append((entry.stat().st_mtime, entry.name))
        return [name for _, name in sorted(names, reverse=True)]

    def policy_rounds(self, run_path: str) -> list[int]:
        """Rounds of a run with a saved policy (rounds/<i>/policy/meta_000000.json), ascending."""
        folder = os.path.join(run_path, "rounds")
        if not os.path.isdir(folder):
            return []
        return sorted(int(d) for d in os.listdir(folder)
                      if d.isdigit() and os.path.isfile(os.path.join(folder, d, "policy", "meta_000000.json")))

    def models(self) -> list[dict]:
        """Every model the UI can pick: the base, each adapter, each saved round policy of each run."""
        out = [{"id": "base", "kind": "base", "label": f"base ({os.path.basename(self.meta['checkpoint_dir'])})"}]
        out += [{"id": f"adapter:{n}", "kind": "adapter", "label": f"adapter {n}"} for n in self.bank.names()]
        for run_name in self.run_names():
            for rnd in self.policy_rounds(os.path.join(self.runs_dir, run_name)):
                out.append({"id": f"policy:{run_name}/{rnd}", "kind": "policy", "label": f"{run_name} round {rnd}"})
        return out

    # ------------------------------------------------------------------ round policies

    def _policy(self, run_path: str, rnd: int) -> torch.nn.Module:
        """A round's policy, from the cache or loaded (nanoseal.seal.run.load_round_policy); LRU-bounded."""
        from nanoseal.seal.run import load_round_policy

        key = (run_path, rnd)
        if key in self.policies:
            self.policies.move_to_end(key)
            return self.policies[key]
        model = load_round_policy(run_path, rnd, self.device)
        if model is None:
            raise NotFound(f"{run_path}: no saved policy for round {rnd}")
        if model.config.vocab_size != self.model.config.vocab_size:
            raise NanosealError(f"round {rnd} policy of {os.path.basename(run_path)} has vocab_size "
                                f"{model.config.vocab_size}, the served base {self.model.config.vocab_size}: "
                                "serve its own base checkpoint")
        model.eval()
        self.policies[key] = model
        self.count("policy_loads")
        while len(self.policies) > self.max_policies:
            self.policies.popitem(last=False)
        return model

    # ------------------------------------------------------------------ ARC predictions

    def predict(self, session: Session, task, views: int, seed: int = 0) -> list[list]:
        """Voted attempts per test input (up to 2 grids each) of the session's model, by nanoseal.seal.ttt.predict.

        ttt.predict routes rows to LoRA adapters; a model without LoRA layers gets a rank-1 LoRA for the
        call and its row is routed to the base (-1), which leaves its outputs untouched.
        """
        from nanoseal.lora import apply_lora, lora_layers, remove_lora
        from nanoseal.seal.ttt import TTTConfig, predict

        cfg = TTTConfig(max_views=views, dtype=self.dtype, style="compact")
        model = session.model
        max_len = model.config.sequence_len
        with torch.inference_mode(), (self.bank.base_context() if session.ref.kind == "base"
                                      else contextlib.nullcontext()):
            if lora_layers(model):
                rows = [0] if session.ref.kind == "adapter" else [-1]
                return predict(model, session.tokenizer, task, rows, cfg, max_len, seed)[0]
            with torch.random.fork_rng(devices=[]):
                apply_lora(model, rank=1, alpha=1, targets=["c_q"])
            try:
                return predict(model, session.tokenizer, task, [-1], cfg, max_len, seed)[0]
            finally:
                remove_lora(model)

    # ------------------------------------------------------------------ status

    def stats(self) -> dict:
        """Counters, queue state and caches for /stats."""
        with self._gate_lock:
            admitted, counters = self._admitted, dict(self.counters)
        running = 1 if self._run_lock.locked() else 0
        return {
            **counters,
            "running": running,
            "waiting": max(0, admitted - running),
            "queue_limit": self.limits.max_queue,
            "active_adapter": self.bank.label(),
            "adapters_cached": len(self.bank.cache),
            "adapter_loads": self.bank.loads,
            "policies_cached": [f"{os.path.basename(p)}/{r}" for p, r in self.policies],
            "uptime_s": round(time.time() - self.started, 1),
        }
