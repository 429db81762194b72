"""Llama-family checkpoints from a Hugging Face folder (nanoseal.models.llama, nanoseal.hf_checkpoint,
nanoseal.hf_tokenizer), checked against transformers and PEFT on tiny random models transformers itself writes
(bench/tiny_hf.py): Llama with Llama 3's rope scaling and tied embeddings, Qwen2 with q/k/v biases, Mistral with an
explicit head_dim; both folder layouts (transformers 5's and the published one, sharded)."""

import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("peft")

from bench.tiny_hf import write_tiny_folder  # noqa: E402
from nanoseal.checkpoint import build_model, load_model, save_checkpoint  # noqa: E402
from nanoseal.cli import main  # noqa: E402
from nanoseal.common import NanosealError  # noqa: E402
from nanoseal.engine import Engine, greedy_batch  # noqa: E402
from nanoseal.lora import SEAL_TARGETS, apply_lora, load_adapter, lora_layers, remove_lora, save_adapter  # noqa: E402

FOLDERS = {  # name -> (family, layout, shard_kb)
    "llama": ("llama", "transformers", None),
    "llama-published": ("llama", "published", 150),
    "qwen2": ("qwen2", "transformers", None),
    "qwen2-published": ("qwen2", "published", None),
    "mistral": ("mistral", "transformers", None),
}


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """Every tiny folder of FOLDERS, written once per session."""
    root = tmp_path_factory.mktemp("hf")
    return {name: write_tiny_folder(str(root / name), family, layout, shard_kb)
            for name, (family, layout, shard_kb) in FOLDERS.items()}


def transformers_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def transformers_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def arc_conversation(with_answer=True) -> dict:
    """A SEAL-layout ARC prompt (system: instruction + demonstrations; user: query; assistant: answer)."""
    from nanoseal.arc.prompts import task_conversation

    demos = [([[0, 1], [2, 3]], [[1, 0], [3, 2]]), ([[4, 5, 6]], [[6, 5, 4]])]
    return task_conversation(demos, [[7, 8], [9, 0]], [[8, 7], [0, 9]] if with_answer else None, style="seal")


# ---------------------------------------------------------------------------------------------------------
# the model against transformers


@pytest.mark.parametrize("name", list(FOLDERS))
def test_logits_match_transformers(hf_folders, name):
    model, tok, meta = load_model(hf_folders[name])
    hf = transformers_model(hf_folders[name])
    assert meta["arch"] == FOLDERS[name][0] and type(model).__name__ == "Llama"
    assert model.num_params() == sum(p.numel() for p in hf.parameters())
    torch.manual_seed(0)
    idx = torch.randint(0, tok.get_vocab_size(), (2, 96))
    with torch.no_grad():
        ours, theirs = model(idx), hf(input_ids=idx).logits
        assert rel_err(ours, theirs) < 1e-4
        targets = idx.roll(-1, 1)
        loss = F.cross_entropy(theirs.reshape(-1, theirs.size(-1)), targets.reshape(-1))
        assert abs(model(idx, targets).item() - loss.item()) < 1e-4 * loss.item()
        assert rel_err(model(idx, last_only=True)[:, 0], theirs[:, -1]) < 1e-4


def test_kv_cache_and_packed_documents_equal_full_recomputation(hf_folders):
    from nanoseal.engine import KVCache, head_dim

    model, tok, _ = load_model(hf_folders["mistral"])  # head_dim 24 != hidden / heads
    c = model.config
    torch.manual_seed(1)
    idx = torch.randint(0, tok.get_vocab_size(), (1, 40))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(1, c.n_kv_head, 40, head_dim(c), c.n_layer)
        chunks = [model(idx[:, :25], kv_cache=cache), model(idx[:, 25:26], kv_cache=cache),
                  model(idx[:, 26:], kv_cache=cache)]  # prefill, one token, a chunk
        assert rel_err(torch.cat(chunks, 1), full) < 1e-5
        packed = model(idx, doc_lens=[[15, 25]])  # two documents in one row: each as if alone
        assert rel_err(packed[:, :15], model(idx[:, :15])) < 1e-5
        assert rel_err(packed[:, 15:], model(idx[:, 15:])) < 1e-5
        two_rows = model(torch.cat([idx, idx.flip(1)]), doc_lens=[[15, 25], [40]])
        assert rel_err(two_rows[1:], model(idx.flip(1))) < 1e-5


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_greedy_decode_equals_generate(hf_folders, name):
    model, tok, _ = load_model(hf_folders[name])
    hf = transformers_model(hf_folders[name])
    prompt = tok.render_for_completion(arc_conversation(with_answer=False))
    stops = [tok.encode_special("<|assistant_end|>"), tok.get_bos_token_id()]
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=stops,
                      pad_token_id=stops[0])[0, len(prompt):].tolist()
    ref = ref[: next((i for i, t in enumerate(ref) if t in stops), len(ref))]
    seqs, _ = Engine(model, tok).generate_batch(prompt, num_samples=2, max_tokens=24, temperature=0.0)
    assert len(ref) > 5 and all(s[len(prompt):] == ref for s in seqs)
    assert greedy_batch(model, [prompt, prompt], [24, 10], set(stops)) == [ref, ref[:10]]


