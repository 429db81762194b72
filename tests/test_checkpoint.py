"""Checkpoints in nanochat's layout: round trip, discovery, strictness, and the CLI's one-line errors."""

import json
import os

import pytest
import torch

from nanoseal.checkpoint import find_largest_model, load_model, save_checkpoint
from nanoseal.cli import main
from nanoseal.common import NanosealError

from conftest import make_tiny_model


def write_base_dir(base, tokenizer, model, phase="base_checkpoints", tag="d2", step=10, optim=None):
    tokenizer.save(os.path.join(base, "tokenizer"))
    ckpt = os.path.join(base, phase, tag)
    save_checkpoint(ckpt, step, model.state_dict(), optim, {"model_config": model.config.to_dict(), "step": step})
    return ckpt


@pytest.fixture
def model320(tokenizer):
    return make_tiny_model(vocab_size=tokenizer.get_vocab_size())


def test_round_trip_is_bit_exact(tmp_path, tokenizer, model320):
    optim = {"state": {0: {"exp_avg": torch.randn(3)}}, "param_groups": [{"lr": 0.1}]}
    ckpt = write_base_dir(str(tmp_path), tokenizer, model320, optim=optim)
    assert sorted(os.listdir(ckpt)) == ["meta_000010.json", "model_000010.pt", "optim_000010_rank0.pt"]
    loaded, tok, meta = load_model(str(tmp_path))
    assert meta["step"] == 10 and meta["checkpoint_dir"] == ckpt
    for k, v in model320.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    idx = torch.randint(0, 320, (2, 10))
    assert torch.equal(model320(idx), loaded(idx))
    assert tok.encode("hello 123") == tokenizer.encode("hello 123")
    assert not loaded.training


def test_discovery_largest_tag_last_step_and_folder_forms(tmp_path, tokenizer):
    base = str(tmp_path)
    small, big = make_tiny_model(seed=1), make_tiny_model(seed=2, n_layer=3)
    write_base_dir(base, tokenizer, small, tag="d2", step=5)
    write_base_dir(base, tokenizer, big, tag="d3", step=5)
    ckpt = write_base_dir(base, tokenizer, big, tag="d3", step=12)
    model, _, meta = load_model(base)
    assert model.config.n_layer == 3 and meta["step"] == 12
    _, _, meta = load_model(base, step=5)
    assert meta["step"] == 5
    _, _, meta = load_model(ckpt)  # one checkpoint folder: tokenizer at ../../tokenizer
    assert meta["step"] == 12
    _, _, meta = load_model(os.path.join(base, "base_checkpoints"))  # a phase dir
    assert meta["checkpoint_dir"] == ckpt
    os.makedirs(os.path.join(base, "base_checkpoints", "custom"))
    assert find_largest_model(os.path.join(base, "base_checkpoints")) == "d3"


def test_sft_phase_preferred_and_source_selects(tmp_path, tokenizer):
    base = str(tmp_path)
    write_base_dir(base, tokenizer, make_tiny_model(seed=1), step=3)
    write_base_dir(base, tokenizer, make_tiny_model(seed=2), phase="chatsft_checkpoints", step=7)
    assert load_model(base)[2]["step"] == 7
    assert load_model(base, source="base")[2]["step"] == 3


def test_orig_mod_prefix_and_bf16_wte_accepted(tmp_path, tokenizer, model320):
    state = {"_orig_mod." + k: v for k, v in model320.state_dict().items()}
    state["_orig_mod.transformer.wte.weight"] = state["_orig_mod.transformer.wte.weight"].bfloat16()
    tokenizer.save(os.path.join(tmp_path, "tokenizer"))
    save_checkpoint(os.path.join(tmp_path, "base_checkpoints", "d2"), 1, state, None,
                    {"model_config": model320.config.to_dict()})
    loaded, _, _ = load_model(str(tmp_path))
    assert loaded.transformer.wte.weight.dtype == torch.float32
    assert torch.equal(loaded.transformer.wte.weight, model320.transformer.wte.weight.bfloat16().float())
    assert torch.equal(loaded.lm_head.weight, model320.lm_head.weight)


def test_newer_architecture_refused(tmp_path, tokenizer, model320):
    state = model320.state_dict()
    state["resid_lambdas"] = torch.ones(2)
    state["value_embeds.0.weight"] = torch.zeros(320, 64)
    tokenizer.save(os.path.join(tmp_path, "tokenizer"))
    save_checkpoint(os.path.join(tmp_path, "base_checkpoints", "d2"), 1, state, None,
                    {"model_config": model320.config.to_dict()})
    with pytest.raises(NanosealError, match="later nanochat architecture .*resid_lambdas"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("damage, match", [
    ("truncate", "not a readable checkpoint"),
    ("garbage", "not a readable checkpoint"),
    ("meta_json", "not valid JSON"),
    ("meta_field", "model_config"),
    ("config_field", "unsupported fields"),
    ("shape", "has shape"),
    ("missing_key", "does not match"),
])
def test_damaged_checkpoints_give_one_line_errors(tmp_path, tokenizer, model320, damage, match):
    ckpt = write_base_dir(str(tmp_path), tokenizer, model320, step=1)
    model_path, meta_path = os.path.join(ckpt, "model_000001.pt"), os.path.join(ckpt, "meta_000001.json")
    meta = json.load(open(meta_path))
    if damage == "truncate":
        data = open(model_path, "rb").read()
        open(model_path, "wb").write(data[: len(data) // 2])
    elif damage == "garbage":
        open(model_path, "wb").write(b"not a checkpoint at all")
    elif damage == "meta_json":
        open(meta_path, "w").write("{oops")
    elif damage == "meta_field":
        json.dump({"step": 1}, open(meta_path, "w"))
    elif damage == "config_field":
        meta["model_config"]["window_pattern"] = "SSSL"
        json.dump(meta, open(meta_path, "w"))
    elif damage == "shape":
        meta["model_config"]["n_embd"] = 128
        json.dump(meta, open(meta_path, "w"))
    elif damage == "missing_key":
        state = model320.state_dict()
        del state["lm_head.weight"]
        torch.save(state, model_path)
    with pytest.raises(NanosealError, match=match) as e:
        load_model(str(tmp_path))
    assert "\n" not in str(e.value)


def test_malicious_checkpoint_pickle_not_executed(tmp_path, tokenizer, model320):
    ckpt = write_base_dir(str(tmp_path), tokenizer, model320, step=1)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, os.path.join(ckpt, "model_000001.pt"))
    with pytest.raises(NanosealError, match="not a readable checkpoint"):
        load_model(str(tmp_path))
    assert not marker.exists()


def test_cli_chat_one_shot_and_clean_errors(tmp_path, tokenizer, model320, capsys):
    write_base_dir(str(tmp_path), tokenizer, model320)
    assert main(["chat", "--checkpoint", str(tmp_path), "-p", "Hello", "--max-tokens", "8", "-t", "0"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    assert main(["chat", "--checkpoint", str(tmp_path / "nope"), "-p", "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such checkpoint folder" in err and "Traceback" not in err
