"""The supply side of the world: taxonomy, advertisers and their brand groups, items, daily spend.

Mechanisms (docs/world.md): Zipf advertiser popularity; brands in a leaf near the advertiser's
primary leaf, each selling a few product lines; items whose content embedding mixes leaf, top
category and advertiser style; daily spend from budget x utilisation, whose top ranks form the
preset pool of top-revenue advertisers (paper 3.2.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.config import WorldConfig
from synthetic_data.sampling import GroupedSampler
from synthetic_data.vocabulary import (
    COMPANY_SUFFIXES, DOMAIN_SUFFIXES, category_names, product_line_names, unique_names,
)

ITEM_STYLES = ("Classic", "Pro", "Mini", "Plus", "Select", "Essential", "Signature", "Lite")


@dataclass
class Catalog:
    """Supply-side tables plus the vectorised samplers the behaviour model draws from."""

    categories: pl.DataFrame
    product_lines: pl.DataFrame
    advertisers: pl.DataFrame
    advertisers_truth: pl.DataFrame
    brands: pl.DataFrame
    items: pl.DataFrame
    advertiser_spend: pl.DataFrame
    preset_pool: pl.DataFrame
    leaf_ids: np.ndarray  # category_id of each leaf, indexed by leaf index
    pl_leaf: np.ndarray  # leaf index of each product line
    popularity: np.ndarray  # per advertiser
    advertiser_for_leaf: GroupedSampler  # leaf index -> advertiser, by popularity
    advertiser_for_product_line: GroupedSampler  # product line -> advertiser, by popularity
    product_line_of_advertiser: GroupedSampler  # advertiser -> one of its product lines
    product_line_of_leaf: GroupedSampler  # leaf index -> product line, uniformly
    product_line_of_advertiser_in_leaf: GroupedSampler  # advertiser * n_leaves + leaf -> line
    item_for_offer: GroupedSampler  # advertiser * n_product_lines + product line -> item
    n_product_lines: int
    n_leaves: int
    supplied_leaves: np.ndarray  # leaf indices where at least one advertiser sells


def _taxonomy(config: WorldConfig) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]:
    tax = config.taxonomy
    tops, leaves = category_names(tax.n_top_categories, tax.leaves_per_top)
    n_top = tax.n_top_categories
    top_rows = [(t, None, 1, tops[t]) for t in range(n_top)]
    leaf_rows, pl_rows = [], []
    for t in range(n_top):
        for j, leaf in enumerate(leaves[t]):
            leaf_index = t * tax.leaves_per_top + j
            category_id = n_top + leaf_index
            leaf_rows.append((category_id, t, 2, leaf))
            for k, line in enumerate(product_line_names(t, leaf, tax.product_lines_per_leaf)):
                pl_rows.append((leaf_index * tax.product_lines_per_leaf + k, category_id, line))
    categories = schema.conform(pl.DataFrame(
        top_rows + leaf_rows, schema=["category_id", "parent_id", "level", "name"], orient="row"),
        schema.CATEGORIES, "categories")
    product_lines = schema.conform(pl.DataFrame(
        pl_rows, schema=["product_line_id", "category_id", "name"], orient="row"),
        schema.PRODUCT_LINES, "product_lines")
    leaf_ids = np.arange(n_top, n_top + n_top * tax.leaves_per_top)
    pl_leaf = np.repeat(np.arange(len(leaf_ids)), tax.product_lines_per_leaf)
    return categories, product_lines, leaf_ids, pl_leaf


def build_catalog(config: WorldConfig, rng: np.random.Generator) -> Catalog:
    """Generate the taxonomy, advertisers, brands, items and 90 days of advertiser spend."""
    ac, tax = config.advertisers, config.taxonomy
    categories, product_lines, leaf_ids, pl_leaf = _taxonomy(config)
    n_leaves, n_pl_per_leaf = len(leaf_ids), tax.product_lines_per_leaf
    n_product_lines = n_leaves * n_pl_per_leaf
    n_adv = ac.n_advertisers

    # Advertisers: Zipf popularity over a random order, a primary leaf each.
    rank = rng.permutation(n_adv)
    popularity = (rank + 1.0) ** -ac.popularity_zipf_exponent
    popularity /= popularity.sum()
    primary_leaf = rng.integers(0, n_leaves, n_adv)

    # Brand groups: 1 + Poisson(mean - 1) brands, mostly in the primary leaf, else its top category.
    n_brands = 1 + rng.poisson(ac.mean_brands_per_advertiser - 1, n_adv)
    brand_adv = np.repeat(np.arange(n_adv), n_brands)
    n_b = len(brand_adv)
    same_leaf = rng.random(n_b) < 0.7
    top_of = primary_leaf[brand_adv] // tax.leaves_per_top
    sibling = top_of * tax.leaves_per_top + rng.integers(0, tax.leaves_per_top, n_b)
    brand_leaf = np.where(same_leaf, primary_leaf[brand_adv], sibling)
    is_first_brand = np.r_[True, brand_adv[1:] != brand_adv[:-1]]

    base_names = unique_names(rng, n_adv + n_b)
    adv_base, brand_names = np.array(base_names[:n_adv]), np.array(base_names[n_adv:])
    # Half of the advertisers name their first brand after themselves; the other brands have their
    # own names, so linking them to the advertiser takes world knowledge (the corpus).
    eponymous = is_first_brand & (rng.random(n_b) < 0.5)
    brand_names = np.where(eponymous, adv_base[brand_adv], brand_names)
    suffix = np.asarray(COMPANY_SUFFIXES)[rng.integers(0, len(COMPANY_SUFFIXES), n_adv)]
    adv_names = np.char.add(np.char.add(adv_base, " "), suffix)
    tld = np.asarray(DOMAIN_SUFFIXES)[rng.integers(0, len(DOMAIN_SUFFIXES), n_adv)]
    domains = np.char.add(np.char.lower(adv_base), tld)

    # Product lines per brand: a random subset of its leaf's lines.
    k = min(ac.product_lines_per_brand, n_pl_per_leaf)
    choice = np.argsort(rng.random((n_b, n_pl_per_leaf)), axis=1)[:, :k]
    offer_brand = np.repeat(np.arange(n_b), k)
    offer_pl = (brand_leaf[:, None] * n_pl_per_leaf + choice).ravel()
    offer_adv = brand_adv[offer_brand]

    # Items: items_per_product_line per (brand, product line).
    n_per = ac.items_per_product_line
    item_brand = np.repeat(offer_brand, n_per)
    item_pl = np.repeat(offer_pl, n_per)
    item_adv = brand_adv[item_brand]
    n_items = len(item_brand)
    item_leaf = pl_leaf[item_pl]
    pl_names = product_lines["name"].to_numpy()
    style = np.asarray(ITEM_STYLES)[rng.integers(0, len(ITEM_STYLES), n_items)]
    titles = np.char.add(np.char.add(np.char.add(np.char.add(brand_names[item_brand], " "), style), " "),
                         pl_names[item_pl].astype(str))
    price = np.round(np.exp(rng.normal(ac.price_log_mean, ac.price_log_sd, n_items)), 2)
    embedding, style_strength = _embeddings(config, rng, item_leaf, item_adv, n_leaves, n_adv)

    # Campaigns, budgets, activity.
    is_active = rng.random(n_adv) < ac.active_share
    has_spend = is_active & (rng.random(n_adv) < ac.spending_share)
    types = np.array(list(ac.campaign_type_probs))
    campaign = types[rng.choice(len(types), n_adv, p=list(ac.campaign_type_probs.values()))]
    bid = np.exp(rng.normal(ac.bid_log_mean, ac.bid_log_sd, n_adv))
    target_roas = np.where(campaign == "ROAS", ac.target_roas_mean * np.exp(rng.normal(0, 0.2, n_adv)), np.nan)
    budget = np.exp(rng.normal(ac.budget_log_mean, ac.budget_log_sd, n_adv)) * (
        popularity * n_adv) ** ac.budget_popularity_elasticity

    adv_pl = pl.DataFrame({"advertiser_id": offer_adv.astype(np.int32), "product_line_id": offer_pl.astype(np.int32)})
    adv_lines = (adv_pl.unique().join(product_lines.select("product_line_id", "name"), on="product_line_id")
                 .sort("advertiser_id", "name").group_by("advertiser_id", maintain_order=True)
                 .agg(pl.col("name").alias("product_lines")))
    advertisers = pl.DataFrame({
        "advertiser_id": np.arange(n_adv, dtype=np.int32),
        "name": adv_names, "domain": domains, "is_active": is_active, "has_active_spend": has_spend,
        "campaign_type": campaign, "bid": np.round(bid, 2),
        "target_roas": np.round(target_roas, 2), "daily_budget": np.round(budget, 2),
        "category_id": leaf_ids[primary_leaf].astype(np.int32),
    }).with_columns(pl.col("target_roas").fill_nan(None)).join(adv_lines, on="advertiser_id", how="left")
    advertisers = schema.conform(advertisers, schema.ADVERTISERS, "advertisers")
    advertisers_truth = schema.conform(pl.DataFrame({
        "advertiser_id": np.arange(n_adv), "popularity": popularity, "style_weight": style_strength}),
        schema.ADVERTISERS_TRUTH, "advertisers_truth")
    brands = schema.conform(pl.DataFrame({
        "brand_id": np.arange(n_b), "advertiser_id": brand_adv, "name": brand_names,
        "category_id": leaf_ids[brand_leaf]}), schema.BRANDS, "brands")
    items = schema.conform(pl.DataFrame({
        "item_id": np.arange(n_items), "advertiser_id": item_adv, "brand_id": item_brand,
        "category_id": leaf_ids[item_leaf], "product_line_id": item_pl, "title": titles,
        "price": price,
    }).with_columns(pl.Series("embedding", embedding, dtype=pl.Array(pl.Float32, embedding.shape[1]))),
        schema.ITEMS, "items")
    spend, preset_pool = _spend_and_preset_pool(config, rng, budget, has_spend)

    item_key = item_adv.astype(np.int64) * n_product_lines + item_pl
    unique_leaf_adv = np.unique(np.stack([brand_leaf, brand_adv]), axis=1)
    unique_pl_adv = np.unique(np.stack([offer_pl, offer_adv]), axis=1)
    return Catalog(
        categories=categories, product_lines=product_lines, advertisers=advertisers,
        advertisers_truth=advertisers_truth, brands=brands, items=items,
        advertiser_spend=spend, preset_pool=preset_pool, leaf_ids=leaf_ids, pl_leaf=pl_leaf,
        popularity=popularity,
        advertiser_for_leaf=GroupedSampler(unique_leaf_adv[0], unique_leaf_adv[1],
                                           popularity[unique_leaf_adv[1]], n_leaves),
        advertiser_for_product_line=GroupedSampler(unique_pl_adv[0], unique_pl_adv[1],
                                                   popularity[unique_pl_adv[1]], n_product_lines),
        product_line_of_advertiser=GroupedSampler(unique_pl_adv[1], unique_pl_adv[0],
                                                  np.ones(unique_pl_adv.shape[1]), n_adv),
        product_line_of_leaf=GroupedSampler(pl_leaf, np.arange(n_product_lines),
                                            np.ones(n_product_lines), n_leaves),
        product_line_of_advertiser_in_leaf=_KeyedSampler(
            offer_adv.astype(np.int64) * n_leaves + pl_leaf[offer_pl], offer_pl),
        item_for_offer=_KeyedSampler(item_key, np.arange(n_items)),
        n_product_lines=n_product_lines,
        n_leaves=n_leaves,
        supplied_leaves=np.unique(brand_leaf),
    )


class _KeyedSampler(GroupedSampler):
    """A uniform GroupedSampler over sparse int64 keys (e.g. advertiser x product line)."""

    DENSE_LIMIT = 50_000_000  # key spaces up to this size use a dense lookup table

    def __init__(self, keys: np.ndarray, members: np.ndarray):
        self.keys, dense = np.unique(keys, return_inverse=True)
        super().__init__(dense, members, np.ones(len(keys)), len(self.keys))
        self.lookup = None
        if self.keys.size and self.keys[-1] < self.DENSE_LIMIT:
            self.lookup = np.full(self.keys[-1] + 1, -1, np.int64)
            self.lookup[self.keys] = np.arange(self.keys.size)

    def sample(self, keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.lookup is not None:
            dense = self.lookup[keys]
            valid = dense >= 0
        else:
            dense = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            valid = self.keys[dense] == keys
        if not valid.all():
            raise ValueError("_KeyedSampler: a queried key has no members")
        return super().sample(dense, rng)


def _embeddings(config: WorldConfig, rng: np.random.Generator, item_leaf: np.ndarray,
                item_adv: np.ndarray, n_leaves: int, n_adv: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm content embeddings: leaf + top category + advertiser style + noise."""
    ic, d = config.items, config.items.embedding_dim
    leaf_vectors = rng.normal(size=(n_leaves, d)) / np.sqrt(d)
    top_vectors = rng.normal(size=(config.taxonomy.n_top_categories, d)) / np.sqrt(d)
    style_vectors = rng.normal(size=(n_adv, d)) / np.sqrt(d)
    style_strength = ic.style_weight * rng.uniform(0, 2, n_adv)
    noise = rng.normal(size=(len(item_leaf), d)) / np.sqrt(d)
    top = item_leaf // config.taxonomy.leaves_per_top
    vectors = (ic.leaf_weight * leaf_vectors[item_leaf] + ic.top_weight * top_vectors[top]
               + style_strength[item_adv, None] * style_vectors[item_adv] + ic.noise_weight * noise)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    return vectors.astype(np.float32), style_strength


def _spend_and_preset_pool(config: WorldConfig, rng: np.random.Generator, budget: np.ndarray,
                           has_spend: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Daily spend = budget x utilisation (noisy around a per-advertiser level); top ranks = preset pool."""
    ac = config.advertisers
    n_adv, n_days = len(budget), config.n_days
    level = rng.beta(4.0, 2.0, n_adv)
    utilisation = np.clip(level[None, :] + rng.normal(0, ac.spend_utilisation_sd, (n_days, n_adv)), 0, 1)
    spend = np.round(budget[None, :] * utilisation * has_spend[None, :], 2)
    start = date.fromisoformat(config.start_date)
    days = [start + timedelta(days=d) for d in range(n_days)]
    spend_df = pl.DataFrame({
        "day": np.repeat(np.array(days, dtype="datetime64[D]"), n_adv),
        "advertiser_id": np.tile(np.arange(n_adv, dtype=np.int32), n_days),
        "spend": spend.ravel(),
    })
    spend_df = schema.conform(spend_df.filter(pl.col("spend") > 0), schema.ADVERTISER_SPEND, "advertiser_spend")
    preset = (spend_df.with_columns(
        pl.col("spend").rank("ordinal", descending=True).over("day").cast(pl.Int32).alias("rank"))
        .filter(pl.col("rank") <= ac.preset_pool_size)
        .rename({"spend": "revenue"}).select("day", "rank", "advertiser_id", "revenue")
        .sort("day", "rank"))
    return spend_df, schema.conform(preset, schema.PRESET_POOL, "preset_pool")
