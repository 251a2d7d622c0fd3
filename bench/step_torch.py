"""PyTorch peer of bench/step.ts: the builder GPT (embedding + positions, LayerNorm, tied head),
causal-LM loss, AdamW, same weights and batch; prints {ms, firstLoss, lastLoss} like the ORT worker."""
import json, sys, time
import numpy as np
import torch
from torch_common import adamw, causal_lm_loss, lm_logits, load_weights

d, steps, cfg = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(2)
B, L = cfg['batch'], cfg['seq']
p = load_weights(d)
ids = torch.from_numpy(np.fromfile(f'{d}/ids.bin', dtype=np.int64).reshape(B, L))
opt = adamw(list(p.values()), cfg['lr'])

def step():
    opt.zero_grad(set_to_none=True)
    loss = causal_lm_loss(lm_logits(p, ids), ids)
    loss.backward()
    opt.step()
    return loss.item()

times, losses = [], []
for k in range(steps + 2):
    t = time.perf_counter()
    losses.append(step())
    if k >= 2:
        times.append((time.perf_counter() - t) * 1000)
print(json.dumps({'ms': sorted(times)[len(times) // 2], 'firstLoss': losses[0], 'lastLoss': losses[-1]}))
