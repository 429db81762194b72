"""
Checkpoints in nanochat's layout, so nanochat's own checkpoints load here and ours load there.

    <base>/tokenizer/tokenizer.pkl (+ token_bytes.pt)
    <base>/<phase>_checkpoints/<tag>/model_NNNNNN.pt    state dict
    <base>/<phase>_checkpoints/<tag>/meta_NNNNNN.json   {"model_config": GPTConfig fields, "step": ..., ...}
    <base>/<phase>_checkpoints/<tag>/optim_NNNNNN_rank0.pt  (optional)

    from nanoseal.checkpoint import load_model, save_checkpoint
    model, tokenizer, meta = load_model(path, step=None, device="cpu")

`path` is a base dir (holding tokenizer/ and *_checkpoints/), a phase dir (holding d<N> tags) or one
checkpoint folder (tokenizer then at ../../tokenizer): nanochat's own base dir (~/.cache/nanochat) works as
it is. The largest d<N> tag and the last step are picked by default; `_orig_mod.` prefixes (torch.compile)
are stripped; bf16 weights (nanochat saves wte and value_embeds so) are upcast to fp32 on every device, so the
model runs with or without autocast. Files are read with torch.load(weights_only=True).

The architecture version (nanoseal.models.nanochat_versions) is detected from which keys the state dict has and
their shapes (detect_arch); the one thing the weights cannot tell (the week of nanochat-2026-03-02, softcap 20)
comes from `arch=` (the CLI's --arch) or an "arch" in model_config, either checked to fit the weights.
Anything unexpected (an unsupported architecture, a corrupt file) raises NanosealError with a one-line message.

A Hugging Face model folder (a config.json inside: Llama 3.x, SmolLM2, Qwen2.5, ...) loads through
nanoseal.hf_checkpoint; a policy nanoseal saved from such a model (meta model_config with a Llama-family "arch")
loads here as the Llama family's config.
"""

import glob
import os
import re

import torch

from nanoseal.common import NanosealError, atomic_torch_save, atomic_write_json, read_json_object
from nanoseal.modelcheck import check_model_config
from nanoseal.models import build_model_from_config
from nanoseal.models.llama import ARCHS as LLAMA_ARCHS
from nanoseal.models.llama import config_from_dict as llama_config_from_dict
from nanoseal.models.nanochat import GPTConfig
from nanoseal.models.nanochat_versions import detect_arch, get_arch, same_weights

# phase folder names, most trained first (the order load_model prefers when a base dir holds several)
PHASES = {"rl": "chatrl_checkpoints", "sft": "chatsft_checkpoints", "mid": "mid_checkpoints",
          "base": "base_checkpoints"}


