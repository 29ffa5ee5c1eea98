"""Beam search and sampling of several sequences per prompt with the prompt's KV cache held once (paper 3.7's
prefix caching, as vLLM shares a prompt's blocks between its beams), and greedy decoding that drops the
prompts whose answer has ended.

`generate` decodes each beam or sample as its own row: the prompt's cache is repeated per sequence and
copied whole at every step (the cache update's `cat` and beam search's `reorder_cache`), which was 46% of a
20-beam search of the demo's ~630-token 1-advertiser prompts (and the prompt's attention was paid 20 times).
Here each prompt keeps one cache row: a step feeds the newest token of all its sequences side by side, after
the prompt and the tokens generated so far, under a 4D mask that lets each token see the prompt and its own
sequence's earlier tokens only (as `name_ranking` packs names). A beam that continues another inherits that
beam's visible tokens, so reordering beams moves a (sequences x steps) boolean mask instead of a cache.

The search itself is transformers' own: the beam bookkeeping (`GenerationMixin._get_top_k_continuations` and
its siblings, which `generate` calls) and the sampling warpers, over the same random draws, so the output
equals `generate`'s up to floating-point rounding (tests compare them).
"""

from __future__ import annotations

from llm_predictor.decoding import DecodingConfig

# what a model's generation config may set and still decode as here: anything else (a repetition penalty,
# a length penalty, top-k, ...) would change `generate`'s search, which then decodes instead
PACKABLE_SETTINGS = frozenset({"bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "output_attentions",
                               "output_hidden_states", "_from_model_config", "transformers_version"})


def is_packable(model, config: DecodingConfig) -> bool:
    """Whether `packed_generate` decodes `config` as `generate` would: greedy, or several beams or samples per
    prompt, without a name constraint, one end token, and a model whose generation config sets nothing that
    changes the search."""
    eos = model.generation_config.eos_token_id
    is_packed_search = config.strategy == "greedy" or (config.strategy in ("beam", "sampling")
                                                       and config.rows_per_prompt > 1)
    return (is_packed_search and not config.is_name_constrained and not isinstance(eos, list)
            and set(model.generation_config.to_diff_dict()) <= PACKABLE_SETTINGS)


class _PackedSteps:
    """The forward passes after the prefill: (prompts, sequences) newest tokens in, next-token logits out."""

    def __init__(self, model, prefilled, sequences: int):
        import torch

        self.model = model
        self.cache = prefilled.cache
        self.prompt_mask = prefilled.mask.bool()
        self.positions = self.prompt_mask.sum(-1, keepdim=True)  # the first generated token's position
        self.visible = torch.zeros(len(self.prompt_mask), sequences, 0, dtype=torch.bool, device=model.device)
        self.own = torch.eye(sequences, dtype=torch.bool, device=model.device).expand(len(self.prompt_mask), -1, -1)
        self.steps = 0

    def keep(self, rows) -> None:
        """Drop every prompt but `rows` (indices, in order): the cache rows of finished prompts."""
        self.cache.batch_select_indices(rows)
        self.prompt_mask, self.positions = self.prompt_mask[rows], self.positions[rows]
        self.visible, self.own = self.visible[rows], self.own[rows]

    def logits(self, tokens, parents):
        """float32 (prompts, sequences, vocabulary) logits after `tokens` (prompts, sequences), where sequence j
        continues the sequence `parents[:, j]` of the previous step (beam search reorders; sampling never does)."""
        import torch

        from llm_predictor.decoding import additive_mask

        prompts, sequences = tokens.shape
        inherited = self.visible.gather(1, parents.unsqueeze(-1).expand(-1, -1, self.visible.shape[-1]))
        self.visible = torch.cat([inherited, self.own], dim=2)
        visible = torch.cat([self.prompt_mask.unsqueeze(1).expand(-1, sequences, -1), self.visible], dim=2)
        logits = self.model(input_ids=tokens, attention_mask=additive_mask(visible.unsqueeze(1), self.model.dtype),
                            position_ids=self.positions + self.steps, past_key_values=self.cache,
                            use_cache=True).logits
        self.steps += 1
        return logits.float()


