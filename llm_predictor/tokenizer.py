"""A byte-level BPE tokenizer trained on the world's web corpus and prompt text (paper 3.5, 4.1).

The default model has no hub tokenizer, so one is trained here and saved as a Hugging Face
tokenizer directory. The list separators `|`, `[`, `]`, `<`, `>` and newlines are always their own
pre-tokens, so an advertiser name tokenises the same inside a list as on its own (constrained
decoding relies on it), and the paper's XML tags are single added tokens. With `advertiser_tokens` every
advertiser name is one added token too, as an item ID is in SASRec: a name is scored in one step, and its
embedding learns from every sequence it appears in rather than sharing subwords with other names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from synthetic_data.config_io import require

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
XML_TAGS = (
    "<answer>", "</answer>", "<interests>", "</interests>", "<advertiser_names>", "</advertiser_names>",
)
SEPARATORS_PATTERN = r"[|\[\]<>\n]"


@dataclass(frozen=True)
class TokenizerConfig:
    """Vocabulary size and merge threshold of the trained BPE tokenizer; whether advertiser names are tokens."""

    vocab_size: int = 8000
    min_frequency: int = 2
    model_max_length: int = 2048
    # each advertiser name one added token (matched as a whole word; `train_tokenizer`), off by default
    advertiser_tokens: bool = False

    def __post_init__(self) -> None:
        require(self.vocab_size >= 300, "vocab_size", "must be >= 300 (256 bytes plus special tokens)")
        require(self.min_frequency >= 1, "min_frequency", "must be >= 1")
        require(self.model_max_length >= 64, "model_max_length", "must be >= 64")


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig, out_dir: Path | None = None,
                    names: Iterable[str] = ()):
    """Train the BPE tokenizer on `texts`; returns a `PreTrainedTokenizerFast` (saved if `out_dir`). With
    `config.advertiser_tokens` each of `names` (advertiser names) is one token: an added one, matched only as a
    whole word ("CRC" is not found in "CRCs") and decoded as written, unless the trained vocabulary already has
    the name as one token."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SEPARATORS_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in XML_TAGS])
    unique_names = sorted({name.strip() for name in names} - {""}) if config.advertiser_tokens else []
    tokenizer.add_tokens([AddedToken(name, normalized=False, special=False, single_word=True) for name in unique_names])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=config.model_max_length,
        padding_side="left",
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(directory: Path):
    """Load any Hugging Face tokenizer directory, with a pad token and left padding for generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer
