"""The demand side: users' observable profile and hidden state (interests that drift, loyalty, intent).

Mechanisms (docs/world.md): each user cares about a few leaf categories with Dirichlet weights;
at each drift period one interest may be replaced by a new leaf; favourite advertisers are drawn
by popularity from the user's initial interests; loyalty ~ Beta, commercial intent and activity ~
Gamma with mean 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.catalog import Catalog
from synthetic_data.config import WorldConfig


@dataclass
class Population:
    """A chunk of users: tables plus the arrays the behaviour model reads."""

    users: pl.DataFrame
    users_truth: pl.DataFrame
    interests_truth: pl.DataFrame
    user_ids: np.ndarray
    interest_leaves: np.ndarray  # (epochs, users, K) leaf indices
    interest_weights: np.ndarray  # (users, K), rows sum to 1
    favorites: np.ndarray  # (users, F) advertiser ids
    loyalty: np.ndarray
    intent: np.ndarray
    activity: np.ndarray


def _categorical(probs: dict[str, float], n: int, rng: np.random.Generator) -> np.ndarray:
    keys = np.array(list(probs))
    return keys[rng.choice(len(keys), n, p=np.array(list(probs.values())) / sum(probs.values()))]


def n_epochs(config: WorldConfig) -> int:
    return -(-config.n_days // config.users.drift_period_days)


def build_population(config: WorldConfig, catalog: Catalog, first_user_id: int, n: int,
                     rng: np.random.Generator) -> Population:
    """Generate `n` users with ids starting at `first_user_id`."""
    uc = config.users
    user_ids = np.arange(first_user_id, first_user_id + n, dtype=np.int64)
    start = np.datetime64(date.fromisoformat(config.start_date), "D")
    state = _categorical(uc.user_state_probs, n, rng)
    tenure = np.where(state == "new", rng.integers(0, 30, n), rng.integers(30, 1500, n))
    users = schema.conform(pl.DataFrame({
        "user_id": user_ids,
        "age": _categorical(uc.age_probs, n, rng),
        "gender": _categorical(uc.gender_probs, n, rng),
        "user_state": state,
        "signup_date": start - tenure.astype("timedelta64[D]"),
    }), schema.USERS, "users")

    # Interests: K distinct leaves among those with supply, Dirichlet weights; drift per period.
    supplied = catalog.supplied_leaves
    k = min(uc.interests_per_user, len(supplied))
    leaves = supplied[np.argsort(rng.random((n, len(supplied))), axis=1)[:, :k]]
    weights = rng.dirichlet(np.full(k, uc.interest_concentration), n)
    epochs = [leaves]
    for _ in range(1, n_epochs(config)):
        current = epochs[-1].copy()
        drifting = np.flatnonzero(rng.random(n) < uc.drift_probability)
        slot = rng.integers(0, k, len(drifting))
        new_leaf = supplied[rng.integers(0, len(supplied), len(drifting))]
        # A new leaf already among the user's interests leaves the interests unchanged.
        is_new = ~(current[drifting] == new_leaf[:, None]).any(axis=1)
        current[drifting[is_new], slot[is_new]] = new_leaf[is_new]
        epochs.append(current)
    interest_leaves = np.stack(epochs)

    # Favourite advertisers: popularity-weighted sellers in interests drawn by weight.
    f = uc.favorite_advertisers
    slot = _pick_slots(weights, rng, f)
    favorites = catalog.advertiser_for_leaf.sample(
        leaves[np.arange(n)[:, None], slot].ravel(), rng).reshape(n, f).astype(np.int32)
    loyalty = rng.beta(*uc.loyalty_beta, n)
    intent = rng.gamma(uc.intent_gamma_shape, 1.0 / uc.intent_gamma_shape, n)
    activity = rng.gamma(uc.activity_gamma_shape, 1.0 / uc.activity_gamma_shape, n)

    users_truth = schema.conform(pl.DataFrame({
        "user_id": user_ids, "commercial_intent": intent, "brand_loyalty": loyalty,
        "activity": activity,
        "favorite_advertisers": pl.Series(favorites.tolist(), dtype=pl.List(pl.Int32)),
    }), schema.USERS_TRUTH, "users_truth")
    e = interest_leaves.shape[0]
    interests_truth = schema.conform(pl.DataFrame({
        "user_id": np.tile(np.repeat(user_ids, k), e),
        "epoch": np.repeat(np.arange(e, dtype=np.int16), n * k),
        "category_id": catalog.leaf_ids[interest_leaves.ravel()],
        "weight": np.tile(weights.ravel(), e).astype(np.float32),
    }), schema.INTERESTS_TRUTH, "interests_truth")
    return Population(users, users_truth, interests_truth, user_ids, interest_leaves, weights,
                      favorites, loyalty, intent, activity)


def _pick_slots(weights: np.ndarray, rng: np.random.Generator, draws: int) -> np.ndarray:
    """(rows, draws) slot indices drawn with each row's weights."""
    cumulative = np.cumsum(weights, axis=1)
    target = rng.random((len(weights), draws)) * cumulative[:, -1:]
    return np.minimum((cumulative[:, None, :] <= target[:, :, None]).sum(axis=2), weights.shape[1] - 1)
