"""`python -m nanoseal.lora`: the same as `nanoseal lora-info` (LoRA parameter counts)."""

import argparse

from nanoseal.lora.info import add_lora_info_args, lora_info_main

parser = argparse.ArgumentParser(prog="python -m nanoseal.lora", description="LoRA parameter counts")
add_lora_info_args(parser)
raise SystemExit(lora_info_main(parser.parse_args()))
