"""Shared by the PyTorch peers of the benchmarks (step_torch.py, train_torch.py): the weights that
bench/lm-model.ts writeTorchWeights exported from the ONNX initializers, and the same causal LM in
torch (the builder GPT when layers is 0, else GPT-2 pre-LN blocks as buildBenchLm builds them)."""
import json
import math
import numpy as np
import torch
import torch.nn.functional as F

MASKED = -1e9  # lm-model.ts MASKED: the additive causal mask


def load_weights(d):
    """{name: Parameter} in weights.json order."""
    flat = np.fromfile(f'{d}/weights.bin', dtype=np.float32)
    params, at = {}, 0
    for spec in json.load(open(f'{d}/weights.json')):
        n = int(np.prod(spec['dims']))
        params[spec['name']] = torch.nn.Parameter(torch.from_numpy(flat[at:at + n].copy()).reshape(spec['dims']))
        at += n
    assert at == flat.size, 'weights.bin does not match weights.json'
    return params


def neftune_noise(alpha):
    """NEFTune's rule in Hugging Face's convention (L = the padded sequence length), as a function of the embeddings."""
    return lambda e: e + (torch.rand_like(e) * 2 - 1) * (alpha / math.sqrt(e.shape[1] * e.shape[2]))


def lm_logits(p, ids, layers=0, heads=1, embed_hook=None):
    B, L = ids.shape
    wte = p['transformer.wte.weight']
    D = wte.shape[1]
    tok = wte[ids]
    if embed_hook is not None:
        tok = embed_hook(tok)
    h = tok + p['transformer.wpe.weight'][:L]
    ln = lambda x, n: F.layer_norm(x, (D,), p[f'{n}.weight'], p[f'{n}.bias'], eps=1e-5)
    linear = lambda x, n: x @ p[f'{n}.weight'] + p[f'{n}.bias']
    if layers:
        mask = torch.full((L, L), MASKED).triu(1)
        split = lambda x: x.view(B, L, heads, D // heads).transpose(1, 2)
        for l in range(layers):
            x = ln(h, f'h.{l}.ln_1')
            q, k, v = (split(linear(x, f'h.{l}.attn.{n}')) for n in 'qkv')
            probs = torch.softmax(q @ k.transpose(-1, -2) * (1 / math.sqrt(D // heads)) + mask, dim=-1)
            h = h + linear((probs @ v).transpose(1, 2).reshape(B, L, D), f'h.{l}.attn.proj')
            h = h + linear(F.gelu(linear(ln(h, f'h.{l}.ln_2'), f'h.{l}.mlp.fc')), f'h.{l}.mlp.proj')
    return ln(h, 'ln_f') @ wte.t()


def causal_lm_loss(logits, ids):
    """Logits at i against ids at i + 1, mean over all targets (no padding in the benchmark batches)."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def adamw(params, lr):
    """The step graph's AdamW defaults (bench/*.ts build it with optimizer 'adamw')."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