# ---------------------------------------------------------------------------------------------------------
# the tokenizer and chat template against transformers


@pytest.mark.parametrize("name", ["llama", "llama-published", "qwen2", "qwen2-published"])
def test_chat_template_ids_equal_apply_chat_template(hf_folders, name):
    from nanoseal.arc.data import Task
    from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, selfedit_conversation

    _, tok, _ = load_model(hf_folders[name])
    ref = transformers_tokenizer(hf_folders[name])
    task = Task("t", [([[1, 2]], [[2, 1]]), ([[3, 4, 5]], [[5, 4, 3]])], [([[6, 7]], [[7, 6]])])
    edit = {"messages": selfedit_conversation(task)["messages"] +
            [{"role": "assistant", "content": DEFAULT_SELF_EDIT.canonical()}]}
    for conv in (arc_conversation(), edit):
        messages = conv["messages"]
        ids, mask = tok.render_conversation(conv)
        assert ids == list(ref.apply_chat_template(messages, tokenize=True, return_dict=False))
        prompt = tok.render_for_completion(conv)
        assert prompt == list(ref.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                                      return_dict=False))
        # the loss mask covers the answer and its end-of-turn token, nothing else
        assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)])
        assert tok.decode([t for t, m in zip(ids, mask) if m]) == messages[-1]["content"] + tok.eos_text
        all_ids, all_mask = tok.render_conversation(conv, train_on="all")
        assert all_ids == ids and all_mask == [0] + [1] * (len(ids) - 1)
    assert tok.encode("a <|im_end|> b <|eot_id|>") == list(ref("a <|im_end|> b <|eot_id|>",
                                                                add_special_tokens=False,
                                                                split_special_tokens=True)["input_ids"])
    assert tok.decode(tok.encode("[[1 2]\n [3 4]] -> #")) == "[[1 2]\n [3 4]] -> #"


def test_special_tokens_map_to_the_models(hf_folders):
    _, llama, _ = load_model(hf_folders["llama"])
    _, qwen, _ = load_model(hf_folders["qwen2"])
    assert llama.decode([llama.encode_special("<|assistant_end|>"), llama.get_bos_token_id()]) == \
        "<|eot_id|><|begin_of_text|>"
    assert qwen.decode([qwen.encode_special("<|assistant_end|>"), qwen.get_bos_token_id()]) == \
        "<|im_end|><|endoftext|>"  # Qwen2.5 has no bos: its pad token stands in
    with pytest.raises(NanosealError, match="no token '<\\|user_start\\|>'"):
        llama.encode_special("<|user_start|>")


