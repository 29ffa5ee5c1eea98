"""The LLM predictor's configuration: the evaluated methods, the stage settings and their size presets.

`LLMConfig` holds every `adsim llm` stage's section (each stage hashes only what it reads); `PRESETS`
cut the budget (`small` for the 2-core demo, `nano` for tests); `resolve_config` layers a preset, a
TOML file and `--set` overrides (paper 3.3-3.5, 4.2-4.3 for what each stage does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llm_predictor.behaviour import BehaviourConfig
from llm_predictor.choice import ChoiceConfig
from llm_predictor.decoding import DecodingConfig
from llm_predictor.evaluate import EvalConfig
from llm_predictor.features import FeatureConfig
from llm_predictor.fusion import FusionConfig
from llm_predictor.grpo import GRPOStageConfig
from llm_predictor.model import ModelConfig
from llm_predictor.predict import PredictConfig
from llm_predictor.pretrain import PretrainConfig
from llm_predictor.semantic_ids import SemanticIDConfig
from llm_predictor.sft import SFTStageConfig
from llm_predictor.tokenizer import TokenizerConfig
from synthetic_data.config_io import ConfigError, require, to_dict

# Which trained model each method reads, and how it prompts and decodes (Tables 2 and 3).
MODEL_STAGES = {"zero_shot": "llm_pretrain", "behaviour": "llm_behaviour", "sft_single": "llm_sft_single",
                "sft_list": "llm_sft_list", "grpo": "llm_grpo", "sid": "llm_sid", "sft_sid": "llm_sft_sid"}
RULES = ("allowed", "open")
SFT_TEMPLATES = {"single": "sft", "list": "grpo", "sid": "sft_sid"}


@dataclass(frozen=True)
class Method:
    """One evaluated LLM variant: model, template, reasoning instruction, decoding, and which names a
    ranked method may choose: `allowed` (the prompt's active advertisers and preset pool, the paper's
    requirement 2) or `open` (every advertiser a label can name, so world knowledge can reach the rest)."""

    model: str
    template: str  # a prompts.TEMPLATES template, or "sequence" (behaviour.sequence_prompt)
    is_reasoning: bool = False
    # list | single_beam | single_sampling | single_ranked | list_sampling | list_constrained
    decoding: str = "list"
    rule: str = "allowed"

    def __post_init__(self) -> None:
        require(self.rule in RULES, "rule", f"must be one of {RULES}")

    @property
    def is_ranked(self) -> bool:
        """Ranks names (`name_ranking.py`, milliseconds a user) instead of generating text."""
        return self.decoding == "single_ranked"


@dataclass(frozen=True)
class EvalRunConfig:
    """Which methods to score, the Table 4 ablation, and how many eval users (sampled) the methods that generate
    text predict; the ranked methods and the baselines score every eval user (names rank in milliseconds)."""

    evaluation: EvalConfig = field(default_factory=EvalConfig)
    methods: tuple[str, ...] = (
        "zero_shot", "zero_shot_reasoning", "behaviour_ranked", "behaviour_ranked_open", "sft_single_beam",
        "sft_single_sampling", "sft_single_ranked", "sft_single_ranked_open", "grpo_ranked", "grpo_ranked_open",
    )  # `sft_list` (Table 3's 20-advertiser SFT) needs `adsim llm sft --target list`, which the demo does not run
    max_users: int | None = 300  # None: every eval user
    is_ablation: bool = True
    # Table 4's users (a seeded sample; None: every eval user, affordable when the GRPO model ranks names)
    max_ablation_users: int | None = None
    # ranked methods (those of `methods`) also scored on the eval users' V1 labels at every label anchor (~4x
    # the evaluation anchor's on the demo world, none seen by a training stage) in the GRPO and baseline effect
    # tables: a 43-token behaviour prompt ranks in ~3 ms, a ~630-token paper prompt in ~50 ms (GRPO's open
    # pair would add ~50 s to the demo)
    every_anchor_methods: tuple[str, ...] = ("behaviour_ranked", "behaviour_ranked_open", "sft_single_ranked",
                                             "grpo_ranked")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        require(not unknown, "eval.methods", f"unknown method(s) {unknown}; valid: {sorted(METHODS)}")
        require(self.max_users is None or self.max_users >= 1, "eval.max_users",
                "must be >= 1 (or unset: every eval user)")
        require(self.max_ablation_users is None or self.max_ablation_users >= 1, "eval.max_ablation_users",
                "must be >= 1 (or unset: every eval user)")
        ranked = ranked_methods()
        unknown = sorted(set(self.every_anchor_methods) - set(METHODS))
        require(not unknown, "eval.every_anchor_methods", f"unknown method(s) {unknown}; valid: {ranked}")
        unranked = [name for name in self.every_anchor_methods if not METHODS[name].is_ranked]
        require(not unranked, "eval.every_anchor_methods", f"{unranked} generate text (~0.4 s a user): only ranked "
                                                            f"methods are scored at every anchor: {ranked}")


METHODS = {
    "zero_shot": Method("zero_shot", "inference"),
    "zero_shot_reasoning": Method("zero_shot", "inference", is_reasoning=True),
    "sft_list": Method("sft_list", "inference"),
    "sft_single_beam": Method("sft_single", "sft", decoding="single_beam"),
    "sft_single_sampling": Method("sft_single", "sft", decoding="single_sampling"),
    # beyond the paper: the 1-advertiser model's exact top 20 of the allowed names (name_ranking.py)
    "sft_single_ranked": Method("sft_single", "sft", decoding="single_ranked"),
    "sft_single_ranked_open": Method("sft_single", "sft", decoding="single_ranked", rule="open"),
    # the behaviour-sequence model on its own format, no SFT (behaviour.py)
    "behaviour_ranked": Method("behaviour", "sequence", decoding="single_ranked"),
    "behaviour_ranked_open": Method("behaviour", "sequence", decoding="single_ranked", rule="open"),
    "grpo": Method("grpo", "inference"),
    "grpo_reasoning": Method("grpo", "inference", is_reasoning=True),
    "grpo_sampling": Method("grpo", "inference", decoding="list_sampling"),
    "grpo_constrained": Method("grpo", "inference", decoding="list_constrained"),
    # the `names` policy's GRPO model (grpo.py) served as it was trained: its top 20 of the names
    "grpo_ranked": Method("grpo", "sft", decoding="single_ranked"),
    "grpo_ranked_open": Method("grpo", "sft", decoding="single_ranked", rule="open"),
    # Table 3's SID row (needs `adsim llm sid` and `adsim llm sft --target sid` first)
    "sid_sft_single_beam": Method("sft_sid", "sft_sid", decoding="single_beam"),
}


def ranked_methods() -> list[str]:
    """The methods that rank names (`Method.is_ranked`), sorted: what may be scored at every anchor or fused."""
    return sorted(name for name, method in METHODS.items() if method.is_ranked)


@dataclass(frozen=True)
class LLMConfig:
    """Everything the `adsim llm` stages need; each stage hashes only the sections it reads."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    preset_pool_size: int = 30
    tokenizer_prompt_sample: int = 2000  # train prompts mixed into the tokenizer's training text
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    # which model SFT starts from: the web-corpus CPT model, or that model after behaviour-sequence CPT
    sft_init: str = "behaviour"
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    # GRPO starts from the 1-advertiser SFT model, as in the paper (the `names` policy ranks that model's
    # names); the `text` policy may start from the 20-advertiser SFT model instead, which has seen the list
    grpo_init: str = "sft_single"
    semantic_ids: SemanticIDConfig = field(default_factory=SemanticIDConfig)
    predict: PredictConfig = field(default_factory=lambda: PredictConfig(decoding=DecodingConfig(max_new_tokens=224)))
    eval: EvalRunConfig = field(default_factory=EvalRunConfig)
    choice: ChoiceConfig = field(default_factory=ChoiceConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)  # `adsim llm fuse`: the LLM beside LightGBM
    # Paper 3.2.1 trades serving coverage against inference cost: None predicts every serving user (the
    # demo world's ~17k), a number a seeded sample of them
    serving_max_users: int | None = None
    heldout_max_users: int | None = None  # eval-split users predicted at every label anchor (ranking's lift)
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.preset_pool_size >= 1, "preset_pool_size", "must be >= 1")
        require(self.tokenizer_prompt_sample >= 0, "tokenizer_prompt_sample", "must be >= 0")
        require(self.grpo_init in ("sft_single", "sft_list"), "grpo_init", "must be sft_single or sft_list")
        require(self.grpo.policy == "text" or self.grpo_init == "sft_single", "grpo_init",
                "the names policy ranks the 1-advertiser model's names: set grpo_init=sft_single, or grpo.policy=text")
        require(self.sft_init in ("pretrain", "behaviour"), "sft_init", "must be pretrain or behaviour")
        require(not (self.tokenizer.advertiser_tokens and self.model.base_model_dir), "tokenizer.advertiser_tokens",
                "adds tokens to the tokenizer trained here; a model.base_model_dir brings its own: unset one of them")
        for name in ("serving_max_users", "heldout_max_users"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, "must be >= 1 (or unset: every user)")