def save_checkpoint(checkpoint_dir: str, step: int, model_state: dict, optimizer_state: dict | None,
                    meta: dict, rank: int = 0) -> None:
    """Write model_NNNNNN.pt + meta_NNNNNN.json (rank 0) and optim_NNNNNN_rank<r>.pt, each atomically."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    if rank == 0:
        atomic_torch_save(model_state, os.path.join(checkpoint_dir, f"model_{step:06d}.pt"))
        atomic_write_json(os.path.join(checkpoint_dir, f"meta_{step:06d}.json"), meta)
    if optimizer_state is not None:
        atomic_torch_save(optimizer_state, os.path.join(checkpoint_dir, f"optim_{step:06d}_rank{rank:d}.pt"))


def _torch_load(path: str, device) -> object:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise NanosealError(f"{path}: file not found") from None
    except Exception as e:  # corrupt zip, pickle refused by weights_only, truncated file...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NanosealError(f"{path}: not a readable checkpoint ({msg[:200]})") from None


def load_checkpoint(checkpoint_dir: str, step: int, device="cpu", load_optimizer: bool = False,
                    rank: int = 0) -> tuple[dict, dict | None, dict]:
    """Read (model_state, optimizer_state or None, meta) of one step."""
    model_path = os.path.join(checkpoint_dir, f"model_{step:06d}.pt")
    meta_path = os.path.join(checkpoint_dir, f"meta_{step:06d}.json")
    model_state = _torch_load(model_path, device)
    if not isinstance(model_state, dict):
        raise NanosealError(f"{model_path}: expected a state dict, found {type(model_state).__name__}")
    optimizer_state = None
    if load_optimizer:
        optimizer_state = _torch_load(os.path.join(checkpoint_dir, f"optim_{step:06d}_rank{rank:d}.pt"), device)
    meta = read_json_object(meta_path)
    if not isinstance(meta.get("model_config"), dict):
        raise NanosealError(f"{meta_path}: field 'model_config' missing or not an object")
    return model_state, optimizer_state, meta


def find_largest_model(phase_dir: str) -> str:
    """The tag with the largest depth d<N> under a phase dir, else the most recently modified tag."""
    tags = [t for t in os.listdir(phase_dir) if os.path.isdir(os.path.join(phase_dir, t))]
    if not tags:
        raise NanosealError(f"{phase_dir}: no checkpoint folders inside")
    depth_tags = [(int(m.group(1)), t) for t in tags if (m := re.fullmatch(r"d(\d+)", t))]
    if depth_tags:
        return max(depth_tags)[1]
    return max(tags, key=lambda t: os.path.getmtime(os.path.join(phase_dir, t)))


def find_last_step(checkpoint_dir: str) -> int:
    """The largest NNNNNN among model_NNNNNN.pt in a checkpoint folder."""
    steps = []
    for f in glob.glob(os.path.join(checkpoint_dir, "model_*.pt")):
        m = re.fullmatch(r"model_(\d+)\.pt", os.path.basename(f))
        if m:
            steps.append(int(m.group(1)))
    if not steps:
        raise NanosealError(f"{checkpoint_dir}: no model_NNNNNN.pt checkpoints found")
    return max(steps)


def resolve_checkpoint_dir(path: str, phase: str | None = None, model_tag: str | None = None
                           ) -> tuple[str, str]:
    """Map a base dir / phase dir / checkpoint folder to (checkpoint_dir, tokenizer_dir)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise NanosealError(f"{path}: no such checkpoint folder")
    if glob.glob(os.path.join(path, "model_*.pt")):  # one checkpoint folder
        return path, os.path.normpath(os.path.join(path, "..", "..", "tokenizer"))
    phase_names = [PHASES[phase]] if phase else list(PHASES.values())
    for name in phase_names:  # a base dir
        phase_dir = os.path.join(path, name)
        if os.path.isdir(phase_dir):
            tag = model_tag or find_largest_model(phase_dir)
            return os.path.join(phase_dir, tag), os.path.join(path, "tokenizer")
    if os.path.basename(path).endswith("_checkpoints"):  # a phase dir
        tag = model_tag or find_largest_model(path)
        return os.path.join(path, tag), os.path.join(os.path.dirname(path), "tokenizer")
    wanted = PHASES[phase] if phase else "/".join(PHASES.values())
    raise NanosealError(f"{path}: neither a checkpoint folder (model_*.pt) nor a base dir with {wanted}")


