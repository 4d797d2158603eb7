"""The GPT of ``funcnet.gpt`` in eager PyTorch, the peer of ``benchmarks/gpt.py`` (a helper,
not a benchmark itself; PyTorch is only imported when it is called).

The architecture is nanoGPT's ``model.py``: token and position embeddings, pre-norm blocks
(one ``c_attn`` Linear(C, 3C) giving q, k, v in that order with heads contiguous along C,
causal softmax attention through ``F.scaled_dot_product_attention`` as nanoGPT does when it
is available, ``c_proj``; an MLP of 4C with GELU), a final LayerNorm and an output layer
tied to the token embedding.  ``recipe.bias`` (default True) puts biases in every Linear and
LayerNorm, ``recipe.gelu`` (default "tanh") picks GELU's tanh form or the exact ("erf") one,
as ``funcnet.gpt.Recipe`` does.  ``load_funcnet`` copies funcnet's params in (its Dense
weights are (in, out), a torch Linear's (out, in)); ``optimizer`` and ``lr_at`` are
nanoGPT's ``configure_optimizers`` and ``get_lr`` for the recipe; ``train`` is its
``train.py`` loop on funcnet's window sampler and validation set.
"""

from __future__ import annotations

import math
import time

import numpy as np


def _options(recipe) -> tuple[bool, str]:
    bias, gelu = getattr(recipe, "bias", True), getattr(recipe, "gelu", "tanh")
    if gelu not in ("tanh", "erf"):
        raise ValueError(f"torch gpt: gelu must be 'tanh' or 'erf', got {gelu!r}")
    return bool(bias), gelu


def model(vocab: int, recipe):
    """A fresh ``torch.nn.Module``: ids (N, T) int64 -> logits (N, T, vocab).  Its weights are
    PyTorch's defaults: ``load_funcnet`` gives it funcnet's."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    bias, gelu = _options(recipe)
    c, heads = recipe.width, recipe.heads

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(c, 3 * c, bias=bias)
            self.c_proj = nn.Linear(c, c, bias=bias)

        def forward(self, x):
            n, t, _ = x.shape
            # (N, T, 3C) -> 3 x (N, heads, T, C/heads): q, k, v, then heads, along 3C
            q, k, v = self.c_attn(x).view(n, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(n, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(c, bias=bias), Attention()
            self.ln_2 = nn.LayerNorm(c, bias=bias)
            self.c_fc = nn.Linear(c, 4 * c, bias=bias)
            self.gelu = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
            self.c_proj = nn.Linear(4 * c, c, bias=bias)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, c), nn.Embedding(recipe.context, c)
            self.h = nn.ModuleList(Block() for _ in range(recipe.layers))
            self.ln_f = nn.LayerNorm(c, bias=bias)
            self.lm_head = nn.Linear(c, vocab, bias=False)
            if getattr(recipe, "tie", True):
                self.lm_head.weight = self.wte.weight

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = self.wte(ids) + self.wpe(pos)
            for blk in self.h:
                x = blk(x)
            return self.lm_head(self.ln_f(x))

    return GPT()


def loss_fn(net, ids, targets):
    """Mean cross-entropy over every position, as ``funcnet.gpt.token_cross_entropy``."""
    from torch.nn import functional as F

    logits = net(ids)
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def _funcnet_layout(params, tie: bool):
    """funcnet's gpt params -> (wte, wpe, blocks, final LayerNorm, lm_head or None), a block
    as (ln1, attn, ln2, fc, proj) dicts.  Dropout's empty params are skipped."""
    if tie:
        wte, body, head = params["wte"], params["body"], None
    else:
        wte, body, head = params[0]["W"], params[1], params[2]["W"]
    blocks = []
    for b in body[1:-1]:
        if not b:  # a Dropout after the embeddings
            continue
        (ln1, attn, *_), (ln2, fc, _gelu, proj, *_) = b
        blocks.append((ln1, attn, ln2, fc, proj))
    return wte, body[0]["W"], blocks, body[-1], head


def load_funcnet(net, params, recipe) -> None:
    """Copy funcnet's ``gpt`` params (NumPy or JAX arrays) into ``net`` (from ``model``)."""
    import torch

    def put(dst, a, transpose=False):
        a = np.asarray(a, dtype=np.float32)
        with torch.no_grad():
            dst.copy_(torch.from_numpy(np.ascontiguousarray(a.T if transpose else a)))

    def linear(dst, W, b):
        put(dst.weight, W, True)
        if dst.bias is not None:
            put(dst.bias, b)

    def norm(dst, p):
        put(dst.weight, p["gamma"])
        if dst.bias is not None:
            put(dst.bias, p["beta"])

    wte, wpe, blocks, lnf, head = _funcnet_layout(params, getattr(recipe, "tie", True))
    if len(blocks) != len(net.h):
        raise ValueError(f"torch gpt: {len(blocks)} funcnet blocks for {len(net.h)} torch ones")
    put(net.wte.weight, wte)
    put(net.wpe.weight, wpe)
    for blk, (ln1, attn, ln2, fc, proj) in zip(net.h, blocks, strict=True):
        norm(blk.ln_1, ln1)
        linear(blk.attn.c_attn, attn["W_qkv"], attn.get("b_qkv"))
        linear(blk.attn.c_proj, attn["W_o"], attn.get("b_o"))
        norm(blk.ln_2, ln2)
        linear(blk.c_fc, fc["W"], fc.get("b"))
        linear(blk.c_proj, proj["W"], proj.get("b"))
    norm(net.ln_f, lnf)
    if head is not None:
        put(net.lm_head.weight, head, True)


