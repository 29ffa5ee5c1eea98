"""The world's knobs: one frozen dataclass per mechanism, validated on construction.

Each field is a documented mechanism parameter (docs/world.md lists them all); nothing here
encodes an outcome. Bad values fail before any work starts, naming the field and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from synthetic_data.config_io import require


def _check_probabilities(values: dict[str, float], name: str) -> None:
    require(len(values) > 0, name, "needs at least one entry")
    for key, value in values.items():
        require(value >= 0, f"{name}.{key}", f"must be >= 0, got {value}")
    total = sum(values.values())
    require(math.isclose(total, 1.0, abs_tol=1e-6), name,
            f"probabilities must sum to 1, they sum to {total:.6g}; rescale them")


@dataclass(frozen=True)
class TaxonomyConfig:
    """Two-level category tree; each leaf sells several product lines."""

    n_top_categories: int = 8
    leaves_per_top: int = 4
    product_lines_per_leaf: int = 4

    def __post_init__(self):
        require(self.n_top_categories >= 1, "taxonomy.n_top_categories", "must be >= 1")
        require(self.leaves_per_top >= 1, "taxonomy.leaves_per_top", "must be >= 1")
        require(self.product_lines_per_leaf >= 1, "taxonomy.product_lines_per_leaf", "must be >= 1")


@dataclass(frozen=True)
class AdvertiserConfig:
    """Advertisers own brand groups; popularity is Zipf; campaigns are OCPM or ROAS."""

    n_advertisers: int = 200
    mean_brands_per_advertiser: float = 1.6  # 1 + Poisson(mean - 1) brands each
    product_lines_per_brand: int = 3  # drawn from the brand's leaf (and a neighbour leaf)
    items_per_product_line: int = 3  # items each brand lists per product line
    popularity_zipf_exponent: float = 1.0  # popularity of rank r is proportional to r^-s
    active_share: float = 0.85  # share of advertisers running ads on the platform
    spending_share: float = 0.85  # share of active advertisers with active spend
    campaign_type_probs: dict[str, float] = field(default_factory=lambda: {"OCPM": 0.6, "ROAS": 0.4})
    bid_log_mean: float = 2.5  # log of a typical OCPM bid per conversion (dollars)
    bid_log_sd: float = 0.6
    target_roas_mean: float = 3.0
    budget_log_mean: float = 6.0  # log of a typical daily budget (dollars)
    budget_log_sd: float = 1.0
    budget_popularity_elasticity: float = 0.5  # budget grows as popularity^elasticity
    spend_utilisation_sd: float = 0.25  # day-to-day noise of the share of budget spent
    preset_pool_size: int = 50  # daily top-revenue advertisers kept as the preset pool
    price_log_mean: float = 3.5
    price_log_sd: float = 0.7

    def __post_init__(self):
        require(self.n_advertisers >= 2, "advertisers.n_advertisers", "must be >= 2")
        require(self.mean_brands_per_advertiser >= 1, "advertisers.mean_brands_per_advertiser", "must be >= 1")
        require(self.product_lines_per_brand >= 1, "advertisers.product_lines_per_brand", "must be >= 1")
        require(self.items_per_product_line >= 1, "advertisers.items_per_product_line", "must be >= 1")
        require(self.popularity_zipf_exponent >= 0, "advertisers.popularity_zipf_exponent", "must be >= 0")
        require(0 < self.active_share <= 1, "advertisers.active_share", "must be in (0, 1]")
        require(0 < self.spending_share <= 1, "advertisers.spending_share", "must be in (0, 1]")
        _check_probabilities(self.campaign_type_probs, "advertisers.campaign_type_probs")
        require(set(self.campaign_type_probs) <= {"OCPM", "ROAS"}, "advertisers.campaign_type_probs",
                "keys must be OCPM and/or ROAS")
        require(self.bid_log_sd >= 0 and self.budget_log_sd >= 0 and self.price_log_sd >= 0,
                "advertisers.*_log_sd", "standard deviations must be >= 0")
        require(self.target_roas_mean > 0, "advertisers.target_roas_mean", "must be > 0")
        require(self.spend_utilisation_sd >= 0, "advertisers.spend_utilisation_sd", "must be >= 0")
        require(self.preset_pool_size >= 1, "advertisers.preset_pool_size", "must be >= 1")


@dataclass(frozen=True)
class ItemConfig:
    """Content embeddings: category, top category and advertiser style plus noise."""

    embedding_dim: int = 32
    leaf_weight: float = 1.0
    top_weight: float = 0.6
    style_weight: float = 0.5  # mean advertiser style strength (per advertiser: uniform 0..2x)
    noise_weight: float = 0.4

    def __post_init__(self):
        require(self.embedding_dim >= 2, "items.embedding_dim", "must be >= 2")
        for name in ("leaf_weight", "top_weight", "style_weight", "noise_weight"):
            require(getattr(self, name) >= 0, f"items.{name}", "must be >= 0")


@dataclass(frozen=True)
class UserConfig:
    """Demographics and latent state: sparse drifting interests, loyalty, commercial intent."""

    n_users: int = 2000
    age_probs: dict[str, float] = field(default_factory=lambda: {
        "18-24": 0.18, "25-34": 0.28, "35-44": 0.22, "45-54": 0.16, "55+": 0.16})
    gender_probs: dict[str, float] = field(default_factory=lambda: {
        "female": 0.6, "male": 0.35, "unspecified": 0.05})
    user_state_probs: dict[str, float] = field(default_factory=lambda: {
        "core": 0.45, "casual": 0.35, "resurrected": 0.1, "new": 0.1})
    interests_per_user: int = 4  # leaf categories a user cares about at any time
    interest_concentration: float = 0.7  # Dirichlet alpha over those interests (low = peaked)
    drift_period_days: int = 15  # interests may change at each period boundary
    drift_probability: float = 0.25  # per period: chance one interest is replaced by a new one
    favorite_advertisers: int = 3  # advertisers a user is loyal to, from their interest categories
    loyalty_beta: tuple[float, float] = (2.0, 3.0)  # Beta(a, b) of brand loyalty
    intent_gamma_shape: float = 1.5  # commercial intent ~ Gamma(shape, 1/shape): mean 1
    activity_gamma_shape: float = 2.0  # activity level ~ Gamma(shape, 1/shape): mean 1

    def __post_init__(self):
        require(self.n_users >= 1, "users.n_users", "must be >= 1")
        _check_probabilities(self.age_probs, "users.age_probs")
        _check_probabilities(self.gender_probs, "users.gender_probs")
        _check_probabilities(self.user_state_probs, "users.user_state_probs")
        require(self.interests_per_user >= 1, "users.interests_per_user", "must be >= 1")
        require(self.interest_concentration > 0, "users.interest_concentration", "must be > 0")
        require(self.drift_period_days >= 1, "users.drift_period_days", "must be >= 1")
        require(0 <= self.drift_probability <= 1, "users.drift_probability", "must be in [0, 1]")
        require(self.favorite_advertisers >= 1, "users.favorite_advertisers", "must be >= 1")
        require(min(self.loyalty_beta) > 0, "users.loyalty_beta", "both Beta parameters must be > 0")
        require(self.intent_gamma_shape > 0, "users.intent_gamma_shape", "must be > 0")
        require(self.activity_gamma_shape > 0, "users.activity_gamma_shape", "must be > 0")


@dataclass(frozen=True)
class BehaviorConfig:
    """Daily event rates and the conversion-advertiser mixture (repeat/semantic/popular/noise)."""

    # Expected events per user-day at activity 1 (conversion and offsite rates also scale with intent).
    daily_rates: dict[str, float] = field(default_factory=lambda: {
        "onsite_search": 0.35, "offsite_search": 0.2, "offsite_url": 0.25,
        "attributed_conversion": 0.03, "matched_conversion": 0.05, "engagement": 0.8})
    search_brand_mention_probability: float = 0.3  # a search names a brand of the browsed advertiser
    # The advertiser of a conversion comes from a mixture of documented mechanisms:
    #  repeat: an advertiser of the user's own past conversions, weighted by recency;
    #  semantic: a product line the user recently browsed offsite (URL or search), converting with
    #            the browsed advertiser or another advertiser selling that product line;
    #  popular: a popularity-weighted advertiser selling in the user's current interest category;
    #  noise: any advertiser, uniformly.
    conversion_mixture: dict[str, float] = field(default_factory=lambda: {
        "repeat": 0.35, "semantic": 0.3, "popular": 0.3, "noise": 0.05})
    repeat_half_life_days: float = 21.0
    browse_half_life_days: float = 5.0
    semantic_same_advertiser_probability: float = 0.5
    memory_size: int = 8  # past conversions / offsite browses a user remembers for the mixture
    conversion_type_probs: dict[str, float] = field(default_factory=lambda: {
        "checkout": 0.45, "add_to_cart": 0.2, "lead": 0.1, "signup": 0.15, "page_visit": 0.1})
    high_priority_types: tuple[str, ...] = ("checkout", "add_to_cart", "lead")

    def __post_init__(self):
        from synthetic_data.schema import EVENT_KINDS

        require(set(self.daily_rates) == set(EVENT_KINDS), "behavior.daily_rates",
                f"needs exactly the event kinds {list(EVENT_KINDS)}")
        for kind, rate in self.daily_rates.items():
            require(rate >= 0, f"behavior.daily_rates.{kind}", f"must be >= 0, got {rate}")
        _check_probabilities(self.conversion_mixture, "behavior.conversion_mixture")
        require(set(self.conversion_mixture) == {"repeat", "semantic", "popular", "noise"},
                "behavior.conversion_mixture", "needs exactly repeat, semantic, popular, noise")
        _check_probabilities(self.conversion_type_probs, "behavior.conversion_type_probs")
        require(set(self.high_priority_types) <= set(self.conversion_type_probs),
                "behavior.high_priority_types",
                f"each type must be a key of conversion_type_probs {sorted(self.conversion_type_probs)}")
        require(0 <= self.search_brand_mention_probability <= 1,
                "behavior.search_brand_mention_probability", "must be in [0, 1]")
        require(0 <= self.semantic_same_advertiser_probability <= 1,
                "behavior.semantic_same_advertiser_probability", "must be in [0, 1]")
        require(self.repeat_half_life_days > 0, "behavior.repeat_half_life_days", "must be > 0")
        require(self.browse_half_life_days > 0, "behavior.browse_half_life_days", "must be > 0")
        require(self.memory_size >= 1, "behavior.memory_size", "must be >= 1")


@dataclass(frozen=True)
class LabelConfig:
    """Paper 3.2: anchor dates, the [x+1, x+7] window, the 0.9/0.1 user split, V0/V1 filters."""

    anchor_days: tuple[int, ...] = (60, 67, 74, 81)  # day offsets from start; the last is for eval
    window_days: int = 7
    eval_share: float = 0.1
    v0_min_history: int = 10  # conversion history length a V0 user needs (paper 4.1)
    # "combined": matched + attributed conversions >= v0_min_history; "each": both separately.
    # The paper's sentence admits both readings; combined is the default (see docs/world.md).
    v0_rule: Literal["combined", "each"] = "combined"
    v1_lookback_days: int = 90  # serving population: active past conversions within this window

    def __post_init__(self):
        require(len(self.anchor_days) >= 1, "labels.anchor_days", "needs at least one anchor day")
        require(list(self.anchor_days) == sorted(set(self.anchor_days)), "labels.anchor_days",
                "must be strictly increasing")
        require(self.anchor_days[0] >= 1, "labels.anchor_days", "anchor days must be >= 1")
        require(self.window_days >= 1, "labels.window_days", "must be >= 1")
        require(0 < self.eval_share < 1, "labels.eval_share", "must be in (0, 1)")
        require(self.v0_min_history >= 0, "labels.v0_min_history", "must be >= 0")
        require(self.v1_lookback_days >= 1, "labels.v1_lookback_days", "must be >= 1")


@dataclass(frozen=True)
class CorpusConfig:
    """The web corpus: documents tying advertiser names to brands, domains, products, categories."""

    documents_per_advertiser: int = 3  # paraphrased advertiser profiles
    product_documents_per_advertiser: int = 2  # documents about single items
    include_category_documents: bool = True

    def __post_init__(self):
        require(self.documents_per_advertiser >= 1, "corpus.documents_per_advertiser", "must be >= 1")
        require(self.product_documents_per_advertiser >= 0, "corpus.product_documents_per_advertiser",
                "must be >= 0")


@dataclass(frozen=True)
class WorldConfig:
    """The whole world: seed, time span and one section per mechanism."""

    seed: int = 7
    n_days: int = 90
    start_date: str = "2026-01-01"
    user_chunk_size: int = 50_000  # users generated per chunk (bounds memory; part of the seed stream)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    advertisers: AdvertiserConfig = field(default_factory=AdvertiserConfig)
    items: ItemConfig = field(default_factory=ItemConfig)
    users: UserConfig = field(default_factory=UserConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    def __post_init__(self):
        from datetime import date

        require(self.seed >= 0, "seed", "must be >= 0")
        require(self.n_days >= 2, "n_days", "must be >= 2")
        require(self.user_chunk_size >= 1, "user_chunk_size", "must be >= 1")
        try:
            date.fromisoformat(self.start_date)
        except ValueError:
            require(False, "start_date", f"{self.start_date!r} is not an ISO date like 2026-01-01")
        last_anchor = self.labels.anchor_days[-1]
        require(last_anchor + self.labels.window_days < self.n_days, "labels.anchor_days",
                f"the last anchor ({last_anchor}) plus window_days ({self.labels.window_days}) must be "
                f"< n_days ({self.n_days}); lower the anchor or raise n_days")
        require(self.advertisers.preset_pool_size <= self.advertisers.n_advertisers,
                "advertisers.preset_pool_size", "cannot exceed advertisers.n_advertisers")
        n_leaves = self.taxonomy.n_top_categories * self.taxonomy.leaves_per_top
        require(self.users.interests_per_user <= n_leaves, "users.interests_per_user",
                f"cannot exceed the number of leaf categories ({n_leaves})")
