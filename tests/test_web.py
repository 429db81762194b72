"""Tests of the web UI's API (nanoseal.web, FastAPI TestClient and a real uvicorn server) and of `nanoseal chat`'s
adapter switching, on a real tiny world: a checkpoint, adapters written by save_adapter (one trained to answer
"Hello" with "The quick brown fox") and a run directory made by the real `nanoseal seal` (a few seconds, once)."""

import copy
import http.client
import io
import json
import os
import shutil
import socket
import threading
import time

import pytest
import torch

from nanoseal.arc.gen import make_task
from nanoseal.chat import AdapterBank, BadName, conversation_tokens, resolve_inside, stream_text
from nanoseal.checkpoint import load_model, save_checkpoint
from nanoseal.cli import main
from nanoseal.engine import Engine
from nanoseal.lora import adapter_optimizer, apply_lora, load_adapter, lora_layers, save_adapter
from nanoseal.train.loop import pad_batch

from conftest import make_tiny_model

fastapi = pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from nanoseal.web.app import create_app  # noqa: E402
from nanoseal.web.hub import Limits, ModelHub  # noqa: E402

FOX = "The quick brown fox"
ANSWER = "flip_lr-6-answer"  # an adapter that memorised flip_lr-6's test answer
SEAL_FLAGS = ["--tasks", "flip_lr-6", "--eval-tasks", "flip_ud-8", "--rounds", "1", "--self-edits", "1",
              "--n-max", "4", "--max-views", "1", "--no-oracle", "--seed", "0"]
WORLD: dict = {}  # built once per session, shared with test_web_browser.py


def train_fox_adapter(model, tokenizer, folder: str) -> None:
    """A real LoRA adapter: 25 AdamW steps teaching the model to answer "Hello" with FOX, saved by save_adapter."""
    model = copy.deepcopy(model)
    params = apply_lora(model, rank=8, alpha=16, targets=["c_q", "c_v", "c_fc", "mlp.c_proj"])
    opt = adapter_optimizer(params, lr=5e-2)
    doc = tokenizer.render_conversation({"messages": [{"role": "user", "content": "Hello"},
                                                      {"role": "assistant", "content": FOX}]})
    x, y = pad_batch([doc], tokenizer.get_bos_token_id())
    model.train()
    for _ in range(25):
        model(x, y).backward()
        opt.step()
        opt.zero_grad()
    save_adapter(model, folder, metadata={"trained_on": "Hello -> " + FOX})


def train_answer_adapter(model, tokenizer, task, folder: str) -> None:
    """An adapter that memorised one task's answer (60 steps on its identity-view prompt + answer): it solves it."""
    from nanoseal.arc.prompts import few_shot_prompt
    from nanoseal.seal.ttt import count_tokens_fn

    model = copy.deepcopy(model)
    params = apply_lora(model, rank=8, alpha=16, targets=["c_q", "c_v", "c_fc", "mlp.c_proj"])
    opt = adapter_optimizer(params, lr=2e-2)
    conv = few_shot_prompt(task, 0, max_tokens=2048, count_tokens=count_tokens_fn(tokenizer), style="compact",
                           include_answer=True).conversation
    x, y = pad_batch([tokenizer.render_conversation(conv, max_tokens=2048)], tokenizer.get_bos_token_id())
    model.train()
    for _ in range(60):
        model(x, y).backward()
        opt.step()
        opt.zero_grad()
    save_adapter(model, folder, metadata={"memorised": task.id})


def random_adapter(model, folder: str, rank: int, targets: list[str], seed: int) -> None:
    """An adapter of another shape (B random, so it changes the outputs), saved by save_adapter."""
    model = copy.deepcopy(model)
    apply_lora(model, rank=rank, alpha=rank, targets=targets)
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0.0, 0.3)
    save_adapter(model, folder)


