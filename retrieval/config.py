"""Typed configs of the retrieval stage: features, two-tower model, training, index, generators.

One frozen dataclass per concern, grouped in `RetrievalConfig` so that a run is one TOML file plus
`--set section.field=value` overrides (STYLE: configs are frozen dataclasses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synthetic_data.config_io import require

Objective = Literal["impressions", "clicks", "conversions"]
OBJECTIVES: tuple[str, ...] = ("impressions", "clicks", "conversions")


@dataclass(frozen=True)
class FeatureConfig:
    """How much observable history the user tower sees (paper 3.6.1: user engagement features)."""

    max_recent_items: int = 20  # last engaged items (engagement events with an item)
    max_recent_categories: int = 30  # categories of the last events that carry one
    max_recent_advertisers: int = 20  # advertisers of the last events that carry one
    max_recent_searches: int = 10  # last onsite/offsite search queries, tokenised
    max_search_tokens: int = 5000  # vocabulary of the most frequent search tokens

    def __post_init__(self) -> None:
        for name in ("max_recent_items", "max_recent_categories", "max_recent_advertisers",
                     "max_recent_searches", "max_search_tokens"):
            require(getattr(self, name) >= 1, name, "must be at least 1")


@dataclass(frozen=True)
class ModelConfig:
    """Two-tower sizes: TorchRec embedding bags for sparse IDs, then an MLP per tower."""

    embedding_dim: int = 32  # width of every sparse-ID embedding table
    hidden_dim: int = 128
    output_dim: int = 64  # the shared user/item space indexed by faiss

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_dim", "output_dim"):
            require(getattr(self, name) >= 1, name, "must be at least 1")


@dataclass(frozen=True)
class TrainingConfig:
    """Objective and optimisation of the two-tower (paper 4.5.1 compares the three objectives)."""

    objective: Objective = "clicks"
    epochs: int = 3
    batch_size: int = 512  # in-batch negatives: every other positive of the batch
    uniform_negatives: int = 512  # mixed negative sampling: extra items drawn uniformly per batch
    learning_rate: float = 3e-3
    temperature: float = 0.05
    dwell_cap_seconds: float = 300.0  # dwell (or its proxy) above this gets the full click weight
    min_click_weight: float = 0.1  # weight of a click with zero dwell
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.batch_size >= 2, "batch_size", "needs at least 2 for in-batch negatives")
        require(self.uniform_negatives >= 0, "uniform_negatives", "must be 0 or more")
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(self.temperature > 0, "temperature", "must be positive")
        require(self.dwell_cap_seconds > 0, "dwell_cap_seconds", "must be positive")
        require(0 <= self.min_click_weight <= 1, "min_click_weight", "must be in [0, 1]")


@dataclass(frozen=True)
class IndexConfig:
    """faiss index choice: exact up to `exact_max_items`, else IVF or HNSW with measured recall.

    IVF is the default: on this 2-core machine it built ~4x faster than HNSW (M=16) at 100k items
    and reached recall 0.99 of exact at nprobe 32, where HNSW needed efSearch 1024 for 0.92
    (benchmarks/bench_retrieval.py).
    """

    exact_max_items: int = 50_000
    approximate_kind: Literal["hnsw", "ivf"] = "ivf"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_lists: int = 0  # 0 = 4 * sqrt(items)
    ivf_probe: int = 32
    recall_queries: int = 500  # queries used to measure approximate recall against exact search
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.exact_max_items >= 1, "exact_max_items", "must be at least 1")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_probe",
                     "recall_queries"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.ivf_lists >= 0, "ivf_lists", "must be 0 (automatic) or positive")


@dataclass(frozen=True)
class GeneratorConfig:
    """Candidate counts: main top-N, the LLM generator's L0 quota, popularity top-N (paper 3.6.1)."""

    main_top_n: int = 200
    l0_quota: int = 50  # most candidates the LLM-advertiser generator emits per request
    max_predicted_advertisers: int = 20  # predicted ranks beyond this are ignored
    max_prediction_age_days: int = 7  # a prediction anchored at x serves days x+1 .. x+age
    popularity_top_n: int = 200
    popularity_window_days: int = 14
    popularity_max_user_events: int = -1  # serve only users with at most this many events; -1 = all

    def __post_init__(self) -> None:
        for name in ("main_top_n", "l0_quota", "max_predicted_advertisers",
                     "max_prediction_age_days", "popularity_top_n", "popularity_window_days"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.popularity_max_user_events >= -1, "popularity_max_user_events",
                "must be -1 (serve everyone) or a non-negative event count")


@dataclass(frozen=True)
class EvaluationConfig:
    """Offline evaluation window: train before anchor+1, score the next `window_days` (held out)."""

    anchor_date: str = ""  # ISO date; empty = the last day that leaves a full window after it
    window_days: int = 7
    k: tuple[int, ...] = (20, 50, 100, 200)

    def __post_init__(self) -> None:
        require(self.window_days >= 1, "window_days", "must be at least 1")
        require(len(self.k) >= 1 and all(k >= 1 for k in self.k), "k", "give positive cut-offs")


@dataclass(frozen=True)
class RetrievalConfig:
    """The whole retrieval stage: one TOML file (sections below) plus overrides."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    generators: GeneratorConfig = field(default_factory=GeneratorConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
