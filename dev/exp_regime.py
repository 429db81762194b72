"""
Regime search for the demo (dev/LOG.md): pretrain a tiny GPT for some minutes on a few procedural families,
then score ICL and TTT with a small recipe grid (4 learning rates x 1 or 3 epochs) on held-out instances.

    THREADS=2 FAMS=flip_lr,recolour MINS=2 python dev/exp_regime.py OUT MINUTES MAX_SIDE N_LAYER N_EMBD

OUT keeps the tokenizer and the checkpoint (a second run with the same OUT resumes/reuses them).
"""

import os
import sys
import time

import torch

from nanoseal.arc.gen import TRAIN_FAMILIES, make_task
from nanoseal.models.nanochat import GPT, GPTConfig
from nanoseal.seal.selfedit import SelfEdit, selfedit_conversation
from nanoseal.seal.ttt import TTTConfig, run_ttt
from nanoseal.tokenizer import DIGIT_SPLIT_PATTERN, Tokenizer
from nanoseal.train.data import grid_documents, task_stream, tokenizer_corpus
from nanoseal.train.loop import TrainConfig, train

out, minutes, max_side = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
n_layer, n_embd = int(sys.argv[4]), int(sys.argv[5])
families = os.environ["FAMS"].split(",") if os.environ.get("FAMS") else list(TRAIN_FAMILIES)
min_side = int(os.environ.get("MINS", "3"))
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("THREADS", "1")))

tok_dir = os.path.join(out, "tokenizer")
if os.path.exists(os.path.join(tok_dir, "tokenizer.pkl")):
    tok = Tokenizer.from_directory(tok_dir)
else:
    corpus = tokenizer_corpus(task_stream(families, 1, min_side=min_side, max_side=max_side), 1500, 0)
    tok = Tokenizer.train_from_iterator(corpus, vocab_size=512, pattern=DIGIT_SPLIT_PATTERN)
    tok.save(tok_dir)
task = make_task(families[0], 5, min_side=min_side, max_side=max_side)
print("self-edit prompt tokens", len(tok.render_for_completion(selfedit_conversation(task))), flush=True)

config = GPTConfig(sequence_len=512, vocab_size=tok.get_vocab_size(), n_layer=n_layer, n_head=4, n_kv_head=4,
                   n_embd=n_embd)
model = GPT(config)
model.init_weights()
docs = grid_documents(task_stream(families, 0, min_side=min_side, max_side=max_side), tok, 512, 0, train_on="all")
cfg = TrainConfig(batch_size=8, seq_len=512, max_steps=100_000, max_seconds=minutes * 60, log_every=50, save_every=100)
print("pretrain", train(model, docs, cfg, os.path.join(out, "ckpt"), {}, pad_id=tok.get_bos_token_id()), flush=True)
model.eval()

recipes = [SelfEdit(False, False, False, False, strategy="train_using_output_tokens", learning_rate=lr,
                    num_train_epochs=epochs) for lr in (1e-3, 1e-2, 3e-2, 1e-1) for epochs in (1, 3)]
ttt = TTTConfig(n_max=int(os.environ.get("NMAX", "16")))
solves = [0] * (1 + len(recipes))
for family in families:
    for seed in (1_000_007, 1_000_008):
        task = make_task(family, seed, min_side=min_side, max_side=max_side)
        t0 = time.time()
        results, base = run_ttt(model, tok, task, recipes, ttt, seed=0, include_base=True)
        rewards = [base.reward] + [r.reward for r in results]
        solves = [a + b for a, b in zip(solves, rewards)]
        print(task.id, "icl", base.reward, round(base.cell_accuracy, 2), "ttt", rewards[1:],
              [round(r.cell_accuracy, 2) for r in results], f"{time.time() - t0:.1f}s", flush=True)
print("solves: icl", solves[0], "per recipe", solves[1:])
print("recipes", [r.canonical() for r in recipes])
