"""Dose-response of the stack to predictor quality (issue #15): how good must an advertiser predictor be
before the LLM generator (the A/B, paper Table 6) and the LLM ranking features (Table 5) pay off?

For each target Recall@20 q on a grid, the oracle (simulator/oracle.py, a positive control that reads
`*_truth`) writes held-out and serving lists calibrated to q; random lists of the same length (the
negative control, as Table 5's random-list row draws them) and any real method's lists given by path
are measured the same way. Each source gets one row: its Recall@20 on the V1 eval labels it lists
(Wilson interval), Table 5's with-versus-without change of the DCN's loss, AUC and PR-AUC per task on
its held-out lists (ranking.lift, paired bootstrap intervals), and the A/B's RoAS, conversion, spend and
advertiser-diversity changes with its serving lists (simulator.experiment). Every source is a sub-stage
of `sensitivity/`, so a finished q is not recomputed; the table, report and plots are rebuilt from the
rows. A q the oracle cannot reach is measured at the nearest end of its range (`clamp`, the default) or
recorded as skipped with the measured limit.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from llm_predictor.metrics import recall_with_intervals
from llm_predictor.prompts import N_ADVERTISERS, N_INTERESTS
from ranking.config import RankingConfig
from ranking.features import split_by_time
from ranking.lift import run_lift, summarize_lift
from ranking.llm_features import RANDOM_SOURCE, random_interest_lists, random_prediction_lists
from ranking.pipeline import fit_builder, require_both_classes
from simulator.config import ExperimentConfig
from simulator.engine import Stack
from simulator.experiment import METRICS, pre_period_covariates, run_ab, table_columns, user_table
from simulator.oracle import (ALL_USERS, EVERYONE, EVERYONE_HELP, KEYS, RECALL, CalibrationError, OracleConfig,
                              oracle_stage, user_keys)
from simulator.power import achieved_mde_percent
from simulator.report import METRIC_LABELS, save_figure
from simulator.stack import BASELINE_SOURCES, TRAINED_SOURCES, baseline_stack, largest_quotas, trained_stack
from simulator.stats import compare
from synthetic_data import schema
from synthetic_data.config import WorldConfig
from synthetic_data.config_io import ConfigError, from_dict, require, to_dict
from synthetic_data.ray_cluster import map_tasks
from synthetic_data.run_folder import RunFolder, file_digest

STAGE = "sensitivity"
PARTS = ("lift", "ab")
STACK_SOURCES = {"baseline": BASELINE_SOURCES, "trained": TRAINED_SOURCES}
IMPRESSIONS = Path("impressions") / "impressions.parquet"  # `adsim rank impressions`
LIFT_METRICS = {"log_loss": "Δ Loss", "auc": "Δ AUC", "pr_auc": "Δ PR-AUC"}  # ranking.lift.METRICS
LIFT_MODEL, LIFT_COMPARISON = "dcn", "with_llm vs without_llm"  # Table 5's row: the market's ranker
AB_METRICS = ("roas", "revenue_per_user", "conversions_per_user", "spend_per_user", "unique_advertisers",
              "advertiser_entropy", "advertiser_gini")
STRING_COLUMNS = ("source", "kind", "status", "reason", "lift_reason", "ab_reason", "ab_treatment_check",
                  "ab_info_reason")
METHOD_NAME = re.compile(r"\w+")  # a folder name and a config key
# The A/B's treatment arm per user (experiment.user_table), kept so that every source's arm can be compared
# with the random control's on the same users: the change the lists' information makes (information_columns)
INFORMATION_USERS = "ab_users.parquet"
INFORMATION_METRICS = ("roas", "revenue_per_user", "conversions_per_user", "spend_per_user")


@dataclass(frozen=True)
class MethodLists:
    """A real method's lists (PREDICTIONS parquet paths): held-out lists give its Recall@20 and its lift,
    serving lists its A/B (no A/B row without them); interests are the held-out lists' PREDICTED_INTERESTS."""

    heldout: str
    serving: str | None = None
    interests: str | None = None

    def __post_init__(self) -> None:
        require(bool(self.heldout), "methods.<name>.heldout", "give the path of the method's held-out PREDICTIONS "
                "parquet (eval-split users at the label anchors, as `adsim llm predict --users heldout` writes)")

    def paths(self) -> dict[str, str]:
        """The given paths by role."""
        return {role: path for role, path in (("heldout", self.heldout), ("serving", self.serving),
                                              ("interests", self.interests)) if path is not None}


def method_overrides(spec: str) -> list[str]:
    """`--method NAME=HELDOUT[,SERVING]` as `methods.NAME.*` config overrides; the held-out lists' interests are
    the `interests.parquet` beside HELDOUT when there is one (`adsim llm predict` and `adsim oracle` write it
    there). Raises ConfigError for a spec of another shape."""
    name, _, paths = spec.partition("=")
    parts = [path.strip() for path in paths.split(",")] if paths else []
    if not name.strip() or not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigError(f"config field 'methods': --method {spec!r} must read NAME=HELDOUT or NAME=HELDOUT,SERVING "
                          "(PREDICTIONS parquet paths)")
    roles = {"heldout": parts[0], **({"serving": parts[1]} if len(parts) == 2 else {})}
    interests = Path(parts[0]).parent / "interests.parquet"
    if interests.exists():
        roles["interests"] = str(interests)
    return [f"methods.{name.strip()}.{role}={json.dumps(path)}" for role, path in roles.items()]


def _default_ranking() -> RankingConfig:
    """Table 5 on the users the lists cover: the DCN (the market's ranker) beside logistic regression, which has
    no training seed and fits in seconds (LightGBM would double the cost)."""
    return RankingConfig(reference_models=("logistic",), users="predicted")


def _default_experiment() -> ExperimentConfig:
    """The paired design: both arms replay every user with common random numbers, so the arms differ only by
    the source's lists (issue #15: same users in every arm), at twice a split A/B's simulation cost."""
    return ExperimentConfig(design="paired")


