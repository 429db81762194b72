"""LoRA: identity at init, merge/unmerge, K-stacked routing, multi-adapter AdamW == K separate trainings,
adapter files (round trip, PEFT interop, refusals) and the seed's parameter-count estimate."""

import argparse
import copy
import json
import math
import os

import pytest
import torch

from nanoseal.common import NanosealError
from nanoseal.engine import KVCache
from nanoseal.lora import (
    DEFAULT_TARGETS,
    SEAL_TARGETS,
    LoRALinear,
    MultiAdapterAdamW,
    adapter_optimizer,
    adapter_parameters,
    adapter_routing,
    add_lora_info_args,
    apply_lora,
    base_fingerprint,
    base_state_dict,
    cosine_lr,
    load_adapter,
    lora_disabled,
    lora_info,
    lora_info_main,
    lora_layers,
    merge_lora,
    per_adapter_loss,
    remove_lora,
    reset_adapter,
    save_adapter,
    set_adapter_routing,
    target_matches,
    unmerge_lora,
)
from nanoseal.models.nanochat import GPTConfig

from conftest import make_tiny_model

V = 128  # vocabulary of the tiny test models


def tiny(seed: int = 0, dtype=torch.float32):
    """A tiny GQA GPT (2 layers, width 64, vocab 128) in eval mode, random output layers, in `dtype`."""
    return make_tiny_model(vocab_size=V, seed=seed).to(dtype)


def randomise_adapters(model, seed: int = 1, std: float = 0.2) -> None:
    """Give every adapter a non-zero B (and fresh A) so adapters change the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


def tokens(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Random token ids (B, T)."""
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# -----------------------------------------------------------------------------
# attach, identity, freezing, matching


def test_target_matching_rule():
    assert target_matches("transformer.h.0.attn.c_q", "c_q")
    assert target_matches("transformer.h.0.attn.c_q", "attn.c_q")
    assert target_matches("transformer.h.0.mlp.c_proj", "mlp.c_proj")
    assert not target_matches("transformer.h.0.attn.c_proj", "mlp.c_proj")
    assert not target_matches("transformer.h.0.attn.xc_q", "c_q")  # dot boundary only
    model = tiny()
    apply_lora(model, rank=4, targets=SEAL_TARGETS)
    names = sorted(lora_layers(model))
    assert names == sorted(f"transformer.h.{i}.{m}" for i in range(2)
                           for m in ("attn.c_q", "attn.c_v", "mlp.c_fc", "mlp.c_proj"))
    for bad, msg in ((["c_x"], "match no linear"), (["attn"], "not a linear"), ("c_q", "list")):
        with pytest.raises(NanosealError, match=msg):
            apply_lora(tiny(), targets=bad)


def test_identity_at_init_frozen_base_and_plain_keys():
    model = tiny()
    plain_keys = list(model.state_dict())
    fp = base_fingerprint(model)
    idx = tokens(2, 12)
    with torch.no_grad():
        ref = model(idx)
    params = apply_lora(model, rank=8, alpha=16)
    assert len(lora_layers(model)) == 2 * len(DEFAULT_TARGETS)
    with torch.no_grad():
        assert torch.equal(model(idx), ref)  # B = 0: exactly the base model
    assert list(base_state_dict(model)) == plain_keys
    assert base_fingerprint(model) == fp
    assert all(p.requires_grad for p in params) and len(params) == 2 * len(lora_layers(model))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in params}, "only adapters may be trainable"
    layer = model.transformer.h[0].attn.c_q
    assert isinstance(layer, LoRALinear) and layer.scaling == 2.0
    assert layer.lora_A.shape == (1, 8, 64) and layer.lora_B.shape == (1, 64, 8)
    assert torch.all(layer.lora_B == 0)
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(64) and layer.lora_A.std() > 0.3 / math.sqrt(64)
    with pytest.raises(NanosealError, match="already has LoRA"):
        apply_lora(model)
    rs = tiny()
    apply_lora(rs, rank=4, alpha=8, use_rslora=True)
    assert rs.transformer.h[0].mlp.c_fc.scaling == 8 / 2  # alpha / sqrt(r)


