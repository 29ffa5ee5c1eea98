"""Offline A/B experiments and L0-quota sweeps on the simulated market (paper 4.5, Table 6).

Users are split into arms by a salted hash (each arm gets its traffic share of every budget,
so arms do not compete for spend), or, in the paired design, every arm replays all users with
the same random numbers. Each treatment arm is compared with the control (the first arm) on
RoAS, revenue, spend, CTR, CVR and conversions, with CUPED covariates from the pre-period;
advertiser diversity and funnel survival come from each arm's funnel ledger. RoAS is the primary
metric; the others are secondary and Holm-adjusted per arm. A sample-ratio-mismatch test checks
that the arms received the users the design assigns. Before the treatment arms run, the control
arm's variance gives each arm's planned minimum detectable effect (MDE) on RoAS; every comparison
carries its achieved MDE. Each arm reports how far its treatment sources (the sources whose quota it
raises) reached, and an arm whose treatment reached nothing, or too little for its MDE, is flagged
as not measuring the treatment and never called significant. The L0 quota sweep runs in the paired
design unless told otherwise (every quota replays the same users, so quotas differ only by their
treatment) and names the first quota whose advertiser diversity drops significantly (paper 4.5.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
import polars as pl
from scipy import sparse

from blending.blend import BlendConfig
from blending.diversity import diversity_measures
from simulator.config import ArmConfig, ExperimentConfig, SimulationConfig
from simulator.engine import SimulationResult, Stack, simulate, simulation_start
from simulator.power import POWER, achieved_mde, per_user_log_ratio_variance, planned_log_standard_error, relative_mde
from simulator.random_streams import uniforms
from simulator.stats import Comparison, RatioMetric, SampleRatioCheck, compare, is_underpowered, sample_ratio_mismatch
from simulator.traffic import TrafficTables, traffic_tables
from synthetic_data import schema
from synthetic_data.config_io import ConfigError
from synthetic_data.intervals import bootstrap_interval, holm_adjust, proportion_interval
from synthetic_data.ray_cluster import map_tasks
from synthetic_data.schema import World

METRICS = (
    RatioMetric("roas", "conversion_value", "spend", "pre_conversion_value"),
    RatioMetric("revenue_per_user", "conversion_value", None, "pre_conversion_value"),
    RatioMetric("spend_per_user", "spend", None, "pre_engagements"),
    RatioMetric("ctr", "clicks", "impressions", "pre_engagements"),
    RatioMetric("cvr", "click_conversions", "clicks", "pre_conversions"),
    RatioMetric("conversions_per_user", "conversions", None, "pre_conversions"),
)
PRIMARY_METRIC = "roas"  # the decision metric; every other comparison is secondary
PRIMARY_RATIO = next(metric for metric in METRICS if metric.name == PRIMARY_METRIC)
DIVERSITY_STAGE = "impressed"
AA_REPLAY_SEED_OFFSET = 7919  # the paired A/A's replay of the control arm: another seed, the same config
CONCENTRATION_DIRECTION = {"advertiser_entropy": -1.0, "advertiser_gini": 1.0}  # the sign of over-concentration


@dataclass(frozen=True)
class ExperimentResult:
    """Comparisons (one row per treatment arm x metric, with achieved MDE and the exposure flag), per-arm
    summaries (with exposure, planned MDE on RoAS and the flag), funnels, the sample-ratio check and raw results."""

    comparisons: pl.DataFrame
    served: pl.DataFrame  # the comparisons on the served slice (no diversity rows); empty without one
    arms: pl.DataFrame
    funnels: pl.DataFrame
    srm: SampleRatioCheck
    results: dict[str, SimulationResult]
    replay: SimulationResult | None = None  # the paired A/A's replay of the control arm (run_ab's aa_replay)


def assign_arms(user_ids: np.ndarray, n_arms: int, salt: int) -> np.ndarray:
    """Arm index of each user by salted hash: stable per user, independent of the other users."""
    return np.minimum((uniforms(salt, "assignment", np.asarray(user_ids, dtype=np.int64)) * n_arms).astype(np.int64),
                      n_arms - 1)


def pre_period_covariates(world: World, days: int) -> pl.DataFrame:
    """Per-user behaviour in the `days` before the experiment (CUPED covariates)."""
    end = simulation_start(world)
    window = world.events.filter(pl.col("ts").dt.date() >= end - timedelta(days=days))
    is_conversion = pl.col("kind").is_in(list(schema.CONVERSION_KINDS))
    per_user = window.group_by("user_id").agg(
        (pl.col("kind") == "engagement").sum().cast(pl.Float64).alias("pre_engagements"),
        is_conversion.sum().cast(pl.Float64).alias("pre_conversions"),
        pl.col("value").filter(is_conversion).sum().cast(pl.Float64).alias("pre_conversion_value"))
    return (world.users.select("user_id").join(per_user, on="user_id", how="left")
            .with_columns(pl.col("^pre_.*$").fill_null(0.0)))


def arm_summary(name: str, result: SimulationResult, funnel: pl.DataFrame) -> dict:
    """Headline figures of one arm: totals, ratios, advertiser diversity and funnel survival (`funnel`: its
    `result.ledger.table()`)."""
    totals = result.user_metrics.drop("user_id").sum().row(0, named=True)
    shown = funnel.filter((pl.col("source") == "all") & (pl.col("stage") == DIVERSITY_STAGE)).row(0, named=True)
    summary = {"arm": name, "users": result.user_metrics.height, "days": result.summary["days"], **totals,
               "roas": _safe(totals["conversion_value"], totals["spend"]),
               "ctr": _safe(totals["clicks"], totals["impressions"]),
               "cvr": _safe(totals["click_conversions"], totals["clicks"]),
               "unique_advertisers": shown["unique_advertisers"], "advertiser_entropy": shown["entropy"],
               "advertiser_gini": shown["gini"]}
    for source in result.ledger.sources:
        rows = dict(funnel.filter(pl.col("source") == source).select("stage", "count").rows())
        summary[f"{source}_impressed_share"] = _safe(rows["impressed"], shown["count"])
        summary[f"{source}_survival"] = _safe(rows["impressed"], rows["retrieved"])
    return summary


def _safe(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def check_quotas(arms: Sequence[ArmConfig], sources: Sequence[str]) -> None:
    """Every arm gives each of the stack's `sources` a quota and names no other source; raises ConfigError
    naming each arm's unknown and missing sources and the stack's, before any market runs (a misspelt
    source would otherwise be an arm that treats nobody)."""
    problems = []
    for arm in arms:
        unknown = sorted(set(arm.blend.quotas) - set(sources))
        missing = [source for source in sources if source not in arm.blend.quotas]
        parts = ([f"{unknown} name no source of the stack"] if unknown else []) + (
            [f"{missing} have no quota (0 switches a source off)"] if missing else [])
        if parts:
            problems.append(f"arms[{arm.name}].blend.quotas: {'; '.join(parts)}")
    if problems:
        raise ConfigError(f"{'. '.join(problems)}. The stack's sources are {list(sources)}; give each a quota "
                          "and no other")


def treatment_sources(config: ExperimentConfig) -> dict[str, tuple[str, ...]]:
    """Per arm, the sources whose L0 quota it raises over the control's (a missing source has quota 0):
    what the arm treats its users with. The control gets every treatment arm's sources, so its own
    exposure to them is the baseline beside theirs."""
    control = config.arms[0].blend.quotas
    raised = {arm.name: tuple(source for source, quota in arm.blend.quotas.items() if quota > control.get(source, 0))
              for arm in config.arms[1:]}
    every_raised = tuple(dict.fromkeys(source for sources in raised.values() for source in sources))
    return {config.arms[0].name: every_raised, **raised}


def arm_exposure(result: SimulationResult, sources: Sequence[str]) -> dict:
    """How far an arm's treatment sources reached: distinct users with at least one impression from them,
    their impressions, and their share of the arm's impressions and spend (NaN without impressions)."""
    impressions = result.impressions
    reached = {"users": 0, "impressions": 0, "spend": 0.0, "total_spend": 0.0}
    if impressions.height:
        is_treated = pl.col("source").is_in(list(sources))
        reached = impressions.select(users=pl.col("user_id").filter(is_treated).n_unique(),
                                     impressions=is_treated.sum(), spend=pl.col("price_paid").filter(is_treated).sum(),
                                     total_spend=pl.col("price_paid").sum()).row(0, named=True)
    return {"treatment_sources": ",".join(sources), "treatment_users": int(reached["users"]),
            "treatment_impressions": int(reached["impressions"]),
            "treatment_impression_share": _safe(reached["impressions"], impressions.height),
            "treatment_spend_share": _safe(reached["spend"], reached["total_spend"])}