@dataclass(frozen=True)
class SensitivityConfig:
    """`adsim sensitivity`: the q grid, which parts run, the user sets and the sources besides the oracle."""

    q_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # target Recall@20 of the oracle on the V1 eval labels
    parts: tuple[str, ...] = PARTS  # "lift" (Table 5) and/or "ab" (Table 6)
    llm_preset: str = "small"  # whose user sets (serving, heldout: sizes and sample seed) the lists cover
    stack: str = "baseline"  # the A/B's market: baseline (model-free) or trained (the run's models)
    objective: str = "clicks"  # the trained stack's two-tower objective
    # The user sets (serving: the A/B; heldout: Table 5) whose every user the oracle's and the random control's
    # lists cover, so that q is the only thing that moves; a set not named gets the LLM preset's sample
    # (Table 5 on every held-out user costs a DCN fit on ~10% of the impressions per source and seed).
    all_users: tuple[str, ...] = ("serving", "heldout")
    # Whose impressions the controls' Table 5 runs on: "heldout" (the eval-split users, where an LLM's lists
    # cannot leak labels: the controls then share the methods' rows) or "everyone" (every user at every label
    # anchor: about 10x the test positives on the demo world, so the positive control can be detected; a DCN
    # fit then takes about a minute on 2 cores). A method's Table 5 always runs on its own held-out lists.
    lift_users: str = "heldout"
    # A q the oracle cannot reach is measured at the nearest end (w = 0 or 1) instead of being skipped.
    clamp: bool = True
    tolerance: float = 0.02  # the oracle's accepted |Recall@20 - q|
    max_steps: int = 20  # the oracle's bisection steps
    oracle_seed: int = 0  # the oracle's draws
    random_seed: int = 0  # the random control's draws
    methods: dict[str, MethodLists] = field(default_factory=dict)  # real methods by name
    ranking: RankingConfig = field(default_factory=_default_ranking)
    experiment: ExperimentConfig = field(default_factory=_default_experiment)

    def __post_init__(self) -> None:
        require(len(self.q_grid) >= 1 and all(0 <= q <= 1 for q in self.q_grid), "q_grid",
                f"give one or more target Recall@20 values in [0, 1], got {list(self.q_grid)}")
        require(len(set(self.q_grid)) == len(self.q_grid), "q_grid", f"must not repeat a q, got {list(self.q_grid)}")
        require(len(self.parts) >= 1 and set(self.parts) <= set(PARTS) and len(set(self.parts)) == len(self.parts),
                "parts", f"choose one or both of {list(PARTS)}, got {list(self.parts)}")
        require(self.stack in STACK_SOURCES, "stack", f"must be one of {list(STACK_SOURCES)}, got {self.stack!r}")
        self.oracle(self.q_grid[0])  # OracleConfig's own checks of tolerance and max_steps
        require(set(self.all_users) <= {"serving", "heldout"}, "all_users",
                f"name user sets among serving and heldout, got {list(self.all_users)}")
        require(self.lift_users in ("heldout", EVERYONE), "lift_users",
                f"must be 'heldout' or {EVERYONE!r} ({EVERYONE_HELP}), got {self.lift_users!r}")
        for name in self.methods:
            require(bool(METHOD_NAME.fullmatch(name)) and name != RANDOM_SOURCE and not name.startswith("oracle_q"),
                    "methods", f"name {name!r}: use letters, digits and '_', and not {RANDOM_SOURCE!r} "
                    "or oracle_q*")
        arms = self.experiment.arms
        require(len(arms) == 2, "experiment.arms", f"the dose-response compares one treatment arm with the control: "
                f"give exactly two arms, got {len(arms)}")
        sources = set(STACK_SOURCES[self.stack])
        for arm in arms:
            require(set(arm.blend.quotas) <= sources, "experiment.arms",
                    f"arm {arm.name!r} has quotas for {sorted(arm.blend.quotas)}, but the {self.stack} stack's "
                    f"sources are {sorted(sources)}: give arms in its source names (the CLI's --stack does)")
        control = arms[0].blend.quotas
        require(any(quota > control.get(source, 0) for source, quota in arms[1].blend.quotas.items()),
                "experiment.arms", f"the treatment arm {arms[1].name!r} raises no source's quota over the control's: "
                "it would serve no list")

    def oracle(self, q: float, users: str = "heldout") -> OracleConfig:
        """The oracle's config at target q for one user set (serving, heldout or everyone)."""
        return OracleConfig(q=q, tolerance=self.tolerance, max_steps=self.max_steps, seed=self.oracle_seed,
                            clamp=self.clamp, all_users=users in self.all_users)


@dataclass(frozen=True)
class SourceLists:
    """One source's lists: held-out (its Recall@20 and the lift) with their interests, serving (the A/B),
    and the row's columns known before any measurement (Recall@20, the oracle's weight and range)."""

    heldout: pl.DataFrame
    interests: pl.DataFrame | None
    serving: pl.DataFrame | None
    columns: dict


class StageInputs:
    """What the sources' measurements read from the run folder, loaded on first use, so a re-run whose
    sources are all complete loads nothing."""

    def __init__(self, root: Path, config: SensitivityConfig):
        self.root, self.config = Path(root), config
        self._without_llm: dict[tuple, pl.DataFrame] = {}

    def without_llm_scores(self, splits: dict[str, pl.DataFrame], lists: SourceLists, tasks: tuple[str, ...],
                           progress: bool) -> pl.DataFrame:
        """Table 5's without-LLM arm (run_lift scores) on these splits: it reads no list, so it is trained once
        for every source whose lists cover the same rows (the oracle at each q and the random control)."""
        key = (tuple(splits["test"]["user_id"].unique().sort().to_list()), splits["train"].height, tasks)
        if key not in self._without_llm:
            _, self._without_llm[key] = run_lift(self.builder, splits, lists.heldout, lists.interests,
                                                 replace(self.config.ranking, tasks=tasks), progress=progress,
                                                 arms=("without_llm",))
        return self._without_llm[key]

    @cached_property
    def world(self) -> schema.World:
        return schema.load_world(self.root / "world")

    @cached_property
    def world_config(self) -> WorldConfig:
        return from_dict(WorldConfig, RunFolder(self.root).stage_record("world")["config"])

    def llm_config(self, users: str = "heldout"):
        """The LLM preset's config, with every user of `users` when the config's `all_users` names it."""
        from llm_predictor.config import resolve_config

        return resolve_config(self.config.llm_preset, None, ALL_USERS if users in self.config.all_users else None)

    @cached_property
    def labels(self) -> pl.DataFrame:
        """The V1 eval labels: the oracle's calibration set and every source's Recall@20."""
        from llm_predictor.evaluate import evaluation_labels

        return evaluation_labels(self.world, self.llm_config().eval.evaluation)["v1"]

    def keys(self, users: str) -> pl.DataFrame:
        """The (user_id, anchor_date) rows of a user set (serving, heldout or everyone; oracle.user_keys)."""
        return user_keys(self.world, self.llm_config(users), users)

    @cached_property
    def covariates(self) -> pl.DataFrame:
        """The A/B's CUPED covariates (experiment.pre_period_covariates), the same for every source."""
        return pre_period_covariates(self.world, self.config.experiment.pre_period_days)

    @cached_property
    def impressions(self) -> pl.DataFrame:
        return schema.validate(pl.read_parquet(self.root / IMPRESSIONS), schema.IMPRESSIONS, str(IMPRESSIONS))

    @cached_property
    def builder(self):
        return fit_builder(self.world, self.config.ranking)

    def load_market_inputs(self) -> None:
        """Load what the A/B markets read (the world, its config, the covariates), so that a copy of these
        inputs sent to another process carries them instead of reading the run folder per market."""
        for name in ("world", "world_config", "covariates"):
            getattr(self, name)

    def market(self, serving: pl.DataFrame) -> Stack:
        """The A/B's market serving `serving` lists (no nightly job: the source's lists are what serves)."""
        if self.config.stack == "baseline":
            return baseline_stack(self.world, self.world_config, serving)
        return trained_stack(self.root, self.world, self.world_config, serving, self.config.objective,
                             largest_quotas(self.config.experiment.arms))


