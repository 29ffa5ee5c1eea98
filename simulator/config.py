"""The simulator's knobs (paper 4.5): traffic, auction, pacing, feedback and attribution, arms.

Frozen dataclasses validated on construction; every field is a mechanism parameter, none an
outcome. `ExperimentConfig` is what `adsim ab --config` and `adsim sweep` load from TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blending.blend import BlendConfig
from synthetic_data import schema
from synthetic_data.config_io import require


def _surface_table(values: dict[str, float], name: str, *, positive: bool = False) -> None:
    require(set(values) == set(schema.SURFACES), name, f"give a value for each surface {list(schema.SURFACES)}")
    for surface, value in values.items():
        require(value > 0 if positive else value >= 0, f"{name}.{surface}", f"must be {'>' if positive else '>='} 0")


@dataclass(frozen=True)
class TrafficConfig:
    """Sessions per user-day (times the user's true activity), their surface mix and depth."""

    sessions_per_user_day: float = 2.0
    surface_mix: dict[str, float] = field(default_factory=lambda: {
        "home_feed": 0.5, "related_pins": 0.3, "search": 0.2})
    extra_requests_per_session: dict[str, float] = field(default_factory=lambda: {
        "home_feed": 1.5, "related_pins": 0.5, "search": 0.5})  # ad requests = 1 + Poisson(this)
    seconds_between_requests: float = 30.0
    slots: dict[str, int] = field(default_factory=lambda: {"home_feed": 4, "related_pins": 3, "search": 3})

    def __post_init__(self):
        require(self.sessions_per_user_day > 0, "traffic.sessions_per_user_day", "must be > 0")
        _surface_table(self.surface_mix, "traffic.surface_mix")
        require(abs(sum(self.surface_mix.values()) - 1) < 1e-6, "traffic.surface_mix", "must sum to 1")
        _surface_table(self.extra_requests_per_session, "traffic.extra_requests_per_session")
        require(self.seconds_between_requests > 0, "traffic.seconds_between_requests", "must be > 0")
        _surface_table({k: float(v) for k, v in self.slots.items()}, "traffic.slots", positive=True)


@dataclass(frozen=True)
class AuctionConfig:
    """Ranking depth, eCPM auction with GSP pricing and a reserve (prices per 1,000 impressions).

    A winner pays the next-ranked *other* advertiser's eCPM (or the reserve), never its own item's.
    """

    rank_depth: int = 12  # advertisers per request the ranker sends to the auction (with all their candidates)
    reserve_ecpm: float = 0.5  # dollars per 1,000 impressions
    max_slots_per_advertiser: int = 1  # slots one advertiser may win per auction (its best candidates enter)

    def __post_init__(self):
        require(self.rank_depth >= 1, "auction.rank_depth", "must be >= 1")
        require(self.reserve_ecpm >= 0, "auction.reserve_ecpm", "must be >= 0")
        require(self.max_slots_per_advertiser >= 1, "auction.max_slots_per_advertiser",
                f"must be >= 1 (1 = one slot per advertiser per auction), got {self.max_slots_per_advertiser}")


@dataclass(frozen=True)
class PacingConfig:
    """Budget pacing by throttling: each advertiser's pass rate follows a linear daily spend plan."""

    interval_seconds: float = 900.0
    tolerance: float = 0.1  # relative slack around the plan before the pass rate moves
    decrease: float = 0.7  # pass rate multiplier when ahead of plan
    increase: float = 1.3  # pass rate multiplier when behind plan
    min_pass_rate: float = 0.02

    def __post_init__(self):
        require(self.interval_seconds > 0, "pacing.interval_seconds", "must be > 0")
        require(self.tolerance >= 0, "pacing.tolerance", "must be >= 0")
        require(0 < self.decrease < 1, "pacing.decrease", "must be in (0, 1)")
        require(self.increase > 1, "pacing.increase", "must be > 1")
        require(0 < self.min_pass_rate <= 1, "pacing.min_pass_rate", "must be in (0, 1]")


@dataclass(frozen=True)
class FeedbackConfig:
    """What happens after the auction besides the world's true rates: slot visibility, conversion
    delays, attribution windows and order values."""

    view_decay: float = 0.9  # P(slot k scrolls into view, i.e. is impressed) = view_decay ** k
    click_delay_mean_hours: float = 24.0
    view_delay_mean_hours: float = 12.0
    click_window_days: float = 7.0
    view_window_days: float = 1.0
    value_log_sd: float = 0.3  # order value = item price * lognormal(0, sd) basket noise

    def __post_init__(self):
        require(0 < self.view_decay <= 1, "feedback.view_decay", "must be in (0, 1]")
        require(self.click_delay_mean_hours > 0 and self.view_delay_mean_hours > 0,
                "feedback.*_delay_mean_hours", "must be > 0")
        require(self.click_window_days > 0 and self.view_window_days > 0, "feedback.*_window_days", "must be > 0")
        require(self.value_log_sd >= 0, "feedback.value_log_sd", "must be >= 0")


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated market: days, batching, seed and the mechanisms above."""

    days: int = 3
    batch_seconds: float = 600.0  # requests arriving within this much simulated time are batched
    seed: int = 0
    budget_share: float = 1.0  # share of each advertiser's daily budget this market may spend
    conversion_tail_days: float = 2.0  # after the last day, conversions still arrive (no traffic)
    # Requests of one user on one day with the same surface and context, within a batch, share
    # retrieval and ranking (a per-batch cache; exact while the models read history by day).
    coalesce_requests: bool = True
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    auction: AuctionConfig = field(default_factory=AuctionConfig)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)

    def __post_init__(self):
        require(self.days >= 1, "simulation.days", "must be >= 1")
        require(0 < self.batch_seconds <= 86400, "simulation.batch_seconds", "must be in (0, 86400]")
        require(0 < self.budget_share <= 1, "simulation.budget_share", "must be in (0, 1]")
        require(self.conversion_tail_days >= 0, "simulation.conversion_tail_days", "must be >= 0")


@dataclass(frozen=True)
class ArmConfig:
    """One experiment arm: a name and its blending config (e.g. the LLM generator's L0 quota)."""

    name: str
    blend: BlendConfig

    def __post_init__(self):
        require(bool(self.name), "arms.name", "every arm needs a name")


def _default_arms() -> tuple[ArmConfig, ...]:
    """LLM generator off (control) versus on, in the baseline stack's source names."""
    return tuple(ArmConfig(name, BlendConfig({"main": 30, "llm": quota}, max_candidates=30))
                 for name, quota in (("control", 0), ("llm_generator", 10)))


@dataclass(frozen=True)
class PluginConfig:
    """Import paths (`package.module:attribute`) of a team's components; empty: the stack's own."""

    generators: tuple[str, ...] = ()  # extra candidate sources; each arm's blend.quotas gives their `source` a quota
    scorer: str = ""  # replaces the stack's ranker (ctcvr, vtcvr per candidate)
    response: str = ""  # replaces the world's true response (a what-if user)
    nightly: str = ""  # replaces the nightly re-inference (the predictor the market re-runs each midnight)

    def __post_init__(self):
        for name, path in (*((f"plugins.generators[{i}]", p) for i, p in enumerate(self.generators)),
                           ("plugins.scorer", self.scorer), ("plugins.response", self.response),
                           ("plugins.nightly", self.nightly)):
            module, _, attribute = path.partition(":")
            require(not path or (bool(module) and attribute.isidentifier()), name,
                    f"{path!r} is not an import path 'package.module:attribute' (e.g. 'mypkg.cg:MyGenerator')")


@dataclass(frozen=True)
class ExperimentConfig:
    """An A/B (or A/B/n) experiment; the first arm is the control. `design` is the A/B's, `sweep_design`
    the L0 quota sweep's; both are paired by default: every arm replays the same users with common random
    numbers, so arms differ only by their treatment (on the demo world, one day: RoAS MDE 2.1% paired
    against 13.3% split, at twice the split design's simulation cost; docs/power.md)."""

    arms: tuple[ArmConfig, ...] = field(default_factory=_default_arms)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    design: str = "paired"  # paired: every arm replays all users (CRN); split: users hashed into arms
    sweep_design: str = "paired"  # the same choice for `adsim sweep`
    salt: int = 0  # hash salt of the user split
    method: str = "delta"  # delta | bootstrap
    bootstrap_samples: int = 1000
    cuped: bool = True
    pre_period_days: int = 28  # days of world events before the experiment used as CUPED covariates
    alpha: float = 0.05
    aa_splits: int = 200  # A/A re-randomisations at the A/B's size (experiment.aa_check)
    plugins: PluginConfig = field(default_factory=PluginConfig)  # a team's own components (simulator/plugins.py)

    def __post_init__(self):
        require(len(self.arms) >= 2, "arms", "an experiment needs at least two arms (the first is control)")
        names = [arm.name for arm in self.arms]
        require(len(set(names)) == len(names), "arms.name", f"arm names must be unique, got {names}")
        require(self.design in ("split", "paired"), "design", "must be 'split' or 'paired'")
        require(self.sweep_design in ("split", "paired"), "sweep_design", "must be 'split' or 'paired'")
        require(self.method in ("delta", "bootstrap"), "method", "must be 'delta' or 'bootstrap'")
        require(self.bootstrap_samples >= 100, "bootstrap_samples", "must be >= 100")
        require(self.pre_period_days >= 1, "pre_period_days", "must be >= 1")
        require(0 < self.alpha < 1, "alpha", "must be in (0, 1)")
        require(self.aa_splits >= 1, "aa_splits", "must be >= 1 (200 give the false-positive rate +-3 points)")
