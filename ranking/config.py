"""The ranking stage's knobs (paper 3.6.2, 4.4.1): features, DCN-v2, training, LightGBM, the lift runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synthetic_data.config_io import require

TASKS = ("click", "ctcvr", "vtcvr")
REFERENCE_MODELS = ("lightgbm", "logistic")  # RankingConfig.reference_models
Task = Literal["click", "ctcvr", "vtcvr"]


@dataclass(frozen=True)
class FeatureConfig:
    """Count windows of the history features and the time split of the impressions."""

    count_window_days: int = 30  # user/advertiser/category event counts look back this far
    max_position: int = 15  # positions beyond share one embedding row
    validation_days: int = 3  # the days before the test days: early stopping and calibration
    test_days: int = 5  # the last logged days: every reported metric

    def __post_init__(self):
        require(self.count_window_days >= 1, "features.count_window_days", "must be >= 1")
        require(self.max_position >= 0, "features.max_position", "must be >= 0")
        require(self.validation_days >= 1, "features.validation_days", "must be >= 1")
        require(self.test_days >= 1, "features.test_days", "must be >= 1")


@dataclass(frozen=True)
class DCNConfig:
    """DCN-v2 (Wang et al. 2021): embeddings -> low-rank cross network -> deep network -> task heads."""

    embedding_dim: int = 16
    cross_layers: int = 3
    cross_low_rank: int = 32
    deep_layers: tuple[int, ...] = (256, 128)

    def __post_init__(self):
        require(self.embedding_dim >= 1, "dcn.embedding_dim", "must be >= 1")
        require(self.cross_layers >= 1, "dcn.cross_layers", "must be >= 1")
        require(self.cross_low_rank >= 1, "dcn.cross_low_rank", "must be >= 1")
        require(all(width >= 1 for width in self.deep_layers), "dcn.deep_layers", "widths must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch AdamW on binary cross-entropy, early stopping on the validation loss."""

    epochs: int = 4
    batch_size: int = 2048
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    patience: int = 1  # epochs without validation improvement before stopping
    use_bf16: bool = True  # bf16 autocast for the dense layers (AMX on this CPU)
    calibration: Literal["platt", "isotonic"] = "platt"

    def __post_init__(self):
        require(self.epochs >= 1, "train.epochs", "must be >= 1")
        require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        require(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        require(self.patience >= 0, "train.patience", "must be >= 0")


@dataclass(frozen=True)
class LightGBMConfig:
    """The gradient-boosted-trees baseline on the same features (user and item IDs excluded)."""

    num_leaves: int = 31
    learning_rate: float = 0.1
    max_rounds: int = 300
    early_stopping_rounds: int = 30
    min_child_samples: int = 200  # rows per leaf: with ~0.1-0.4% positives smaller leaves overfit at once
    # Native categorical splits on advertiser/brand/category overfit the sparse conversions (early
    # stopping after 2-3 rounds, AUC 0.77-0.81 on demo vtcvr); integer codes measured better (0.87).
    categorical_ids: bool = False
    bagging_fraction: float = 0.8  # row subsampling makes seeds matter, as for the DCN
    feature_fraction: float = 0.9

    def __post_init__(self):
        require(self.num_leaves >= 2, "lightgbm.num_leaves", "must be >= 2")
        require(self.learning_rate > 0, "lightgbm.learning_rate", "must be > 0")
        require(self.max_rounds >= 1, "lightgbm.max_rounds", "must be >= 1")
        require(self.min_child_samples >= 1, "lightgbm.min_child_samples", "must be >= 1")
        require(0 < self.bagging_fraction <= 1, "lightgbm.bagging_fraction", "must be in (0, 1]")
        require(0 < self.feature_fraction <= 1, "lightgbm.feature_fraction", "must be in (0, 1]")


@dataclass(frozen=True)
class RankingConfig:
    """`adsim rank train|eval`: which tasks, whether multi-task, the seeds of the lift experiment."""

    tasks: tuple[str, ...] = ("ctcvr", "vtcvr")
    multi_task: bool = False  # one DCN with a head per task instead of one DCN per task
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # Table 5's reference rankers beside the DCN (the market's ranker), fitted and scored on the same rows:
    # "lightgbm" (gradient-boosted trees) and "logistic" (ranking.linear: no crosses, no training seed)
    reference_models: tuple[str, ...] = ("lightgbm",)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    dcn: DCNConfig = field(default_factory=DCNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lightgbm: LightGBMConfig = field(default_factory=LightGBMConfig)
    # "predicted": keep only the impressions of users the predictions table covers. A list predicted
    # for held-out users only (the leakage-free LLM input) covers few users; this measures the lift
    # where the feature exists instead of diluting it with rows that cannot have it.
    users: Literal["all", "predicted"] = "all"
    # Table 5's paired bootstrap over test users crossed with seeds (`ranking.lift.summarize_lift`)
    bootstrap_replicates: int = 1000
    bootstrap_seed: int = 0

    def __post_init__(self):
        require(self.users in ("all", "predicted"), "users", "must be 'all' or 'predicted'")
        require(len(self.tasks) >= 1 and set(self.tasks) <= set(TASKS), "tasks",
                f"choose one or more of {list(TASKS)}, got {list(self.tasks)}")
        require(len(set(self.tasks)) == len(self.tasks), "tasks", "must not repeat a task")
        require(len(self.seeds) >= 2, "seeds", "the lift's interval resamples training seeds: list >= 2")
        require(set(self.reference_models) <= set(REFERENCE_MODELS)
                and len(set(self.reference_models)) == len(self.reference_models), "reference_models",
                f"choose distinct models of {list(REFERENCE_MODELS)} (or none: []), got {list(self.reference_models)}")
        require(self.bootstrap_replicates >= 100, "bootstrap_replicates", "use >= 100 for a 95% interval")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct")