def build_world(tmp_path_factory, tokenizer) -> dict:
    """Checkpoint + adapters + a real seal run directory, built once per test session."""
    if WORLD:
        return WORLD
    root = tmp_path_factory.mktemp("web-world")
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    base = root / "base"
    tokenizer.save(str(base / "tokenizer"))
    save_checkpoint(str(base / "base_checkpoints" / "d2"), 1, model.state_dict(), None,
                    {"model_config": model.config.to_dict(), "step": 1})
    adapters = root / "adapters"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: on 2 busy cores a second thread made the seal run ~8x slower
    try:
        train_fox_adapter(model, tokenizer, str(adapters / "fox"))
        train_answer_adapter(model, tokenizer, make_task("flip_lr", 6), str(adapters / ANSWER))
        random_adapter(model, str(adapters / "nested" / "other"), rank=2, targets=["c_k", "c_v"], seed=1)
        foreign = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048, seed=5)
        random_adapter(foreign, str(adapters / "foreign"), rank=2, targets=["c_q"], seed=2)
        shutil.copytree(adapters / "fox", adapters / "broken")
        with open(adapters / "broken" / "adapter_model.safetensors", "r+b") as f:
            f.seek(200)
            f.write(b"\x00" * 64)  # flipped bytes: the sha256 in nanoseal.json no longer matches
        runs = root / "runs"
        t0 = time.time()
        assert main(["seal", "--checkpoint", str(base), "--run-dir", str(runs / "demo"), *SEAL_FLAGS]) == 0
    finally:
        torch.set_num_threads(threads)
    WORLD.update(root=root, base=str(base), adapters=str(adapters), runs=str(runs), run="demo",
                 seal_seconds=time.time() - t0)
    return WORLD


@pytest.fixture(scope="session")
def world(tmp_path_factory, tokenizer):
    return build_world(tmp_path_factory, tokenizer)


def make_hub(world, limits: Limits | None = None, runs: str | None = None, adapters: str | None = None,
             **kwargs) -> ModelHub:
    return ModelHub.load(world["base"], device="cpu", adapters_dir=adapters or world["adapters"],
                         runs_dir=runs or world["runs"], limits=limits, **kwargs)


@pytest.fixture(scope="module")
def client(world):
    with TestClient(create_app(make_hub(world))) as c:
        yield c


def events(resp) -> list[dict]:
    """The JSON payloads of an SSE body's `data: ` lines."""
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]


def reply(client, text: str, model: str | None = None, **kw) -> str:
    """Greedy reply to one user message through /chat/completions (asserts a clean stream)."""
    body = {"messages": [{"role": "user", "content": text}], "temperature": 0.0, "max_tokens": 24, **kw}
    if model is not None:
        body["model"] = model
    resp = client.post("/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    evs = events(resp)
    assert evs[-1] == {"done": True} and not any("error" in e for e in evs), evs
    return "".join(e["token"] for e in evs[:-1])


def direct_reply(model, tokenizer, text: str, max_tokens: int = 24) -> str:
    """The same greedy reply computed without the server."""
    with torch.inference_mode():
        return "".join(stream_text(Engine(model, tokenizer), conversation_tokens(tokenizer, [
            {"role": "user", "content": text}]), max_tokens, 0.0, None, 0))


# ----------------------------------------------------------------------------- page, health, models

def test_page_health_stats_and_models(client, world):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="chat-model"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["checkpoint"].endswith(os.path.join("base_checkpoints", "d2"))
    model, _, _ = load_model(world["base"])
    assert health["params"] == model.num_params() and health["sequence_len"] == 2048
    stats = client.get("/stats").json()
    assert stats["running"] == 0 and stats["limits"]["max_queue"] == 4 and "tokens_generated" in stats
    ids = [m["id"] for m in client.get("/api/models").json()["models"]]
    assert ids == ["base", "adapter:broken", f"adapter:{ANSWER}", "adapter:foreign", "adapter:fox",
                   "adapter:nested/other", "policy:demo/1"]


def test_unknown_routes_are_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.get("/chat/completions")
    assert r.status_code == 405 and "detail" in r.json()


# ----------------------------------------------------------------------------- chat

def test_chat_streams_the_models_tokens(client, world, tokenizer):
    resp = client.post("/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                  "temperature": 0.0, "max_tokens": 16, "top_k": 0})
    evs = events(resp)
    assert len(evs) >= 3 and evs[-1] == {"done": True}
    assert all(set(e) == {"token", "model"} and e["model"] == "base" for e in evs[:-1])
    model, tok, _ = load_model(world["base"])
    assert "".join(e["token"] for e in evs[:-1]) == direct_reply(model, tok, "hi", 16)
    # a multi-turn conversation in nanochat's format, sampled (seeded): two identical requests agree
    body = {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
                         {"role": "user", "content": "How are you?"}], "temperature": 1.0, "top_k": 20,
            "max_tokens": 12, "seed": 7}
    first, second = client.post("/chat/completions", json=body), client.post("/chat/completions", json=body)
    assert events(first) == events(second) and events(first)[-1] == {"done": True}


def test_adapter_switching_is_hot_and_exact(world, tokenizer):
    hub = make_hub(world)
    with TestClient(create_app(hub)) as c:
        base = reply(c, "Hello")
        assert reply(c, "Hello", "adapter:fox") == FOX  # the trained adapter answers as it was taught
        assert base != FOX
        other = reply(c, "Hello", "adapter:nested/other")  # another rank and other targets
        assert other not in (base, FOX)
        assert reply(c, "Hello", "adapter:fox") == FOX
        assert reply(c, "Hello", "base") == base == reply(c, "Hello")  # LoRA off for the base
        stats = c.get("/stats").json()
        assert stats["adapter_loads"] == 2 and stats["adapters_cached"] == 2  # each folder read once
        assert c.get("/health").json()["params"] == hub.base_params
        assert stats["chat_completed"] == 6 and stats["chat_errors"] == 0
    model, tok, _ = load_model(world["base"])
    assert direct_reply(model, tok, "Hello") == base
    load_adapter(model, os.path.join(world["adapters"], "nested", "other"))
    assert direct_reply(model, tok, "Hello") == other


def test_bad_adapters_are_refused_and_leave_the_base_usable(world):
    with TestClient(create_app(make_hub(world))) as c:
        base = reply(c, "Hello")
        r = c.post("/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}],
                                              "model": "adapter:foreign"})
        assert r.status_code == 400 and "trained on another base model" in r.json()["detail"]
        r = c.post("/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}],
                                              "model": "adapter:broken"})
        assert r.status_code == 400 and "sha256" in r.json()["detail"]
        r = c.post("/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}],
                                              "model": "adapter:missing"})
        assert r.status_code == 404 and "not found" in r.json()["detail"]
        assert reply(c, "Hello") == base and reply(c, "Hello", "adapter:fox") == FOX
        assert c.get("/stats").json()["running"] == 0


