"""Exact name-constrained decoding of the 1-advertiser model: every valid name (the preset pool plus
the user's active advertisers, or every advertiser under the `open` rule) scored as the whole
completion, its tokens then its end (the end of sequence, or after a behaviour sequence also the
`|` separator), and the best `top_k` names returned in order.

Beam search over names only approximates this top-k: a beam can end on a misspelt or unknown name,
two beams can spell one name, and a name whose first token is unlikely falls out of the beam early.

Scoring is bounded, and exact on its own scores: log P(name) <= log P(its first token), which the prompt's
prefill gives for every name at once. Names are scored in the order of that bound, and a prompt
stops once its `top_k`-th best score is above the bound of every name not yet scored (none of them
can enter the top-k). When a name's first token nearly fixes the rest (a trained model; the demo's
226 names have 226 distinct first tokens), ~top_k names are scored instead of all of them: on the
demo world's behaviour model, 28 of 226 names a serving user.

A scoring pass packs each prompt's names into one row after the prompt's KV cache, with a 4D
attention mask under which each name sees the prompt and its own earlier tokens only: the cache is
never repeated per name (repeating it cost more than the names' forward pass).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RankedName(NamedTuple):
    """One allowed name of a prompt: its log-probability as the whole answer, and its token count."""

    name: str
    logprob: float
    num_tokens: int


class Prefill(NamedTuple):
    """A batch of prompts run once: their KV cache, attention mask and next-token log-probabilities."""

    cache: object
    mask: object
    first_logprobs: object  # (prompts, vocabulary) float32
    pad_token_id: int
    tokens: int  # the tokens the prefill ran: a shared prefix once, then each prompt's own


class NameScores(NamedTuple):
    """`name_scores`' result: the scores, and the tokens its two forward passes ran (for tokens/s)."""

    scores: object  # (prompts, max names) float32, -inf past a prompt's names
    tokens: int


SHARED_PREFIX_MIN_TOKENS = 16  # a shorter common prefix is not worth its own forward pass


def _shared_prefix(ids: list[list[int]]) -> int:
    """The number of leading tokens every prompt of `ids` shares, leaving each at least one token of its own."""
    import os.path

    return min(len(os.path.commonprefix(ids)), min(map(len, ids)) - 1)


def _shared_tokens(ids: list[list[int]]) -> int:
    """How many leading tokens `prefill_prompts` runs once for the batch `ids` (0: none)."""
    shared = _shared_prefix(ids) if len(ids) > 1 else 0
    return shared if shared >= SHARED_PREFIX_MIN_TOKENS else 0


def prefill_ids(model, input_ids, attention_mask, pad_token_id: int) -> Prefill:
    """`Prefill` of left-padded token ids (prompts, length) with their attention mask: what `prefill_prompts`
    runs when the prompts share no prefix worth its own pass, and what a benchmark of random ids runs."""
    import torch

    from llm_predictor.decoding import prefill

    cache, first = prefill(model, input_ids, attention_mask)
    return Prefill(cache, attention_mask, torch.log_softmax(first.float(), dim=-1), pad_token_id,
                   int(attention_mask.sum()))


def prefill_prompts(model, tokenizer, prompts: list[str], is_grad: bool = False) -> Prefill:
    """Run the prompts once, keeping the graph when `is_grad` (GRPO trains through the scores). The tokens all
    prompts share (the paper's template header: role, requirements, preset pool, ~40% of a 1-advertiser prompt)
    run once and their cache is repeated for each prompt, as the paper's prefix caching (3.7); each prompt's own
    tokens follow, left-padded, so the padding sits between the shared prefix and them (masked; positions
    number only real tokens)."""
    import torch

    from llm_predictor.decoding import prefill

    if tokenizer.padding_side != "left":
        raise ValueError("name ranking needs a left-padding tokenizer (as `load_tokenizer` makes)")
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    shared = _shared_tokens(ids)
    own = tokenizer.pad({"input_ids": [row[shared:] for row in ids]}, return_tensors="pt").to(model.device)
    tokens = shared + sum(len(row) - shared for row in ids)
    with torch.set_grad_enabled(is_grad):
        if not shared:
            return prefill_ids(model, own["input_ids"], own["attention_mask"], tokenizer.pad_token_id)
        prefix = torch.tensor([ids[0][:shared]], device=model.device)
        cache, _ = prefill(model, prefix, torch.ones_like(prefix))
        cache.batch_repeat_interleave(len(prompts))
        mask = torch.cat([torch.ones(len(prompts), shared, dtype=own["attention_mask"].dtype, device=model.device),
                          own["attention_mask"]], dim=1)
        first = model(input_ids=own["input_ids"], attention_mask=mask,
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, shared:], past_key_values=cache,
                      use_cache=True, logits_to_keep=1).logits[:, -1]
    return Prefill(cache, mask, torch.log_softmax(first.float(), dim=-1), tokenizer.pad_token_id, tokens)