def packed_generate(model, tokenizer, prompts: list[str], config: DecodingConfig,
                    decode_attention: str | None = None) -> tuple[list[str], list[int]]:
    """`decoding.generate_texts` for greedy decoding, beam search or sampling without a name constraint: the
    completions (`response_prefix` in front; prompt-major, `num_return_sequences` per prompt, best first) and the
    tokens generated for each. Greedy steps (one token a row) run under `decode_attention` (None: the model's
    kernel). Raises ValueError where `is_packable` is false."""
    import torch

    from llm_predictor.decoding import attention_implementation, decoded_texts
    from llm_predictor.name_ranking import prefill_prompts

    with torch.no_grad():
        prefilled = prefill_prompts(model, tokenizer, [prompt + config.response_prefix for prompt in prompts])
    with attention_implementation(model, decode_attention if config.strategy == "greedy" else None):
        generated = packed_decode(model, prefilled, config, tokenizer.eos_token_id)
    return decoded_texts(tokenizer, generated, config.response_prefix)


def packed_decode(model, prefilled, config: DecodingConfig, eos_id: int):
    """The generated token ids, (prompts x `num_return_sequences`, `max_new_tokens`) padded after the end, of
    the prompts `prefilled` holds (`name_ranking.prefill_prompts`). Raises ValueError where `is_packable` is
    false."""
    import torch

    if not is_packable(model, config):
        raise ValueError("packed decoding runs greedy decoding or several beams or samples per prompt, without a "
                         "name constraint, of a model whose generation config sets only "
                         f"{sorted(PACKABLE_SETTINGS)}; decode with generate_texts")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.seed)
        steps = _PackedSteps(model, prefilled, config.rows_per_prompt)
        search = {"beam": _beam_search, "sampling": _sample, "greedy": _greedy}[config.strategy]
        return search(model, steps, prefilled.first_logprobs, config, eos_id, prefilled.pad_token_id)


def _beam_search(model, steps: _PackedSteps, first_logprobs, config: DecodingConfig, eos_id: int, pad_id: int):
    """`GenerationMixin._beam_search` with `early_stopping=True` and one end token, on generated tokens only
    (the prompt length is 0 to its helpers), its forward passes `steps`'. Returns the best
    `num_return_sequences` of each prompt as (prompts x returned, generated) token ids, padded after the end."""
    import torch

    prompts, beams, length = len(first_logprobs), config.num_beams, config.max_new_tokens
    length_penalty = 1.0  # generate's default, which `is_packable` leaves in force
    keep = 2 * beams  # transformers keeps max(2, 1 + end tokens) x beams candidates
    top_beams = torch.arange(keep, device=first_logprobs.device) < beams
    running = torch.full((prompts, beams, length), pad_id, dtype=torch.int64, device=first_logprobs.device)
    finished = running.clone()
    running_scores = torch.zeros(prompts, beams, device=first_logprobs.device)
    running_scores[:, 1:] = -1e9  # the first step expands the first beam only: every beam holds the prompt
    finished_scores = torch.full((prompts, beams), -1e9, device=first_logprobs.device)
    running_indices = torch.full((prompts, beams, length), -1, dtype=torch.int32, device=first_logprobs.device)
    finished_indices = running_indices.clone()
    is_finished = torch.zeros(prompts, beams, dtype=torch.bool, device=first_logprobs.device)
    can_improve = torch.ones(prompts, 1, dtype=torch.bool, device=first_logprobs.device)
    logprobs = first_logprobs.unsqueeze(1).expand(-1, beams, -1)
    for position in range(length):
        accumulated = (torch.log_softmax(logprobs, dim=-1) + running_scores.unsqueeze(-1)).reshape(prompts, -1)
        top_scores, top_sequences, top_indices = model._get_top_k_continuations(
            accumulated_log_probs=accumulated, running_sequences=running, running_beam_indices=running_indices,
            cur_len=position, decoder_prompt_len=0, do_sample=False, beams_to_keep=keep, num_beams=beams,
            batch_size=prompts)
        hits_end = (top_sequences[:, :, position] == eos_id) | (position + 1 >= length)
        running, running_scores, running_indices = model._get_running_beams_for_next_iteration(
            topk_log_probs=top_scores, topk_running_sequences=top_sequences, topk_running_beam_indices=top_indices,
            next_token_hits_stopping_criteria=hits_end, num_beams=beams)
        finished, finished_scores, finished_indices, is_finished = model._update_finished_beams(
            sequences=finished, topk_running_sequences=top_sequences, beam_scores=finished_scores,
            topk_log_probs=top_scores, beam_indices=finished_indices, topk_running_beam_indices=top_indices,
            is_early_stop_heuristic_unsatisfied=can_improve, is_sent_finished=is_finished,
            next_token_hits_stopping_criteria=hits_end, top_num_beam_mask=top_beams, num_beams=beams,
            cur_len=position, decoder_prompt_len=0, length_penalty=length_penalty, early_stopping=True)
        can_improve = model._check_early_stop_heuristic(
            is_early_stop_heuristic_unsatisfied=can_improve, running_beam_scores=running_scores,
            beam_scores=finished_scores, is_sent_finished=is_finished, cur_len=position + 1, max_length=length,
            decoder_prompt_len=0, early_stopping=True, length_penalty=length_penalty)
        if not model._beam_search_has_unfinished_sequences(can_improve, is_finished, hits_end, True):
            break
        # a running beam's index at this position is prompt x beams + the beam it continues
        logprobs = steps.logits(running[:, :, position], running_indices[:, :, position].long() % beams)
    return finished[:, :config.num_return_sequences].reshape(prompts * config.num_return_sequences, length)