def check_architecture(state: dict, model_config: dict, where: str, arch: str | None = None) -> GPTConfig:
    """The GPTConfig of a checkpoint: its version detected from the weights (or arch, or model_config's "arch",
    checked to fit them) and its model_config fields checked; a one-line NanosealError otherwise. A Llama-family
    model_config (saved from a Hugging Face model) is that family's config."""
    if model_config.get("arch") in LLAMA_ARCHS:
        if arch is not None:
            raise NanosealError(f"{where}: --arch names nanochat versions; this is a {model_config['arch']} model")
        return llama_config_from_dict(model_config, where)
    try:
        detected = detect_arch(state, model_config)
    except NanosealError as e:
        raise NanosealError(f"{where}: {e}") from None
    known = set(GPTConfig.__dataclass_fields__)
    unknown = sorted(set(model_config) - known)
    if unknown:
        raise NanosealError(f"{where}: model_config has unsupported fields {unknown}; supported: {sorted(known)}")
    chosen, source = detected, "detected"
    for given, name in ((model_config.get("arch"), "model_config's arch"), (arch, "--arch")):
        if given is None:
            continue
        try:
            get_arch(given)
        except NanosealError as e:
            raise NanosealError(f"{where}: {name}: {e}") from None
        vocab = model_config.get("vocab_size")
        fits = same_weights(detected, vocab if isinstance(vocab, int) else 0)
        if given not in fits:
            raise NanosealError(f"{where}: {name} {given} does not fit these weights ({detected} detected); "
                                f"versions with these weights: {', '.join(fits)}")
        chosen, source = given, name
    if not get_arch(chosen).short_window and model_config.get("window_pattern", "L") != "L":
        raise NanosealError(f"{where}: model_config has unsupported fields ['window_pattern'] for {chosen} "
                            f"({source}: no sliding windows before nanochat-2026-01-11)")
    try:
        return GPTConfig(**{**model_config, "arch": chosen})
    except TypeError as e:
        raise NanosealError(f"{where}: bad model_config ({e})") from None


def build_model(checkpoint_dir: str, step: int | None, device="cpu", phase: str = "eval",
                arch: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Instantiate the model of a checkpoint folder at a step (default last). Returns (model, meta)."""
    device = torch.device(device)
    if step is None:
        step = find_last_step(checkpoint_dir)
    state, _, meta = load_checkpoint(checkpoint_dir, step, device)
    where = os.path.join(checkpoint_dir, f"model_{step:06d}.pt")
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    config = check_architecture(state, meta["model_config"], where, arch)
    state = {k: v.float() if v.dtype == torch.bfloat16 else v for k, v in state.items()}  # fp32 master weights
    check_model_config(config, where, device, state)  # sizes, shapes and memory, before anything is allocated
    try:
        with torch.device("meta"):
            model = build_model_from_config(config)
    except (NanosealError, AssertionError, ValueError, TypeError) as e:
        raise NanosealError(f"{where}: bad model_config ({e})") from None
    model.to_empty(device=device)
    model.init_weights()  # fills the rotary buffers (weights are overwritten below)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise NanosealError(f"{where}: state dict does not match model_config as {config.arch} "
                            f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise NanosealError(f"{where}: {k} has shape {tuple(v.shape)}, model_config implies "
                                f"{tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    model.train(phase == "train")
    return model, meta


def load_model(path: str, step: int | None = None, device="cpu", phase: str = "eval",
               source: str | None = None, model_tag: str | None = None, arch: str | None = None):
    """Load (model, tokenizer, meta) from a base dir, phase dir, checkpoint folder or Hugging Face model folder;
    meta["arch"] is the version (the model_type for a Hugging Face folder).
    arch: the version where the weights cannot tell (see the top); None detects it."""
    from nanoseal.hf_checkpoint import is_hf_folder, load_hf_model
    from nanoseal.tokenizer import Tokenizer

    if is_hf_folder(path):  # a Hugging Face model folder: config.json, safetensors, tokenizer.json
        return load_hf_model(path, device=device, phase=phase, step=step, source=source, model_tag=model_tag,
                             arch=arch)
    checkpoint_dir, tokenizer_dir = resolve_checkpoint_dir(path, source, model_tag)
    model, meta = build_model(checkpoint_dir, step, device, phase, arch)
    tokenizer = Tokenizer.from_directory(tokenizer_dir)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        raise NanosealError(f"{tokenizer_dir}: tokenizer has {tokenizer.get_vocab_size()} tokens but the model's "
                            f"vocab_size is {model.config.vocab_size}")
    meta = dict(meta, checkpoint_dir=checkpoint_dir, arch=model.config.arch)
    return model, tokenizer, meta