def recall_columns(predictions: pl.DataFrame, labels: pl.DataFrame) -> dict:
    """Recall@20 of `predictions` on the labels whose (user_id, anchor_date) they list, with its Wilson
    interval, the labels counted and their share of `labels` (llm_predictor.metrics, as the LLM's eval)."""
    covered = labels.join(predictions.select(KEYS).unique(), on=KEYS, how="semi")
    recall = recall_with_intervals(predictions, covered)
    return {"recall_at_20": recall[RECALL], "recall_at_20_low": recall[f"{RECALL}_low"],
            "recall_at_20_high": recall[f"{RECALL}_high"], "recall_labels": covered.height,
            "recall_coverage": covered.height / labels.height if labels.height else float("nan")}


def oracle_lists(inputs: StageInputs, q: float) -> SourceLists:
    """The oracle's lists at q (the `oracle_q<q>_{heldout,serving}` stages, reused when complete); its
    Recall@20 is the calibration's on every V1 label. Raises CalibrationError / UnreachableRecall."""
    config = inputs.config
    oracle, serving_oracle = config.oracle(q, config.lift_users), config.oracle(q, "serving")
    heldout, _ = oracle_stage(inputs.root, oracle, config.lift_users, config.llm_preset)
    serving = (oracle_stage(inputs.root, serving_oracle, "serving", config.llm_preset)[0] if "ab" in config.parts
               else None)
    folder = inputs.root / oracle.stage(config.lift_users)
    columns = {"weight": heldout["weight"], "recall_at_20": heldout[RECALL],
               "recall_at_20_low": heldout[f"{RECALL}_low"], "recall_at_20_high": heldout[f"{RECALL}_high"],
               "recall_labels": inputs.labels.height, "recall_coverage": 1.0,
               "floor_recall_at_20": heldout[f"floor_{RECALL}"], "ceiling_recall_at_20": heldout[f"ceiling_{RECALL}"],
               "serving_weight": None if serving is None else serving["weight"]}
    if abs(heldout[RECALL] - q) > oracle.tolerance:  # clamped: q lies outside the reachable range
        columns["reason"] = (f"q = {q:g} is outside the reachable Recall@20 range [{heldout[f'floor_{RECALL}']:.3f}, "
                             f"{heldout[f'ceiling_{RECALL}']:.3f}]: measured at w = {heldout['weight']:g}")
    serving_lists = (None if serving is None else
                     pl.read_parquet(inputs.root / serving_oracle.stage("serving") / "predictions.parquet"))
    return SourceLists(pl.read_parquet(folder / "predictions.parquet"), pl.read_parquet(folder / "interests.parquet"),
                       serving_lists, columns)


def random_lists(inputs: StageInputs) -> SourceLists:
    """The negative control: N_ADVERTISERS distinct uniform advertisers of the world (as Table 5's random
    row draws them) and N_INTERESTS uniform category names per (user, anchor) of the held-out, serving
    and V1 label keys, drawn once (the same lists whichever parts run), so its Recall@20 is measured on
    every V1 label."""
    serving_keys, heldout_keys = inputs.keys("serving"), inputs.keys(inputs.config.lift_users)
    keys = pl.concat([heldout_keys, serving_keys, inputs.labels.select(KEYS)]).unique().sort(KEYS)
    ranks = pl.DataFrame({"rank": np.arange(1, N_ADVERTISERS + 1)}, schema={"rank": pl.Int32})
    template = schema.conform(keys.join(ranks, how="cross").with_columns(
        advertiser_id=pl.lit(0, pl.Int32), advertiser_name=pl.lit(None, pl.String), source=pl.lit(RANDOM_SOURCE)),
        schema.PREDICTIONS, "random template")
    predictions = random_prediction_lists(template, inputs.world.advertisers["advertiser_id"].to_numpy(),
                                          inputs.config.random_seed)
    interest_template = schema.conform(
        keys.join(pl.DataFrame({"rank": np.arange(1, N_INTERESTS + 1)}), how="cross").with_columns(
            interest=pl.lit("")), schema.PREDICTED_INTERESTS, "random interest template")
    interests = random_interest_lists(interest_template, inputs.world.categories["name"].to_list(),
                                      inputs.config.random_seed)
    return SourceLists(predictions.join(heldout_keys, on=KEYS, how="semi"),
                       interests.join(heldout_keys, on=KEYS, how="semi"),
                       predictions.join(serving_keys, on=KEYS, how="semi"),
                       recall_columns(predictions, inputs.labels))


def method_lists(inputs: StageInputs, method: MethodLists) -> SourceLists:
    """A real method's lists read from its paths; its Recall@20 counts the V1 labels its held-out lists cover."""
    def read(path: str | None, table: dict, name: str) -> pl.DataFrame | None:
        return None if path is None else schema.validate(pl.read_parquet(path), table, f"{name} ({path})")

    heldout = read(method.heldout, schema.PREDICTIONS, "held-out predictions")
    return SourceLists(heldout, read(method.interests, schema.PREDICTED_INTERESTS, "interests"),
                       read(method.serving, schema.PREDICTIONS, "serving predictions"),
                       recall_columns(heldout, inputs.labels))


