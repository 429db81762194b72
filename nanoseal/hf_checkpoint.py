"""
A Hugging Face model folder (a Llama-family checkpoint as published, or as transformers' save_pretrained writes
it) loaded as a nanoseal model + tokenizer; nanoseal.checkpoint.load_model comes here for any folder with a
config.json.

    <folder>/config.json              model_type llama | qwen2 | mistral (nanoseal.models.llama.from_hf_config);
                                      rope_theta + rope_scaling (published) or rope_parameters (transformers 5)
    <folder>/model.safetensors        or model-0000N-of-0000M.safetensors + model.safetensors.index.json
    <folder>/tokenizer.json, tokenizer_config.json, chat_template.jinja (optional)   nanoseal.hf_tokenizer

    from nanoseal.hf_checkpoint import load_hf_model
    model, tokenizer, meta = load_hf_model("Llama-3.2-1B-Instruct", device="cuda")

Weights are read with safetensors (memory-mapped; each tensor's shape is checked against config.json before it is
read). On CUDA, bf16/fp16 weights are kept as bf16 (1.24B parameters: 2.5 GB), run under bf16 autocast as
everything else; elsewhere they are upcast to fp32 (CPU matmuls in bf16 are slow and inexact). The tokenizer is
read first, so a folder without one fails before gigabytes are loaded. Every problem (a missing file, an unknown
model_type or config field, an index naming a missing shard, a missing/unexpected tensor, a wrong shape or dtype,
too little memory) is one NanosealError line naming the file and the field.
"""

import os

import torch

from nanoseal.common import NanosealError, read_json_object
from nanoseal.modelcheck import machine_memory
from nanoseal.models.llama import Llama, LlamaConfig, from_hf_config, inv_frequencies

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # older checkpoints store the rotary frequencies; they are computed
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def is_hf_folder(path: str) -> bool:
    """Whether path is a folder holding a config.json (a Hugging Face model folder)."""
    path = os.path.expanduser(path)
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def read_config(folder: str) -> LlamaConfig:
    """The LlamaConfig of a folder's config.json."""
    path = os.path.join(folder, CONFIG_FILE)
    return from_hf_config(read_json_object(path), path)


