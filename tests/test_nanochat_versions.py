"""Every nanochat architecture version: the real nanochat checkpoint (92d63d4) reproduced, version detection from the
weights with one-line errors for the rest, KV-cache decoding and packed rows under sliding windows and smear, LoRA,
TTT and pretraining on the new architecture."""

import json
import os

import pytest
import torch

from nanoseal.checkpoint import build_model, load_model, save_checkpoint
from nanoseal.cli import main
from nanoseal.common import NanosealError
from nanoseal.engine import Engine, KVCache
from nanoseal.lora import (
    adapter_parameters,
    adapter_routing,
    apply_lora,
    base_fingerprint,
    load_adapter,
    lora_layers,
    merge_lora,
    remove_lora,
    save_adapter,
    unmerge_lora,
)
from nanoseal.models.nanochat import GPT, GPTConfig, doc_segments, target_queries, window_sizes
from nanoseal.models.nanochat_versions import ARCHS, DEFAULT_ARCH, LATEST_ARCH

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "nanochat_92d63d4")
V = 128


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()


def make_model(arch: str = LATEST_ARCH, seed: int = 0, vocab_size: int = V, **overrides) -> GPT:
    """A random model of a version with every parameter perturbed (zero-initialised gates and scalars included)."""
    kwargs = dict(sequence_len=256, vocab_size=vocab_size, n_layer=3, n_head=4, n_kv_head=2, n_embd=64,
                  window_pattern="SL" if ARCHS[arch].short_window else "L", arch=arch)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**kwargs))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def write_checkpoint(base: str, tokenizer, state: dict, model_config: dict, step: int = 1) -> str:
    """A nanochat base dir holding one checkpoint."""
    tokenizer.save(os.path.join(base, "tokenizer"))
    save_checkpoint(os.path.join(base, "base_checkpoints", "d3"), step, state, None,
                    {"model_config": model_config, "step": step})
    return base


# -----------------------------------------------------------------------------
# the real nanochat checkpoint


@pytest.fixture(scope="module")
def reference():
    with open(os.path.join(FIXTURE, "reference.json")) as f:
        return json.load(f)


def test_nanochat_checkpoint_logits_and_greedy_decode(reference):
    model, tok, meta = load_model(FIXTURE)
    assert meta["arch"] == LATEST_ARCH and meta["step"] == 11
    assert sorted(model.state_dict()) == sorted(reference["keys"]) and model.num_params() == reference["n_params"]
    ids = reference["ids"]
    assert tok.encode(reference["prompt"], prepend="<|bos|>") == ids
    assert len(ids) - 1 > window_sizes(model.config)[0], "the prompt reaches past the short window"
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0]  # (T, vocab)
    for row, key in ((0, "logits_first"), (-1, "logits_last")):
        err = rel(logits[row], torch.tensor(reference[key]))
        assert err < 1e-4, f"{key}: relative error {err:.2e}"
    assert abs(logits.sum().item() - reference["logits_sum"]) < 1e-4 * logits.abs().sum().item()
    assert abs(logits.abs().max().item() - reference["logits_absmax"]) < 1e-5
    n_new = len(reference["greedy_ids"]) - len(ids)
    seqs, _ = Engine(model, tok).generate_batch(ids, num_samples=2, max_tokens=n_new, temperature=0.0)
    assert seqs[0] == reference["greedy_ids"] and seqs[1] == reference["greedy_ids"]


def test_nanochat_checkpoint_under_bf16_autocast(reference):
    model, tok, _ = load_model(FIXTURE)
    ids = reference["ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids]))
        model.transformer.wte.to(torch.bfloat16)  # as nanochat keeps them on a GPU
        for table in model.value_embeds.values():
            table.to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.tensor([ids]))
            n_new = len(reference["greedy_ids"]) - len(ids)
            seqs, _ = Engine(model, tok).generate_batch(ids, num_samples=1, max_tokens=n_new, temperature=0.0)
    assert out.dtype == torch.bfloat16 and rel(out.float(), ref) < 0.02
    assert seqs[0] == reference["greedy_ids"]


def test_nanochat_checkpoint_chats_from_the_cli(capsys):
    assert main(["chat", "--checkpoint", FIXTURE, "-p", "Hello", "--max-tokens", "6", "-t", "0"]) == 0
    assert capsys.readouterr().out.endswith("\n")


# -----------------------------------------------------------------------------
# detection