def measurable_tasks(splits: dict[str, pl.DataFrame], tasks: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The tasks whose labels vary in every split, and why each other task cannot be fit (require_both_classes)."""
    kept, reasons = [], []
    for task in tasks:
        try:
            require_both_classes(splits, (task,))
            kept.append(task)
        except ValueError as error:
            reasons.append(f"{task} not measured: {error}")
    return tuple(kept), reasons


def lift_columns(inputs: StageInputs, lists: SourceLists, progress: bool) -> tuple[dict, dict[str, pl.DataFrame]]:
    """Table 5 with the source's held-out lists: `lift_<task>_<metric>` = the DCN's relative change (%) with
    versus without the LLM features, `_low`/`_high` its 95% interval, `_p` its p-value; and {"lift.parquet": the
    summary}."""
    ranking = inputs.config.ranking
    logged = inputs.impressions
    if ranking.users == "predicted":
        logged = logged.join(lists.heldout.select("user_id").unique(), on="user_id", how="semi")
    if logged.is_empty():
        return {"lift_reason": "no logged impression is of a user the held-out lists cover"}, {}
    splits = split_by_time(logged, ranking.features)
    tasks, reasons = measurable_tasks(splits, ranking.tasks)
    if not tasks:
        return {"lift_reason": "; ".join(reasons)}, {}
    _, scores = run_lift(inputs.builder, splits, lists.heldout, lists.interests, replace(ranking, tasks=tasks),
                         progress=progress, arms=("with_llm",))
    scores = pl.concat([inputs.without_llm_scores(splits, lists, tasks, progress), scores])
    summary = summarize_lift(scores, ranking.bootstrap_replicates, ranking.bootstrap_seed)
    columns: dict = {"lift_reason": "; ".join(reasons) or None}
    for row in summary.filter((pl.col("model") == LIFT_MODEL) & (pl.col("comparison") == LIFT_COMPARISON)
                              ).iter_rows(named=True):
        name = f"lift_{row['task']}_{row['metric']}"
        columns |= {name: row["change_pct"], f"{name}_low": row["ci_low"], f"{name}_high": row["ci_high"],
                    f"{name}_p": row["p_value"], f"lift_{row['task']}_test_positives": row["test_positives"]}
    return columns, {"lift.parquet": summary}


def ab_columns(inputs: StageInputs, serving: pl.DataFrame, progress: bool) -> tuple[dict, dict[str, pl.DataFrame]]:
    """The A/B with the source's `serving` lists: `ab_<metric>` = the treatment arm's relative change (%) against
    the control, `_low`/`_high` its 95% interval, `_p` its p-value, the achieved MDE on RoAS and whether the
    arm measured its treatment (experiment.treatment_check); and its tables: the comparisons and the treatment
    arm's per-user metrics (INFORMATION_USERS, for information_columns)."""
    experiment = inputs.config.experiment
    result = run_ab(experiment, inputs.world, inputs.market(serving), progress=progress)
    treatment = experiment.arms[1].name
    compared = result.comparisons.filter(pl.col("arm") == treatment)
    columns: dict = {"ab_reason": None}
    for row in compared.filter(pl.col("metric").is_in(AB_METRICS)).iter_rows(named=True):
        name = f"ab_{row['metric']}"
        columns |= {name: row["relative_change"] * 100, f"{name}_low": row["ci_low"] * 100,
                    f"{name}_high": row["ci_high"] * 100, f"{name}_p": row["p_value"]}
        if row["metric"] == "roas":
            columns["ab_roas_mde"] = row["mde"] * 100
    arm = result.arms.filter(pl.col("arm") == treatment).row(0, named=True)
    columns |= {"ab_serving_users": serving["user_id"].n_unique(),
                "ab_is_treatment_measured": arm["is_treatment_measured"],
                "ab_treatment_impressions": arm["treatment_impressions"], "ab_treatment_check": arm["treatment_check"]}
    users = user_table(result.results[treatment], inputs.covariates)
    return columns, {"ab.parquet": result.comparisons, INFORMATION_USERS: users}


def information_columns(run: RunFolder, config: SensitivityConfig, table: pl.DataFrame) -> pl.DataFrame:
    """Add `ab_info_<metric>` (with `_low`, `_high`, `_p`) to the measured rows: the source's treatment arm
    against the random control's treatment arm, paired on the same users with common random numbers.

    Against the control arm (the generator off), an A/B measures the generator's presence too: a quota of
    random advertisers displaces other sources' candidates. Against the random control's arm, only what the
    lists know moves the metric, so the random control is 0 by construction and the oracle's curve says how
    much information is worth. A source whose serving lists cover another number of users than the random
    control's is not compared (`ab_info_reason`): coverage, not content, would move the metric. In the
    trained stack the ranker's LLM features read the source's lists in both of its arms, so `ab_<metric>` is
    the generator's effect given those features, while `ab_info_<metric>` is the lists' information through
    both uses (generator and ranker features). Rows without a kept arm (no A/B, a skipped q, measured before
    the arm was kept) get nulls.
    """
    folders = {source.name: run.root / source.stage for source in sources(config)}
    reference_path = folders[RANDOM_SOURCE] / INFORMATION_USERS
    if "ab" not in config.parts or not reference_path.exists() or "ab_serving_users" not in table.columns:
        return table
    reference = table_columns(pl.read_parquet(reference_path))
    experiment = config.experiment
    rng = np.random.default_rng([experiment.simulation.seed, experiment.salt, 1])
    metrics = [metric for metric in METRICS if metric.name in INFORMATION_METRICS]
    served = dict(table.filter(pl.col("status") == "measured").select("source", "ab_serving_users").rows())
    rows = []
    for name in served:
        path = folders[name] / INFORMATION_USERS
        if name == RANDOM_SOURCE or not path.exists():
            continue
        if served[name] != served[RANDOM_SOURCE]:  # the lists' coverage would move the metric, not their content
            rows.append({"source": name, "ab_info_reason": f"its serving lists cover {served[name]:,} users, the "
                         f"random control's {served[RANDOM_SOURCE]:,}"})
            continue
        users = table_columns(pl.read_parquet(path))
        if not np.array_equal(users["user_id"], reference["user_id"]):
            raise ValueError(f"{path}: the source's A/B arm replayed other users than the random control's; "
                             "re-run with --force so every source runs the same paired design")
        row: dict = {"source": name}
        for metric in metrics:
            comparison = compare(reference, users, metric, paired=True, method=experiment.method,
                                 cuped=experiment.cuped, alpha=experiment.alpha,
                                 bootstrap_samples=experiment.bootstrap_samples, rng=rng)
            column = f"ab_info_{metric.name}"
            row |= {column: comparison.relative_change * 100, f"{column}_low": comparison.ci_low * 100,
                    f"{column}_high": comparison.ci_high * 100, f"{column}_p": comparison.p_value}
        rows.append(row)
    return table.join(pl.DataFrame(rows), on="source", how="left") if rows else table


@dataclass(frozen=True)
class Source:
    """One row of the dose-response: its name, kind (oracle, random, method), q, what identifies its
    lists in its sub-stage's config, how to get them, and whether its sub-stage keeps them (the random
    control's exist nowhere else)."""

    name: str
    kind: str
    q: float | None
    identity: dict
    lists: Callable[[StageInputs], SourceLists]
    keeps_lists: bool = False

    @property
    def stage(self) -> str:
        return f"{STAGE}/{'method_' if self.kind == 'method' else ''}{self.name}"


def sources(config: SensitivityConfig) -> list[Source]:
    """The random control, one oracle source per q (ascending), then each method."""
    random = Source(RANDOM_SOURCE, "random", None, {"random_seed": config.random_seed}, random_lists,
                    keeps_lists=True)
    oracles = [Source(config.oracle(q).source, "oracle", q, {"oracle": to_dict(config.oracle(q)),
                                                               "serving": to_dict(config.oracle(q, "serving"))},
                      lambda inputs, q=q: oracle_lists(inputs, q)) for q in sorted(config.q_grid)]
    methods = [Source(name, "method", None, {"method": name, **{role: file_digest(path) for role, path
                                                                 in method.paths().items()}},
                      lambda inputs, method=method: method_lists(inputs, method))
               for name, method in config.methods.items()]
    return [random, *oracles, *methods]


def row_frame(row: dict) -> pl.DataFrame:
    """One table row; a column without a value gets the dtype the table gives it (string, bool or float)."""
    frame = pl.DataFrame([row])
    return frame.with_columns([pl.col(name).cast(pl.String if name in STRING_COLUMNS else
                                                 pl.Boolean if name.startswith("ab_is_") else pl.Float64)
                               for name, dtype in frame.schema.items() if dtype == pl.Null])


@dataclass(frozen=True)
class Measurement:
    """A source's row on its way through the stage: begun here (begin_measurement), its A/B measured where the
    engine runs it (measure_ab), recorded here (record_measurement). `serving`: the lists whose A/B is still to
    run; `reused`: the row of a sub-stage already complete with this config."""

    stage: str
    config: dict
    row: dict = field(default_factory=dict)
    tables: dict[str, pl.DataFrame | None] = field(default_factory=dict)
    seconds: float = 0.0
    serving: pl.DataFrame | None = None
    reused: pl.DataFrame | None = None


def begin_measurement(run: RunFolder, source: Source, shared: dict, inputs: StageInputs, progress: bool,
                      force: bool) -> Measurement:
    """The source's row reused from its sub-stage when complete with this config; else its lists and, with
    the lift part, Table 5, measured in this process (the sources share the without-LLM arm), its A/B left to
    measure_ab. An oracle q that cannot be calibrated is a `skipped` row whose reason names the measured limit."""
    config = {**shared, **source.identity}
    if not force and run.is_complete(source.stage, config):
        return Measurement(source.stage, config, reused=pl.read_parquet(run.root / source.stage / "row.parquet"))
    started = time.perf_counter()
    head = {"source": source.name, "kind": source.kind, "q": source.q}
    try:
        lists = source.lists(inputs)
    except CalibrationError as error:
        return Measurement(source.stage, config, {**head, "status": "skipped", "reason": str(error)},
                           seconds=time.perf_counter() - started)
    row = {**head, "status": "measured", "reason": None, **lists.columns}
    tables = ({"heldout.parquet": lists.heldout, "interests.parquet": lists.interests,
               "serving.parquet": lists.serving} if source.keeps_lists else {})
    if "lift" in inputs.config.parts:
        columns, part_tables = lift_columns(inputs, lists, progress)
        row |= columns
        tables |= part_tables
    if "ab" in inputs.config.parts and lists.serving is None:
        row["ab_reason"] = "no serving lists given"
    return Measurement(source.stage, config, row, tables, time.perf_counter() - started,
                       serving=lists.serving if "ab" in inputs.config.parts else None)


def measure_ab(measurement: Measurement, inputs: StageInputs, progress: bool) -> Measurement:
    """The measurement with its A/B (ab_columns), or unchanged without one to run: the unit that
    `map_tasks` runs in this process or as a Ray task (the A/B is deterministic given its config)."""
    if measurement.serving is None:
        return measurement
    started = time.perf_counter()
    columns, tables = ab_columns(inputs, measurement.serving, progress)
    return replace(measurement, row={**measurement.row, **columns}, tables={**measurement.tables, **tables},
                   seconds=measurement.seconds + time.perf_counter() - started, serving=None)


def record_measurement(run: RunFolder, measurement: Measurement) -> pl.DataFrame:
    """The source's row: a reused one as read, else written with its tables to its sub-stage and recorded."""
    if measurement.reused is not None:
        return measurement.reused
    row = {**measurement.row, "seconds": round(measurement.seconds, 1)}
    tables = {name: table for name, table in measurement.tables.items() if table is not None}
    folder = run.stage_dir(measurement.stage)
    frame = row_frame(row)
    frame.write_parquet(folder / "row.parquet")
    for name, table in tables.items():
        table.write_parquet(folder / name)
    run.complete(measurement.stage, measurement.config, ["row.parquet", *tables],
                 {"status": row["status"], "reason": row["reason"]})
    return frame


@dataclass(frozen=True)
class DoseResponseCheck:
    """Whether a targeted metric rises with predictor quality within its intervals and whether the random
    control's interval covers 0 (issue #15's done-when), with the best oracle point's interval: monotone
    within intervals that all cover 0 says little."""

    metric: str
    points: int  # oracle rows with an estimate, ordered by Recall@20
    is_monotone: bool | None  # None with fewer than two points
    violations: tuple[str, ...]  # "<later> [low, high] lies entirely below <earlier> [low, high]"
    control_interval: tuple[float, float] | None  # the random control's 95% interval, None if not measured
    control_covers_zero: bool | None
    top: str | None = None  # the oracle point of highest Recall@20
    top_interval: tuple[float, float] | None = None
    estimates: tuple[float, ...] = ()  # the oracle points' estimates, ordered by Recall@20
    # whether each estimate is at least the one before: monotone within the intervals is only a rise if they are
    estimates_rise: bool | None = None


def check_dose_response(table: pl.DataFrame, metric: str) -> DoseResponseCheck:
    """Order the measured oracle rows by Recall@20 (then q) and call the dose-response of `metric` (a column
    with `_low`/`_high` interval columns, higher = better) monotone when no later point's interval lies
    entirely below an earlier point's; check the random control's interval against 0."""
    if metric not in table.columns:
        return DoseResponseCheck(metric, 0, None, (), None, None)
    measured = table.filter((pl.col("status") == "measured") & pl.col(metric).is_not_null()
                            & pl.col(metric).is_not_nan())
    points = measured.filter(pl.col("kind") == "oracle").sort("recall_at_20", "q")
    low, high = points[f"{metric}_low"].to_numpy(), points[f"{metric}_high"].to_numpy()
    # pair (i, j), i earlier: point j's whole interval lies below point i's
    earlier, later = np.nonzero(np.triu(high[None, :] < low[:, None], k=1))
    names = points["source"].to_list()
    violations = tuple(f"{names[j]} [{low[j]:+.2f}, {high[j]:+.2f}] lies entirely below "
                       f"{names[i]} [{low[i]:+.2f}, {high[i]:+.2f}]" for i, j in zip(earlier, later))
    control = measured.filter(pl.col("kind") == "random")
    interval = (float(control[f"{metric}_low"][0]), float(control[f"{metric}_high"][0])) if control.height else None
    return DoseResponseCheck(metric=metric, points=points.height,
                             is_monotone=None if points.height < 2 else not violations, violations=violations,
                             control_interval=interval,
                             control_covers_zero=None if interval is None else interval[0] <= 0 <= interval[1],
                             top=names[-1] if names else None,
                             top_interval=(float(low[-1]), float(high[-1])) if names else None,
                             estimates=tuple(float(value) for value in points[metric]),
                             estimates_rise=None if points.height < 2 else bool(np.all(np.diff(points[metric]) >= 0)))


def targeted_metrics(config: SensitivityConfig) -> list[str]:
    """The metrics whose dose-response is checked: ctcvr ΔPR-AUC for the features (Table 5); for the generator
    (A/B) the advertisers' conversion value per user, which its lists target (the oracle ranks advertisers by
    the user's true expected conversion value), then RoAS, the paper's headline, each against the generator off
    and against the random control's lists (information_columns). RoAS also moves with what advertisers pay."""
    task = "ctcvr" if "ctcvr" in config.ranking.tasks else config.ranking.tasks[0]
    return [metric for part in config.parts
            for metric in {"lift": [f"lift_{task}_pr_auc"],
                           "ab": ["ab_revenue_per_user", "ab_roas", "ab_info_revenue_per_user", "ab_info_roas"]}[part]]


def metric_label(metric: str) -> str:
    """A column's name in words: `lift_ctcvr_pr_auc` -> "ctcvr Δ PR-AUC", `ab_roas` -> "Return on ad spend"."""
    if metric.startswith("lift_"):
        task, name = metric.removeprefix("lift_").split("_", 1)
        return f"{task} {LIFT_METRICS[name]}"
    if metric.startswith("ab_info_"):
        return f"{METRIC_LABELS.get(metric.removeprefix('ab_info_'), metric)} against random lists"
    return METRIC_LABELS.get(metric.removeprefix("ab_"), metric)


def _estimates(check: DoseResponseCheck) -> str:
    return ", ".join(f"{value:+.2f}%" for value in check.estimates)


def finding(check: DoseResponseCheck) -> str:
    """The check as one markdown bullet, whatever it found."""
    label = metric_label(check.metric)
    if check.is_monotone is None:
        shape = f"{check.points} oracle point(s) measured: too few to tell whether it is monotone"
    elif check.is_monotone and check.estimates_rise:
        shape = (f"**rises monotonically within its 95% intervals** over {check.points} oracle points ordered by "
                 "Recall@20 (no later point's interval lies entirely below an earlier point's, and each estimate is "
                 f"at least the one before: {_estimates(check)})")
    elif check.is_monotone:
        shape = (f"**shows no rise**: over {check.points} oracle points ordered by Recall@20 no later point's "
                 f"interval lies entirely below an earlier point's, but the estimates do not rise ({_estimates(check)})")
    else:
        shape = (f"**does not rise monotonically** over {check.points} oracle points (it falls where a better "
                 "predictor's interval lies entirely below a worse one's): " + "; ".join(check.violations))
    if check.metric.startswith("ab_info_"):
        control = "each point is the source's arm against the random control's arm on the same users"
    elif check.control_interval is None:
        control = "the random control has no estimate"
    else:
        low, high = check.control_interval
        verdict = "covers 0" if check.control_covers_zero else "**excludes 0**: the stack responds to random lists"
        control = f"the random control's interval [{low:+.2f}%, {high:+.2f}%] {verdict}"
    top = ""
    if check.top_interval is not None:
        low, high = check.top_interval
        mde = achieved_mde_percent(low, high)
        detected = ("lies above 0: the positive control's gain is detected" if low > 0 else
                    "lies below 0: the positive control loses" if high < 0 else
                    f"covers 0: the positive control shows no effect at this size (achieved MDE {mde:+.2f}% at 80% "
                    "power), so the shape says little")
        top = f"; the best oracle point, `{check.top}`, has [{low:+.2f}%, {high:+.2f}%], which {detected}"
    return f"- {label} (change, %): {shape}; {control}{top}."


def _bound(value: float | None) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:+.2f}" if np.isfinite(value) else "unbounded"