def treatment_check(exposure: dict, planned_roas_mde: float, achieved_roas_mde: float) -> tuple[bool | None, str]:
    """Whether an arm measures its treatment, with the reason: False when its treatment sources reached
    no impression, or took a share of the arm's spend below its MDE on RoAS; None when the arm raises
    no source's quota (an A/A arm), so there is no exposure to check.

    The spend rule: RoAS = value / spend, so a treatment that changes value per dollar only on its
    sources' impressions moves the arm's RoAS by about (their share of spend) x (the change there),
    taking their RoAS near the arm's and ignoring displaced impressions of other sources. Below the
    MDE, even a 100% change on the exposed spend moves RoAS by less than the test can detect. The MDE
    is the smaller of the planned and the achieved one: the paired design's planned MDE is an upper
    bound (power.planned_log_standard_error) that common random numbers can beat several times over.
    """
    sources = exposure["treatment_sources"]
    if not sources:
        return None, "raises no source's quota over the control's: no treatment exposure to check"
    reached = (f"its treatment source(s) `{sources}` reached {exposure['treatment_users']:,} users and "
               f"{exposure['treatment_impressions']:,} impressions")
    if exposure["treatment_impressions"] == 0:
        return False, reached
    mde = float(np.fmin(planned_roas_mde, achieved_roas_mde))  # NaN only when neither is estimable
    # two decimals: a paired design's MDE is often under 1%, and "0.0% below +0.0%" would hide the comparison
    spend = f"{reached}, {exposure['treatment_spend_share']:.2%} of the arm's spend"
    if exposure["treatment_spend_share"] < mde:  # False for a NaN MDE: only the first rule applies
        return False, (f"{spend}, below its MDE on RoAS of {mde:+.2%}: even a 100% change on that spend could "
                       f"not move RoAS by the MDE; what the arm's other rows show is the quota's displacement of "
                       f"other sources' candidates, not what the treatment source's own impressions did")
    return True, f"{spend}, at least its MDE on RoAS of {mde:+.2%}"