def end_token_ids(tokenizer, name_end: str) -> list[int]:
    """The tokens that close an answer name: the end of sequence (`eos`: the 1-advertiser answer), or
    also the item separator (`separator`: a name inside a behaviour sequence, where a name is followed
    by `|`, or by the end when the history ends). Raises ValueError for another `name_end`, or a
    separator the tokenizer splits."""
    from llm_predictor.features import ITEM_SEPARATOR

    if name_end == "eos":
        return [tokenizer.eos_token_id]
    if name_end != "separator":
        raise ValueError(f"name_end must be 'eos' or 'separator', got {name_end!r}")
    separator = tokenizer(ITEM_SEPARATOR, add_special_tokens=False)["input_ids"]
    if len(separator) != 1:
        raise ValueError(f"the tokenizer splits the separator {ITEM_SEPARATOR!r} into {separator}; use name_end='eos'")
    return [tokenizer.eos_token_id, separator[0]]


def _packed_names(requests: list[list[list[int]]], pad_token_id: int):
    """One row per prompt holding its names' tokens one after another (right-padded): the tokens, each
    token's name (block; -1 on padding) and its offset inside the name."""
    import torch

    width = max(sum(map(len, names)) for names in requests)
    tokens = np.full((len(requests), width), pad_token_id, dtype=np.int64)
    block = np.full((len(requests), width), -1, dtype=np.int64)
    offset = np.zeros((len(requests), width), dtype=np.int64)
    for row, names in enumerate(requests):
        lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
        total = int(lengths.sum())
        tokens[row, :total] = np.fromiter((token for ids in names for token in ids), dtype=np.int64, count=total)
        block[row, :total] = np.repeat(np.arange(len(names)), lengths)
        offset[row, :total] = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return torch.from_numpy(tokens), torch.from_numpy(block), torch.from_numpy(offset)


def _score_tensor(model, prefilled: Prefill, prompts: list[int], requests: list[list[list[int]]],
                  end_ids: list[int]):
    """log P(name, then one of `end_ids` | prompt) of each name of `requests[j]` (token ids) after the
    prompt `prompts[j]` of the prefilled batch, as a (len(prompts), max names) float32 tensor (0 past a
    prompt's names), differentiable when grad is enabled. One forward pass: a prompt's names share one row,
    each name attending to the prompt's cache and to its own earlier tokens only (a 4D mask), so the cache
    is never repeated per name. The first token's log-probability is the prefill's, and every other term
    is <= 0, so a score never exceeds its name's bound (rounding is monotone)."""
    import torch
    from transformers import DynamicCache

    from llm_predictor.decoding import additive_mask

    device = model.device
    rows = torch.tensor(prompts, device=device)
    tokens, block, offset = (t.to(device) for t in _packed_names(requests, prefilled.pad_token_id))
    prompt_mask = prefilled.mask[rows].bool()
    width = tokens.shape[1]
    is_name = block >= 0
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    own = (block.unsqueeze(2) == block.unsqueeze(1)) & causal & is_name.unsqueeze(1)
    visible = torch.cat([prompt_mask.unsqueeze(1).expand(-1, width, -1), own], dim=2).unsqueeze(1)
    mask = additive_mask(visible, model.dtype)
    cache = DynamicCache([(layer.keys[rows], layer.values[rows]) for layer in prefilled.cache.layers])
    # positions number on from the prompt's real length, each name from its own start
    logits = model(input_ids=tokens, attention_mask=mask, position_ids=prompt_mask.sum(-1, keepdim=True) + offset,
                   past_key_values=cache, use_cache=True).logits.float()
    normaliser = torch.logsumexp(logits, dim=-1)
    continues = is_name[:, :-1] & (block[:, 1:] == block[:, :-1])
    rest = ((logits[:, :-1].gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1) - normaliser[:, :-1])
            .clamp(max=0.0) * continues)
    is_last = is_name & ~torch.cat([continues, torch.zeros_like(continues[:, :1])], dim=1)
    end = (torch.logsumexp(logits[..., end_ids], dim=-1) - normaliser).clamp(max=0.0) * is_last
    per_token = torch.cat([rest, torch.zeros_like(rest[:, :1])], dim=1) + end
    first = prefilled.first_logprobs[rows.unsqueeze(1), tokens] * (offset == 0) * is_name
    names = max(map(len, requests))
    scores = torch.zeros(len(requests), names + 1, device=device).scatter_add(
        1, torch.where(is_name, block, names), first + per_token)
    return scores[:, :names]


