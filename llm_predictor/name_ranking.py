"""Exact name-constrained decoding of the 1-advertiser model: every valid name (the preset pool plus
the user's active advertisers) scored as the whole completion, its tokens then the end of sequence,
and the names ranked by that log-probability.

Beam search over names only approximates this top-k: a beam can end on a misspelt or unknown name,
two beams can spell one name, and a name whose first token is unlikely falls out of the beam early.
Scoring the ~50 candidates costs one prefill per prompt (its KV cache, shared by its candidates)
and one short forward over the candidates, where 20 beams decode token by token.
"""

from __future__ import annotations

import copy
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


def name_logprobs(model, tokenizer, prompts: list[str], name_ids: list[list[list[int]]],
                  rows_per_forward: int = 256) -> list[np.ndarray]:
    """log P(name, then end of sequence | prompt) for each prompt's names, given as token ids (one
    array per prompt, in the names' order). Each prompt is prefilled once; its cache is copied to its
    candidates, at most `rows_per_forward` candidates per forward pass (the copies' memory)."""
    import torch

    from llm_predictor.decoding import prefill

    if tokenizer.padding_side != "left":
        raise ValueError("name_logprobs needs a left-padding tokenizer (as `load_tokenizer` makes)")
    rows = [(p, ids) for p, found in enumerate(name_ids) for ids in found]
    scores = np.zeros(len(rows))
    if rows:
        device = model.device
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        mask = batch["attention_mask"]
        with torch.no_grad():
            cache, first = prefill(model, batch["input_ids"], mask)
            first = first.float()
            for start in range(0, len(rows), rows_per_forward):
                chunk = rows[start:start + rows_per_forward]
                owner = torch.tensor([p for p, _ in chunk], device=device)
                tokens, is_token = (t.to(device) for t in _completion_tokens(tokenizer, [ids for _, ids in chunk]))
                chunk_cache = copy.deepcopy(cache)
                chunk_cache.batch_select_indices(owner)
                # the first name token is read off the prompt's last position; the rest, and the end of
                # sequence, off the name's own positions, numbered on from the prompt's real length
                logits = model(input_ids=tokens[:, :-1],
                               attention_mask=torch.cat([mask[owner], is_token[:, :-1].long()], dim=1),
                               position_ids=mask.sum(-1)[owner].unsqueeze(1) + torch.arange(tokens.shape[1] - 1,
                                                                                          device=device),
                               past_key_values=chunk_cache, use_cache=True).logits.float()
                logits = torch.cat([first[owner].unsqueeze(1), logits], dim=1)
                per_token = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
                scores[start:start + len(chunk)] = (per_token * is_token).sum(dim=1).cpu().numpy()
    bounds = np.cumsum([0, *map(len, name_ids)])
    return [scores[bounds[p]:bounds[p + 1]] for p in range(len(prompts))]


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
