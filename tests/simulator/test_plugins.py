"""A team's own components enter the market through the experiment config's `plugins` table."""

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.config import PluginConfig
from simulator.plugins import load_component, with_plugins
from simulator.stack import baseline_stack, load_predictions
from synthetic_data.config_io import ConfigError, to_dict
from synthetic_data.presets import preset
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLE = "examples.plugins.recent_advertisers:RecentAdvertiserGenerator"


class NoScore:
    def __init__(self, world):
        self.source = "no_score"


def failing_factory(world):
    raise RuntimeError("needs a model file")


@pytest.fixture
def in_repository(monkeypatch):
    monkeypatch.chdir(REPOSITORY)  # the example's package is importable from the repository's root


def test_a_component_that_does_not_fit_is_refused_naming_the_field_and_the_fix(tiny_world, in_repository):
    with pytest.raises(ConfigError, match=r"plugins.scorer.*'package.module:attribute'"):
        PluginConfig(scorer="mypkg.cg.MyScorer")
    with pytest.raises(ConfigError, match=r"plugins.scorer: cannot import 'no_such_package.cg'.*install the package"):
        load_component("no_such_package.cg:Scorer", tiny_world, "scorer", "plugins.scorer")
    with pytest.raises(ConfigError, match=r"plugins.scorer: .* has no callable 'Missing'"):
        load_component("examples.plugins.recent_advertisers:Missing", tiny_world, "scorer", "plugins.scorer")
    with pytest.raises(ConfigError, match=r"plugins.scorer: .*RecentAdvertiserGenerator without \['score'\]"):
        load_component(EXAMPLE, tiny_world, "scorer", "plugins.scorer")
    with pytest.raises(ConfigError, match=r"plugins.generators\[0\]: .*NoScore without \['generate'\]"):
        load_component(f"{__name__}:NoScore", tiny_world, "generators", "plugins.generators[0]")
    with pytest.raises(ConfigError, match=r"plugins.nightly: .*failing_factory\(world\) failed: RuntimeError"):
        load_component(f"{__name__}:failing_factory", tiny_world, "nightly", "plugins.nightly")


def test_plugged_generators_join_the_stack_under_their_own_source(tiny_world, in_repository):
    from synthetic_data.presets import preset as world_preset

    stack = baseline_stack(tiny_world, world_preset("tiny"), load_predictions(None, tiny_world)[0])
    plugged = with_plugins(stack, PluginConfig(generators=(EXAMPLE,)), tiny_world)
    assert [generator.source for generator in plugged.generators] == ["main", "llm", "recent_advertisers"]
    assert plugged.scorer is stack.scorer and plugged.response is stack.response
    requests = tiny_world.events.select("user_id").unique().sort("user_id").head(5).with_columns(
        request_id=pl.int_range(5, dtype=pl.Int64))
    candidates = plugged.generators[2].generate(requests)
    assert candidates.height > 0 and set(candidates["source"]) == {"recent_advertisers"}
    with pytest.raises(ConfigError, match=r"source name\(s\) \['recent_advertisers'\] are taken"):
        with_plugins(plugged, PluginConfig(generators=(EXAMPLE,)), tiny_world)


def test_the_example_plug_in_runs_in_adsim_ab_through_config_alone(tiny_world, tmp_path, in_repository):
    run = tmp_path / "run"
    tiny_world.write(run / "world")
    RunFolder(run).complete("world", to_dict(preset("tiny")), [f"{t}.parquet" for t in WORLD_TABLES])
    config = tmp_path / "experiment.toml"
    config.write_text(f"""
aa_splits = 20

[simulation]
days = 1

[plugins]
generators = ["{EXAMPLE}"]

[[arms]]
name = "control"
blend = {{ quotas = {{ main = 30, llm = 0, recent_advertisers = 0 }}, max_candidates = 30 }}

[[arms]]
name = "recent_advertisers_on"
blend = {{ quotas = {{ main = 30, llm = 0, recent_advertisers = 10 }}, max_candidates = 30 }}
""")
    result = CliRunner().invoke(app, ["ab", "--run", str(run), "--stack", "baseline", "--config", str(config),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    funnels = pl.read_parquet(run / "ab" / "funnels.parquet").filter(pl.col("source") == "recent_advertisers")
    won = dict(funnels.filter(pl.col("stage") == "won_auction").select("arm", "count").rows())
    assert won["recent_advertisers_on"] > 0 and won.get("control", 0) == 0
    assert f"plug-in generator: {EXAMPLE}" in RunFolder(run).stage_record("ab")["config"]["stack"]

    misspelt = config.read_text().replace("recent_advertisers = 10", "recent_advertiser = 10")
    config.write_text(misspelt.replace("main = 30, llm = 0, recent_advertisers = 0", "two_tower = 30, llm = 0, "
                                                                                     "recent_advertisers = 0"))
    refused = CliRunner().invoke(app, ["ab", "--run", str(run), "--stack", "baseline", "--config", str(config),
                                       "--force", "--quiet"])
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())
    assert "arms[control].blend.quotas: ['two_tower'] name no source of the stack; ['main'] have no quota" in message
    assert "['recent_advertiser'] name no source" in message
