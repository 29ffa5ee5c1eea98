"""Retrieval configs: defaults run, bad values name their field, TOML and overrides resolve strictly."""

from __future__ import annotations

import pytest

from retrieval.config import GeneratorConfig, IndexConfig, RetrievalConfig, TrainingConfig
from synthetic_data.config_io import ConfigError, load_config, to_dict


@pytest.mark.parametrize("build, field", [
    (lambda: TrainingConfig(batch_size=1), "batch_size"),
    (lambda: TrainingConfig(temperature=0.0), "temperature"),
    (lambda: TrainingConfig(min_click_weight=1.5), "min_click_weight"),
    (lambda: GeneratorConfig(l0_quota=0), "l0_quota"),
    (lambda: GeneratorConfig(popularity_max_user_events=-2), "popularity_max_user_events"),
    (lambda: IndexConfig(ivf_lists=-1), "ivf_lists"),
])
def test_bad_values_name_the_field(build, field):
    with pytest.raises(ConfigError, match=field):
        build()


def test_toml_and_overrides_resolve_into_the_nested_config(tmp_path):
    path = tmp_path / "retrieval.toml"
    path.write_text('[training]\nobjective = "conversions"\nepochs = 2\n[generators]\nl0_quota = 30\n')
    config = load_config(RetrievalConfig, path=path, overrides=["index.approximate_kind=hnsw",
                                                                "evaluation.k=[10, 20]"])
    assert config.training.objective == "conversions" and config.training.epochs == 2
    assert config.generators.l0_quota == 30 and config.index.approximate_kind == "hnsw"
    assert config.evaluation.k == (10, 20)
    assert load_config(RetrievalConfig, base=to_dict(config)) == config
    with pytest.raises(ConfigError, match="training.objective"):
        load_config(RetrievalConfig, overrides=["training.objective=views"])
    with pytest.raises(ConfigError, match="training.epoch"):
        load_config(RetrievalConfig, overrides=["training.epoch=3"])
