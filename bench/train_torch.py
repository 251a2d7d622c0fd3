"""PyTorch peer of bench/train.ts: the same causal LM (torch_common.py) from the same initial
weights, AdamW, the same batches in the same order, NEFTune (HF convention) when asked; prints
{tokensPerSecond, firstLoss, lastLoss, threads} like the Trainer worker."""
import json, sys, time
import numpy as np
import torch
from torch_common import adamw, causal_lm_loss, lm_logits, load_weights, neftune_noise

d, neftune = sys.argv[1], sys.argv[2] == '1'
c = json.load(open(f'{d}/config.json'))
torch.set_num_threads(c['threads'])
torch.manual_seed(0)
B, L = c['batch'], c['seq']
p = load_weights(d)
batches = torch.from_numpy(np.fromfile(f'{d}/batches.bin', dtype=np.int64).reshape(c['batches'], B, L))
opt = adamw(list(p.values()), c['lr'])
hook = neftune_noise(c['alpha']) if neftune else None

def step(ids):
    opt.zero_grad(set_to_none=True)
    loss = causal_lm_loss(lm_logits(p, ids, c['layers'], c['heads'], hook), ids)
    loss.backward()
    opt.step()
    return loss.item()

times, losses = [], []
for k in range(c['warmup'] + c['steps']):
    t = time.perf_counter()
    losses.append(step(batches[k % c['batches']]))
    if k >= c['warmup']:
        times.append(time.perf_counter() - t)
print(json.dumps({'tokensPerSecond': B * L / sorted(times)[len(times) // 2], 'firstLoss': losses[0], 'lastLoss': losses[-1], 'threads': torch.get_num_threads()}))
