"""A team's own components in the market, named in an experiment config instead of edited into adsim.

The `plugins` table of an `ExperimentConfig` (what `adsim ab --config` and `adsim sweep` load) names
each component by import path, `package.module:attribute`: extra candidate generators, or a scorer,
true response model or nightly predictor replacing the stack's. The attribute is a factory (a class
or a function) called with the run's `World`; what it returns must fit its protocol in
simulator/protocols.py, and a component that does not is refused before any market runs, naming the
config field, the missing members and the fix. The current directory is importable, as for a
project's own code (docs/plugins.md; `examples/plugins/` holds one such component).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import replace
from pathlib import Path

from simulator.config import PluginConfig
from simulator.engine import Stack
from simulator.protocols import CandidateGenerator, NightlyJob, ResponseModel, Scorer
from synthetic_data.config_io import ConfigError
from synthetic_data.schema import World


_PROTOCOLS = {"generators": CandidateGenerator, "scorer": Scorer, "response": ResponseModel, "nightly": NightlyJob}


def protocol_members(protocol: type) -> tuple[list[str], list[str]]:
    """A protocol's attributes (annotated) and methods (`__call__` included), read off simulator/protocols.py."""
    methods = [name for name, value in vars(protocol).items()
               if callable(value) and (not name.startswith("_") or name == "__call__")]
    return list(getattr(protocol, "__annotations__", {})), methods


def load_component(path: str, world: World, kind: str, field: str) -> object:
    """Import `path`'s factory, call it with `world` and check what it made against `kind`'s protocol.

    Raises ConfigError naming `field` (e.g. plugins.scorer) when the module or attribute is missing,
    the factory fails, or the component lacks one of its protocol's members.
    """
    protocol = _PROTOCOLS[kind]
    attributes, methods = protocol_members(protocol)
    module_name, _, attribute = path.partition(":")
    if str(Path.cwd()) not in sys.path:  # a project's own packages, as `python -m` would see them
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{field}: cannot import {module_name!r} ({error}); install the package that holds it "
                          f"or run from the folder that contains it") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"{field}: {module_name} has no callable {attribute!r}; name a class or function that "
                          f"takes the run's World and returns a {protocol.__name__}")
    try:
        component = factory(world)
    except Exception as error:
        raise ConfigError(f"{field}: {path}(world) failed: {type(error).__name__}: {error}") from error
    missing = ([name for name in attributes if not hasattr(component, name)]
               + [name for name in methods if not callable(getattr(component, name, None))])
    if missing:
        raise ConfigError(f"{field}: {path} made a {type(component).__name__} without {missing}; a "
                          f"{protocol.__name__} needs {attributes + methods} (simulator/protocols.py: "
                          f"{inspect.getdoc(protocol).splitlines()[0]})")
    return component


def with_plugins(stack: Stack, plugins: PluginConfig, world: World) -> Stack:
    """`stack` with the configured components added (generators) or swapped in (scorer, response,
    nightly). Raises ConfigError (see `load_component`), also for a generator whose source name
    the stack already has."""
    generators = tuple(load_component(path, world, "generators", f"plugins.generators[{i}]")
                       for i, path in enumerate(plugins.generators))
    sources = [generator.source for generator in (*stack.generators, *generators)]
    duplicated = sorted({source for source in sources if sources.count(source) > 1})
    if duplicated:
        raise ConfigError(f"plugins.generators: source name(s) {duplicated} are taken; give each generator "
                          f"its own `source` (the stack has {[g.source for g in stack.generators]})")
    swapped = {kind: load_component(path, world, kind, f"plugins.{kind}")
               for kind, path in (("scorer", plugins.scorer), ("response", plugins.response),
                                  ("nightly", plugins.nightly)) if path}
    if "scorer" in swapped:  # the coverage of the ranker's LLM features no longer describes the scorer
        swapped["llm_feature_coverage"] = {}
    return replace(stack, generators=stack.generators + generators, **swapped)
