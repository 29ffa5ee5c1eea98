"""An example plug-in candidate generator: items of the advertisers each user engaged with most recently.

A team's component lives in its own package; adsim imports it from the `plugins` table of an
experiment config (docs/plugins.md), here from this repository's root:

    [plugins]
    generators = ["examples.plugins.recent_advertisers:RecentAdvertiserGenerator"]

and each arm gives its source a quota (`blend.quotas.recent_advertisers`). It reads only the world's
observable tables (events, items), never `*_truth`, and answers the CandidateGenerator contract of
simulator/protocols.py: schema.CANDIDATES rows for a batch of requests, from state that does not
change within a day.
"""

from __future__ import annotations

import polars as pl

from synthetic_data import schema
from synthetic_data.schema import World


class RecentAdvertiserGenerator:
    """Per user, the `advertisers_per_user` advertisers of their latest events (score 1 / recency rank),
    each with its `items_per_advertiser` most engaged-with items."""

    source = "recent_advertisers"

    def __init__(self, world: World, advertisers_per_user: int = 5, items_per_advertiser: int = 3):
        recent = (world.events.filter(pl.col("advertiser_id").is_not_null())
                  .group_by("user_id", "advertiser_id").agg(pl.col("ts").max())
                  .sort(["user_id", "ts", "advertiser_id"], descending=[False, True, False])
                  .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"))
                  .filter(pl.col("rank") <= advertisers_per_user))
        top_items = (world.events.filter(pl.col("item_id").is_not_null()).group_by("item_id").len("engagements")
                     .join(world.items.select("item_id", "advertiser_id"), on="item_id")
                     .sort(["engagements", "item_id"], descending=[True, False])
                     .group_by("advertiser_id", maintain_order=True).head(items_per_advertiser))
        self.table_ = (recent.join(top_items.select("advertiser_id", "item_id"), on="advertiser_id")
                       .select("user_id", "item_id", "advertiser_id", (1.0 / pl.col("rank")).alias("score")))

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        candidates = (requests.select("request_id", "user_id").join(self.table_, on="user_id")
                      .with_columns(source=pl.lit(self.source)))
        return schema.conform(candidates.select(list(schema.CANDIDATES)), schema.CANDIDATES, self.source)