def _cell(row: dict, metric: str) -> str:
    value = row.get(metric)
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:+.2f}% [{_bound(row.get(f'{metric}_low'))}, {_bound(row.get(f'{metric}_high'))}]"


def _recall_cell(row: dict) -> str:
    if row.get("recall_at_20") is None or np.isnan(row["recall_at_20"]):
        return "n/a (no V1 label listed)"
    labels, coverage = int(row["recall_labels"]), row.get("recall_coverage")
    counted = (f"{labels} of {round(labels / coverage):,} V1 labels: those its held-out lists cover"
               if coverage is not None and 0 < coverage < 1 else f"{labels} labels")
    return f"{row['recall_at_20']:.3f} [{row['recall_at_20_low']:.3f}, {row['recall_at_20_high']:.3f}] ({counted})"


def metric_columns(table: pl.DataFrame, part: str) -> list[str]:
    """The part's change columns present in the table, in display order."""
    if part == "ab":
        names = [f"ab_{metric}" for metric in AB_METRICS] + [f"ab_info_{metric}" for metric in INFORMATION_METRICS]
    else:
        tasks = sorted({column.split("_")[1] for column in table.columns if column.endswith("_test_positives")})
        names = [f"lift_{task}_{metric}" for task in tasks for metric in LIFT_METRICS]
    return [name for name in names if name in table.columns]