def planned_mde(columns: dict[str, np.ndarray], treatment_users: dict[str, int],
                config: ExperimentConfig) -> dict[str, float]:
    """Planned MDE on RoAS per treatment arm (POWER, config.alpha) for its users and the design's days,
    from the control arm's per-user variance of log RoAS (CUPED-adjusted when config.cuped), known
    before any treatment arm runs (`columns`: its _user_columns); see power.planned_log_standard_error for
    the paired assumption."""
    variance = per_user_log_ratio_variance(columns[PRIMARY_RATIO.numerator], columns[PRIMARY_RATIO.denominator],
                                           columns[PRIMARY_RATIO.covariate] if config.cuped else None)
    control_users = columns[PRIMARY_RATIO.numerator].size
    return {name: relative_mde(planned_log_standard_error(variance, control_users, users, config.design == "paired"),
                               config.alpha)
            for name, users in treatment_users.items()}


def arms_table(config: ExperimentConfig, results: dict[str, SimulationResult], funnels: dict[str, pl.DataFrame],
               planned_roas_mde: dict[str, float], achieved_roas_mde: dict[str, float]) -> pl.DataFrame:
    """One row per arm (`funnels`: each arm's ledger table): arm_summary, arm_exposure to its treatment sources,
    the planned MDE on RoAS and treatment_check's flag and reason (null flag and NaN MDE for the control)."""
    sources = treatment_sources(config)
    rows = []
    for name, result in results.items():
        exposure = arm_exposure(result, sources[name])
        is_measured, check = ((None, "control arm") if name == config.arms[0].name
                              else treatment_check(exposure, planned_roas_mde[name], achieved_roas_mde[name]))
        rows.append({**arm_summary(name, result, funnels[name]), "is_control": name == config.arms[0].name, **exposure,
                     "planned_roas_mde": planned_roas_mde.get(name, float("nan")),
                     "is_treatment_measured": is_measured, "treatment_check": check})
    return pl.DataFrame(rows).with_columns(pl.col("is_treatment_measured").cast(pl.Boolean))


