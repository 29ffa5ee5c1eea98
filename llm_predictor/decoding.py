"""Decoding (paper 4.2.1, Table 2): beam search or sampling through `model.generate`, plus a
name-constrained mode that goes beyond the paper (and, for one-name answers, `rank`: every allowed
name scored exactly, in `name_ranking.py`).

In constrained mode a logits processor walks a token trie of the valid advertiser names (the
preset pool plus the user's active advertisers) inside `<advertiser_names>`, so the model can emit
neither an unknown name nor a repeated one, nor more than `max_names` names. Around the list: the
answer cannot end before its list, which the constraint opens itself if the model has not within
`max_tokens_before_list` tokens; once the list closes, the answer's closing tag and end-of-sequence
follow (nothing after the list is read, and a briefly trained model would otherwise fill the rest of
`max_new_tokens` with stray tags).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

from synthetic_data.config_io import require

OPEN_TAG = "<advertiser_names>"
CLOSE_TAG = "</advertiser_names>"
ANSWER_TAIL = "\n</answer>"  # what the inference template's answer holds after the list


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode: beam search, sampling or greedy; optional name constraint and answer prefix.
    `rank` (one-name answers, name-constrained) scores every allowed name as the whole answer and
    returns the best `num_return_sequences`: the exact top-k that beam search approximates; `name_end`
    says what closes a ranked name (`name_ranking.end_token_ids`)."""

    strategy: Literal["beam", "sampling", "greedy", "rank"] = "beam"
    num_beams: int = 4
    num_return_sequences: int = 1  # >1: a ranked list of outputs (e.g. the beams of the 1-advertiser model)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    is_name_constrained: bool = False
    max_names: int = 20
    max_tokens_before_list: int = 64  # constrained: room for <answer> and the interests before the list
    response_prefix: str = ""  # text the answer is forced to start with (e.g. "<answer>")
    name_end: Literal["eos", "separator"] = "eos"  # rank: the end of sequence, or also the item separator
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.strategy in ("beam", "sampling", "greedy", "rank"), "strategy",
                "must be beam, sampling, greedy or rank")
        require(self.strategy != "rank" or self.is_name_constrained, "is_name_constrained",
                "strategy rank scores the allowed names; set is_name_constrained = true")
        require(self.name_end in ("eos", "separator"), "name_end", "must be 'eos' or 'separator'")
        require(self.num_beams >= 1, "num_beams", "must be >= 1")
        require(self.num_return_sequences >= 1, "num_return_sequences", "must be >= 1")
        require(
            self.strategy != "beam" or self.num_return_sequences <= self.num_beams, "num_return_sequences",
            f"beam search returns at most num_beams={self.num_beams} sequences; raise num_beams",
        )
        require(
            self.strategy != "greedy" or self.num_return_sequences == 1, "num_return_sequences",
            "greedy decoding returns one sequence; use beam or sampling for more",
        )
        require(self.temperature > 0, "temperature", "must be > 0")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.max_names >= 1, "max_names", "must be >= 1")
        require(self.max_tokens_before_list >= 0, "max_tokens_before_list", "must be >= 0")

    @property
    def rows_per_prompt(self) -> int:
        """Sequences `generate` decodes side by side for each prompt (its beams, or its samples)."""
        return self.num_beams if self.strategy == "beam" else self.num_return_sequences


def generate_kwargs(config: DecodingConfig) -> dict:
    """`model.generate` arguments for the strategy (`num_return_sequences` per prompt, best first)."""
    if config.strategy == "rank":
        raise ValueError("strategy rank does not generate; rank the names with name_ranking.rank_names")
    returned = dict(num_return_sequences=config.num_return_sequences)
    if config.strategy == "beam":
        return dict(do_sample=False, num_beams=config.num_beams, early_stopping=True, **returned)
    if config.strategy == "sampling":
        return dict(do_sample=True, num_beams=1, temperature=config.temperature, top_p=config.top_p, top_k=0,
                    **returned)
    return dict(do_sample=False, num_beams=1, **returned)


