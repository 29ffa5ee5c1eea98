"""Strict typed configs from TOML and overrides (synthetic_data/config_io.py)."""

from dataclasses import dataclass, field

import pytest

from synthetic_data.config_io import ConfigError, apply_overrides, from_dict, load_config, require


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    names: tuple[str, ...] = ("a",)
    weights: dict[str, float] = field(default_factory=lambda: {"x": 0.5, "y": 0.5})

    def __post_init__(self):
        require(self.rate >= 0, "inner.rate", "must be >= 0")


@dataclass(frozen=True)
class Outer:
    seed: int = 1
    inner: Inner = field(default_factory=Inner)


def test_toml_then_overrides_layer_on_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[inner]\nrate = 2\n")
    config = load_config(Outer, path, overrides=["inner.weights.x=0.9", "inner.names=['p', 'q']"])
    assert config == Outer(seed=3, inner=Inner(rate=2.0, names=("p", "q"), weights={"x": 0.9, "y": 0.5}))


@pytest.mark.parametrize("data, message", [
    ({"sede": 1}, r"unknown config field\(s\) \['sede'\]"),
    ({"inner": {"rat": 1}}, r"\['inner.rat'\]"),
    ({"seed": "one"}, "'seed': expected an integer"),
    ({"seed": True}, "'seed': expected an integer"),
    ({"inner": {"rate": -1}}, "'inner.rate': must be >= 0"),
    ({"inner": 3}, "'inner': expected a table"),
])
def test_bad_values_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_override_syntax_errors_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_overrides({}, ["seed"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.toml")


def test_null_unsets_an_optional_field_and_stays_a_string_elsewhere():
    @dataclass(frozen=True)
    class Sampled:
        max_users: int | None = 10
        label: str = "x"

    assert load_config(Sampled, overrides=["max_users=null"]).max_users is None
    assert load_config(Sampled, overrides=["max_users=3", "label=nullable"]) == Sampled(3, "nullable")
    with pytest.raises(ConfigError, match="label"):
        load_config(Sampled, overrides=["label=null"])