@dataclass(frozen=True)
class MarketRun:
    """One market to simulate: an arm's (or the A/A replay's) blending, users and simulation config."""

    blend: BlendConfig
    user_ids: np.ndarray
    simulation: SimulationConfig


def simulate_market(run: MarketRun, world: World, stack: Stack, tables: TrafficTables,
                    progress: bool) -> SimulationResult:
    """`simulate` one MarketRun: the unit that `map_tasks` runs in this process or as a Ray task (each is
    deterministic given its config and seed, so the engine changes no number)."""
    return simulate(world, stack, run.blend, run.user_ids, run.simulation, progress=progress, tables=tables)


def aa_replay_run(config: ExperimentConfig, user_ids: np.ndarray) -> MarketRun:
    """The paired A/A's replay of the control arm on `user_ids`: the same config, another simulation seed."""
    return MarketRun(config.arms[0].blend, user_ids,
                     replace(config.simulation, seed=config.simulation.seed + AA_REPLAY_SEED_OFFSET))


def run_ab(config: ExperimentConfig, world: World, stack: Stack, progress: bool = False, engine: str = "local",
           aa_replay: bool = False) -> ExperimentResult:
    """Simulate every arm and compare each treatment arm with the control (the first arm); the planned
    MDE on RoAS is known (and printed with `progress`) after the control arm. engine "ray" simulates the
    arms (and, with `aa_replay` in the paired design, the A/A's replay: `ExperimentResult.replay`) as Ray
    tasks, "local" one after the other: the same results (synthetic_data.ray_cluster.map_tasks)."""
    user_ids = np.sort(world.users["user_id"].to_numpy())
    tables = traffic_tables(world)
    covariates = pre_period_covariates(world, config.pre_period_days)
    n_arms = len(config.arms)
    assignment = assign_arms(user_ids, n_arms, config.salt)
    users_of = {arm.name: user_ids if config.design == "paired" else user_ids[assignment == index]
                for index, arm in enumerate(config.arms)}
    simulation = (config.simulation if config.design == "paired"
                  else replace(config.simulation, budget_share=config.simulation.budget_share / n_arms))
    for arm in config.arms:
        if users_of[arm.name].size == 0:
            raise ValueError(f"arm '{arm.name}' got no users; the world has {user_ids.size} users for {n_arms} arms")
        if progress:
            print(f"arm {arm.name}: {users_of[arm.name].size} users, quotas {arm.blend.quotas}")
    runs = [MarketRun(arm.blend, users_of[arm.name], simulation) for arm in config.arms]
    is_replayed = aa_replay and config.design == "paired"
    if is_replayed:
        runs.append(aa_replay_run(config, users_of[config.arms[0].name]))
    simulated = map_tasks(simulate_market, runs, (world, stack, tables, progress and engine == "local"),
                          engine=engine, progress=progress and engine == "ray", desc="markets")
    results: dict[str, SimulationResult] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}  # per arm, its _user_columns
    for index, (arm, result) in enumerate(zip(config.arms, simulated)):
        results[arm.name] = result
        columns[arm.name] = _user_columns(result, covariates)
        if index == 0:
            planned = planned_mde(columns[arm.name],
                                  {other.name: users_of[other.name].size for other in config.arms[1:]}, config)
            if progress:
                for name, mde in planned.items():
                    print(f"planned MDE on RoAS ({POWER:.0%} power, alpha {config.alpha}) for arm {name}: {mde:+.1%} "
                          f"({users_of[arm.name].size} control and {users_of[name].size} treatment users over "
                          f"{config.simulation.days} simulated day(s))")
    replay = next(simulated) if is_replayed else None
    tested = compare_arms(config, results, columns)
    served = served_comparisons(config, results, columns, stack.served_users)
    achieved = dict(tested.filter(pl.col("metric") == PRIMARY_METRIC).select("arm", "mde").rows())
    funnel_of = {name: result.ledger.table() for name, result in results.items()}
    arms = arms_table(config, results, funnel_of, planned, achieved)
    flags = arms.select("arm", "is_treatment_measured")

    def flagged(table: pl.DataFrame) -> pl.DataFrame:  # each arm's exposure flag, then Holm within the table
        return adjust_p_values(table.join(flags, on="arm", how="left", maintain_order="left"), config.alpha)

    funnels = pl.concat([funnel.with_columns(pl.lit(name).alias("arm")) for name, funnel in funnel_of.items()])
    return ExperimentResult(comparisons=flagged(tested), served=flagged(served) if served.height else served,
                            arms=arms, funnels=funnels,
                            srm=sample_ratio_check(config, results), results=results, replay=replay)


