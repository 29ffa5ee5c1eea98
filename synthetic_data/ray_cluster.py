"""Ray for work that outgrows one process (paper 3.7; issue #17): one place that starts or joins a Ray
cluster, so batch inference (`adsim llm predict --engine ray`) and the fan-out of sweeps and seed runs
(`--engine ray`) connect the same way: a local `ray.init()` here, an existing cluster by address.
"""

from __future__ import annotations

ENGINES = ("local", "ray")


def require_engine(engine: str) -> None:
    """Raise ValueError unless `engine` is one of ENGINES (for the `--engine` options)."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` ("auto", "ray://host:10001", ...) or, with None, start a local
    one with `num_cpus` workers (None: every core). A no-op when this process is already connected.

    Raises ImportError naming the install command when Ray is absent.
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError("the ray engine needs Ray: `make install` installs it (the `dev` extra), or "
                          "`pip install 'ray[data]==2.60.0'`; or use --engine local") from error
    if ray.is_initialized():
        return
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
