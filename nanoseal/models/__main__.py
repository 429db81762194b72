"""`python -m nanoseal.models`: the parameter count of the default (d12) config in every architecture version."""

import torch

from nanoseal.models import build_model_from_config
from nanoseal.models.nanochat import GPTConfig
from nanoseal.models.nanochat_versions import ARCHS

for name, arch in ARCHS.items():
    with torch.device("meta"):
        model = build_model_from_config(GPTConfig(arch=name, window_pattern="SSSL" if arch.short_window else "L"))
    n = model.num_params()
    print(f"{name}: default GPTConfig (d12): {n:,} parameters ({n / 1e6:.1f}M)")
