"""A/A calibration of the A/B statistics on synthetic per-user metrics (paper 4.5.2).

Two arms drawn from the same synthetic market are compared many times; the share of tests that
reject at alpha is the false-positive rate, which a calibrated test holds near alpha. The market
is shaped like a one-day simulation of the `tiny` world: a quarter of the users idle, CPM spend
with a heavy tail, a few percent clicking and about one user in eight converting, with skewed
conversion values and pre-period covariates that track each user's propensities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from simulator.experiment import METRICS
from simulator.stats import compare


@dataclass(frozen=True)
class SyntheticMarket:
    """Per-user behaviour of a synthetic market (defaults: the tiny world's one-day simulation)."""

    active_share: float = 0.77  # users with at least one request
    requests_per_active_user: float = 5.6
    impressions_per_request: float = 3.1
    ctr: float = 0.05  # clicks per impression
    conversions_per_impression: float = 0.018
    conversion_heterogeneity: float = 0.3  # gamma shape of the users' conversion propensity (low = few converters)
    click_through_share: float = 0.8  # share of conversions that follow a click
    spend_per_impression: float = 0.33
    value_per_conversion: float = 68.0
    pre_engagements_per_user: float = 23.0  # over the pre-period (28 days)
    pre_conversions_per_user: float = 2.45
    pre_value_per_conversion: float = 44.0


def synthetic_arm(market: SyntheticMarket, users: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One arm's per-user columns (engine USER_METRICS and the CUPED pre-period ones), each of shape (users,)."""
    is_active = rng.random(users) < market.active_share
    activity = rng.gamma(2.0, 0.5, users)  # mean-1 propensities
    click_propensity = rng.gamma(1.0, 1.0, users)
    conversion_propensity = rng.gamma(market.conversion_heterogeneity, 1 / market.conversion_heterogeneity, users)
    requests = is_active * (1 + rng.poisson(activity * (market.requests_per_active_user - 1)))
    impressions = rng.poisson(market.impressions_per_request * requests)
    spend = impressions * market.spend_per_impression * rng.lognormal(-0.605, 1.1, users)
    conversions = rng.poisson(impressions * market.conversions_per_impression * conversion_propensity)
    click_conversions = rng.binomial(conversions, market.click_through_share)
    clicks = np.maximum(rng.binomial(impressions, np.minimum(1.0, market.ctr * click_propensity)), click_conversions)
    # a sum of `conversions` gamma(0.8) values: coefficient of variation 1.1 per conversion
    value = rng.gamma(np.maximum(0.8 * conversions, 1e-12), market.value_per_conversion / 0.8) * (conversions > 0)
    pre_engagements = rng.poisson(activity * market.pre_engagements_per_user)
    pre_conversions = rng.poisson((activity + conversion_propensity) / 2 * market.pre_conversions_per_user)
    pre_value = (rng.gamma(np.maximum(0.8 * pre_conversions, 1e-12), market.pre_value_per_conversion / 0.8)
                 * (pre_conversions > 0))
    columns = {"requests": requests, "impressions": impressions, "clicks": clicks, "spend": spend,
               "conversions": conversions, "click_conversions": click_conversions, "conversion_value": value,
               "pre_engagements": pre_engagements, "pre_conversions": pre_conversions,
               "pre_conversion_value": pre_value}
    return {name: np.asarray(column, dtype=np.float64) for name, column in columns.items()}


def aa_p_values(users_per_arm: int, tests: int, rng: np.random.Generator,
                market: SyntheticMarket = SyntheticMarket(), method: str = "delta", cuped: bool = True,
                alpha: float = 0.05, bootstrap_samples: int = 1000) -> pl.DataFrame:
    """`tests` synthetic A/A split tests of every metric in experiment.METRICS: one row per test and
    metric with its p-value, smaller-arm count of users with a nonzero numerator and underpowered label."""
    rows = []
    for test in range(tests):
        control, treatment = synthetic_arm(market, users_per_arm, rng), synthetic_arm(market, users_per_arm, rng)
        for metric in METRICS:
            comparison = compare(control, treatment, metric, method=method, cuped=cuped, alpha=alpha,
                                 bootstrap_samples=bootstrap_samples, rng=rng)
            rows.append({"test": test, "metric": metric.name, "p_value": comparison.p_value,
                         "nonzero_users": comparison.nonzero_users, "is_underpowered": comparison.is_underpowered})
    return pl.DataFrame(rows)


def false_positive_rate(p_values: pl.DataFrame, alpha: float = 0.05, by: str = "metric") -> pl.DataFrame:
    """Share of A/A tests rejected at alpha per group of `by`, with its 95% Clopper-Pearson interval
    (scipy.stats.binomtest); untestable (NaN) p-values count as not rejected."""
    table = (p_values.group_by(by, maintain_order=True)
             .agg(pl.len().alias("tests"), (pl.col("p_value") < alpha).sum().alias("rejections"),
                  pl.col("nonzero_users").median().alias("median_nonzero_users"),
                  pl.col("is_underpowered").mean().alias("underpowered_share")))
    intervals = [stats.binomtest(rejections, tests).proportion_ci(0.95, method="exact")
                 for rejections, tests in table.select("rejections", "tests").rows()]
    return table.with_columns((pl.col("rejections") / pl.col("tests")).alias("rate"),
                              pl.Series("rate_ci_low", [i.low for i in intervals]),
                              pl.Series("rate_ci_high", [i.high for i in intervals]))
