"""
ARC toolkit: tasks (data), grid text (grids), invertible augmentations (augment), test-time-training data
(ttt_data), few-shot prompts (prompts), inverse-and-vote scoring (vote), pictures (render), procedural task
families (gen) and the `nanoseal arc ...` subcommands (cli). Import the submodules directly.
"""
