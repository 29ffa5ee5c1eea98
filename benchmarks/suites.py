"""The scenarios `adsim bench` measures (issue #16): fixed, seeded, seconds to minutes on 2 cores.

`ci` runs on the `tiny` preset's world grown to `CI_USERS` users (a fixed world; the seed is the
market's): the world's generation speed, the non-LLM predictors' Recall@K on the V1 eval labels, and
an A/B of the model-free stack (its advertiser-list generator off versus on, one paired day) with its
A/A check, funnel, advertiser diversity, the scorer's ctcvr AUC on the control arm's impressions, and
the market's requests/s; and the DCN ranker trained on the world's logged impressions (test AUC and
PR-AUC per task, candidates scored per second). Speed is stated per second of a reference workload timed in the same run
(`reference_seconds`), so a slower or busier machine shifts both alike. `SuiteHooks` lets a test plant
a regression (a scorer returning shuffled scores, a predictor answering with popularity) without
touching the stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from benchmarks.harness import Measurement

SUITES = ("ci",)
AA_SPLITS = 40  # the A/A's re-randomisations: its false-positive rate to about +-7 points
CI_USERS = 4000  # the tiny preset's world with more users: ~100 V1 eval labels, a market of ~20k requests


@dataclass(frozen=True)
class SuiteHooks:
    """Test-only replacements of what the suite runs; identity by default."""

    scorer: Callable[[object], object] = lambda scorer: scorer  # wraps the stack's scorer
    # (method, its predictions, every method's so far) -> the predictions measured for it
    predictions: Callable[[str, pl.DataFrame, dict], pl.DataFrame] = lambda method, table, others: table
    # wraps the trained ranker's scoring of featurised rows (Ranker.table_probabilities)
    dcn_scoring: Callable[[Callable], Callable] = lambda score: score


def reference_seconds(repeats: int = 5) -> float:
    """Median seconds of a fixed workload: a bf16 matrix product and a numpy sort, as the stack's own work
    mixes dense math and array shuffling; one thread."""
    import torch

    left = torch.randn(384, 384, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    keys = np.random.default_rng(0).random(400_000)
    timings = []
    with _one_thread(), torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(20):
                left @ left
            np.sort(keys)
            timings.append(time.perf_counter() - started)
    return float(np.median(timings))


@contextmanager
def _one_thread():
    """torch, BLAS and OpenMP held to one thread."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


