"""PyTorch attention over a compressed prompt plus a dense tail, recovering pruned keys on the fly (spec §3).

Tokens are processed in blocks with an online softmax, so no dense copy of all keys ever exists. For SparK keys
the score of token t is computed in the factored form the kernel uses:

    score_t = Σ_{j kept} q_j K[t, j]  +  r_t · Σ_{j pruned} sign[t, j] · (q ⊙ u)_j

(``constant``: r_t = c, u = 1; ``zero``: no second term; ``gaussian`` / ``exponential`` recover the block's keys).
"""

from __future__ import annotations

import math
import numbers

import torch

from sparkv.cache.layout import DenseKeys, Prefix, SparKKeys, SparKPages, ThinKKeys, unpack_bits
from sparkv.kernels.recover.reference import recover_block_ref

NEG_INF = float("-inf")


def check_scaling(scaling) -> None:
    """The softmax scale of every attention path: a finite real number > 0 (a Python or NumPy scalar, not a tensor,
    whose value would have to be read back from its device)."""
    if isinstance(scaling, bool) or not isinstance(scaling, numbers.Real) or not math.isfinite(scaling) \
            or scaling <= 0:
        raise ValueError(f"scaling must be a finite number > 0, got {scaling!r}")


def check_tail(query: torch.Tensor, prefix: Prefix | None, tail_keys: torch.Tensor | None,
               tail_values: torch.Tensor | None, tail_length: torch.Tensor | None = None) -> None:
    """Shapes shared by every attention path: query ``[B, HQ, Q, D]``; the tail's keys and values both given (or
    both None), ``[B, H, ST, D]`` alike and, with a prefix, with its B, H and D; HQ a multiple of H; a
    ``tail_length`` only with a tail, as a one-element integer tensor on the query's device (its value is not read
    here: that would synchronise with the device)."""
    if query.dim() != 4:
        raise ValueError(f"query must be [B, HQ, Q, D], got {tuple(query.shape)}")
    b, hq, _, d = query.shape
    if (tail_keys is None) != (tail_values is None):
        raise ValueError("tail_keys and tail_values must be given together (or both None)")
    if tail_length is not None:
        if tail_keys is None:
            raise ValueError("tail_length needs tail_keys / tail_values (the buffers it counts tokens of)")
        if not isinstance(tail_length, torch.Tensor) or tail_length.numel() != 1 \
                or tail_length.dtype not in (torch.int32, torch.int64) or tail_length.device != query.device:
            raise ValueError(f"tail_length must be a one-element int32/int64 tensor on {query.device}, got "
                             + (f"{tuple(tail_length.shape)} {tail_length.dtype} on {tail_length.device}"
                                if isinstance(tail_length, torch.Tensor) else type(tail_length).__name__))
    ref = (prefix.batch, prefix.num_heads, prefix.num_tokens, prefix.head_dim) if prefix is not None else None
    if tail_keys is not None:
        if tail_keys.dim() != 4 or tail_keys.shape != tail_values.shape:
            raise ValueError(f"tail_keys {tuple(tail_keys.shape)} and tail_values {tuple(tail_values.shape)} must "
                             "both be [B, H, ST, D]")
        tb, th, _, td = tail_keys.shape
        if (tb, td) != (b, d) or (ref is not None and th != ref[1]):
            raise ValueError(f"the tail [B, H, ST, D] = {list(tail_keys.shape)} does not match the query "
                             f"[B, HQ, Q, D] = {list(query.shape)}"
                             + (f" and the prefix's H = {ref[1]}" if ref else ""))
        ref = ref or tail_keys.shape
    if ref is not None and (ref[0] != b or ref[-1] != d or hq % ref[1]):
        raise ValueError(f"query [B, HQ, Q, D] = {list(query.shape)} does not fit the keys [B, H, S, D] = {list(ref)} "
                         "(same B and D, HQ a multiple of H)")