class NameTrie:
    """A token trie over advertiser names; each node knows which names lie below it."""

    def __init__(self, token_sequences: list[list[int]]):
        self.root: dict = {"children": {}, "names": set(), "terminal": None}
        for name_index, tokens in enumerate(token_sequences):
            node = self.root
            node["names"].add(name_index)
            for token in tokens:
                node = node["children"].setdefault(token, {"children": {}, "names": set(), "terminal": None})
                node["names"].add(name_index)
            if node["terminal"] is None:  # two names with one tokenisation are one name
                node["terminal"] = name_index

    @classmethod
    def from_names(cls, names: list[str], tokenizer) -> NameTrie:
        unique = list(dict.fromkeys(name.strip() for name in names if name and name.strip()))
        return cls(tokenizer(unique, add_special_tokens=False)["input_ids"] if unique else [])


def separator_token_ids(tokenizer) -> tuple[frozenset[int], frozenset[int]]:
    """Tokens made only of list separators: those holding a `|`, and those of newlines (and spaces)."""
    vocabulary = range(len(tokenizer))
    texts = tokenizer.batch_decode([[token] for token in vocabulary])
    separators = [
        (token, text) for token, text in zip(vocabulary, texts)
        if text and set(text) <= {"|", "\n", " "} and ("|" in text or "\n" in text)
    ]
    pipes = frozenset(token for token, text in separators if "|" in text)
    newlines = frozenset(token for token, text in separators if "|" not in text)
    return pipes, newlines


@dataclass(frozen=True)
class _Pending:
    """Before the list: tokens written so far, and how many tokens of the opening tag the constraint
    has forced (once the budget is spent)."""

    tokens: int = 0
    forced: int = 0


@dataclass(frozen=True)
class _Closed:
    """After the list: how many tokens were written since it closed."""

    tokens_after: int = 0


@dataclass
class _Walk:
    node: dict | None  # trie node of the name being written; None between names
    used: set
    names_written: int
    last_separator: str | None  # "pipe" or "newline" after a separator, None right after a name
    close_progress: int  # tokens of the closing tag already written