def _score(model, prefilled: Prefill, prompts: list[int], requests: list[list[list[int]]],
           end_ids: list[int]) -> list[np.ndarray]:
    """`_score_tensor` without grad, one array per prompt."""
    import torch

    with torch.no_grad():
        scores = _score_tensor(model, prefilled, prompts, requests, end_ids).cpu().numpy()
    return [scores[row, :len(found)] for row, found in enumerate(requests)]


def name_scores(model, tokenizer, prompts: list[str], name_ids: list[list[list[int]]],
                name_end: str = "eos") -> NameScores:
    """Differentiable (when grad is enabled) log P(name, then its end | prompt) of every name of each prompt,
    one forward pass over the prompts and one over their packed names: a (prompts, max names) float32 tensor,
    -inf past a prompt's names, and the tokens both passes ran. What listwise GRPO (`grpo.py`) trains
    through; `name_logprobs` is its no-grad twin."""
    import torch

    prefilled = prefill_prompts(model, tokenizer, prompts, is_grad=torch.is_grad_enabled())
    scores = _score_tensor(model, prefilled, list(range(len(prompts))), name_ids,
                           end_token_ids(tokenizer, name_end))
    counts = torch.tensor([len(ids) for ids in name_ids], device=scores.device)
    return NameScores(scores.masked_fill(torch.arange(scores.shape[1], device=scores.device) >= counts.unsqueeze(1),
                                         float("-inf")),
                      prefilled.tokens + sum(len(name) for ids in name_ids for name in ids))


def name_logprobs(model, tokenizer, prompts: list[str], name_ids: list[list[list[int]]],
                  names_per_forward: int = 64, name_end: str = "eos") -> list[np.ndarray]:
    """log P(name, then its end (`end_token_ids`) | prompt) of every name of each prompt, given as token ids
    (one array per prompt, in the names' order), `names_per_forward` names of each prompt a forward pass:
    the unbounded scoring `top_k_names` is checked against."""
    prefilled = prefill_prompts(model, tokenizer, prompts)
    end_ids = end_token_ids(tokenizer, name_end)
    scores = [[] for _ in prompts]
    for start in range(0, max(map(len, name_ids), default=0), names_per_forward):
        found = [p for p, ids in enumerate(name_ids) if len(ids) > start]
        for p, part in zip(found, _score(model, prefilled, found,
                                         [name_ids[p][start:start + names_per_forward] for p in found], end_ids)):
            scores[p].append(part)
    return [np.concatenate(parts) if parts else np.zeros(0) for parts in scores]