def _block_scores(keys, q: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Scores ``[B, H, G·Q, end-start]`` float32 of grouped queries ``q [B, H, G·Q, D]`` against one key block."""
    if isinstance(keys, DenseKeys):
        return q @ keys.keys[:, :, start:end].float().transpose(-1, -2)
    if isinstance(keys, ThinKKeys):
        idx = keys.channel_idx.long().unsqueeze(2).expand(-1, -1, q.shape[2], -1)
        return q.gather(-1, idx) @ keys.kept_values[:, :, start:end].float().transpose(-1, -2)
    if not isinstance(keys, SparKKeys):
        raise TypeError(f"unknown key layout {type(keys).__name__}")
    if keys.recovery in ("gaussian", "exponential"):
        return q @ recover_block_ref(keys, start, end).transpose(-1, -2)
    d = keys.head_dim
    kept = unpack_bits(keys.kept_bits[:, :, start:end], d)
    # masked_scatter fills the kept positions in channel order; int8 arithmetic for the signs: both several times
    # faster on the CPU than boolean-index assignment and nested torch.where (this path is the CPU decode).
    kept_dense = torch.zeros(kept.shape, dtype=torch.float32, device=q.device)
    kept_dense.masked_scatter_(kept, keys.kept_values[:, :, start:end].float())
    scores = q @ kept_dense.transpose(-1, -2)
    if keys.recovery == "zero":
        return scores
    positive = unpack_bits(keys.sign_bits[:, :, start:end], d)
    signed_pruned = ((positive.to(torch.int8) * 2 - 1) * ~kept).float()  # ±1 on pruned channels, 0 on kept ones
    if keys.recovery == "constant":
        return scores + keys.constant * (q @ signed_pruned.transpose(-1, -2))
    qu = q * keys.u.unsqueeze(-2)
    r = keys.scale[:, :, start:end].float().unsqueeze(-2)
    return scores + r * (qu @ signed_pruned.transpose(-1, -2))


def decode_attn_ref(
    query: torch.Tensor,
    prefix: Prefix | None,
    tail_keys: torch.Tensor | None,
    tail_values: torch.Tensor | None,
    scaling: float,
    block_size: int = 1024,
    tail_length: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of new queries over a compressed prefix and a dense tail.

    Args:
        query: ``[B, HQ, Q, D]``, the Q newest positions (the last Q tail tokens are their own keys).
        prefix: the compressed prompt (``lengths`` masks each row's padding), as arrays or pages, or None.
        tail_keys, tail_values: ``[B, H, ST, D]`` dense keys/values appended after compression, or None.
            Query i sees tail tokens ``0 .. ST - Q + i`` (causal).
        scaling: softmax scale.
        block_size: tokens per block.
        tail_length: ``[1]`` integer tensor: only the tail's first ``tail_length`` tokens exist (the queries are the
            last Q of them), the rest of its buffers is capacity; None: all ``ST``.

    Returns:
        ``[B, HQ, Q, D]`` in the query dtype; accumulation in float32.
    """
    check_tail(query, prefix, tail_keys, tail_values, tail_length)
    check_scaling(scaling)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    b, hq, nq, d = query.shape
    if prefix is None and tail_values is None:
        raise ValueError("attention needs a prefix or a tail")
    h = prefix.num_heads if prefix is not None else tail_values.shape[1]
    g = hq // h
    q = (query.float() * scaling).reshape(b, h, g * nq, d)  # query may be a transposed view (nq > 1)
    m = torch.full((b, h, g * nq, 1), NEG_INF, device=query.device)
    denom = torch.zeros_like(m)
    acc = torch.zeros(b, h, g * nq, d, device=query.device)

    def absorb(scores: torch.Tensor, values: torch.Tensor) -> None:
        nonlocal m, denom, acc
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        safe = torch.where(m_new == NEG_INF, 0.0, m_new)
        p = torch.exp(scores - safe)
        alpha = torch.exp(m - safe)
        denom = denom * alpha + p.sum(-1, keepdim=True)
        acc = acc * alpha + p @ values.float()
        m = m_new

    if prefix is not None:
        lengths = prefix.lengths.to(query.device).view(b, 1, 1, 1)
        for start in range(0, prefix.num_tokens, block_size):
            end = min(start + block_size, prefix.num_tokens)
            if isinstance(prefix, SparKPages):  # unpacked one block at a time: memory stays bounded
                keys, values = prefix.unpack(start, end)
                scores = _block_scores(keys, q, 0, end - start)
            else:
                scores, values = _block_scores(prefix.keys, q, start, end), prefix.values[:, :, start:end]
            pos = torch.arange(start, end, device=query.device).view(1, 1, 1, -1)
            absorb(scores.masked_fill(pos >= lengths, NEG_INF), values)
    if tail_keys is not None and tail_keys.shape[-2] > 0:
        st = tail_keys.shape[-2]
        valid = st if tail_length is None else tail_length.reshape(()).long()  # a tensor: no host sync
        q_pos = (valid - nq + torch.arange(nq, device=query.device)).repeat(g).view(1, 1, g * nq, 1)
        for start in range(0, st, block_size):
            end = min(start + block_size, st)
            scores = q @ tail_keys[:, :, start:end].float().transpose(-1, -2)
            pos = torch.arange(start, end, device=query.device).view(1, 1, 1, -1)
            values = tail_values[:, :, start:end].float()
            if tail_length is not None:  # slots past the length are capacity, possibly never written (NaN · 0)
                values = values.masked_fill(pos.view(1, 1, -1, 1) >= valid, 0.0)
            absorb(scores.masked_fill(pos > q_pos, NEG_INF), values)
    out = acc / denom
    return out.view(b, hq, nq, -1).to(query.dtype)


def combine_partials_ref(o_part: torch.Tensor, lse_part: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Merge split partials as the combine kernel does, in plain PyTorch: ``o_part [B*H, NS, G, D]`` (each split's
    normalised output), ``lse_part [B*H, NS, G]`` (its log-sum-exp in base 2, -inf for an empty split) ->
    ``[B, HQ, 1, D]`` in the query dtype, each split weighted by its share of the softmax mass."""
    b, hq, _, d = query.shape
    weights = torch.softmax(lse_part.float() * math.log(2.0), dim=1)  # over the splits
    out = (weights.unsqueeze(-1) * o_part.float()).sum(1)  # [B*H, G, D]
    return out.reshape(b, hq, 1, d).to(query.dtype)