def test_merge_unmerge_remove_and_disabled():
    model = tiny()
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    idx = tokens(2, 10)
    with torch.no_grad():
        ref = model(idx)
    apply_lora(model, rank=4, alpha=8, targets=SEAL_TARGETS)
    randomise_adapters(model)
    with torch.no_grad():
        adapted = model(idx)
        assert rel_err(adapted, ref) > 1e-2, "random adapters must change the outputs"
        with lora_disabled(model):
            assert torch.equal(model(idx), ref)
        merge_lora(model)
        assert rel_err(model(idx), adapted) < 1e-5
        with pytest.raises(NanosealError, match="merged"):
            base_fingerprint(model)
        unmerge_lora(model)
        for k, v in base_state_dict(model).items():
            assert (v - base_weights[k]).abs().max() < 1e-6, k
        assert rel_err(model(idx), adapted) < 1e-6
        merged = copy.deepcopy(model)
        remove_lora(merged, merge=True)
        assert not lora_layers(merged) and isinstance(merged.transformer.h[0].attn.c_q, torch.nn.Linear)
        assert rel_err(merged(idx), adapted) < 1e-5
        remove_lora(model)  # un-merged: the base again (up to merge/unmerge rounding), trainable as before
        assert not lora_layers(model) and rel_err(model(idx), ref) < 1e-6
        assert list(model.state_dict()) == list(base_weights)
    assert all(p.requires_grad for p in model.parameters())


# -----------------------------------------------------------------------------
# K-stacked adapters


