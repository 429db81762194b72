"""Experiment: which TTT recipes solve held-out procedural families after a few minutes of pretraining?"""
import os, sys, time, json, random
import torch
from nanoseal.arc.gen import TRAIN_FAMILIES, EVAL_FAMILIES, make_task
from nanoseal.gpt import GPT, GPTConfig
from nanoseal.tokenizer import Tokenizer, DIGIT_SPLIT_PATTERN
from nanoseal.train.data import task_stream, grid_documents, tokenizer_corpus, selfedit_documents
from nanoseal.train.loop import TrainConfig, train
from nanoseal.seal.ttt import TTTConfig, run_ttt
from nanoseal.seal.selfedit import SelfEdit, selfedit_conversation

FAMS = os.environ.get("FAMS", "").split(",") if os.environ.get("FAMS") else None
out = sys.argv[1]; minutes = float(sys.argv[2]); max_side = int(sys.argv[3]); n_layer = int(sys.argv[4]); n_embd = int(sys.argv[5])
os.makedirs(out, exist_ok=True)
torch.manual_seed(0); torch.set_num_threads(int(os.environ.get("THREADS", "1")))
t0 = time.time()
tokdir = os.path.join(out, "tokenizer")
if os.path.exists(os.path.join(tokdir, "tokenizer.pkl")):
    tok = Tokenizer.from_directory(tokdir)
else:
    tok = Tokenizer.train_from_iterator(tokenizer_corpus(task_stream(TRAIN_FAMILIES, 1, max_side=max_side), 1500, 0), vocab_size=512, pattern=DIGIT_SPLIT_PATTERN)
    tok.save(tokdir)
print("tokenizer", time.time() - t0, flush=True)
t = make_task("flip_lr", 5, max_side=max_side)
print("selfedit prompt tokens", len(tok.render_for_completion(selfedit_conversation(t))), flush=True)
cfg = GPTConfig(sequence_len=512, vocab_size=tok.get_vocab_size(), n_layer=n_layer, n_head=4, n_kv_head=4, n_embd=n_embd)
model = GPT(cfg); model.init_weights()
print("params", model.num_params(), flush=True)
docs = grid_documents(task_stream(FAMS or TRAIN_FAMILIES, 0, min_side=int(os.environ.get("MINS", "3")), max_side=max_side), tok, 512, 0, train_on="all")
s = train(model, docs, TrainConfig(batch_size=8, seq_len=512, max_steps=100000, max_seconds=minutes*60, log_every=50, save_every=100), os.path.join(out, "ckpt"), {}, pad_id=tok.get_bos_token_id())
print("pretrain", s, flush=True)
model.eval()
recipes = []
for lr in (1e-3, 1e-2, 3e-2, 1e-1):
    for ep in (1, 3):
        for basic in (False,):
            recipes.append(SelfEdit(basic, False, False, False, strategy="train_using_output_tokens", learning_rate=lr, num_train_epochs=ep))
ttt = TTTConfig(max_views=None, n_max=int(os.environ.get("NMAX", "16")))
from nanoseal.train.data import feasible_families
for split, fams in (("heldout-instances", FAMS), ("eval", feasible_families(EVAL_FAMILIES, 3, max_side)[:4])):
  res = {}
  for fam in fams:
   for inst in (7, 8):
    task = make_task(fam, 1_000_000 + inst, min_side=int(os.environ.get("MINS", "3")), max_side=max_side)
    name = f"{fam}-{inst}"
    if True:
        t1 = time.time()
        results, base = run_ttt(model, tok, task, recipes, ttt, seed=0, include_base=True)
        res[name] = [base.reward] + [r.reward for r in results]
        print(split, name, "icl", base.reward, round(base.cell_accuracy, 2), "ttt", [r.reward for r in results], [round(r.cell_accuracy, 2) for r in results], [r.steps for r in results], f"{time.time()-t1:.1f}s", flush=True)
    print(split, "per recipe solves", [sum(v[i] for v in res.values()) for i in range(len(recipes) + 1)], flush=True)
print("recipes", [r.canonical() for r in recipes])