def funcnet_start(vocab: int, r, seed: int = 0):
    """(net, initial params) of funcnet's ``gpt`` for recipe ``r``, built as
    ``gpt.train_gpt`` builds them (so any model option the recipe carries is followed)."""
    from funcnet import gpt

    net, _step, params, _state, _done = gpt._start(vocab, r, seed, "numpy", None)
    return net, params


def lr_at(it: int, r) -> float:
    """nanoGPT's ``get_lr``: linear warm-up to ``r.lr``, cosine down to ``r.min_lr`` at
    ``r.decay_iters``, ``r.min_lr`` after (``funcnet.optim.warmup_cosine``); ``it`` from 0."""
    if it < r.warmup:
        return r.lr * (it + 1) / (r.warmup + 1)
    ratio = min(1.0, (it - r.warmup) / (r.decay_iters - r.warmup))
    return r.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (r.lr - r.min_lr)


def optimizer(net, r):
    """nanoGPT's ``configure_optimizers`` with funcnet's groups (``gpt.decay_mask``): AdamW,
    weight decay on the matmul weights, none on biases, LayerNorm's and the two embeddings
    (the tied matrix is the token embedding, once).  Fused AdamW is CUDA-only in nanoGPT,
    so the default implementation."""
    import torch

    named = dict(net.named_parameters())  # the tied matrix appears once
    embeddings = {id(net.wte.weight), id(net.wpe.weight)}
    decayed = [p for p in named.values() if p.dim() >= 2 and id(p) not in embeddings]
    kept = [p for p in named.values() if p.dim() < 2 or id(p) in embeddings]
    groups = [
        {"params": decayed, "weight_decay": r.weight_decay},
        {"params": kept, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr_at(0, r), betas=(r.b1, r.b2), eps=1e-8)


def step(net, opt, x, t, lr: float, clip: float):
    """One training step (nanoGPT's ``train.py``): set the lr, forward, backward, clip the
    global gradient norm, AdamW.  -> the loss (a 0-d tensor)."""
    import torch

    for g in opt.param_groups:
        g["lr"] = lr
    loss = loss_fn(net, x, t)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    return loss.detach()


def ids(a):
    """NumPy ids -> an int64 tensor (nanoGPT's batches), sharing memory where it can."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def evaluate(net, data: np.ndarray, context: int, batch: int = 256) -> float:
    """``funcnet.gpt.evaluate``'s validation loss: the mean per-token loss over every
    non-overlapping window (``gpt.validation_starts``), in batches of ``batch``."""
    import torch

    from funcnet import gpt

    starts = gpt.validation_starts(len(data), context)
    total = 0.0
    net.eval()
    with torch.no_grad():
        for part in np.array_split(starts, max(1, math.ceil(len(starts) / batch))):
            x, t = gpt.windows(data, part, context)
            total += float(loss_fn(net, ids(x), ids(t))) * len(part)
    net.train()
    return total / len(starts)


def train(corpus, r, *, seed: int = 0, threads: int | None = None):
    """nanoGPT's ``train.py`` loop for recipe ``r`` in eager PyTorch, from funcnet's initial
    params for ``seed`` and on the windows ``gpt.train_gpt`` draws for it (the same NumPy
    generator), the validation loss at the end only, as ``train_gpt`` with ``eval_every=0``.
    -> (validation loss, training losses, seconds of the whole call)."""
    import torch

    from funcnet import gpt

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = model(corpus.vocab, r)
    load_funcnet(net, funcnet_start(corpus.vocab, r, seed)[1], r)
    net.train()
    opt = optimizer(net, r)
    rng = np.random.default_rng([seed, 1])
    losses = []
    for it in range(r.iters):
        starts = gpt.random_starts(len(corpus.train), r.context, r.batch, rng)
        x, t = gpt.windows(corpus.train, starts, r.context)
        losses.append(float(step(net, opt, ids(x), ids(t), lr_at(it, r), r.clip)))
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        raise FloatingPointError(f"torch gpt: training loss {losses[bad]} at iteration {bad + 1}")
    val = evaluate(net, corpus.val, r.context)
    return val, losses, time.perf_counter() - start