class NameConstraint:
    """Allowed next tokens for one sequence: the walk of its advertiser list through the trie."""

    def __init__(self, tokenizer, max_names: int, max_tokens_before_list: int = 64):
        self.open_ids = tokenizer(OPEN_TAG, add_special_tokens=False)["input_ids"]
        self.close_ids = tokenizer(CLOSE_TAG, add_special_tokens=False)["input_ids"]
        self.tail_ids = tokenizer(ANSWER_TAIL, add_special_tokens=False)["input_ids"]
        self.end_id = tokenizer.eos_token_id
        self.pipes, self.newlines = separator_token_ids(tokenizer)
        self.max_names = max_names
        self.max_tokens_before_list = max_tokens_before_list

    @classmethod
    def for_decoding(cls, tokenizer, config: DecodingConfig) -> NameConstraint:
        """The constraint a decoding config asks for (its name count and pre-list budget)."""
        return cls(tokenizer, config.max_names, config.max_tokens_before_list)

    def allowed(self, trie: NameTrie, sequence: list[int]) -> set[int] | None:
        """Token ids allowed next; None before the list opens, where any token but the end may follow."""
        return self.allowed_after(trie, self.walk(trie, sequence))

    def allowed_after(self, trie: NameTrie, state) -> set[int] | None:
        if isinstance(state, _Closed):  # the answer's tail, then the end
            written = state.tokens_after
            return {self.tail_ids[written] if written < len(self.tail_ids) else self.end_id}
        if isinstance(state, _Pending):
            return {self.open_ids[state.forced]} if self._is_forcing(state) else None
        return self._next_tokens(state, trie)

    def _is_forcing(self, state: _Pending) -> bool:
        return state.forced > 0 or state.tokens >= self.max_tokens_before_list

    def walk(self, trie: NameTrie, sequence: list[int]):
        """The state after `sequence`: `_Pending` before the opening tag, `_Closed` once the list ended
        (or was written unconstrained, e.g. in a prefix), else the walk through the trie."""
        state, width = _Pending(), len(self.open_ids)
        for end in range(1, len(sequence) + 1):
            state = self.advance(trie, state, sequence[max(0, end - width):end])
        return state

    def advance(self, trie: NameTrie, state, sequence: list[int]):
        """The state after `sequence` from `state`, the state after `sequence[:-1]`: one step (only
        the last `len(open_ids)` tokens of `sequence` are read)."""
        if isinstance(state, _Closed):
            return _Closed(state.tokens_after + 1)
        if isinstance(state, _Pending):
            if self._is_forcing(state):  # the token written is the next one of the opening tag
                forced = state.forced + 1
                return self._fresh() if forced == len(self.open_ids) else _Pending(state.tokens + 1, forced)
            width = len(self.open_ids)
            return self._fresh() if sequence[-width:] == self.open_ids else _Pending(state.tokens + 1)
        walk = replace(state, used=set(state.used))
        return walk if self._step(walk, trie, sequence[-1]) else _Closed()

    @staticmethod
    def _fresh() -> _Walk:
        return _Walk(node=None, used=set(), names_written=0, last_separator="pipe", close_progress=0)

    def _step(self, walk: _Walk, trie: NameTrie, token: int) -> bool:
        if walk.close_progress:
            walk.close_progress += 1
            return walk.close_progress < len(self.close_ids) and token == self.close_ids[walk.close_progress - 1]
        is_name_complete = walk.node is not None and walk.node["terminal"] is not None
        if walk.node is not None and token in walk.node["children"]:
            walk.node = walk.node["children"][token]
            return True
        if walk.node is not None and not is_name_complete:
            return False
        if is_name_complete:
            walk.used.add(walk.node["terminal"])
            walk.names_written += 1
            walk.node, walk.last_separator = None, None
        if token == self.close_ids[0]:
            walk.close_progress = 1
            return len(self.close_ids) > 1
        if token in self.pipes:
            walk.last_separator = "pipe"
            return True
        if token in self.newlines:
            walk.last_separator = "newline"
            return True
        if token in trie.root["children"]:
            walk.node = trie.root["children"][token]
            return True
        return False

    def _open_children(self, node: dict, used: set) -> set[int]:
        return {token for token, child in node["children"].items() if child["names"] - used}

    def _may_close(self, trie: NameTrie, names: int, used: set) -> bool:
        """The list closes once it holds `max_names` names or no unused name is left: a short (or
        empty) list is the failure the constraint exists to prevent (paper 4.2: exactly 20 names)."""
        return names >= self.max_names or not (trie.root["names"] - used)

    def _next_tokens(self, walk: _Walk, trie: NameTrie) -> set[int]:
        if walk.close_progress:
            return {self.close_ids[walk.close_progress]}
        if walk.node is not None:
            allowed = self._open_children(walk.node, walk.used)
            terminal = walk.node["terminal"]
            if terminal is not None and terminal not in walk.used:
                allowed |= self.pipes | self.newlines
                if self._may_close(trie, walk.names_written + 1, walk.used | {terminal}):
                    allowed.add(self.close_ids[0])
            return allowed
        allowed = {self.close_ids[0]} if self._may_close(trie, walk.names_written, walk.used) else set()
        if walk.last_separator is None:
            allowed |= self.pipes | self.newlines
        elif walk.last_separator == "pipe":
            allowed |= self.newlines  # the paper's lists break lines after a pipe: "...|\n..."
        if walk.names_written < self.max_names:
            allowed |= self._open_children(trie.root, walk.used)
        return allowed


class NameConstrainedLogits:
    """A `LogitsProcessor`: masks every token the name constraint forbids, row by row."""

    def __init__(self, constraint: NameConstraint, tries: list[NameTrie], scan_from: int, rows_per_prompt: int):
        self.constraint = constraint
        self.tries = tries
        self.scan_from = scan_from
        self.rows_per_prompt = rows_per_prompt
        self.states_: dict = {}

    def __call__(self, input_ids, scores):
        import torch

        sequences = input_ids[:, self.scan_from:].tolist()
        mask = torch.zeros_like(scores, dtype=torch.bool)
        states = {}
        for row, sequence in enumerate(sequences):
            trie = self.tries[row // self.rows_per_prompt]
            # each row extends a row of the previous step by one token (beams may reorder rows), so
            # the walk advances one token from the previous step's state instead of starting over
            key = (row // self.rows_per_prompt, tuple(sequence))
            previous = self.states_.get((key[0], key[1][:-1])) if sequence else None
            state = (self.constraint.walk(trie, sequence) if previous is None
                     else self.constraint.advance(trie, previous, sequence))
            states[key] = state
            allowed = self.constraint.allowed_after(trie, state)
            if allowed is None:  # before the list: anything but the end of the answer
                mask[row, self.constraint.end_id] = True
                continue
            mask[row] = True
            mask[row, list(allowed)] = False
        self.states_ = states
        return scores.masked_fill(mask, float("-inf"))


def check_allowed_names(prompts: list[str], allowed_names: list[list[str]] | None) -> None:
    """Name-constrained decoding (and ranking) reads one list of allowed names per prompt."""
    if allowed_names is None or len(allowed_names) != len(prompts):
        raise ValueError("decoding.is_name_constrained needs one list of allowed names per prompt")


def prefill(model, input_ids, attention_mask):
    """The KV cache of left-padded prompts (positions numbered as `generate` numbers them) and the
    logits at their last position."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0), past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    return cache, logits


def additive_mask(visible, dtype):
    """A boolean (batch, 1, queries, keys) visibility as the additive attention mask a 4D `attention_mask`
    is: 0 where a query sees a key, the dtype's lowest value where it does not."""
    import torch

    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible,
                                                                                    torch.finfo(dtype).min)


def prompt_cache(model, batch: dict, sequences_per_prompt: int):
    """The KV cache of each prompt but its last token, computed once (under the model's attention kernel, which
    may differ from the decode steps') and repeated for each of the prompt's beams or samples: `generate` would
    otherwise run the prompt through the model once per sequence (20x the prefill work, and 20x its attention
    memory, for 20 beams)."""
    cache, _ = prefill(model, batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1])
    cache.batch_repeat_interleave(sequences_per_prompt)
    return cache