# ---------------------------------------------------------------------------------------------------------
# LoRA: SEAL's targets, PEFT-format files


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_adapter_loads_in_peft_with_equal_outputs(hf_folders, tmp_path, name):
    from peft import PeftModel

    model, tok, _ = load_model(hf_folders[name])
    torch.manual_seed(0)
    idx = torch.randint(0, tok.get_vocab_size(), (2, 48))
    with torch.no_grad():
        base = model(idx)
    apply_lora(model, rank=4, alpha=16, targets=list(SEAL_TARGETS))  # c_q, c_v, c_fc, mlp.c_proj
    assert {path.split(".")[-1] for path in lora_layers(model)} == {"q_proj", "v_proj", "gate_proj", "up_proj",
                                                                    "down_proj"}
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0.0, 0.2)
        adapted = model(idx)
    assert rel_err(adapted, base) > 1e-2  # the adapter changes the outputs
    folder = str(tmp_path / "adapter")
    save_adapter(model, folder)
    with open(os.path.join(folder, "adapter_config.json")) as f:
        assert json.load(f)["target_modules"] == ["q_proj", "v_proj", "gate_proj", "up_proj", "mlp.down_proj"]
    peft_model = PeftModel.from_pretrained(transformers_model(hf_folders[name]), folder).eval()
    with torch.no_grad():
        assert rel_err(adapted, peft_model(input_ids=idx).logits) < 1e-4
        merged_ref = peft_model.merge_and_unload()(input_ids=idx).logits
    plain, _, _ = load_model(hf_folders[name])
    load_adapter(plain, folder)  # back into nanoseal: the fingerprint matches the same folder's weights
    remove_lora(plain, merge=True)  # plain nn.Linear again (Qwen2's q/v keep their biases), adapter folded in
    assert all(type(m).__name__ == "Linear" for n, m in plain.named_modules() if n.endswith("_proj"))
    with torch.no_grad():
        assert rel_err(plain(idx), merged_ref) < 1e-4


def test_bench_reference_targets_the_same_modules(hf_folders):
    from bench.ttt_vs_peft import peft_targets
    from nanoseal.lora import DEFAULT_TARGETS

    model, _, _ = load_model(hf_folders["llama"])
    assert peft_targets(model, DEFAULT_TARGETS) == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj",
                                                    "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj",
                                                    "self_attn.v_proj"]


# ---------------------------------------------------------------------------------------------------------
# saved policies and the SEAL loop


@pytest.mark.parametrize("family", ["qwen2", "mistral"])  # mistral: head_dim 24 != hidden / heads
def test_saved_policy_loads_as_the_llama_family(hf_folders, tmp_path, family):
    model, tok, _ = load_model(hf_folders[family])
    folder = str(tmp_path / "policy")
    save_checkpoint(folder, 0, model.state_dict(), None, {"model_config": model.config.to_dict()})
    again, _ = build_model(folder, 0)
    idx = torch.randint(0, tok.get_vocab_size(), (1, 20))
    with torch.no_grad():
        assert torch.equal(again(idx), model(idx))
    with pytest.raises(NanosealError, match="--arch names nanochat versions"):
        build_model(folder, 0, arch="nanochat-2025-10-13")