@pytest.mark.parametrize("arch", list(ARCHS))
def test_detection_table_every_version_round_trips(tmp_path, tokenizer, arch):
    vocab = tokenizer.get_vocab_size() + 10  # 330: not a multiple of 64, so padding shows in the shapes
    model = make_model(arch, vocab_size=vocab)
    assert model.transformer.wte.weight.size(0) == (384 if ARCHS[arch].pad_vocab == 64 else 330)
    write_checkpoint(str(tmp_path), tokenizer, model.state_dict(), model.config.to_dict())
    loaded, _, meta = load_model(str(tmp_path))
    assert meta["arch"] == arch  # detected from the weights (2026-03-02 from its model_config's arch)
    assert loaded.config == model.config
    idx = torch.randint(0, vocab, (2, 40))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model(idx))


def test_undetectable_version_needs_the_arch_and_it_must_fit(tmp_path, tokenizer):
    model = make_model("nanochat-2026-03-02", vocab_size=tokenizer.get_vocab_size())
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # logits past 15, where the two softcaps differ
    config = model.config.to_dict()
    assert config.pop("arch") == "nanochat-2026-03-02"  # as nanochat wrote it: no arch
    base = write_checkpoint(str(tmp_path), tokenizer, model.state_dict(), config)
    detected, _, meta = load_model(base)
    assert meta["arch"] == "nanochat-2026-01-16"  # the same weights, softcap 15
    given, _, meta = load_model(base, arch="nanochat-2026-03-02")
    assert meta["arch"] == "nanochat-2026-03-02"
    idx = torch.randint(0, 320, (1, 30))
    with torch.no_grad():
        assert torch.equal(given(idx), model(idx))
        assert given(idx).abs().max() > 15.0 >= detected(idx).abs().max()
    assert base_fingerprint(given) != base_fingerprint(detected)  # an adapter knows which one it was trained on
    with pytest.raises(NanosealError, match="--arch nanochat-2026-03-14 does not fit .*nanochat-2026-01-16 detected"):
        load_model(base, arch="nanochat-2026-03-14")
    with pytest.raises(NanosealError, match="unknown architecture 'gpt5'"):
        load_model(base, arch="gpt5")