def weight_files(folder: str) -> dict[str, str]:
    """Tensor name -> the safetensors file holding it (from the shard index, else the single file)."""

    index_path = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index_path):
        weight_map = read_json_object(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise NanosealError(f"{index_path}: field 'weight_map' must map tensor names to file names")
        for name in sorted(set(weight_map.values())):
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise NanosealError(f"{index_path}: weight_map names {name!r}; expected a file name in the folder")
            if not os.path.isfile(os.path.join(folder, name)):
                raise NanosealError(f"{index_path}: weight_map names {name}, which is missing from {folder}")
        return {k: os.path.join(folder, v) for k, v in weight_map.items()}
    path = os.path.join(folder, SINGLE_FILE)
    if not os.path.isfile(path):
        raise NanosealError(f"{folder}: no {SINGLE_FILE} or {INDEX_FILE} (weights are read from safetensors files "
                            "only; pytorch_model.bin is not supported)")
    with _open(path) as f:
        return {k: path for k in f.keys()}


def _open(path: str):
    """safe_open of a safetensors file; one line if it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NanosealError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None


def expected_shapes(config: LlamaConfig) -> dict[str, tuple]:
    """State-dict key -> shape of the model config.json describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = Llama(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_state(folder: str, config: LlamaConfig, device) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors, checked (names, shapes, dtypes, memory) and moved to device."""
    device = torch.device(device)
    files = weight_files(folder)
    expected = expected_shapes(config)
    names = {k for k in files if not k.endswith(IGNORED_SUFFIXES)}
    if config.tie_word_embeddings:
        names.discard("lm_head.weight")  # a tied model's copy of the embedding, if a file has one
    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
    where = os.path.join(folder, INDEX_FILE if os.path.isfile(os.path.join(folder, INDEX_FILE)) else SINGLE_FILE)
    if missing or extra:
        raise NanosealError(f"{where}: tensors do not match config.json ({config.arch}, {config.n_layer} layers, tied "
                            f"embeddings {config.tie_word_embeddings}): missing {missing[:3]}, unexpected {extra[:3]}")
    by_file: dict[str, list[str]] = {}
    for k in sorted(names):
        by_file.setdefault(files[k], []).append(k)
    dtype = None  # bf16 on CUDA for 16-bit checkpoints, else fp32 (decided by the embedding's dtype)
    state = {}
    for path, keys in by_file.items():
        with _open(path) as f:
            present = set(f.keys())
            for k in keys:
                if k not in present:
                    raise NanosealError(f"{path}: has no tensor {k} (the shard index puts it there)")
                part = f.get_slice(k)
                shape, file_dtype = tuple(part.get_shape()), part.get_dtype()
                if shape != expected[k]:
                    raise NanosealError(f"{path}: {k} has shape {shape}, config.json implies {expected[k]}")
                if file_dtype not in DTYPES:
                    raise NanosealError(f"{path}: {k} has dtype {file_dtype}; expected one of {', '.join(DTYPES)}")
                if dtype is None:
                    dtype = torch.bfloat16 if device.type == "cuda" and file_dtype != "F32" else torch.float32
                    _check_memory(where, expected, dtype, device)
                state[k] = f.get_tensor(k).to(device=device, dtype=dtype)
    return state


def _check_memory(where: str, expected: dict[str, tuple], dtype: torch.dtype, device: torch.device) -> None:
    """Refuse (one line) weights that cannot fit the device's memory."""
    n = sum(torch.Size(s).numel() for s in expected.values())
    need, have = n * torch.finfo(dtype).bits // 8, machine_memory(device)
    if have is not None and need > have:
        raise NanosealError(f"{where}: {n:,} parameters need {need / 1e9:.3g} GB in {str(dtype).removeprefix('torch.')}"
                            f"; {device} has {have / 1e9:.3g} GB")


def build_hf_model(folder: str, device="cpu", phase: str = "eval") -> tuple[Llama, dict]:
    """The model of a folder (weights loaded, eval or train mode) and its meta."""
    config = read_config(folder)
    state = load_state(folder, config, device)
    with torch.device("meta"):
        model = Llama(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.inv_freq = inv_frequencies(config, device=torch.device(device))  # the non-persistent buffer
    model.train(phase == "train")
    meta = {"model_config": config.to_dict(), "format": "huggingface", "step": None}
    return model, meta


def load_hf_model(folder: str, device="cpu", phase: str = "eval", step: int | None = None,
                  source: str | None = None, model_tag: str | None = None, arch: str | None = None):
    """(model, tokenizer, meta) of a Hugging Face folder; the nanochat layout's options (step, source, model_tag,
    arch) do not apply to one and are refused."""
    from nanoseal.hf_tokenizer import HFTokenizer

    folder = os.path.abspath(os.path.expanduser(folder))
    for name, value in (("step", step), ("source", source), ("model_tag", model_tag), ("arch", arch)):
        if value is not None:
            raise NanosealError(f"{folder}: a Hugging Face model folder (config.json) has no {name} to choose; "
                                f"drop --{name.replace('_', '-')}")
    config = read_config(folder)  # an unsupported model fails before anything else is read
    tokenizer = HFTokenizer.from_directory(folder)
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise NanosealError(f"{os.path.join(folder, 'tokenizer.json')}: {tokenizer.get_vocab_size()} tokens, but "
                            f"config.json's vocab_size is {config.vocab_size}")
    model, meta = build_hf_model(folder, device, phase)
    meta = dict(meta, checkpoint_dir=folder, arch=config.arch)
    return model, tokenizer, meta
