"""The web corpus: text that ties advertiser names to brands, domains, product lines and categories.

This is the world knowledge a language model can learn by continued pre-training and an ID model
cannot (DESIGN: the world). Documents paraphrase a few templates; category pages list each leaf's
most popular sellers, as shopping guides on the real web do.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.config import CorpusConfig

ADVERTISER_TEMPLATES = (
    "{name} ({domain}) is a {top} retailer known for {lines}. Its brands include {brands}.",
    "Shop {brands} at {domain}. {name} sells {lines} in the {leaf} category.",
    "Looking for {first_line}? {name} offers {brands} products online at {domain}.",
    "{name} owns the brands {brands}. The company runs the store {domain} for {top} shoppers.",
    "Review: {name} has a wide range of {lines}; order on {domain} or find {brands} in stores.",
)


def _fill(template: str, frame: pl.DataFrame) -> pl.Expr:
    """A polars expression rendering `template` with the frame's columns (vectorised)."""
    pieces, rest = [], template
    while "{" in rest:
        before, rest = rest.split("{", 1)
        field, rest = rest.split("}", 1)
        pieces += [pl.lit(before), pl.col(field)]
    pieces.append(pl.lit(rest))
    return pl.concat_str(pieces)


def build_corpus(config: CorpusConfig, categories: pl.DataFrame, advertisers: pl.DataFrame,
                 advertisers_truth: pl.DataFrame, brands: pl.DataFrame, items: pl.DataFrame,
                 rng: np.random.Generator) -> pl.DataFrame:
    """Advertiser, brand, product and category documents (CORPUS schema)."""
    names = categories.select("category_id", "name", "parent_id")
    brand_lists = (brands.sort("brand_id").group_by("advertiser_id", maintain_order=True)
                   .agg(pl.col("name").str.join(", ").alias("brands")))
    profile = (advertisers.select("advertiser_id", "name", "domain", "category_id", "product_lines")
               .join(brand_lists, on="advertiser_id")
               .join(names.rename({"name": "leaf", "parent_id": "top_id"}), on="category_id")
               .join(names.select(pl.col("category_id").alias("top_id"), pl.col("name").alias("top")), on="top_id")
               .with_columns(pl.col("product_lines").list.head(3).list.join(", ").alias("lines"),
                             pl.col("product_lines").list.first().alias("first_line"))
               .sort("advertiser_id"))
    frames = []
    offset = rng.integers(0, len(ADVERTISER_TEMPLATES), profile.height)
    rendered = profile.select(*[_fill(t, profile).alias(f"t{i}") for i, t in enumerate(ADVERTISER_TEMPLATES)])
    rendered = rendered.to_numpy()
    for copy in range(config.documents_per_advertiser):
        template_index = (offset + copy) % len(ADVERTISER_TEMPLATES)
        texts = rendered[np.arange(profile.height), template_index]
        frames.append(pl.DataFrame({"kind": "advertiser", "advertiser_id": profile["advertiser_id"],
                                    "text": texts}))
    owned = brands.join(advertisers.select("advertiser_id", pl.col("name").alias("owner"), "domain"),
                        on="advertiser_id").sort("brand_id")
    frames.append(owned.select(pl.lit("brand").alias("kind"), "advertiser_id",
                               _fill("{name} is a brand of {owner}, sold at {domain}.", owned).alias("text")))
    if config.product_documents_per_advertiser:
        picked = (items.with_columns(pl.Series("r", rng.random(items.height)))
                  .sort("advertiser_id", "r").group_by("advertiser_id", maintain_order=True)
                  .head(config.product_documents_per_advertiser)
                  .join(brands.select("brand_id", pl.col("name").alias("brand")), on="brand_id")
                  .join(advertisers.select("advertiser_id", "name", "domain"), on="advertiser_id")
                  .with_columns(pl.col("price").round(2).cast(pl.String).alias("price_text")))
        frames.append(picked.select(pl.lit("product").alias("kind"), "advertiser_id", _fill(
            "The {title} from {brand} by {name} costs ${price_text} at {domain}.", picked).alias("text")))
    if config.include_category_documents:
        top_sellers = (advertisers.select("advertiser_id", "name", "category_id")
                       .join(advertisers_truth.select("advertiser_id", "popularity"), on="advertiser_id")
                       .sort("category_id", "popularity", descending=[False, True])
                       .group_by("category_id", maintain_order=True).head(5)
                       .group_by("category_id", maintain_order=True).agg(pl.col("name").str.join(", "))
                       .join(names.select("category_id", pl.col("name").alias("leaf")), on="category_id"))
        frames.append(top_sellers.select(pl.lit("category").alias("kind"),
                                         pl.lit(None, pl.Int32).alias("advertiser_id"),
                                         _fill("Popular {leaf} shops include {name}.", top_sellers).alias("text")))
    corpus = pl.concat([f.with_columns(pl.col("advertiser_id").cast(pl.Int32)) for f in frames])
    corpus = corpus.with_row_index("doc_id").with_columns(pl.col("doc_id").cast(pl.Int32))
    return schema.conform(corpus, schema.CORPUS, "corpus")