def test_seal_completes_a_round_on_a_llama_folder(hf_folders, tmp_path):
    run_dir = str(tmp_path / "run")
    flags = ["seal", "--checkpoint", hf_folders["llama"], "--run-dir", run_dir, "--tasks", "flip_lr-1",
             "--eval-tasks", "flip_ud-5", "--rounds", "1", "--self-edits", "2", "--n-max", "4", "--max-views", "1",
             "--no-oracle", "--shift-samples", "0", "--seed", "0"]
    assert main(flags) == 0
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    assert set(results["methods"]) == {"icl", "ttt_fixed", "ttt_selfedit_round0", "seal", "seal_edits_round0_model"}
    with open(os.path.join(run_dir, "selfedits.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    policy_rows = [r for r in rows if r["method"] in ("seal", "ttt_selfedit_round0")]
    assert policy_rows and all(r["self_edit"] is None and r["reward"] == 0 for r in policy_rows)  # random policy
    fixed = [r for r in rows if r["method"] == "ttt_fixed"]
    assert fixed[0]["steps"] > 0 and len(fixed[0]["loss_curve"]) == fixed[0]["steps"]  # TTT trained the LoRA
    assert results["rounds"][0]["skipped"]  # nothing to clone: the policy is saved unchanged
    before = open(os.path.join(run_dir, "selfedits.jsonl")).read()
    assert main(flags) == 0  # resume: the saved round-1 policy loads as a Llama model, nothing is redone
    assert open(os.path.join(run_dir, "selfedits.jsonl")).read() == before


def test_field_nll_finds_every_field_through_a_chat_template(hf_folders):
    from nanoseal.arc.gen import make_task
    from nanoseal.seal.restem import RestemConfig, loss_sum, sft_documents
    from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT
    from nanoseal.seal.update_size import FIELDS, field_nll

    model, tokenizer, _ = load_model(hf_folders["llama"])
    tasks = {"t0": make_task("flip_lr", 0, min_side=2, max_side=2)}
    pairs = [("t0", DEFAULT_SELF_EDIT.canonical())]
    cfg = RestemConfig()
    split = field_nll(model, tokenizer, tasks, pairs, cfg)
    assert split["n"] == 1 and all(split["fields"][f] > 0 for f in FIELDS), split  # every value's tokens found
    total, _ = loss_sum(model, sft_documents(tokenizer, tasks, pairs, cfg, model.config.sequence_len),
                        tokenizer.get_bos_token_id())
    assert abs(sum(split["fields"].values()) - total) < 1e-3 * total, "the split adds up to the pair's loss"


# ---------------------------------------------------------------------------------------------------------
# malformed folders: one line, exit status 2


def broken_copy(hf_folders, tmp_path, name="llama") -> str:
    folder = str(tmp_path / "broken")
    shutil.copytree(hf_folders[name], folder)
    return folder


def edit_json(path, **changes):
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def cli_error(capsys, folder) -> str:
    capsys.readouterr()
    assert main(["chat", "--checkpoint", folder, "-p", "hi", "--max-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err and "Traceback" not in err
    return err


def test_missing_tokenizer_json(hf_folders, tmp_path, capsys):
    folder = broken_copy(hf_folders, tmp_path)
    os.remove(os.path.join(folder, "tokenizer.json"))
    assert "tokenizer.json: file not found" in cli_error(capsys, folder)


def test_unknown_model_type(hf_folders, tmp_path, capsys):
    folder = broken_copy(hf_folders, tmp_path)
    edit_json(os.path.join(folder, "config.json"), model_type="gemma")
    assert "model_type 'gemma' is not supported; supported: llama, qwen2, mistral" in cli_error(capsys, folder)


def test_unsupported_config_field(hf_folders, tmp_path, capsys):
    folder = broken_copy(hf_folders, tmp_path, "llama-published")
    edit_json(os.path.join(folder, "config.json"), rope_scaling={"rope_type": "yarn", "factor": 4.0})
    assert "field 'rope_scaling' is not supported (rope_type 'yarn'" in cli_error(capsys, folder)


def test_shard_index_naming_a_missing_file(hf_folders, tmp_path, capsys):
    folder = broken_copy(hf_folders, tmp_path, "llama-published")
    shards = sorted(f for f in os.listdir(folder) if f.startswith("model-0"))
    assert len(shards) > 1
    os.remove(os.path.join(folder, shards[-1]))
    assert f"weight_map names {shards[-1]}, which is missing" in cli_error(capsys, folder)


def test_wrong_tensor_shape(hf_folders, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    folder = broken_copy(hf_folders, tmp_path)
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    tensors["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(8, 64)
    save_file(tensors, path, metadata={"format": "pt"})
    err = cli_error(capsys, folder)
    assert "model.safetensors: model.layers.1.self_attn.k_proj.weight has shape (8, 64), config.json implies " \
           "(32, 64)" in err


def test_no_chat_template(hf_folders, tmp_path, capsys):
    folder = broken_copy(hf_folders, tmp_path)
    os.remove(os.path.join(folder, "chat_template.jinja"))
    assert "no chat_template here and no chat_template.jinja beside it" in cli_error(capsys, folder)


def test_bf16_folder_loads_as_fp32_on_cpu(tmp_path):
    folder = write_tiny_folder(str(tmp_path / "bf16"), "qwen2", dtype=torch.bfloat16)
    model, tok, _ = load_model(folder)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    idx = torch.randint(0, tok.get_vocab_size(), (1, 32))
    with torch.no_grad():
        assert rel_err(model(idx), transformers_model(folder)(input_ids=idx).logits) < 1e-4


def test_model_check_takes_an_explicit_head_dim():
    from nanoseal.modelcheck import check_model_config
    from nanoseal.models.llama import LlamaConfig

    # hidden 120 over 8 heads is 15 (odd), but the heads are 16 wide: a valid Llama-family shape
    cfg = LlamaConfig(sequence_len=64, vocab_size=100, n_layer=1, n_head=8, n_kv_head=2, n_embd=120, head_dim=16,
                      intermediate_size=64)
    check_model_config(cfg, "policy")
    with pytest.raises(NanosealError, match="head_dim must be an even integer"):
        check_model_config(LlamaConfig(sequence_len=64, vocab_size=100, n_layer=1, n_head=8, n_kv_head=2, n_embd=120,
                                       head_dim=15, intermediate_size=64), "policy")