def sample_ratio_check(config: ExperimentConfig, results: dict[str, SimulationResult]) -> SampleRatioCheck:
    """Sample-ratio mismatch of the users analysed per arm: a chi-square test against the hash's equal
    shares (split design); in the paired design every arm replays all users, so the counts must be equal."""
    users = [result.user_metrics.height for result in results.values()]
    if config.design == "paired":
        return SampleRatioCheck("paired", tuple(users), (1.0,) * len(users), float("nan"), len(set(users)) > 1)
    return sample_ratio_mismatch(users, [1.0] * len(users))


def user_table(result: SimulationResult, covariates: pl.DataFrame) -> pl.DataFrame:
    """Per-user metrics of one arm with their pre-period covariates (0 for a user without pre-period
    activity), in the arm's user order: what `compare` reads, column by column."""
    return result.user_metrics.join(covariates, on="user_id", how="left", maintain_order="left").fill_null(0.0)


def table_columns(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """A user_table as {column: array}, what `compare` reads."""
    return {name: frame[name].to_numpy() for name in frame.columns}


def _user_columns(result: SimulationResult, covariates: pl.DataFrame) -> dict[str, np.ndarray]:
    """user_table of an arm as {column: array}."""
    return table_columns(user_table(result, covariates))


def compare_arms(config: ExperimentConfig, results: dict[str, SimulationResult],
                 columns: dict[str, dict[str, np.ndarray]], diversity: bool = True) -> pl.DataFrame:
    """One row per (treatment arm, metric): control and treatment values, relative change, CI, p-value
    and achieved MDE (`mde`, at POWER), from each arm's _user_columns (`columns`), the advertiser-diversity
    rows too with `diversity`; run_ab adds the arm's exposure flag and adjust_p_values."""
    names = list(results)
    control = columns[names[0]]
    rng = np.random.default_rng([config.simulation.seed, config.salt])
    rows = []
    for name in names[1:]:
        treatment = columns[name]
        comparisons = [(compare(control, treatment, metric, paired=config.design == "paired", method=config.method,
                                cuped=config.cuped, alpha=config.alpha, bootstrap_samples=config.bootstrap_samples,
                                rng=rng), config.method) for metric in METRICS]
        if diversity:
            comparisons += [(comparison, "bootstrap") for comparison in compare_diversity(
                results[names[0]], results[name], paired=config.design == "paired", alpha=config.alpha,
                samples=config.bootstrap_samples, rng=rng)]
        rows += [{"arm": name, "control_arm": names[0], **comparison.__dict__, "method": method,
                  "mde": achieved_mde(comparison.ci_low, comparison.ci_high, config.alpha)}
                 for comparison, method in comparisons]
    return pl.DataFrame(rows)


def served_comparisons(config: ExperimentConfig, results: dict[str, SimulationResult],
                       columns: dict[str, dict[str, np.ndarray]], served_users: np.ndarray | None) -> pl.DataFrame:
    """compare_arms on the served slice: each arm's users whose serving lists the market started with (a
    pre-treatment set, so both arms' slices are comparable; in the paired design the same users). The ratio
    metrics only: the diversity bootstrap is the whole market's. Empty without served users."""
    if served_users is None or not np.size(served_users):
        return pl.DataFrame()
    masks = {name: np.isin(arm["user_id"], served_users) for name, arm in columns.items()}
    sliced = {name: {column: values[masks[name]] for column, values in arm.items()} for name, arm in columns.items()}
    return compare_arms(config, results, sliced, diversity=False)


def adjust_p_values(comparisons: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """Add is_primary, p_value_adjusted and is_significant to a comparisons table.

    Holm's adjustment runs over two kinds of family: the primary metric across treatment arms (one
    arm: unchanged), and each arm's secondary metrics. Significant = adjusted p < alpha on a test
    that is not underpowered (an underpowered test over-rejects, so it is never called significant)
    in an arm not flagged as not measuring its treatment (is_treatment_measured false; null = not checked).
    """
    is_primary = (comparisons["metric"] == PRIMARY_METRIC).to_numpy()
    family = np.where(is_primary, "", "secondary: " + comparisons["arm"].to_numpy().astype(str))
    p_values = comparisons["p_value"].to_numpy().astype(np.float64)
    adjusted = np.full(p_values.size, np.nan)
    for name in np.unique(family):
        members = family == name
        adjusted[members] = holm_adjust(p_values[members])
    is_measured = comparisons["is_treatment_measured"].fill_null(True).to_numpy()
    is_significant = (adjusted < alpha) & ~comparisons["is_underpowered"].to_numpy() & is_measured  # NaN < alpha: False
    return comparisons.with_columns(pl.Series("is_primary", is_primary), pl.Series("p_value_adjusted", adjusted),
                                    pl.Series("is_significant", is_significant))


def _user_advertiser_counts(result: SimulationResult, advertiser_ids: np.ndarray) -> sparse.csr_matrix:
    """Impressions per (user, advertiser) of one arm, users in `user_metrics` order."""
    counts = result.impressions.group_by("user_id", "advertiser_id").len() if result.impressions.height else None
    user_ids = result.user_metrics["user_id"].to_numpy()
    if counts is None:
        return sparse.csr_matrix((user_ids.size, advertiser_ids.size))
    rows = np.searchsorted(user_ids, counts["user_id"].to_numpy())
    columns = np.searchsorted(advertiser_ids, counts["advertiser_id"].to_numpy())
    return sparse.csr_matrix((counts["len"].to_numpy().astype(np.float64), (rows, columns)),
                             shape=(user_ids.size, advertiser_ids.size))


def compare_diversity(control: SimulationResult, treatment: SimulationResult, *, paired: bool, alpha: float,
                      samples: int, rng: np.random.Generator, chunk: int = 100) -> list[Comparison]:
    """Advertiser diversity of impressions (unique advertisers, entropy, Gini): relative change with a
    bootstrap over users (Poisson weights; shared between arms when paired). A resample whose control
    measure is zero keeps its infinite or undefined change, so the interval can be unbounded."""
    advertiser_ids = control.ledger.advertiser_ids
    matrices = [_user_advertiser_counts(arm, advertiser_ids) for arm in (control, treatment)]
    names = ("unique_advertisers", "advertiser_entropy", "advertiser_gini")

    point = diversity_measures(np.vstack([np.asarray(m.sum(axis=0)).ravel() for m in matrices]))
    arm_users = min(m.shape[0] for m in matrices)
    nonzero_users = int(min(np.count_nonzero(m.getnnz(axis=1)) for m in matrices))  # users with impressions
    power = {"arm_users": arm_users, "nonzero_users": nonzero_users,
             "is_underpowered": is_underpowered(arm_users, nonzero_users)}
    users_c, users_t = (m.shape[0] for m in matrices)
    ratios = []
    for start in range(0, samples, chunk):
        # one draw per chunk, row by row in the order control then treatment, as one resample at a time would
        weights = rng.poisson(1.0, (min(chunk, samples - start), users_c if paired else users_c + users_t))
        weights_c, weights_t = (weights, weights) if paired else (weights[:, :users_c], weights[:, users_c:])
        replicate_c = diversity_measures((matrices[0].T @ weights_c.T.astype(np.float64)).T)
        replicate_t = diversity_measures((matrices[1].T @ weights_t.T.astype(np.float64)).T)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(replicate_t / replicate_c - 1.0)
    ratios = np.concatenate(ratios)
    comparisons = []
    for index, name in enumerate(names):
        if point[0][index] == 0:
            comparisons.append(Comparison(name, float(point[0][index]), float(point[1][index]), *(float("nan"),) * 4,
                                          **power))
            continue
        interval = bootstrap_interval(ratios[:, index], alpha)
        comparisons.append(Comparison(name, float(point[0][index]), float(point[1][index]),
                                      float(point[1][index] / point[0][index] - 1), interval.ci_low, interval.ci_high,
                                      interval.p_value, interval.undefined_resamples, **power))
    return comparisons


def sweep_arms(base: ArmConfig, source: str, quotas: list[int]) -> tuple[ArmConfig, ...]:
    """One arm per L0 quota of `source`, the rest of `base`'s blending unchanged (first = control)."""
    if source not in base.blend.quotas:
        raise ValueError(f"source {source!r} is not in the arm's blend.quotas {sorted(base.blend.quotas)}; "
                         f"pass --source with one of them")
    if len(set(quotas)) != len(quotas) or len(quotas) < 2:
        raise ValueError(f"give at least two distinct quotas, got {quotas}")
    return tuple(ArmConfig(name=f"{source}_quota_{quota}",
                           blend=replace(base.blend, quotas={**base.blend.quotas, source: quota}))
                 for quota in quotas)


def run_sweep(config: ExperimentConfig, world: World, stack: Stack, source: str, quotas: list[int],
              progress: bool = False, engine: str = "local") -> tuple[pl.DataFrame, ExperimentResult]:
    """Run one arm per quota of `source` (the first quota is the control) in `config.sweep_design` (paired
    by default: every quota replays the same users with common random numbers) and tabulate the curves:
    one row per quota with arms_table's columns, the RoAS change (`roas_*`) and concentration_tests'.
    engine "ray" simulates the quotas as Ray tasks (run_ab)."""
    arms = sweep_arms(config.arms[0], source, quotas)
    result = run_ab(replace(config, arms=arms, design=config.sweep_design), world, stack, progress=progress,
                    engine=engine)
    columns = ("ci_low", "ci_high", "mde", "p_value", "p_value_adjusted", "arm_users", "nonzero_users",
               "is_underpowered", "is_significant")
    roas = result.comparisons.filter(pl.col("metric") == PRIMARY_METRIC).select(
        "arm", pl.col("relative_change").alias("roas_change"), *[pl.col(c).alias(f"roas_{c}") for c in columns])
    table = (result.arms.with_columns(pl.Series("quota", quotas))
             .join(roas, on="arm", how="left").join(concentration_tests(result.comparisons, config.alpha), on="arm",
                                                     how="left").sort("quota"))
    return table, result


def concentration_tests(comparisons: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """Whether each treatment arm over-concentrates advertisers (paper 4.5.1): the advertiser entropy of
    its impressions significantly down, or their Gini significantly up, against the control.

    The entropy and Gini tests of every arm form one Holm family (a sweep asks "does any quota
    concentrate?"); an underpowered test or an arm not measuring its treatment is never significant.
    One row per treatment arm: `{metric}_{change,ci_low,ci_high,p_value,p_value_adjusted}` for both
    metrics (changes relative, Holm-adjusted p over the family) and `is_concentrated`.
    """
    tests = comparisons.filter(pl.col("metric").is_in(list(CONCENTRATION_DIRECTION)))
    adjusted = holm_adjust(tests["p_value"].to_numpy().astype(np.float64))
    direction = tests["metric"].replace_strict(CONCENTRATION_DIRECTION, return_dtype=pl.Float64).to_numpy()
    is_valid = (~tests["is_underpowered"] & tests["is_treatment_measured"].fill_null(True)).to_numpy()
    is_concentrating = (adjusted < alpha) & (tests["relative_change"].to_numpy() * direction > 0) & is_valid
    tests = tests.with_columns(pl.Series("p_value_adjusted", adjusted),  # NaN < alpha above: False
                               pl.Series("is_concentrating", is_concentrating))
    wide = tests.pivot(on="metric", index="arm", values=["relative_change", "ci_low", "ci_high", "p_value",
                                                         "p_value_adjusted"])
    renamed = {f"{value}_{metric}": f"{metric}_{'change' if value == 'relative_change' else value}"
               for metric in CONCENTRATION_DIRECTION
               for value in ("relative_change", "ci_low", "ci_high", "p_value", "p_value_adjusted")}
    return wide.rename(renamed).join(tests.group_by("arm").agg(pl.col("is_concentrating").any().alias(
        "is_concentrated")), on="arm", maintain_order="left")


def concentration_quota(table: pl.DataFrame) -> int | None:
    """The smallest quota of a run_sweep table whose advertiser diversity dropped significantly against the
    first quota (`is_concentrated`), or None when no quota's did."""
    concentrated = table.filter(pl.col("is_concentrated").fill_null(False)).sort("quota")
    return int(concentrated["quota"][0]) if concentrated.height else None


def aa_check(config: ExperimentConfig, world: World, stack: Stack, control: SimulationResult,
             covariates: pl.DataFrame, n_splits: int, progress: bool = False,
             replay: SimulationResult | None = None) -> pl.DataFrame:
    """A/A calibration of the design's own test at the A/B's size: `n_splits` re-randomisations of data
    with no treatment, every metric tested as the A/B tests it; about `alpha` of the p-values should fall
    below `alpha` (Kohavi, Tang & Xu 2020, ch. 19). One row per (salt, metric): relative_change, p_value.

    Split design: the control arm's users re-split into two halves by a salted hash. Paired design: the
    control arm replayed on the same users with another simulation seed (the same config, so no effect),
    and for each salt a fair coin per user decides which replay is the "control" (under no effect a
    user's two outcomes are exchangeable); each flip is tested by the paired test. The replay costs one
    more arm's simulation: `replay` (run_ab's with aa_replay), or simulated here when None.
    Raises ValueError for n_splits < 1.
    """
    if n_splits < 1:
        raise ValueError(f"the A/A needs at least one re-randomisation, got n_splits = {n_splits}")
    paired = config.design == "paired"
    columns = _user_columns(control, covariates)
    if paired:
        if replay is None:
            replay = simulate_market(aa_replay_run(config, control.user_metrics["user_id"].to_numpy()), world, stack,
                                     traffic_tables(world), progress)
        other = _user_columns(replay, covariates)
        if not np.array_equal(other["user_id"], columns["user_id"]):
            raise ValueError("the A/A replay did not report the control arm's users in the same order")
    rng = np.random.default_rng([config.simulation.seed, n_splits])
    rows = []
    for salt in range(1, n_splits + 1):
        coin = assign_arms(columns["user_id"], 2, config.salt + 1000 * salt).astype(bool)
        if paired:
            arms = [{name: np.where(coin, other[name], column) for name, column in columns.items()},
                    {name: np.where(coin, column, other[name]) for name, column in columns.items()}]
        else:
            arms = [{name: column[coin == half] for name, column in columns.items()} for half in (False, True)]
        for metric in METRICS:
            comparison = compare(arms[0], arms[1], metric, paired=paired, method=config.method, cuped=config.cuped,
                                 alpha=config.alpha, bootstrap_samples=config.bootstrap_samples, rng=rng)
            rows.append({"salt": salt, "metric": metric.name, "relative_change": comparison.relative_change,
                         "p_value": comparison.p_value})
    return pl.DataFrame(rows)


def aa_false_positive_rates(aa: pl.DataFrame, alpha: float) -> dict[str, dict]:
    """Share of an aa_check table's p-values below `alpha`, over all metrics ("all") and per metric, each
    with its tests, untestable (NaN) count and Wilson 95% interval (rate and interval None without a test)."""
    rates = {}
    for name, rows in [("all", aa), *((metric.name, aa.filter(pl.col("metric") == metric.name)) for metric in METRICS)]:
        tested = rows["p_value"].drop_nans().drop_nulls()
        rejections = int((tested < alpha).sum())
        low, high = proportion_interval(rejections, tested.len()) if tested.len() else (None, None)
        rates[name] = {"rate": rejections / tested.len() if tested.len() else None, "low": low, "high": high,
                       "tests": tested.len(), "untestable": rows.height - tested.len()}
    return rates
