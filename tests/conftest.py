"""Shared fixtures: a tiny generated world (seconds, session-scoped) and its folder on disk."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world():
    """The `tiny` preset world (a `synthetic_data.schema.World`), generated once per test session."""
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    return generate_world(preset("tiny"), progress=False)


@pytest.fixture(scope="session")
def tiny_world_dir(tiny_world, tmp_path_factory):
    """The tiny world written as Parquet files (a run's world/ folder)."""
    directory = tmp_path_factory.mktemp("tiny_run") / "world"
    tiny_world.write(directory)
    return directory