def test_round_policies_load_on_demand_and_are_cached(world, tmp_path):
    from nanoseal.seal.run import load_round_policy

    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(os.path.join(world["runs"], world["run"]), runs / name)
    hub = make_hub(world, runs=str(runs), max_policies=1)
    with TestClient(create_app(hub)) as c:
        got = reply(c, "Hello", "policy:a/1")
        policy = load_round_policy(str(runs / "a"), 1, "cpu")
        _, tok, _ = load_model(world["base"])
        assert got == direct_reply(policy, tok, "Hello")
        reply(c, "Hello", "policy:b/1")
        reply(c, "Hello", "policy:a/1")
        stats = c.get("/stats").json()
        assert stats["policy_loads"] == 3 and stats["policies_cached"] == ["a/1"]  # bounded: one kept
        for model, status in (("policy:a/7", 404), ("policy:a/x", 400), ("policy:a", 400), ("policy:../a/1", 400),
                              ("policy:zzz/1", 404), ("weird", 400)):
            r = c.post("/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "model": model})
            assert r.status_code == status, (model, r.text)


# ----------------------------------------------------------------------------- limits

MSG = {"role": "user", "content": "hi"}
LIMIT_CASES = [
    ({"messages": []}, "at least one message"),
    ({"messages": [MSG] * 501}, "too many messages: 501, at most 500"),
    ({"messages": [{"role": "user", "content": "x" * 8001}]}, "message 0 is too long: 8001 characters, at most 8000"),
    ({"messages": [{"role": "user", "content": "x" * 8000}] * 5}, "conversation is too long: 40000 characters"),
    ({"messages": [{"role": "system", "content": "be brief"}]}, "message 0 has role 'system'"),
    ({"messages": [{"role": "user", "content": ""}]}, "message 0 has empty content"),
    ({"messages": [MSG], "temperature": 2.5}, "temperature must be between 0 and 2.0"),
    ({"messages": [MSG], "temperature": -0.1}, "temperature must be between 0 and 2.0"),
    ({"messages": [MSG], "top_k": 201}, "top_k must be between 0 and 200"),
    ({"messages": [MSG], "top_k": -1}, "top_k must be between 0 and 200"),
    ({"messages": [MSG], "max_tokens": 0}, "max_tokens must be between 1 and 4096"),
    ({"messages": [MSG], "max_tokens": 4097}, "max_tokens must be between 1 and 4096"),
    ({"messages": [{"role": "user", "content": 5}]}, "body.messages.0.content"),
    ({"messages": "hello"}, "body.messages"),
    ({"messages": [{"role": "user", "content": "\u0436" * 3000}]}, "the model's context is 2048"),
]


@pytest.mark.parametrize("body,detail", LIMIT_CASES, ids=[d[:24] for _, d in LIMIT_CASES])
def test_chat_limits_are_400_with_one_line(client, body, detail):
    r = client.post("/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert detail in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert client.get("/stats").json()["running"] == 0


def test_invalid_json_and_oversized_body(world):
    with TestClient(create_app(make_hub(world, limits=Limits(max_body_bytes=2000)))) as c:
        r = c.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["detail"]
        r = c.post("/chat/completions", json={"messages": [{"role": "user", "content": "x" * 3000}]})
        assert r.status_code == 413 and "over 2000 bytes" in r.json()["detail"]
        assert reply(c, "Hello") != ""


def test_full_queue_gives_503(world):
    hub = make_hub(world, limits=Limits(max_queue=1))
    with TestClient(create_app(hub)) as c:
        assert hub.admit() and hub.admit()  # one running + one waiting: the queue is full
        assert not hub.admit()
        body = {"messages": [MSG], "max_tokens": 4}
        r = c.post("/chat/completions", json=body)
        assert r.status_code == 503 and r.json()["detail"].startswith("busy:")
        r = c.post("/api/predict", json={"task": "flip_lr-6", "views": 1})
        assert r.status_code == 503
        assert c.get("/stats").json()["rejected_busy"] == 3
        hub.leave()
        hub.leave()
        assert c.post("/chat/completions", json=body).status_code == 200


# ----------------------------------------------------------------------------- names stay inside their folders

def test_resolve_inside_refuses_escapes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert resolve_inside(str(tmp_path), "a/b") == os.path.realpath(tmp_path / "a" / "b")
    for bad in ("..", "../x", "a/../../x", "/etc", "~root", "a//b", "", ".hidden", "a\\..\\..\\x", "a/b/c/d/e"):
        with pytest.raises(BadName):
            resolve_inside(str(tmp_path), bad)
    os.symlink(tmp_path.parent, tmp_path / "up")
    with pytest.raises(BadName, match="outside its folder"):
        resolve_inside(str(tmp_path), "up")


def test_path_traversal_is_refused(client, world, tmp_path):
    chat = {"messages": [MSG]}
    for name in ("../adapters/fox", "/etc/passwd", "..", "nested/../../adapters/fox", "fox/../../x"):
        r = client.post("/chat/completions", json={**chat, "model": f"adapter:{name}"})
        assert r.status_code == 400 and "bad adapter name" in r.json()["detail"], name
    for path in ("/api/runs/%2e%2e", "/api/runs/%2e%2e/selfedits", "/api/runs/demo/plots/%2e%2e",
                 "/api/runs/demo/plots/config.json", "/api/tasks?source=run&run=%2e%2e"):
        r = client.get(path)
        assert r.status_code == 400 and r.json()["detail"].startswith("bad "), path
    for path in ("/api/runs/..%2f..%2fetc", "/api/runs/demo/plots/..%2fconfig.json", "/api/runs/%2fetc",
                 "/api/runs/nope", "/api/runs/demo/plots/missing.png"):
        assert client.get(path).status_code == 404, path
    for task in ("../../etc/passwd", "/etc/passwd", "x.json", "a/b"):
        r = client.get("/api/task", params={"id": task})
        assert r.status_code == 400 and "bad task id" in r.json()["detail"], task
    r = client.post("/api/predict", json={"task": "flip_ud-8", "run": "../runs/demo"})
    assert r.status_code == 400
    # symlinks that lead out of the folders are refused too
    outside = tmp_path / "outside"
    shutil.copytree(os.path.join(world["runs"], world["run"]), outside / "run")
    shutil.copytree(os.path.join(world["adapters"], "fox"), outside / "adapter")
    runs, adapters = tmp_path / "runs", tmp_path / "adapters"
    runs.mkdir()
    adapters.mkdir()
    os.symlink(outside / "run", runs / "escape")
    os.symlink(outside / "adapter", adapters / "escape")
    with TestClient(create_app(make_hub(world, runs=str(runs), adapters=str(adapters)))) as c:
        assert c.get("/api/runs/escape").status_code == 400
        assert c.post("/chat/completions", json={**chat, "model": "adapter:escape"}).status_code == 400
        assert c.get("/api/runs").json()["runs"] == []


# ----------------------------------------------------------------------------- ARC tasks and predictions

def test_task_lists_and_tasks(client):
    from nanoseal.arc.data import find_task
    from nanoseal.arc.gen import FAMILIES
    from nanoseal.web.data import task_json

    a1 = client.get("/api/tasks", params={"source": "arcagi1"}).json()["tasks"]
    assert len(a1) == 800 and {"id": "007bbfb7", "split": "train"} in a1
    a2 = client.get("/api/tasks", params={"source": "arcagi2"}).json()["tasks"]
    assert len(a2) == 1120
    fams = client.get("/api/tasks", params={"source": "families"}).json()["tasks"]
    assert [f["id"] for f in fams] == list(FAMILIES) and all(f["description"] for f in fams)
    run = client.get("/api/tasks", params={"source": "run", "run": "demo"}).json()["tasks"]
    assert run == [{"id": "flip_lr-6", "split": "train"}, {"id": "flip_ud-8", "split": "eval"}]
    assert client.get("/api/tasks", params={"source": "bogus"}).status_code == 400
    assert client.get("/api/tasks", params={"source": "run"}).status_code == 400

    t = client.get("/api/task", params={"id": "007bbfb7"}).json()
    assert t == task_json(find_task("007bbfb7")) and len(t["train"]) == 5
    assert client.get("/api/task", params={"id": "flip_lr-3"}).json() == task_json(make_task("flip_lr", 3))
    assert client.get("/api/task", params={"id": "flip_ud-8", "run": "demo"}).json()["split"] == "eval"
    r = client.get("/api/task", params={"id": "flip_lr-3", "run": "demo"})
    assert r.status_code == 404 and "not one of run" in r.json()["detail"]
    r = client.get("/api/task", params={"id": "zzzzzzzz"})
    assert r.status_code == 404 and "neither an ARC" in r.json()["detail"]


def test_predict_side_by_side_matches_the_ttt_code(client, world):
    from nanoseal.seal.ttt import TTTConfig, predict

    task = make_task("flip_lr", 6)
    truth = [list(r) for r in task.test[0][1]]
    cfg = TTTConfig(max_views=3, style="compact")
    for model_id in ("base", "adapter:fox", f"adapter:{ANSWER}"):
        r = client.post("/api/predict", json={"task": "flip_lr-6", "model": model_id, "views": 3})
        assert r.status_code == 200, r.text
        res = r.json()
        # the same inference (3 augmented views, inverse transforms, voting) called directly
        model, tok, _ = load_model(world["base"])
        if model_id == "base":
            apply_lora(model, rank=1, alpha=1, targets=["c_q"])
            expected = predict(model, tok, task, [-1], cfg, 2048, 0)[0]
        else:
            load_adapter(model, os.path.join(world["adapters"], model_id.removeprefix("adapter:")))
            expected = predict(model, tok, task, [0], cfg, 2048, 0)[0]
        assert res["model"] == model_id and res["views"] == 3 and res["task"] == "flip_lr-6"
        assert [t["attempts"] for t in res["tests"]] == expected
        assert res["tests"][0]["correct"] == [g == truth for g in expected[0]]
        assert res["solved"] == any(res["tests"][0]["correct"])
    assert res["solved"] and res["tests"][0]["attempts"][0] == truth and res["cell_accuracy"] == 1.0  # memorised
    r = client.post("/api/predict", json={"task": "flip_ud-8", "run": "demo", "model": "policy:demo/1", "views": 1})
    assert r.status_code == 200 and len(r.json()["tests"]) == 1
    for body, status in (({"task": "flip_lr-6", "views": 0}, 400), ({"task": "flip_lr-6", "views": 8}, 400),
                         ({"task": "flip_lr-6", "model": "adapter:nope"}, 404), ({"task": "nope_9"}, 404),
                         ({"model": "base"}, 400)):
        assert client.post("/api/predict", json=body).status_code == status, body


# ----------------------------------------------------------------------------- runs

def test_run_endpoints_show_the_real_run(client, world):
    from nanoseal.report import load_selfedits

    run_dir = os.path.join(world["runs"], world["run"])
    results = json.load(open(os.path.join(run_dir, "results.json")))
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs["runs"]] == ["demo"] and runs["runs"][0]["results"]
    assert runs["runs"][0]["policies"] == [1]
    s = client.get("/api/runs/demo").json()
    assert s["status"] == "finished" and s["config"]["tasks"] == "flip_lr-6" and s["policies"] == [1]
    assert [m["method"] for m in s["methods"]] == ["icl", "ttt_fixed", "ttt_selfedit_round0", "seal",
                                                    "seal_edits_round0_model"], "the report's order"
    for m in s["methods"]:
        assert {k: m[k] for k in results["methods"][m["method"]]} == results["methods"][m["method"]]
    assert s["rounds"] == results["rounds"]
    assert s["plots"] == sorted(os.listdir(os.path.join(run_dir, "plots"))) and len(s["plots"]) == 3
    png = client.get(f"/api/runs/demo/plots/{s['plots'][0]}")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG") and png.headers["content-type"] == "image/png"
    rows = load_selfedits(run_dir)
    page = client.get("/api/runs/demo/selfedits").json()
    assert page["total"] == len(rows) == 6 and page["tasks"] == ["flip_lr-6", "flip_ud-8"]  # + SEAL's edit on round 0
    assert [r["key"] for r in page["rows"]] == [r["key"] for r in rows]
    assert [r["reward"] for r in page["rows"]] == [r["reward"] for r in rows]
    fixed = next(r for r in page["rows"] if r["method"] == "ttt_fixed")
    assert fixed["self_edit"]["training"]["num_train_epochs"] >= 1  # the fixed recipe is a valid self-edit
    one = client.get("/api/runs/demo/selfedits", params={"task": "flip_lr-6", "limit": 1}).json()
    assert one["total"] == 1 and one["rows"][0]["phase"] == "train"
    assert client.get("/api/runs/demo/selfedits", params={"phase": "eval"}).json()["total"] == 5
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert client.get("/api/runs/demo/selfedits", params=params).status_code == 400
    report = client.get("/api/runs/demo/report")
    assert report.status_code == 200 and report.text == open(os.path.join(run_dir, "report.md")).read()


def test_a_run_without_results_and_a_corrupt_one(world, tmp_path):
    runs = tmp_path / "runs"
    (runs / "fresh").mkdir(parents=True)
    shutil.copy(os.path.join(world["runs"], world["run"], "config.json"), runs / "fresh" / "config.json")
    shutil.copytree(os.path.join(world["runs"], world["run"]), runs / "corrupt")
    (runs / "corrupt" / "results.json").write_text("{oops")
    with TestClient(create_app(make_hub(world, runs=str(runs)))) as c:
        s = c.get("/api/runs/fresh").json()
        assert s["status"].startswith("no results yet") and s["methods"] == [] and s["config"]["rounds"] == 1
        assert c.get("/api/runs/fresh/selfedits").json()["total"] == 0
        assert c.get("/api/runs/fresh/report").status_code == 404
        r = c.get("/api/runs/corrupt")
        assert r.status_code == 400 and "corrupt results file" in r.json()["detail"]


# ----------------------------------------------------------------------------- a real server: disconnects, queue

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(world):
    """A real uvicorn server in a thread, with no queue behind the running generation."""
    import uvicorn

    hub = make_hub(world, limits=Limits(max_queue=0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(hub), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield port, hub
    server.should_exit = True
    thread.join(timeout=10)


def long_prompt(world) -> str:
    """A prompt whose greedy reply runs 300 tokens without stopping (checked, not assumed)."""
    model, tok, _ = load_model(world["base"])
    stops = {tok.encode_special("<|assistant_end|>"), tok.get_bos_token_id()}
    for prompt in ("hi", "Tell me a long story", "0123456789", "Hello, how are you?"):
        ids = conversation_tokens(tok, [{"role": "user", "content": prompt}])
        with torch.inference_mode():
            out = Engine(model, tok).generate_batch(ids, max_tokens=300, temperature=0.0)[0][0][len(ids):]
        if len(out) == 300 and not stops & set(out):
            return prompt
    pytest.skip("no candidate prompt keeps the tiny model talking for 300 tokens")


def test_disconnect_stops_generation_and_queue_overflow_is_503(live, world):
    port, hub = live
    prompt = long_prompt(world)
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "temperature": 0.0, "max_tokens": 4096})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.readline()
    assert first.startswith(b"data: ") and "token" in json.loads(first[6:])
    # the model is busy and max_queue=0: a second generation is turned away at once
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    other.request("POST", "/chat/completions", body=body, headers={"Content-Type": "application/json"})
    busy = other.getresponse()
    assert busy.status == 503 and json.loads(busy.read())["detail"].startswith("busy:")
    other.close()
    # raw paths with '..' reach the server unnormalised: still nothing outside the folders
    for path in ("/static/../app.py", "/static/..%2fapp.py", "/api/runs/../../etc/passwd"):
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        other.request("GET", path)
        r = other.getresponse()
        assert r.status == 404 and b"import" not in r.read(), path
        other.close()
    conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-stream
    conn.close()
    deadline = time.time() + 20
    while time.time() < deadline and (hub.stats()["running"] or not hub.counters["chat_cancelled"]):
        time.sleep(0.05)
    stats = hub.stats()
    assert stats["running"] == 0 and stats["chat_cancelled"] == 1 and stats["chat_completed"] == 0
    assert 1 <= stats["tokens_generated"] < 4096  # stopped early, not run to max_tokens
    ok = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # and the model is free again
    ok.request("POST", "/chat/completions", body=json.dumps({"messages": [MSG], "max_tokens": 3}),
               headers={"Content-Type": "application/json"})
    r = ok.getresponse()
    assert r.status == 200 and r.read().rstrip().endswith(b'data: {"done": true}')


# ----------------------------------------------------------------------------- CLIs

def test_chat_cli_adapter_flag_and_switch_command(world, tokenizer, capsys, monkeypatch):
    fox = os.path.join(world["adapters"], "fox")
    assert main(["chat", "--checkpoint", world["base"], "--adapter", fox, "-p", "Hello", "-t", "0",
                 "--max-tokens", "24"]) == 0
    assert capsys.readouterr().out == FOX + "\n"
    lines = "/adapter\n/adapter fox\nHello\n/adapter ../fox\n/adapter nope\n/adapter base\nclear\nHello\nquit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["chat", "--checkpoint", world["base"], "--adapters-dir", world["adapters"], "-t", "0",
                 "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    assert f"adapters: broken, {ANSWER}, foreign, fox, nested/other" in out
    assert "(adapter fox)" in out and f"Assistant: {FOX}\n" in out
    assert "(error: bad adapter name '../fox'" in out and "(error: adapter 'nope' not found" in out
    model, tok, _ = load_model(world["base"])
    assert "(base model)" in out and f"Assistant: {direct_reply(model, tok, 'Hello')}\n" in out
    assert main(["chat", "--checkpoint", world["base"], "--adapter", os.path.join(world["adapters"], "none"),
                 "-p", "Hi"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_adapter_bank_restores_the_base_after_a_failed_load(world):
    model, tok, _ = load_model(world["base"])
    bank = AdapterBank(model, world["adapters"])
    before = direct_reply(model, tok, "Hello")
    bank.activate(bank.resolve("fox"))
    with pytest.raises(Exception, match="another base model"):
        bank.activate(bank.resolve("foreign"))
    assert bank.active is None and bank.label() == "base"
    with bank.base_context():
        assert direct_reply(model, tok, "Hello") == before


def test_serve_cli_flags_and_errors(world, capsys):
    from nanoseal.cli import build_parser

    args = build_parser().parse_args(["serve", "--checkpoint", world["base"]])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_queue == 4
    assert main(["serve", "--checkpoint", world["base"], "--runs-dir", "/nonexistent/runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--runs-dir /nonexistent/runs: no such folder" in err
    assert main(["serve", "--checkpoint", world["base"], "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --port: expected an integer in [1, 65535], got '70000'" in err
