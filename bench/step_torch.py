"""PyTorch peer of bench/step.ts: the builder GPT (embedding + positions, LayerNorm, tied head),
causal-LM loss, AdamW, same weights and batch; prints {ms, firstLoss, lastLoss} like the ORT worker."""
import json, sys, time
import numpy as np
import torch

d, steps, cfg = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(2)
V, D, P, B, L = cfg['vocab'], cfg['dim'], cfg['maxPositions'], cfg['batch'], cfg['seq']
w = np.fromfile(f'{d}/weights.bin', dtype=np.float32)
sizes = [V * D, P * D, D, D]
parts = np.split(w, np.cumsum(sizes)[:-1])
wte, wpe, ln_w, ln_b = (torch.nn.Parameter(torch.from_numpy(p.copy()).reshape(s)) for p, s in zip(parts, [(V, D), (P, D), (D,), (D,)]))
ids = torch.from_numpy(np.fromfile(f'{d}/ids.bin', dtype=np.int64).reshape(B, L))
opt = torch.optim.AdamW([wte, wpe, ln_w, ln_b], lr=cfg['lr'], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
pos = torch.arange(L)

def step():
    opt.zero_grad(set_to_none=True)
    h = torch.nn.functional.layer_norm(wte[ids] + wpe[pos], (D,), ln_w, ln_b, eps=1e-5)
    logits = h @ wte.t()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
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