def measure(suite: str, seed: int = 0, hooks: SuiteHooks = SuiteHooks()) -> list[Measurement]:
    """Run `suite` with `seed`, the market's (the world is fixed, so the predictors' recalls do not move with
    it); raises ValueError for an unknown suite."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {list(SUITES)}")
    return _ci(seed, hooks)


def _ci(seed: int, hooks: SuiteHooks) -> list[Measurement]:
    from llm_predictor.baselines import most_recent_predictions, popularity_predictions
    from llm_predictor.evaluate import EvalConfig, evaluation_labels, evaluation_requests
    from llm_predictor.metrics import recall_at_k
    from simulator.config import ExperimentConfig, SimulationConfig
    from simulator.experiment import aa_check, aa_false_positive_rates, pre_period_covariates, run_ab
    from sklearn.metrics import roc_auc_score

    from simulator.stack import baseline_stack, load_predictions
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    reference = reference_seconds()
    out: list[Measurement] = []

    def speed(name: str, units: float, seconds: float, unit: str) -> None:
        out.append(Measurement(name, units / seconds * reference, "speed", "higher", f"{unit} per reference second"))

    world_config = preset("tiny", [f"users.n_users={CI_USERS}"])  # a fixed world: `seed` is the market's
    started = time.perf_counter()
    world = generate_world(world_config, progress=False)
    speed("world_users_per_second", world.users.height, time.perf_counter() - started, "users")

    eval_config = EvalConfig()
    labels = evaluation_labels(world, eval_config)["v1"]
    requests = evaluation_requests(world, eval_config)
    predicted: dict[str, pl.DataFrame] = {}
    for method, predict in (("popularity", popularity_predictions), ("most_recent", most_recent_predictions)):
        predicted[method] = hooks.predictions(method, predict(world, requests), predicted)
        for k, recall in recall_at_k(predicted[method], labels, eval_config.ks).items():
            out.append(Measurement(f"predictor_{method}_recall_at_{k}", recall, "quality", "higher", "V1 labels"))

    out += _ranking(world, world_config, seed, hooks, speed)

    stack = baseline_stack(world, world_config, load_predictions(None, world)[0])
    stack = replace(stack, scorer=hooks.scorer(stack.scorer))
    experiment = ExperimentConfig(simulation=SimulationConfig(days=1, seed=seed), aa_splits=AA_SPLITS)
    started = time.perf_counter()
    result = run_ab(experiment, world, stack)
    seconds = time.perf_counter() - started
    treatment = experiment.arms[1].name
    speed("simulator_requests_per_second", sum(r.summary["requests"] for r in result.results.values()), seconds,
          "requests")
    changes = dict(result.comparisons.filter(pl.col("arm") == treatment).select("metric", "relative_change").rows())
    for metric in ("roas", "conversions_per_user", "spend_per_user", "ctr", "advertiser_entropy"):
        out.append(Measurement(f"ab_{metric}_change", changes[metric], "quality", "both", "relative change"))
    control = result.results[experiment.arms[0].name]
    # the market's scorer judged on what it showed: its ctcvr against the impressions that converted after a click
    impressions = control.impressions
    out.append(Measurement("scorer_ctcvr_auc", float(roc_auc_score(impressions["is_ctcvr"].to_numpy(),
                                                                      impressions["ctcvr"].to_numpy())),
                           "quality", "higher", "control arm's impressions"))
    aa = aa_check(experiment, world, stack, control, pre_period_covariates(world, experiment.pre_period_days),
                  AA_SPLITS)
    out.append(Measurement("aa_false_positive_rate", aa_false_positive_rates(aa, experiment.alpha)["all"]["rate"],
                           "quality", "lower", f"share of {AA_SPLITS} x 6 tests"))
    funnel = result.funnels.filter(pl.col("arm") == treatment)
    counts = {(row["source"], row["stage"]): row["count"] for row in funnel.iter_rows(named=True)}
    for source in ("main", "llm"):
        out.append(Measurement(f"funnel_{source}_impressed_per_retrieved",
                               counts.get((source, "impressed"), 0) / max(counts.get((source, "retrieved"), 0), 1),
                               "quality", "both", "share"))
    return out


def _ranking(world, world_config, seed: int, hooks: SuiteHooks, speed: Callable) -> list[Measurement]:
    """The DCN ranker trained (2 epochs, `seed`) on two weeks of logged impressions with most-recent-advertiser
    lists as its LLM features: test AUC and PR-AUC per task, and its scoring speed on the test rows."""
    from datetime import date

    from ranking.config import RankingConfig, TrainConfig
    from ranking.features import split_by_time
    from ranking.pipeline import train_ranker
    from ranking.recency_predictions import recent_advertiser_predictions
    from synthetic_data.impressions import ImpressionConfig, generate_impressions
    from synthetic_data.response import build_response_state

    state = build_response_state(world, date.fromisoformat(world_config.start_date),
                                 world_config.users.drift_period_days)
    impressions, _ = generate_impressions(world, state, ImpressionConfig(n_days=14, requests_per_user_day=2.0))
    lists = recent_advertiser_predictions(world.events, world.advertisers,
                                          world.labels["anchor_date"].unique().to_list(), 10)
    config = RankingConfig(reference_models=(), train=TrainConfig(epochs=2))
    ranker, metrics = train_ranker(world, impressions, lists, None, config, seed=seed)
    out = [Measurement(f"ranking_dcn_{task}_{name}", float(metrics["dcn"][task][name]), "quality", "higher",
                       "test impressions") for task in config.tasks for name in ("auc", "pr_auc")]
    table = ranker.builder.transform(split_by_time(impressions, config.features)["test"], ranker.lists_)
    score = hooks.dcn_scoring(ranker.table_probabilities)
    score(table)  # built once: the bf16 scoring copy
    timings = []
    with _one_thread():  # as the reference workload
        for _ in range(3):
            started = time.perf_counter()
            score(table)
            timings.append(time.perf_counter() - started)
    speed("dcn_candidates_per_second", len(table), min(timings), "candidates")
    return out