def test_arch_flag_on_the_command_line(tmp_path, tokenizer, capsys):
    model = make_model("nanochat-2026-01-16", vocab_size=tokenizer.get_vocab_size())
    base = write_checkpoint(str(tmp_path), tokenizer, model.state_dict(), model.config.to_dict())
    chat = ["chat", "--checkpoint", base, "-p", "Hi", "--max-tokens", "4", "-t", "0"]
    assert main(chat + ["--arch", "nanochat-2026-03-02"]) == 0
    capsys.readouterr()
    assert main(chat + ["--arch", "nanochat-2026-03-14"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit these weights" in err and "nanochat-2026-03-02" in err


def test_transformers_conversion_refuses_later_versions():
    pytest.importorskip("transformers")
    from nanoseal.interop import to_transformers

    with pytest.raises(NanosealError, match="implements nanochat-2025-10-13 only, not nanochat-2026-03-14"):
        to_transformers(make_model())


def _damage(state: dict, config: dict, what: str) -> None:
    if what == "lowrank_value_embed":  # 2026-01-16, hours: one low-rank value embedding + v0_lambdas
        for k in [k for k in state if k.startswith("value_embeds") or "ve_gate" in k]:
            del state[k]
        state["value_embed_A.weight"], state["value_embed_B.weight"] = torch.zeros(320, 32), torch.zeros(32, 32)
        state["v0_lambdas"] = torch.zeros(3)
    elif what == "engram":  # 2026-01-25..28: hashed bigram embeddings
        state["bigram_embed.embed.weight"], state["bigram_lambdas"] = torch.zeros(1500, 64), torch.zeros(3)
    elif what == "gate_width":
        for k in [k for k in state if "ve_gate" in k]:
            state[k] = torch.zeros(2, 20)
    elif what == "smear_on_wide_gate":
        for k in [k for k in state if "ve_gate" in k]:
            state[k] = torch.zeros(2, 32)
    elif what == "half_lambdas":
        del state["x0_lambdas"]
    elif what == "vocab_rows":
        state["transformer.wte.weight"] = torch.zeros(333, 64)
    elif what == "window_pattern":
        config["window_pattern"] = "SXL"
    elif what == "ve_layers":  # value embeddings on every layer
        state["value_embeds.1.weight"] = state["value_embeds.0.weight"].clone()


@pytest.mark.parametrize("what, arch, match", [
    ("lowrank_value_embed", LATEST_ARCH, "later nanochat architecture .*found .*v0_lambdas, value_embed_A"),
    ("engram", LATEST_ARCH, "later nanochat architecture .*found .*bigram_embed.embed"),
    ("gate_width", LATEST_ARCH, r"attn.ve_gate \(20 wide\).*supported: nanochat-2025-10-13"),
    ("smear_on_wide_gate", LATEST_ARCH, r"attn.ve_gate \(32 wide\).*smear_gate"),
    ("half_lambdas", "nanochat-2026-01-11", "no supported version has .found resid_lambdas."),
    ("vocab_rows", "nanochat-2025-10-13", "333 rows for vocab_size 320: expected 320 .nanochat-2025-10-13 or -12-09.$"),
    ("window_pattern", LATEST_ARCH, "window_pattern 'SXL': use the letters S and L only"),
    ("ve_layers", LATEST_ARCH, r"does not match model_config.*unexpected \['value_embeds.1.weight'\]"),
])
def test_unsupported_weights_give_one_line_errors(tmp_path, tokenizer, capsys, what, arch, match):
    model = make_model(arch, vocab_size=tokenizer.get_vocab_size())
    state, config = model.state_dict(), model.config.to_dict()
    _damage(state, config, what)
    base = write_checkpoint(str(tmp_path), tokenizer, state, config)
    with pytest.raises(NanosealError, match=match) as e:
        load_model(base)
    assert "\n" not in str(e.value) and "model_000001.pt" in str(e.value)
    assert main(["chat", "--checkpoint", base, "-p", "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# -----------------------------------------------------------------------------
# decoding and packed rows under sliding windows and smear


@pytest.mark.parametrize("arch", ["nanochat-2026-01-16", LATEST_ARCH])
def test_kv_cache_decode_equals_full_recomputation_past_the_windows(arch):
    model = make_model(arch, sequence_len=256)  # S = 128, L = 256: both bind before position 300
    assert window_sizes(model.config) == [128, 256, 256]
    idx = torch.randint(0, V, (2, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)
        unwindowed = make_model(arch, sequence_len=256, window_pattern="L")(idx)
        later = slice(140, None)  # the windows change what these positions see
        assert rel(full[:, :128], unwindowed[:, :128]) < 1e-6 and rel(full[:, later], unwindowed[:, later]) > 1e-3
        cache = KVCache(2, 2, 16, 16, 3)  # small: grows
        parts = [model(idx[:, :100], kv_cache=cache), model(idx[:, 100:170], kv_cache=cache)]  # prefill, chunk
        parts += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(170, 300)]  # one token at a time
    assert cache.get_pos() == 300
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", [DEFAULT_ARCH, "nanochat-2026-01-16", LATEST_ARCH])
@pytest.mark.parametrize("n_layer", [1, 2, 3])
def test_last_only_prefill_equals_the_full_forward_and_fills_the_cache(arch, n_layer):
    # last_only computes the last layer for the last position alone: same logits, same cache, the same decode after
    model = make_model(arch, sequence_len=128, n_layer=n_layer)  # windows bind past position 64 (S = 64)
    idx = torch.randint(0, V, (2, 150), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
        for T0 in (0, 40):  # a prefill from empty, and a chunk after cached tokens
            cache, ref = KVCache(2, 2, 160, 16, n_layer), KVCache(2, 2, 160, 16, n_layer)
            if T0:
                model(idx[:, :T0], kv_cache=cache), model(idx[:, :T0], kv_cache=ref)
            last = model(idx[:, T0:140], kv_cache=cache, last_only=True)
            model(idx[:, T0:140], kv_cache=ref)
            assert last.shape == (2, 1, V)
            torch.testing.assert_close(last[:, 0], full[:, 139], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(cache.kv_cache[:, :, :, :, :140], ref.kv_cache[:, :, :, :, :140])
            steps = [model(idx[:, t:t + 1], kv_cache=cache)[:, 0] for t in range(140, 150)]
            torch.testing.assert_close(torch.stack(steps, 1), full[:, 140:150], rtol=1e-4, atol=1e-5)
        no_cache = model(idx[:, :140], last_only=True)  # without a cache too
        torch.testing.assert_close(no_cache[:, 0], full[:, 139], rtol=1e-4, atol=1e-5)


def test_prefill_replicates_the_smear_state():
    model = make_model()
    prompt = torch.randint(0, V, (1, 150))
    one = KVCache(1, 2, 160, 16, 3)
    with torch.no_grad():
        model(prompt, kv_cache=one)
        many = KVCache(3, 2, 160, 16, 3)
        many.prefill(one)
        assert many.prev_embedding.shape == (3, 1, 64)
        nxt = torch.randint(0, V, (3, 1))
        out = model(nxt, kv_cache=many)[:, -1]
        for r in range(3):
            ref = model(torch.cat([prompt, nxt[r:r + 1]], 1))[:, -1]
            torch.testing.assert_close(out[r:r + 1], ref, rtol=1e-4, atol=1e-5)
    one.reset()
    assert one.prev_embedding is None and one.get_pos() == 0


@pytest.mark.parametrize("rows", [1, 2])
def test_packed_documents_equal_separate_rows_under_windows(rows):
    model = make_model()
    lens = [[170, 140]] if rows == 1 else [[170, 140], [200, 60, 50]]
    T = 320
    idx = torch.randint(0, V, (rows, T), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, V, (rows, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        packed = model(idx, targets, loss_reduction="none", doc_lens=lens).view(rows, T)
        for r, row_lens in enumerate(lens):
            start = 0
            for n in row_lens:
                alone = model(idx[r:r + 1, start:start + n], targets[r:r + 1, start:start + n],
                              loss_reduction="none")
                torch.testing.assert_close(packed[r, start:start + n], alone, rtol=1e-4, atol=1e-5)
                start += n


@pytest.mark.parametrize("arch", [DEFAULT_ARCH, "nanochat-2026-01-16", LATEST_ARCH])
def test_packed_row_with_output_only_targets_equals_the_full_computation(arch):
    # a TTT row whose targets are each document's tail: the last layer computes from each first target on; loss and
    # every gradient equal those of separate rows (which compute every position)
    model = make_model(arch, sequence_len=256).train()  # windows of 128 bind inside the 170-token document
    lens, T = [170, 90, 40], 320  # 20 positions of padding at the end
    idx = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(3))
    targets = torch.full((1, T), -1)
    for e, f in ((170, 150), (260, 230), (300, 290)):  # output tails; the prompts have no target
        targets[0, f:e] = torch.randint(0, V, (e - f,), generator=torch.Generator().manual_seed(e))
    assert target_queries(doc_segments([lens], T)[0][0], targets[0]).spans == [(0, 170, 150), (170, 260, 230),
                                                                               (260, 300, 290)]
    packed = model(idx, targets, loss_reduction="none", doc_lens=[lens]).view(T)
    packed.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    alone = [model(idx[:, s:e], targets[:, s:e], loss_reduction="none") for s, e in ((0, 170), (170, 260), (260, 300))]
    torch.cat(alone).sum().backward()
    torch.testing.assert_close(packed[:300], torch.cat(alone), rtol=1e-4, atol=1e-5)
    assert (packed[300:] == 0).all()
    for n, p in model.named_parameters():
        if p.grad is not None or n in grads:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)
    every = targets.clone()
    every[0, :300] = torch.randint(0, V, (300,), generator=torch.Generator().manual_seed(4))
    assert target_queries(doc_segments([lens], T)[0][0], every[0]) is None  # a loss on every token: all positions


# -----------------------------------------------------------------------------
# LoRA, TTT, pretraining


@pytest.mark.parametrize("targets", [None, ["c_q", "c_v", "c_fc", "mlp.c_proj", "ve_gate"]])
def test_lora_identity_merge_and_routing(targets):
    model = make_model()
    idx = torch.randint(0, V, (2, 150))
    with torch.no_grad():
        ref = model(idx)
        apply_lora(model, rank=4, alpha=8, targets=targets, n_adapters=2)
        assert len(lora_layers(model)) == (18 if targets is None else 14)  # 6 x 3 layers; 4 x 3 + 2 gates
        with adapter_routing(model, torch.tensor([0, 1])):
            assert torch.equal(model(idx), ref)  # B = 0: exactly the base model
        g = torch.Generator().manual_seed(3)
        for p in adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        with adapter_routing(model, torch.tensor([1, -1])):
            routed = model(idx)
        assert rel(routed[0], ref[0]) > 1e-2 and torch.equal(routed[1], ref[1])
        with adapter_routing(model, torch.tensor([1, 1])):
            adapted = model(idx)
        merge_lora(model, adapter_index=1)
        assert rel(model(idx), adapted) < 1e-5
        unmerge_lora(model)
        remove_lora(model)
        assert rel(model(idx), ref) < 1e-6


def test_adapter_files_load_in_peft_on_the_new_architecture(tmp_path):
    peft = pytest.importorskip("peft")
    model = make_model()
    apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.normal_(0, 0.2)
    folder = str(tmp_path / "adapter")
    save_adapter(model, folder)
    idx = torch.randint(0, V, (2, 150))
    with torch.no_grad():
        ours = model(idx)
        theirs = peft.PeftModel.from_pretrained(make_model(), folder)(idx)
        plain = make_model()
        load_adapter(plain, folder)
        assert rel(theirs, ours) < 1e-5 and rel(plain(idx), ours) < 1e-6
        assert rel(ours, make_model()(idx)) > 1e-2, "the adapter must matter"
    with pytest.raises(NanosealError, match="another base model"):
        load_adapter(make_model("nanochat-2026-03-09"), folder)


def test_ttt_batched_equals_sequential_on_the_new_architecture(tokenizer):
    from nanoseal.arc.gen import make_task
    from nanoseal.seal.selfedit import SelfEdit
    from nanoseal.seal.ttt import TTTConfig, run_ttt

    model = make_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=512)  # S = 128: long rows cross it
    task = make_task("flip_lr", seed=1)
    edits = [SelfEdit(True, False, False, False, "train_using_output_tokens", 1e-3, 1),
             SelfEdit(False, False, False, False, "train_using_all_tokens", 5e-3, 2)]
    cfg = TTTConfig(n_max=6, rank=4, alpha=8, max_views=2, batched=True)
    batched, _ = run_ttt(model, tokenizer, task, edits, cfg, seed=0)
    sequential, _ = run_ttt(model, tokenizer, task, edits, TTTConfig(**{**cfg.__dict__, "batched": False}), seed=0)
    for b, s in zip(batched, sequential):
        assert b.steps == s.steps > 0 and len(b.loss_curve) == b.steps
        torch.testing.assert_close(torch.tensor(b.loss_curve), torch.tensor(s.loss_curve), rtol=1e-4, atol=1e-4)


def test_seal_loop_on_the_latest_architecture(tmp_path, tokenizer):
    model = make_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048, n_layer=2)
    base = str(tmp_path / "base")
    tokenizer.save(os.path.join(base, "tokenizer"))
    save_checkpoint(os.path.join(base, "base_checkpoints", "d2"), 1, model.state_dict(), None,
                    {"model_config": model.config.to_dict(), "step": 1})
    run_dir = str(tmp_path / "run")
    assert main(["seal", "--checkpoint", base, "--run-dir", run_dir, "--tasks", "flip_lr-1", "--eval-tasks",
                 "transpose-3", "--rounds", "1", "--self-edits", "2", "--n-max", "4", "--max-views", "1",
                 "--no-oracle", "--seed", "0"]) == 0
    with open(os.path.join(run_dir, "results.json")) as f:
        assert json.load(f)["methods"]["seal"]["n_tasks"] == 1
    policy, _ = build_model(os.path.join(run_dir, "rounds", "1", "policy"), 0)
    assert policy.config == model.config  # the round's policy is saved and reloaded as the same version


def test_web_ui_streams_a_reply_from_the_nanochat_checkpoint(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from nanoseal.web.app import create_app
    from nanoseal.web.hub import ModelHub

    hub = ModelHub.load(FIXTURE, device="cpu", adapters_dir=str(tmp_path / "adapters"), runs_dir=str(tmp_path))
    with TestClient(create_app(hub)) as client:
        body = {"messages": [{"role": "user", "content": "0 1 2"}], "temperature": 0.0, "max_tokens": 8}
        resp = client.post("/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == {"done": True} and not any("error" in e for e in events) and len(events) > 1


def test_micro_pretrain_with_the_latest_architecture(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(tmp_path))
    assert main(["pretrain", "--preset", "micro", "--arch", LATEST_ARCH, "--steps", "2"]) == 0
    model, tok, meta = load_model(str(tmp_path))
    assert meta["arch"] == LATEST_ARCH and meta["preset"]["arch"] == LATEST_ARCH and meta["step"] == 2
    assert model.config.window_pattern == "SSSL" and window_sizes(model.config) == [256, 1024]
    assert torch.isfinite(model(torch.tensor([tok.encode("0 1 2", prepend="<|bos|>")]))).all()
    capsys.readouterr()
    assert main(["pretrain", "--preset", "micro", "--steps", "2"]) == 2  # the default arch: not over this one
    assert "holds a nanochat-2026-03-14 model, not nanochat-2025-10-13" in capsys.readouterr().err
