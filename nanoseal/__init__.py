"""nanoseal: SEAL-style self-adapting few-shot learning for nanochat-style GPT models, in plain PyTorch."""

__version__ = "0.1.0"