def _sample(model, steps: _PackedSteps, first_logprobs, config: DecodingConfig, eos_id: int, pad_id: int):
    """`GenerationMixin._sample` with `num_return_sequences` draws per prompt (temperature, then top-p, as
    `generate` orders its warpers), its forward passes `steps`'. Returns (prompts x returned, generated)
    token ids, padded after the end."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    prompts, sequences = len(first_logprobs), config.num_return_sequences
    warpers = LogitsProcessorList(([TemperatureLogitsWarper(config.temperature)] if config.temperature != 1.0
                                   else []) + ([TopPLogitsWarper(config.top_p)] if config.top_p < 1.0 else []))
    rows = torch.arange(sequences, device=first_logprobs.device).expand(prompts, -1)
    logits = first_logprobs.unsqueeze(1).expand(-1, sequences, -1)
    generated = torch.full((prompts * sequences, config.max_new_tokens), pad_id, dtype=torch.int64,
                           device=first_logprobs.device)
    is_running = torch.ones(prompts * sequences, dtype=torch.bool, device=first_logprobs.device)
    for position in range(config.max_new_tokens):
        scores = warpers(generated[:, :position], logits.reshape(prompts * sequences, -1))
        tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        generated[:, position] = torch.where(is_running, tokens, pad_id)
        is_running &= generated[:, position] != eos_id
        if not is_running.any() or position + 1 == config.max_new_tokens:
            break
        logits = steps.logits(generated[:, position].reshape(prompts, sequences), rows)
    return generated


def _greedy(model, steps: _PackedSteps, first_logprobs, config: DecodingConfig, eos_id: int, pad_id: int):
    """`GenerationMixin._sample` without sampling (the first most likely token), except that a prompt whose
    sequence has ended leaves the batch: `generate` runs every row until the batch's longest ends (the demo's
    zero-shot answers averaged ~52 of their 224 tokens). Returns (prompts, generated) token ids, padded after
    the end."""
    import torch

    generated = torch.full((len(first_logprobs), config.max_new_tokens), pad_id, dtype=torch.int64,
                           device=first_logprobs.device)
    alive = torch.arange(len(first_logprobs), device=first_logprobs.device)  # each running row's prompt
    logits = first_logprobs
    for position in range(config.max_new_tokens):
        tokens = logits.argmax(dim=-1)
        generated[alive, position] = tokens
        running = tokens != eos_id
        if not running.any() or position + 1 == config.max_new_tokens:
            break
        if not running.all():
            rows = running.nonzero().squeeze(1)
            steps.keep(rows)
            alive, tokens = alive[rows], tokens[rows]
        logits = steps.logits(tokens.unsqueeze(1), torch.zeros_like(tokens).unsqueeze(1)).squeeze(1)
    return generated