def results_markdown(table: pl.DataFrame, part: str) -> list[str]:
    """One markdown table of the part: a row per measured source with Recall@20 and each change."""
    columns = metric_columns(table, part)
    if not columns:
        return []
    title = ("Ranking: Table 5's change with versus without the source's held-out lists (DCN, %, 95% paired "
             "bootstrap interval over test users x seeds)" if part == "lift" else
             "A/B: the treatment arm's change against the control with the source's serving lists (%, 95% interval)")
    lines = [f"**{title}**", "", "| Source | Kind | Recall@20 [95%] | " + " | ".join(map(metric_label, columns)) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for row in table.filter(pl.col("status") == "measured").iter_rows(named=True):
        lines.append(f"| {row['source']} | {row['kind']} | {_recall_cell(row)} | "
                     + " | ".join(_cell(row, column) for column in columns) + " |")
    notes = [f"- `{row['source']}`: {row[f'{part}_reason']}" for row in table.iter_rows(named=True)
             if row.get(f"{part}_reason")]
    notes += [f"- `{row['source']}`: **not measuring the treatment**: {row['ab_treatment_check']}"
              for row in table.iter_rows(named=True) if part == "ab" and row.get("ab_is_treatment_measured") is False]
    notes += [f"- `{row['source']}` against random lists: not compared, {row['ab_info_reason']}"
              for row in table.iter_rows(named=True) if part == "ab" and row.get("ab_info_reason")]
    direction = ("Δ Loss < 0 and Δ AUC, Δ PR-AUC > 0 mean the lists help the ranker." if part == "lift" else
                 "Each change is the treatment arm's (the generator serving the source's lists) against the control "
                 "arm's, with experiment.treatment_check's exposure flag.")
    return lines + ["", direction, *notes, ""]


def rankers_markdown(table: pl.DataFrame, folders: dict[str, Path]) -> list[str]:
    """Table 5 per ranker: each measured source's with-versus-without change for every model its `lift.parquet`
    holds (the DCN and `ranking.reference_models`), with the achieved MDE (80% power) of each interval. A stable
    reference (logistic regression has no training seed) separates the lists' information from the DCN's
    seed-to-seed noise."""
    summaries = [pl.read_parquet(folders[name] / "lift.parquet").with_columns(source=pl.lit(name))
                 for name in table.filter(pl.col("status") == "measured")["source"]
                 if (folders[name] / "lift.parquet").exists()]
    rows = (pl.concat(summaries, how="diagonal_relaxed").filter(pl.col("comparison") == LIFT_COMPARISON)
            if summaries else pl.DataFrame())
    if not rows.height:
        return []
    lines = ["**Table 5 per ranker: change with versus without the lists (%, 95% paired bootstrap interval; achieved "
             "MDE at 80% power)**", "",
             "| Source | Ranker | Task | Test positives / users | " + " | ".join(LIFT_METRICS.values()) + " |",
             "|---|---|---|---|" + "---|" * len(LIFT_METRICS)]
    for (source, model, task), group in rows.group_by("source", "model", "task", maintain_order=True):
        cells = []
        for metric in LIFT_METRICS:
            row = group.filter(pl.col("metric") == metric).row(0, named=True)
            low, high = row["ci_low"], row["ci_high"]
            mde = achieved_mde_percent(low, high)
            cells.append(f"{row['change_pct']:+.2f}% [{_bound(low)}, {_bound(high)}] (MDE {_bound(mde)})")
        first = group.row(0, named=True)
        lines.append(f"| {source} | {model} | {task} | {first['test_positives']:,} / {first['test_users']:,} | "
                     + " | ".join(cells) + " |")
    return [*lines, "", "The DCN's interval crosses its training seeds' spread with the test users'; logistic "
            "regression's is the test users' alone. Δ Loss < 0 and Δ AUC, Δ PR-AUC > 0 mean the lists help.", ""]


def reachable_range(table: pl.DataFrame) -> str:
    """The oracle's reachable Recall@20 on the V1 eval labels, from its measured rows."""
    measured = table.filter((pl.col("kind") == "oracle") & (pl.col("status") == "measured"))
    if not measured.height or "floor_recall_at_20" not in table.columns:
        return "No oracle q was measured, so its reachable range is only in the skipped rows' reasons."
    row = measured.row(0, named=True)
    return (f"The oracle reaches Recall@20 from {row['floor_recall_at_20']:.3f} (popularity draws alone, w = 0) to "
            f"{row['ceiling_recall_at_20']:.3f} (lists ranked by the true response, w = 1) on "
            f"{int(row['recall_labels'])} V1 eval labels; a q outside that range, give or take the tolerance, is "
            "measured at the nearest end (`clamp`, the default) or else skipped.")


def sensitivity_markdown(table: pl.DataFrame, checks: list[DoseResponseCheck], plots: list[Path],
                         relative_to: Path, folders: dict[str, Path]) -> str:
    """The report: what was measured, the findings, the reachable range and skipped q, the tables (Table 5 per
    ranker from each source's sub-stage in `folders`), the plots."""
    skipped, clamped = ([f"- `{row['source']}` (q = {row['q']:g}): {row['reason']}"
                         for row in table.filter((pl.col("status") == status) & pl.col("reason").is_not_null()
                                                 & (pl.col("kind") == "oracle")).iter_rows(named=True)]
                        for status in ("skipped", "measured"))
    lines = ["### Dose-response: how good must the predictor be? (issue #15)", "",
             ("Each source's lists are measured by their Recall@20 on the V1 eval labels they list and by what "
              "they change downstream. `oracle_q<q>` is a positive control that reads the world's hidden "
              "response (docs/oracle.md), never a method; `random_control` lists random advertisers of the same "
              "length (the negative control); `method` rows are real predictors. The findings:"), "",
             *map(finding, checks), "", reachable_range(table), "",
             *(["Skipped:", "", *skipped, ""] if skipped else []),
             *(["Measured at an end of the reachable range:", "", *clamped, ""] if clamped else []),
             *results_markdown(table, "lift"), *rankers_markdown(table, folders), *results_markdown(table, "ab")]
    lines += [f"![{path.stem}]({os.path.relpath(path, relative_to)})" for path in plots]
    return "\n".join(lines) + "\n"


def plot_dose_response(table: pl.DataFrame, metrics: list[str], title: str, path: Path) -> Path:
    """One PNG: a panel per metric of its change (%) against Recall@20, 95% intervals on both axes; the
    oracle's points joined by a line, the random control as a grey cross, each method as a labelled square
    with a dotted line at its Recall@20. An interval side beyond the panel (a method's, or unbounded) is drawn
    to its edge with an arrowhead, and a method's label then gives its whole interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = table.filter(pl.col("status") == "measured")
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    styles = {"oracle": ("-o", "tab:blue", "oracle (positive control)"), "random": ("x", "grey", "random control"),
              "method": ("s", "tab:red", "method")}
    for axis, metric in zip(axes.ravel(), metrics):
        shown = measured.filter(pl.col(metric).is_not_null() & pl.col(metric).is_not_nan()).sort("recall_at_20")
        # the panel spans the controls' intervals and every estimate: a method's interval on a few labels can be
        # hundreds of points wide, and it is drawn to the edge rather than flattening the controls' curve
        controls = shown.filter(pl.col("kind") != "method")
        finite = np.concatenate([shown[metric].to_numpy(), *(controls[f"{metric}{end}"].to_numpy()
                                                              for end in ("_low", "_high"))])
        finite = finite[np.isfinite(finite)]
        edge = (finite.min(), finite.max()) if finite.size else (-1.0, 1.0)
        for kind, (style, color, label) in styles.items():
            group = shown.filter(pl.col("kind") == kind)
            if not group.height:
                continue
            x, y = group["recall_at_20"].to_numpy(), group[metric].to_numpy()
            # lines, not errorbar: a bootstrap percentile interval need not contain its estimate
            axis.vlines(x, *(np.clip(group[f"{metric}_{end}"].to_numpy(), *edge) for end in ("low", "high")),
                        color=color, lw=1)
            axis.hlines(y, group["recall_at_20_low"].to_numpy(), group["recall_at_20_high"].to_numpy(), color=color,
                        lw=1)
            axis.plot(x, y, style, color=color, label=label, markersize=7)
            low, high = group[f"{metric}_low"].to_numpy(), group[f"{metric}_high"].to_numpy()
            for ends, beyond, marker in ((low, low < edge[0], "v"), (high, high > edge[1], "^")):
                axis.plot(x[beyond], np.clip(ends[beyond], *edge), marker, color=color, markersize=5)  # runs on
            if kind == "method":
                for name, recall, value, row_low, row_high in zip(group["source"], x, y, low, high):
                    axis.axvline(recall, color="tab:red", lw=0.8, ls=":", alpha=0.5)
                    off = "" if edge[0] <= row_low and row_high <= edge[1] else f"\n[{row_low:+.1f}, {row_high:+.1f}]"
                    axis.annotate(name + off, (recall, value), textcoords="offset points", xytext=(4, 4), fontsize=7)
        axis.axhline(0, color="grey", lw=0.8)
        better = " (< 0: better)" if metric.endswith("log_loss") else ""
        axis.set(xlabel="Recall@20 (V1 eval labels)", ylabel="change (%)")
        axis.set_title(textwrap.fill(metric_label(metric) + better, 34), fontsize=9)
    for axis in axes.ravel()[len(metrics):]:
        axis.set_visible(False)
    legend = {label: handle for axis in axes.ravel() for handle, label in zip(*axis.get_legend_handles_labels())}
    figure.legend(legend.values(), legend.keys(), loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 0))
    figure.suptitle(title)
    return save_figure(figure, path, rect=(0, 0.3 / figure.get_size_inches()[1], 1, 1))  # 0.3 in for the legend


def stage_config(run: RunFolder, config: SensitivityConfig) -> dict:
    """What every source's measurement depends on besides its lists: the world, the parts' configs and
    the inputs they read (impressions for the lift; the trained stages for a trained market)."""
    world = run.stage_record("world")
    if world is None:
        raise FileNotFoundError(f"{run.root / 'world'} has no stage record: run `adsim world --out {run.root}` first")
    shared: dict = {"upstream": world["config_hash"], "parts": list(config.parts), "llm_preset": config.llm_preset}
    if "lift" in config.parts:
        impressions = run.root / IMPRESSIONS
        if not impressions.exists():
            raise FileNotFoundError(f"{impressions} is missing: run `adsim rank impressions --run {run.root}` first "
                                    "(or --parts ab)")
        shared |= {"ranking": to_dict(config.ranking), "impressions": file_digest(impressions),
                   "lift_users": config.lift_users}
    if "ab" in config.parts:
        shared |= {"experiment": to_dict(config.experiment), "stack": config.stack}
        if config.stack == "trained":
            trained = (f"retrieval_train_{config.objective}", f"retrieval_index_{config.objective}", "ranking")
            shared["trained_stages"] = {stage: (run.stage_record(stage) or {}).get("config_hash") for stage in trained}
    return shared


def sensitivity_stage(root: Path, config: SensitivityConfig, progress: bool = True, force: bool = False,
                      engine: str = "local") -> dict:
    """`adsim sensitivity`: measure every source (reusing each finished one), then write
    `sensitivity/{table.parquet,report.md}` and `plots/sensitivity_{lift,ab}.png`. engine "ray" runs the
    sources' A/Bs as Ray tasks while this process measures the next sources' lists and Table 5: the same
    rows, the same records. Returns the stage
    summary (rows, reachable range, the dose-response checks). Raises FileNotFoundError without the world
    (or, for the lift, the impressions; for a trained market, its trained stages), ConfigError for an
    unknown LLM preset, SchemaError for a method's table off its contract."""
    run = RunFolder(root)
    shared = stage_config(run, config)
    measured_sources = sources(config)
    everything = {**shared, "sensitivity": to_dict(config),
                  "sources": {source.name: source.identity for source in measured_sources}}
    if not force and run.is_complete(STAGE, everything):
        return run.stage_record(STAGE)["summary"]
    started = time.perf_counter()
    inputs = StageInputs(run.root, config)
    if engine == "ray" and "ab" in config.parts:
        inputs.load_market_inputs()  # before map_tasks puts the inputs in Ray's object store, once
    begun = (begin_measurement(run, source, shared, inputs, progress, force) for source in measured_sources)
    measured = map_tasks(measure_ab, begun, (inputs, progress and engine == "local"), engine=engine,
                         progress=progress, desc="dose-response sources")
    rows = [record_measurement(run, measurement) for measurement in measured]
    table = information_columns(run, config, pl.concat(rows, how="diagonal_relaxed"))
    folder = run.stage_dir(STAGE)
    table.write_parquet(folder / "table.parquet")
    titles = {"lift": "Table 5 against predictor quality (DCN, with vs without)",
              "ab": "A/B against predictor quality (treatment vs control)"}
    plots = [plot_dose_response(table, metric_columns(table, part), titles[part],
                                run.root / "plots" / f"sensitivity_{part}.png")
             for part in config.parts if metric_columns(table, part)]
    checks = [check_dose_response(table, metric) for metric in targeted_metrics(config)]
    folders = {source.name: run.root / source.stage for source in measured_sources}
    (folder / "report.md").write_text(sensitivity_markdown(table, checks, plots, folder, folders))
    summary = {"seconds": round(time.perf_counter() - started, 1),
               "rows": {status: int(count) for status, count in table["status"].value_counts().iter_rows()},
               "skipped": {row["source"]: row["reason"] for row in table.filter(pl.col("status") == "skipped")
                           .iter_rows(named=True)},
               "reachable": reachable_range(table),
               "checks": [{**check.__dict__, "violations": list(check.violations)} for check in checks],
               "plots": [str(path.relative_to(run.root)) for path in plots]}
    run.complete(STAGE, everything, ["table.parquet", "report.md"], summary)
    return summary
