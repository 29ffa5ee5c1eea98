"""Exact name-constrained decoding of the 1-advertiser model: every valid name (the preset pool plus
the user's active advertisers) scored as the whole completion, its tokens then the end of sequence,
and the names ranked by that log-probability.

Beam search over names only approximates this top-k: a beam can end on a misspelt or unknown name,
two beams can spell one name, and a name whose first token is unlikely falls out of the beam early.
Scoring the ~50 candidates costs one prefill per prompt (its KV cache, repeated for its candidates)
and one short forward over the candidates, where 20 beams decode token by token.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RankedName(NamedTuple):
    """One allowed name of a prompt: its log-probability as the whole answer, and its token count."""

    name: str
    logprob: float
    num_tokens: int


def _completion_tokens(tokenizer, name_ids: list[list[int]]):
    """Right-padded token ids of each name followed by the end of sequence, and their mask."""
    import torch

    completions = [ids + [tokenizer.eos_token_id] for ids in name_ids]
    tokens = torch.full((len(completions), max(map(len, completions))), tokenizer.pad_token_id, dtype=torch.long)
    is_token = torch.zeros(tokens.shape, dtype=torch.bool)
    for row, ids in enumerate(completions):
        tokens[row, :len(ids)] = torch.tensor(ids)
        is_token[row, :len(ids)] = True
    return tokens, is_token


def _groups(name_counts: list[int], rows_per_forward: int) -> list[range]:
    """Consecutive prompts whose names add up to at most `rows_per_forward` (or one prompt)."""
    groups, start, rows = [], 0, 0
    for p, count in enumerate(name_counts):
        if p > start and rows + count > rows_per_forward:
            groups.append(range(start, p))
            start, rows = p, 0
        rows += count
    return groups + [range(start, len(name_counts))] if name_counts else groups


def name_logprobs(model, tokenizer, prompts: list[str], name_ids: list[list[list[int]]],
                  rows_per_forward: int = 256) -> list[np.ndarray]:
    """log P(name, then end of sequence | prompt) for each prompt's names, given as token ids (one
    array per prompt, in the names' order). Prompts go in groups of at most `rows_per_forward`
    names (the memory of the cache rows): each group is prefilled once and its cache rows are
    repeated for the prompts' names."""
    import torch

    from llm_predictor.decoding import prefill

    if tokenizer.padding_side != "left":
        raise ValueError("name_logprobs needs a left-padding tokenizer (as `load_tokenizer` makes)")
    scores = [np.zeros(len(found)) for found in name_ids]
    device = model.device
    for group in _groups([len(found) for found in name_ids], rows_per_forward):
        rows = [(row, ids) for row, p in enumerate(group) for ids in name_ids[p]]
        if not rows:
            continue
        batch = tokenizer([prompts[p] for p in group], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        mask = batch["attention_mask"]
        owner = torch.tensor([row for row, _ in rows], device=device)
        tokens, is_token = (t.to(device) for t in _completion_tokens(tokenizer, [ids for _, ids in rows]))
        with torch.no_grad():
            cache, first = prefill(model, batch["input_ids"], mask)
            cache.batch_select_indices(owner)
            # the first name token is read off the prompt's last position; the rest, and the end of
            # sequence, off the name's own positions, numbered on from the prompt's real length
            logits = model(input_ids=tokens[:, :-1],
                           attention_mask=torch.cat([mask[owner], is_token[:, :-1].long()], dim=1),
                           position_ids=mask.sum(-1)[owner].unsqueeze(1) + torch.arange(tokens.shape[1] - 1,
                                                                                      device=device),
                           past_key_values=cache, use_cache=True).logits.float()
            logits = torch.cat([first.float()[owner].unsqueeze(1), logits], dim=1)
            per_token = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            group_scores = (per_token * is_token).sum(dim=1).cpu().numpy()
        bounds = np.cumsum([0, *(len(name_ids[p]) for p in group)])
        for row, p in enumerate(group):
            scores[p] = group_scores[bounds[row]:bounds[row + 1]]
    return scores


def rank_names(model, tokenizer, prompts: list[str], allowed_names: list[list[str]], top_k: int
               ) -> list[list[RankedName]]:
    """For each prompt, its best `top_k` allowed names, best first (ties keep the names' order).
    Names are stripped and deduplicated; a prompt with no name gets []."""
    from llm_predictor.decoding import check_allowed_names

    check_allowed_names(prompts, allowed_names)
    names = [list(dict.fromkeys(n.strip() for n in found if n and n.strip())) for found in allowed_names]
    flat = [name for found in names for name in found]
    flat_ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    bounds = np.cumsum([0, *map(len, names)])
    name_ids = [flat_ids[bounds[p]:bounds[p + 1]] for p in range(len(prompts))]
    ranked = []
    for found, ids, scores in zip(names, name_ids, name_logprobs(model, tokenizer, prompts, name_ids), strict=True):
        order = np.argsort(-scores, kind="stable")[:top_k]
        ranked.append([RankedName(found[i], float(scores[i]), len(ids[i])) for i in order])
    return ranked
