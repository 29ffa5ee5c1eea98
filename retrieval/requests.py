"""The request table every candidate generator answers (paper 3.6.1: one row per ad request).

Columns: `request_id` (Int64, unique), `user_id` (Int64) and `ts` (UTC datetime); user features
are computed from the events strictly before `ts`. Kept apart from the generators so that
callers (the simulator, evaluation) can build requests without importing torch.
"""

from __future__ import annotations

import polars as pl

from synthetic_data.schema import UTC_TS, SchemaError, validate

REQUESTS = {"request_id": pl.Int64, "user_id": pl.Int64, "ts": UTC_TS}


def validate_requests(requests: pl.DataFrame) -> pl.DataFrame:
    """Check the request contract, including unique request IDs."""
    validate(requests, REQUESTS, "requests")
    if requests["request_id"].n_unique() != requests.height:
        raise SchemaError("requests: request_id must be unique; give each request its own ID")
    return requests
