"""Ray for work that outgrows one process (paper 3.7; issue #17): one place that starts or joins a Ray
cluster, so batch inference (`adsim llm predict --engine ray`) and the fan-out of sweeps and seed runs
(`--engine ray`) connect the same way: a local `ray.init()` here, an existing cluster by address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from tqdm.auto import tqdm

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


def _one_thread_per_task(function: Callable, item, *shared):
    """Run one task with one thread per numerical op (torch, BLAS, OpenMP): each Ray task holds one CPU,
    so two workers on two cores must not each start a pool of every core."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return function(item, *shared)


def map_tasks(function: Callable, items: Iterable, shared: tuple = (), engine: str = "local",
              progress: bool = False, desc: str = "tasks") -> Iterator:
    """Yield `function(item, *shared)` for each item, in the items' order.

    engine "local": one after the other in this process, lazily (the caller acts on each result before
    the next item runs). engine "ray": one Ray task of one CPU per item, all submitted at once (`connect()`
    first, or a local cluster is started), the `shared` arguments put in the object store once; `function`
    and the items must be picklable. `progress` shows a bar of the results returned. A task's exception is
    raised here (Ray's error is an instance of the task's exception class). Raises ValueError for an
    unknown engine.
    """
    require_engine(engine)
    bar = tqdm(desc=desc, unit="task", disable=not progress)
    if engine == "local":
        for item in items:
            yield function(item, *shared)
            bar.update(1)
    else:
        import ray

        connect()
        references = [ray.put(value) for value in shared]
        task = ray.remote(num_cpus=1)(_one_thread_per_task)
        pending = [task.remote(function, item, *references) for item in items]
        bar.total = len(pending)
        for reference in pending:
            yield ray.get(reference)
            bar.update(1)
    bar.close()