def top_k_names(model, tokenizer, prompts: list[str], name_ids: list[list[list[int]]], top_k: int,
                name_end: str = "eos") -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """For each prompt (one prefill batch), the indices of its best `top_k` names (best first; ties keep
    the names' order) and their log-probabilities, by bounded scoring (module docstring); also the
    number of names scored, of the `sum(map(len, name_ids))` full scoring would score."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    end_ids = end_token_ids(tokenizer, name_end)
    prefilled = prefill_prompts(model, tokenizer, prompts)
    first = prefilled.first_logprobs.cpu().numpy()
    bounds = [first[p, [ids[0] for ids in found]] if found else np.zeros(0) for p, found in enumerate(name_ids)]

    def score(pending: list[int], chosen: list[np.ndarray]) -> list[np.ndarray]:
        requests = [[name_ids[p][i] for i in found] for p, found in zip(pending, chosen)]
        return _score(model, prefilled, pending, requests, end_ids)

    return bounded_top_k(bounds, score, top_k)


def bounded_top_k(bounds: list[np.ndarray], score, top_k: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """The bounded search of the module docstring, for any scorer: `bounds[p][i]` is an upper bound of name i's
    score in prompt p (its first token's log-probability); `score(prompts, names)` scores, for each prompt index
    of `prompts`, the name indices `names[j]` (an int array), returning one score array each, never above the
    bounds. Returns each prompt's best `top_k` name indices (ties keep the names' order), their scores, and the
    number of names scored. Shared by the transformers scorer (`top_k_names`) and the vLLM backend."""
    orders = [np.argsort(-bound, kind="stable") for bound in bounds]
    scored = [dict() for _ in bounds]  # name index -> score
    taken = [0] * len(bounds)
    step = top_k + 8  # a few past k in the first pass, where most prompts finish

    def is_open(p: int) -> bool:
        if taken[p] == len(orders[p]):
            return False
        if len(scored[p]) < top_k:
            return True
        kth = sorted(scored[p].values(), reverse=True)[top_k - 1]
        return kth <= bounds[p][orders[p][taken[p]]]

    pending = [p for p in range(len(bounds)) if is_open(p)]
    while pending:
        chosen = [orders[p][taken[p]:taken[p] + step] for p in pending]
        scores = score(pending, chosen)
        for p, found, found_scores in zip(pending, chosen, scores, strict=True):
            scored[p].update(zip(found.tolist(), np.asarray(found_scores).tolist()))
            taken[p] += len(found)
        pending, step = [p for p in pending if is_open(p)], top_k
    best = [sorted(found, key=lambda i: (-found[i], i))[:top_k] for found in scored]
    return ([np.array(b, dtype=np.int64) for b in best], [np.array([found[i] for i in b]) for b, found
                                                           in zip(best, scored)], sum(taken))


def prepare_names(tokenizer, allowed_names: list[list[str]]) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Each prompt's names stripped, empty ones dropped and duplicates removed (first kept), and their
    token ids: what `rank_names` scores."""
    names = [list(dict.fromkeys(n.strip() for n in found if n and n.strip())) for found in allowed_names]
    distinct = list(dict.fromkeys(name for found in names for name in found))  # prompts share most names
    ids = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []))
    return names, [[ids[name] for name in found] for found in names]


def rank_names(model, tokenizer, prompts: list[str], allowed_names: list[list[str]], top_k: int,
               name_end: str = "eos", prompts_per_prefill: int = 32) -> list[list[RankedName]]:
    """For each prompt, its best `top_k` allowed names, best first (ties keep the names' order), as scoring
    every name would rank them (up to rounding: `name_logprobs` packs names differently, and bf16 weights
    can flip a near-tie); a name ends as `end_token_ids(tokenizer, name_end)` says.
    Prompts are prefilled `prompts_per_prefill` at a time.
    Names are stripped and deduplicated; a prompt with no name gets []."""
    from llm_predictor.decoding import check_allowed_names

    check_allowed_names(prompts, allowed_names)
    names, name_ids = prepare_names(tokenizer, allowed_names)
    best, scores = [], []
    for start in range(0, len(prompts), prompts_per_prefill):
        chunk = slice(start, start + prompts_per_prefill)
        chunk_best, chunk_scores, _ = top_k_names(model, tokenizer, prompts[chunk], name_ids[chunk], top_k,
                                                      name_end=name_end)
        best += chunk_best
        scores += chunk_scores
    return ranked_names(names, name_ids, best, scores)


def ranked_names(names: list[list[str]], name_ids: list[list[list[int]]], best: list[np.ndarray],
                 scores: list[np.ndarray]) -> list[list[RankedName]]:
    """`RankedName`s from a bounded search's best indices and scores (`prepare_names`' names and ids)."""
    return [[RankedName(found[i], float(score), len(ids[i])) for i, score in zip(order, score_row)]
            for found, ids, order, score_row in zip(names, name_ids, best, scores, strict=True)]