@contextmanager
def attention_implementation(model, name: str | None):
    """Run the block with `model`'s attention kernel set to `name` (None: as it is), then restore it."""
    before = model.config._attn_implementation
    if name is not None:
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        if name is not None:
            model.set_attn_implementation(before)


def generate_texts(model, tokenizer, prompts: list[str], config: DecodingConfig,
                   allowed_names: list[list[str]] | None = None, constraint: NameConstraint | None = None,
                   decode_attention: str | None = None, is_packed: bool = True) -> tuple[list[str], list[int]]:
    """Decode one batch: returns the completions (with `response_prefix` in front; prompt-major,
    `num_return_sequences` per prompt, best first) and the tokens generated for each.
    `allowed_names[i]` are prompt i's valid names. With `is_packed`, unconstrained greedy decoding, beams and
    samples decode packed (`packed_decoding.is_packable`); the rest through `model.generate`, after a prefill under
    the model's attention kernel. One-token-a-row decode steps run under `decode_attention` (None: the model's
    kernel)."""
    import torch
    from transformers import LogitsProcessorList

    from llm_predictor.packed_decoding import is_packable, packed_generate

    if is_packed and is_packable(model, config):
        return packed_generate(model, tokenizer, prompts, config, decode_attention)
    prefixed = [prompt + config.response_prefix for prompt in prompts]
    batch = tokenizer(prefixed, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = {key: value.to(model.device) for key, value in batch.items()}
    prompt_length = batch["input_ids"].shape[1]
    processors = LogitsProcessorList()
    if config.is_name_constrained:
        check_allowed_names(prompts, allowed_names)
        constraint = constraint or NameConstraint.for_decoding(tokenizer, config)
        prefix_tokens = len(tokenizer(config.response_prefix, add_special_tokens=False)["input_ids"])
        processors.append(NameConstrainedLogits(
            constraint, [NameTrie.from_names(names, tokenizer) for names in allowed_names],
            scan_from=prompt_length - prefix_tokens,
            rows_per_prompt=config.rows_per_prompt,
        ))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.seed)
        cache = {"past_key_values": prompt_cache(model, batch, config.rows_per_prompt)} if prompt_length > 1 else {}
        with attention_implementation(model, decode_attention):
            output = model.generate(
                **batch, max_new_tokens=config.max_new_tokens, logits_processor=processors,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **cache,
                **generate_kwargs(config),
            )
    return decoded_texts(tokenizer, output[:, prompt_length:], config.response_prefix)


def decoded_texts(tokenizer, generated, response_prefix: str) -> tuple[list[str], list[int]]:
    """The completions of (sequences, generated) token ids, `response_prefix` in front, and the tokens generated
    for each (pad and end tokens not counted)."""
    import torch

    special = torch.tensor([tokenizer.pad_token_id, tokenizer.eos_token_id], device=generated.device)
    counts = (~torch.isin(generated, special)).sum(dim=1).tolist()
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [response_prefix + text for text in texts], counts
