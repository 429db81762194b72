"""
SEAL's outer machinery for ARC: self-edits (selfedit.py: prompt, schema, parse, sampling), test-time training of
K LoRA adapters per task (ttt.py), the ReST-EM loop (restem.py) and the baselines (baselines.py).

Submodules are imported directly, e.g. `from nanoseal.seal.selfedit import parse_self_edit`.
"""