def test_routing_equals_single_adapters_outputs_and_grads():
    K, r = 3, 4
    multi = tiny()
    apply_lora(multi, rank=r, alpha=8, n_adapters=K)
    randomise_adapters(multi)
    singles = []
    for k in range(K):
        single = tiny()
        apply_lora(single, rank=r, alpha=8)
        with torch.no_grad():
            for ml, sl in zip(lora_layers(multi).values(), lora_layers(single).values()):
                sl.lora_A.copy_(ml.lora_A[k : k + 1])
                sl.lora_B.copy_(ml.lora_B[k : k + 1])
        singles.append(single)
    idx = tokens(5, 9)
    route = torch.tensor([2, 0, -1, 1, 0])
    w = torch.randn(5, 9, V, generator=torch.Generator().manual_seed(3))  # a loss that weighs every logit
    with adapter_routing(multi, route):
        out = multi(idx)  # (5, 9, V)
    (out * w).sum().backward()
    with pytest.raises(AssertionError, match="adapter_routing"):
        multi(idx)  # K > 1 without routing
    with torch.no_grad():
        base = tiny()(idx)
    assert torch.equal(out[2], base[2]), "a row routed to -1 is the base model"
    for k, single in enumerate(singles):
        rows = (route == k).nonzero().flatten()
        out_k = single(idx[rows])
        assert rel_err(out_k, out[rows].detach()) < 1e-5
        (out_k * w[rows]).sum().backward()
        for ml, sl in zip(lora_layers(multi).values(), lora_layers(single).values()):
            assert rel_err(ml.lora_A.grad[k], sl.lora_A.grad[0]) < 1e-5
            assert rel_err(ml.lora_B.grad[k], sl.lora_B.grad[0]) < 1e-5
    # a uniform routing takes the plain-matmul path and agrees with the gathered path
    with torch.no_grad(), adapter_routing(multi, torch.tensor([1, 1])):
        assert rel_err(multi(idx[:2]), singles[1](idx[:2])) < 1e-5
    with torch.no_grad(), adapter_routing(multi, route):  # KV-cache decoding keeps the routing per row
        c = multi.config
        cache = KVCache(5, c.n_kv_head, 9, c.n_embd // c.n_head, c.n_layer)
        steps = [multi(idx[:, :5], kv_cache=cache)]
        steps += [multi(idx[:, t : t + 1], kv_cache=cache) for t in range(5, 9)]
        assert rel_err(torch.cat(steps, 1), out.detach()) < 1e-5
    set_adapter_routing(multi, torch.tensor([0]))  # one index: every row
    with torch.no_grad():
        assert rel_err(multi(idx[:2]), singles[0](idx[:2])) < 1e-5
    set_adapter_routing(multi, None)
    with pytest.raises(AssertionError, match="adapter indices"):
        set_adapter_routing(multi, torch.tensor([0, 3]))


def test_bf16_autocast_and_bf16_weights():
    idx = tokens(3, 10)
    for K, route in ((3, torch.tensor([2, -1, 0])), (1, torch.tensor([0]))):
        model = tiny()
        apply_lora(model, rank=4, n_adapters=K)
        randomise_adapters(model, std=0.05)
        low = tiny().to(torch.bfloat16)  # bf16 base weights, fp32 adapters
        apply_lora(low, rank=4, n_adapters=K)
        with torch.no_grad():
            for p, q in zip(adapter_parameters(low), adapter_parameters(model)):
                assert p.dtype == torch.float32
                p.copy_(q)
        with torch.no_grad(), adapter_routing(model, route), adapter_routing(low, route):
            ref = model(idx)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(idx)
            assert out.dtype == torch.bfloat16 and rel_err(out.float(), ref) < 5e-2
            out = low(idx)
            assert out.dtype == torch.bfloat16 and rel_err(out.float(), ref) < 5e-2


def make_data(K: int, max_steps: int, rows: int = 2, T: int = 12):
    """Per adapter, per step: (idx (rows, T), targets (rows, T)) with some ignored (-1, padding) targets."""
    g = torch.Generator().manual_seed(7)
    data = []
    for _k in range(K):
        steps = []
        for _s in range(max_steps):
            idx = torch.randint(0, V, (rows, T), generator=g)
            tgt = torch.randint(0, V, (rows, T), generator=g)
            pad = torch.randint(T // 2, T + 1, (rows,), generator=g)  # valid length of each row
            tgt[torch.arange(T)[None, :] >= pad[:, None]] = -1
            steps.append((idx, tgt))
        data.append(steps)
    return data


@pytest.mark.parametrize("dtype,split_microbatches,atol", [
    (torch.float64, False, 1e-12),  # the same computation: equal to rounding
    (torch.float64, True, 1e-12),
    # fp32: bmm vs matmul summation order differs at ~1e-7 and Adam (eps 1e-8) magnifies it where a
    # gradient is tiny; observed max |diff| 1.7e-6 on one CPU and 4.7e-5 on another (the kernels' summation
    # order depends on the instruction set), on weights of size ~0.1
    (torch.float32, False, 2e-4),
])
def test_k_at_once_training_equals_k_separate_trainings(dtype, split_microbatches, atol):
    K, r = 4, 4
    lrs, warmups, totals = [3e-3, 1e-2, 5e-3, 1e-2], [1, 2, 0, 1], [3, 5, 4, 5]
    wd, max_norm = 0.1, [0.05, 0.05, 0.05, None]
    data = make_data(K, max(totals))
    multi = tiny(dtype=dtype)
    params = apply_lora(multi, rank=r, alpha=8, n_adapters=K, targets=SEAL_TARGETS)
    base_before = {k: v.clone() for k, v in base_state_dict(multi).items()}
    init_A = [layer.lora_A.detach().clone() for layer in lora_layers(multi).values()]
    opt = MultiAdapterAdamW(params, lr=lrs, warmup_steps=warmups, total_steps=totals, weight_decay=wd,
                            max_grad_norm=max_norm)
    # adapter 3 is never active: it must not change at all
    for s in range(max(totals)):
        active = [s < totals[k] and k != 3 for k in range(K)]
        ks = [k for k in range(K) if active[k]]
        idx = torch.cat([data[k][s][0] for k in ks])
        tgt = torch.cat([data[k][s][1] for k in ks])
        route = torch.tensor([k for k in ks for _ in range(data[k][s][0].size(0))])
        opt.zero_grad(set_to_none=True)
        if split_microbatches:  # two micro-batches accumulate the same gradient as one batch
            counts = torch.zeros(K).index_add(0, route, (tgt != -1).sum(1).float())  # whole-step denominators
            for part in (slice(0, 3), slice(3, None)):
                if idx[part].numel():
                    loss, _ = per_adapter_loss(multi, idx[part], tgt[part], route[part], K, counts)
                    loss.backward()
        else:
            loss, losses = per_adapter_loss(multi, idx, tgt, route, K)
            assert losses.shape == (K,) and losses[3] == 0
            loss.backward()
        norms = opt.step(active=torch.tensor(active))
        assert all(norms[k] > max_norm[0] for k in ks if max_norm[k] is not None), "clipping must be active"
    assert opt.steps == [3, 5, 4, 0]
    for layer, A0 in zip(lora_layers(multi).values(), init_A):
        assert torch.equal(layer.lora_A[3], A0[3]) and torch.all(layer.lora_B[3] == 0)
        assert torch.all(opt.state[layer.lora_A]["exp_avg"][3] == 0)
    for k, v in base_state_dict(multi).items():
        assert torch.equal(v, base_before[k]), f"base weight {k} changed"

    for k in range(3):  # each adapter alone: torch AdamW + the same schedule + clip_grad_norm_
        single = tiny(dtype=dtype)
        sp = apply_lora(single, rank=r, alpha=8, targets=SEAL_TARGETS)
        with torch.no_grad():
            for layer, A0 in zip(lora_layers(single).values(), init_A):
                layer.lora_A.copy_(A0[k : k + 1])
        sopt = torch.optim.AdamW(sp, lr=lrs[k], weight_decay=wd)
        for s in range(totals[k]):
            for group in sopt.param_groups:
                group["lr"] = cosine_lr(s, lrs[k], warmups[k], totals[k])
            sopt.zero_grad(set_to_none=True)
            single(*data[k][s]).backward()
            if max_norm[k] is not None:
                torch.nn.utils.clip_grad_norm_(sp, max_norm[k])
            sopt.step()
        for ml, sl in zip(lora_layers(multi).values(), lora_layers(single).values()):
            assert (ml.lora_A[k] - sl.lora_A[0]).abs().max() < atol, k
            assert (ml.lora_B[k] - sl.lora_B[0]).abs().max() < atol, k
            assert ml.lora_B[k].abs().max() > 1e-4, "the adapter must have trained"


def test_inactive_adapter_and_reset():
    K = 3
    model = tiny()
    params = apply_lora(model, rank=4, n_adapters=K)
    opt = MultiAdapterAdamW(params, lr=1e-2, total_steps=10, weight_decay=0.5)
    idx = tokens(3, 8)
    before = [p.detach().clone() for p in params]
    loss, _ = per_adapter_loss(model, idx, idx, torch.tensor([0, 1, 2]), K)
    loss.backward()
    opt.step(active=[True, False, True])
    assert opt.steps == [1, 0, 1]
    for p, b in zip(params, before):
        assert torch.equal(p[1], b[1]), "an inactive adapter gets no update and no weight decay"
        assert torch.all(opt.state[p]["exp_avg"][1] == 0) and torch.all(opt.state[p]["exp_avg_sq"][1] == 0)
    assert any(not torch.equal(p[0], b[0]) for p, b in zip(params, before))
    restored = MultiAdapterAdamW(params, lr=0.0)  # state_dict round trip (resume)
    restored.load_state_dict(opt.state_dict())
    assert restored.steps == [1, 0, 1] and restored.current_lrs() == opt.current_lrs()
    assert torch.equal(restored.state[params[0]]["exp_avg"], opt.state[params[0]]["exp_avg"])
    # reset adapter 0: identity again, fresh A, fresh optimizer state; adapter 2 untouched
    trained2 = [p[2].detach().clone() for p in params]
    A_before = model.transformer.h[0].attn.c_q.lora_A[0].detach().clone()
    reset_adapter(model, 0)
    opt.reset_adapter(0, lr=1e-3, total_steps=4)
    assert opt.steps == [0, 0, 1] and opt.current_lrs()[0] == cosine_lr(0, 1e-3, 0, 4)
    for layer in lora_layers(model).values():
        assert torch.all(layer.lora_B[0] == 0)
        assert torch.all(opt.state[layer.lora_A]["exp_avg"][0] == 0)
    assert not torch.equal(model.transformer.h[0].attn.c_q.lora_A[0], A_before)
    assert all(torch.equal(p[2], t) for p, t in zip(params, trained2))
    with torch.no_grad(), adapter_routing(model, torch.tensor([0, -1])):
        out = model(idx[:1].repeat(2, 1))
    assert torch.equal(out[0], out[1]), "a reset adapter is the identity"
    # finished adapters stop by themselves
    opt2 = MultiAdapterAdamW(params, lr=1e-2, total_steps=[1, 2, 1])
    for _ in range(3):
        opt2.zero_grad()
        loss, _ = per_adapter_loss(model, idx, idx, torch.tensor([0, 1, 2]), K)
        loss.backward()
        opt2.step()
    assert opt2.steps == [1, 2, 1]
    assert isinstance(adapter_optimizer(params, lr=1e-3), torch.optim.AdamW)


def test_cosine_schedule():
    assert cosine_lr(0, 1.0, 2, 10) == 0.5 and cosine_lr(1, 1.0, 2, 10) == 1.0
    assert cosine_lr(2, 1.0, 2, 10) == 1.0 and abs(cosine_lr(6, 1.0, 2, 10) - 0.5) < 1e-12
    assert cosine_lr(9, 1.0, 0, 10) > 0 and cosine_lr(10, 1.0, 0, 10, min_lr_ratio=0.1) == pytest.approx(0.1)


# -----------------------------------------------------------------------------
# files


def test_save_load_round_trip_and_extract_k(tmp_path):
    K = 3
    multi = tiny()
    apply_lora(multi, rank=4, alpha=8, n_adapters=K, targets=SEAL_TARGETS)
    randomise_adapters(multi)
    folder = str(tmp_path / "ad1")
    save_adapter(multi, folder, metadata={"task": "abc", "self_edit": {"lr": 1e-4}}, adapter_index=1)
    assert sorted(os.listdir(folder)) == ["adapter_config.json", "adapter_model.safetensors", "nanoseal.json"]
    cfg = json.load(open(os.path.join(folder, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert cfg["target_modules"] == list(SEAL_TARGETS) and cfg["task_type"] is None
    plain = tiny()
    meta = load_adapter(plain, folder)  # a plain model gets LoRA layers from the file's config
    assert meta["metadata"] == {"task": "abc", "self_edit": {"lr": 1e-4}}
    assert meta["base_fingerprint"] == base_fingerprint(plain)
    for ml, pl in zip(lora_layers(multi).values(), lora_layers(plain).values()):
        assert pl.n_adapters == 1
        assert torch.equal(pl.lora_A[0], ml.lora_A[1]) and torch.equal(pl.lora_B[0], ml.lora_B[1])
    idx = tokens(2, 8)
    with torch.no_grad(), adapter_routing(multi, torch.tensor([1, 1])):
        assert torch.equal(plain(idx), multi(idx))
    other = tiny()  # into slot 2 of another K model
    apply_lora(other, rank=4, alpha=8, n_adapters=K, targets=SEAL_TARGETS)
    load_adapter(other, folder, adapter_index=2)
    for ml, ol in zip(lora_layers(multi).values(), lora_layers(other).values()):
        assert torch.equal(ol.lora_A[2], ml.lora_A[1]) and torch.equal(ol.lora_B[2], ml.lora_B[1])
    folder2 = str(tmp_path / "ad2")  # save again from the loaded copy: bit-identical files
    save_adapter(plain, folder2, metadata={"task": "abc", "self_edit": {"lr": 1e-4}})
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert open(os.path.join(folder, name), "rb").read() == open(os.path.join(folder2, name), "rb").read()


def test_mismatches_and_corrupt_files_refused(tmp_path):
    model = tiny()
    apply_lora(model, rank=4, targets=["c_q", "c_v"])
    randomise_adapters(model)
    folder = str(tmp_path / "ad")
    save_adapter(model, folder)
    cases = [
        (lambda: tiny(seed=5), "another base model"),
        (lambda: (m := tiny(), apply_lora(m, rank=8, targets=["c_q", "c_v"]))[0], "rank"),
        (lambda: (m := tiny(), apply_lora(m, rank=4, targets=["c_q"]))[0], "other modules"),
        (lambda: (m := tiny(), apply_lora(m, rank=4, alpha=4, targets=["c_q", "c_v"]))[0], "scaling"),
    ]
    for make, msg in cases:
        with pytest.raises(NanosealError, match=msg) as e:
            load_adapter(make(), folder)
        assert folder in str(e.value) and "\n" not in str(e.value)
    fresh = tiny(seed=5)
    with pytest.raises(NanosealError):
        load_adapter(fresh, folder)
    assert not lora_layers(fresh), "a refused load leaves a plain model plain"
    with pytest.raises(NanosealError, match="does not exist"):
        load_adapter(tiny(), str(tmp_path / "nope"))
    weights = os.path.join(folder, "adapter_model.safetensors")
    blob = open(weights, "rb").read()
    open(weights, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(NanosealError, match="sha256"):
        load_adapter(tiny(), folder)
    os.remove(os.path.join(folder, "nanoseal.json"))
    with pytest.raises(NanosealError, match="missing nanoseal.json"):
        load_adapter(tiny(), folder)
    with pytest.raises(NanosealError, match="unreadable"):
        load_adapter(tiny(), folder, check_base=False)
    open(os.path.join(folder, "adapter_config.json"), "w").write("{not json")
    with pytest.raises(NanosealError, match="not valid JSON"):
        load_adapter(tiny(), folder)


def test_peft_interop_both_ways(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny()
    apply_lora(model, rank=4, alpha=6, targets=SEAL_TARGETS, use_rslora=True)
    randomise_adapters(model)
    folder = str(tmp_path / "ours")
    save_adapter(model, folder)
    idx = tokens(2, 10)
    with torch.no_grad():
        ours = model(idx)
        pm = peft.PeftModel.from_pretrained(tiny(), folder)
        theirs = pm(idx)
    assert rel_err(theirs, ours) < 1e-5
    assert rel_err(ours, tiny()(idx)) > 1e-2, "the adapter must matter"
    # and a PEFT-made adapter loads here (no nanoseal.json: check_base=False)
    peft_config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_k", "mlp.c_proj"])
    pm2 = peft.get_peft_model(tiny(), peft_config)
    with torch.no_grad():
        for name, p in pm2.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        expected = pm2(idx)
    pm2.save_pretrained(str(tmp_path / "theirs"))
    mine = tiny()
    with pytest.raises(NanosealError, match="missing nanoseal.json"):
        load_adapter(mine, str(tmp_path / "theirs"))
    load_adapter(mine, str(tmp_path / "theirs"), check_base=False)
    with torch.no_grad():
        assert rel_err(mine(idx), expected) < 1e-5


# -----------------------------------------------------------------------------
# parameter counts


def test_seed_parameter_count_estimate(capsys):
    info = lora_info(GPTConfig(), rank=16)  # counted on a meta-device d12 with apply_lora
    c = GPTConfig()
    kv = c.n_kv_head * (c.n_embd // c.n_head)
    analytic = c.n_layer * 16 * ((c.n_embd * 2) * 2 + (c.n_embd + kv) * 2 + (c.n_embd + 4 * c.n_embd) * 2)
    assert info["total_params"] == analytic == 2_654_208
    assert abs(info["total_params"] / 2.65e6 - 1) < 0.01
    assert abs(info["percent_of_base"] / 1.64 - 1) < 0.01
    assert abs(info["bytes_bf16"] / 5.3e6 - 1) < 0.01
    assert info["per_target"]["mlp.c_fc"] == {"modules": 12, "params": 12 * 16 * (768 + 3072),
                                              "shapes": ["768x3072"]}
    seal = lora_info(GPTConfig(), rank=16, targets=SEAL_TARGETS)
    assert seal["total_params"] == 12 * 16 * (2 * 1536 + 2 * 3840)
    parser = argparse.ArgumentParser()
    add_lora_info_args(parser)
    assert lora_info_main(parser.parse_args(["--depth", "12", "--rank", "16"])) == 0
    out = capsys.readouterr().out
    assert "2,654,208" in out and "1.64%" in out and "bf16 5.3" in out
    assert lora_info_main(parser.parse_args(["--n-layer", "4", "--n-embd", "128", "--n-head", "2",
                                             "--targets", "seal", "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] == 4 * 16 * (2 * 256 + 2 * 640)