def _nano_train(steps: int, batch_size: int = 4) -> dict:
    return {"max_steps": steps, "batch_size": batch_size, "save_steps": steps, "logging_steps": 1, "warmup_steps": 0}


# `full` is the class defaults (the scale measured on a GPU); `small`, the default, is the same model
# with the training and evaluation budget cut to fit the demo in 30 minutes on 2 CPU cores (greedy list
# decoding, fewer steps; every eval user for the methods that generate text too, since packed decoding
# (`packed_decoding`) made the 1-advertiser beams and samples ~10x cheaper; the demo's latest time is in
# docs/methods.md); `nano` is for tests.
PRESETS: dict[str, dict] = {
    "full": {},
    "small": {
        "pretrain": {"train": {"max_steps": 150}},
        "sft": {"train": {"max_steps": 80}},
        "predict": {"decoding": {"strategy": "greedy", "num_beams": 1, "max_new_tokens": 224}, "batch_size": 32},
        "eval": {"max_users": None,
                 "methods": ["zero_shot", "behaviour_ranked", "behaviour_ranked_open", "sft_single_beam",
                             "sft_single_sampling", "sft_single_ranked", "sft_single_ranked_open", "grpo_ranked",
                             "grpo_ranked_open"]},
        # Table 5's lift on the held-out lists' impressions grows with their users: every eval-split user
        # (2,000 at 4 anchors) took 132 s a lift against 14 s for 150, too long for the demo's 30 minutes
        "heldout_max_users": 150,
    },
    "nano": {
        "model": {"size": "nano", "max_position_embeddings": 4096},
        "tokenizer": {"vocab_size": 600},
        "preset_pool_size": 8,
        "tokenizer_prompt_sample": 100,
        "pretrain": {"train": _nano_train(4), "block_size": 64},
        "behaviour": {"train": _nano_train(4), "block_size": 32, "validation_users": 20, "eval_steps": 2},
        "sft": {"train": _nano_train(4), "max_length": 4096},
        "grpo": {"train": _nano_train(2), "num_generations": 4, "max_completion_length": 24},
        "predict": {"decoding": {"max_new_tokens": 24, "num_beams": 2}, "virtual_epoch_size": 8, "batch_size": 8},
        "eval": {"max_users": 6, "max_ablation_users": 4},
        "semantic_ids": {"levels": 2, "codebook_size": 8},
        "serving_max_users": 10,
        "heldout_max_users": 60,
    },
}


def resolve_config(preset: str, config_path: Optional[Path], overrides: Optional[list[str]]) -> LLMConfig:
    """Preset, then a TOML file, then `section.field=value` overrides."""
    from synthetic_data.config_io import load_config

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return load_config(LLMConfig, path=config_path, base=PRESETS[preset], overrides=overrides)


def trained_config(run, method_name: str, preset: str) -> LLMConfig:
    """`preset`'s config with the prompt settings (features, preset pool size) that the run's model
    of `method_name` was trained with, from its stage record: a model prompted unlike its training
    prompts (e.g. after `--set features.…` at training) would be scored on prompts it never saw."""
    from synthetic_data.config_io import from_dict

    stage = MODEL_STAGES[METHODS[method_name].model]
    record = run.stage_record(stage)
    if record is None:
        raise ConfigError(f"stage {stage} has not run in {run.root}; train the LLM (`adsim llm --help`) first")
    recorded = {key: record["config"][key] for key in ("features", "preset_pool_size") if key in record["config"]}
    return from_dict(LLMConfig, {**to_dict(resolve_config(preset, None, None)), **recorded})
