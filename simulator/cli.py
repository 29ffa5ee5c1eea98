"""The `adsim` command: one sub-command per stage, plus `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from benchmarks.cli import app as bench_app
from llm_predictor.cli import app as llm_app
from ranking.cli import app as rank_app
from retrieval.cli import app as retrieval_app
from simulator.demo import demo
from synthetic_data.cli import world
from synthetic_data.real.cli import app as real_app

app = typer.Typer(help="adsim: offline A/B testbed for an LLM advertiser predictor in an ads stack.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("world")(world)
app.add_typer(llm_app, name="llm")
app.add_typer(retrieval_app, name="retrieval")
app.add_typer(rank_app, name="rank")
app.command("demo")(demo)
app.add_typer(real_app, name="real")
app.add_typer(bench_app, name="bench")

RunOption = Annotated[Path, typer.Option(help="run folder holding world/ (e.g. from `adsim world --out`)")]
ConfigOption = Annotated[Optional[Path], typer.Option(help="experiment TOML (arms, simulation, design, method)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: e.g. simulation.days=5")]
PredictionsOption = Annotated[Optional[Path], typer.Option(
    help="PREDICTIONS parquet for the LLM generator (default: the history baseline)")]
StackOption = Annotated[str, typer.Option(
    help="which models run the market: trained (the run's two-tower, generators and DCN ranker) "
         "or baseline (model-free: category popularity, predicted-advertiser filter, history scorer)")]
NightlyOption = Annotated[str, typer.Option(
    help="nightly re-inference of users with new activity: none, history (most-converted advertisers), llm "
         "(the run's GRPO model ranking the allowed names; needs `adsim llm grpo`) or llm:METHOD (e.g. llm:chosen), "
         "over world + simulated events, fed to the LLM generator and the ranker")]
NightlyUsersOption = Annotated[int, typer.Option(help="--nightly llm: users re-inferred per night (a seeded sample "
                                                      "of the day's active users; the inference budget)")]
ObjectiveOption = Annotated[str, typer.Option(help="two-tower objective of the trained stack (its retrieval_* stages)")]
EngineOption = Annotated[str, typer.Option(help="local (one market after the other) or ray (the independent markets as "
                                                "Ray tasks of one CPU each): the same numbers, the same stage record")]
AddressOption = Annotated[Optional[str], typer.Option(
    help="--engine ray: the Ray cluster to join (auto, ray://host:10001); default a local ray.init() on every core")]


def _start_engine(engine: str, address: Optional[str]) -> None:
    """Check --engine and --address and, for ray, start or join the cluster (errors exit 2)."""
    from rich.console import Console

    from synthetic_data.ray_cluster import connect, require_engine

    try:
        require_engine(engine)
        if address is not None and engine != "ray":
            raise ValueError(f"--address {address} joins a Ray cluster: give it with --engine ray")
        if engine == "ray":
            connect(address)
    except (ImportError, ValueError) as error:
        Console().print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error


def _prepare(run: Path, config: Optional[Path], overrides: Optional[list[str]], stack: str,
             predictions: Optional[Path], objective: str, nightly: str, nightly_users: int,
             extra_quotas: tuple[int, ...] = (), sweep_source: Optional[str] = None):
    """Load the run's world, resolve the experiment config and build the stack (errors exit 2)."""
    from rich.console import Console

    from simulator.config import ExperimentConfig
    from simulator.experiment import check_quotas, sweep_arms
    from simulator.plugins import with_plugins
    from simulator.stack import (BASELINE_SOURCES, TRAINED_SOURCES, baseline_stack, largest_quotas, load_predictions,
                                 nightly_job, trained_arms, trained_stack)
    from synthetic_data.config import WorldConfig
    from synthetic_data.config_io import ConfigError, from_dict, load_config
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import load_world

    console = Console()
    folder = RunFolder(run)
    record = folder.stage_record("world")
    if record is None:
        console.print(f"[red]error:[/red] {run}/world is missing: run `adsim world --out {run}` first")
        raise typer.Exit(2)
    if stack not in ("trained", "baseline"):
        console.print(f"[red]error:[/red] --stack must be 'trained' or 'baseline', got {stack!r}")
        raise typer.Exit(2)
    try:
        base = {"arms": trained_arms()} if stack == "trained" else None
        experiment = load_config(ExperimentConfig, path=config, base=base, overrides=overrides)
        world_config = from_dict(WorldConfig, record["config"])
    except ConfigError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    console.print(f"loading {run / 'world'} and building the {stack} stack ...")
    world_tables = load_world(run / "world")
    try:
        predictions_table, predictions_label = load_predictions(predictions, world_tables)
        job = nightly_job(nightly, world_tables, run, nightly_users)
        llm_source = TRAINED_SOURCES[2] if stack == "trained" else BASELINE_SOURCES[1]
        arms = experiment.arms + (sweep_arms(experiment.arms[0], sweep_source or llm_source, list(extra_quotas))
                                  if extra_quotas else ())
        if stack == "trained":
            market_stack = trained_stack(run, world_tables, world_config, predictions_table, objective,
                                         largest_quotas(arms), job)
            label = f"trained (two-tower `{objective}`, DCN ranker; predictions: {predictions_label}"
        else:
            market_stack = baseline_stack(world_tables, world_config, predictions_table, job)
            label = f"baseline (category popularity + predicted-advertiser filter; predictions: {predictions_label}"
        label += f"; nightly re-inference: {nightly})"
        market_stack = with_plugins(market_stack, experiment.plugins, world_tables)
        check_quotas(arms, [generator.source for generator in market_stack.generators])
        label += "".join(f"; plug-in {kind}: {path}" for kind, path in (
            *(("generator", path) for path in experiment.plugins.generators), ("scorer", experiment.plugins.scorer),
            ("response", experiment.plugins.response), ("nightly", experiment.plugins.nightly)) if path)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    return console, folder, experiment, world_tables, market_stack, label, llm_source


@app.command("ab")
def ab(run: RunOption = Path("runs/demo"), config: ConfigOption = None, set_: SetOption = None,
       stack: StackOption = "trained", predictions: PredictionsOption = None, objective: ObjectiveOption = "clicks",
       nightly: NightlyOption = "history", nightly_users: NightlyUsersOption = 100,
       force: Annotated[bool, typer.Option(help="re-run even if ab/ is complete with this config")] = False,
       quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
       engine: EngineOption = "local", address: AddressOption = None) -> None:
    """Offline A/B experiment on the simulated market (paper Table 6): writes <run>/ab/."""
    from simulator.stages import ab_stage

    _start_engine(engine, address)
    console, folder, experiment, world_tables, market_stack, label, _ = _prepare(
        run, config, set_, stack, predictions, objective, nightly, nightly_users)
    summary = ab_stage(folder, experiment, world_tables, market_stack, label, progress=not quiet, force=force,
                       engine=engine)
    typer.echo((folder.root / "ab" / "report.md").read_text())
    console.print(f"A/B done in {summary['seconds']} s; wrote {folder.root / 'ab'}")


@app.command("sweep")
def sweep(quota: Annotated[str, typer.Option(help="comma-separated L0 quotas; the first is the control")
                           ] = "0,25,50,100,200",
          source: Annotated[Optional[str], typer.Option(help="the source whose quota is swept (default: the LLM "
                                                             "generator)")] = None,
          run: RunOption = Path("runs/demo"), config: ConfigOption = None, set_: SetOption = None,
          stack: StackOption = "trained", predictions: PredictionsOption = None,
          objective: ObjectiveOption = "clicks", nightly: NightlyOption = "history",
          nightly_users: NightlyUsersOption = 100,
          force: Annotated[bool, typer.Option(help="re-run even if sweep/ is complete with this config")] = False,
          quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
          engine: EngineOption = "local", address: AddressOption = None) -> None:
    """Sweep the LLM generator's L0 quota: RoAS, diversity and survival per quota, with plots."""
    from simulator.stages import sweep_stage

    try:
        quotas = [int(q) for q in quota.split(",") if q.strip()]
    except ValueError as error:
        raise typer.BadParameter(f"--quota must be comma-separated integers like 0,25,50, got {quota!r}") from error
    _start_engine(engine, address)
    console, folder, experiment, world_tables, market_stack, label, llm_source = _prepare(
        run, config, set_, stack, predictions, objective, nightly, nightly_users, tuple(quotas), source)
    summary = sweep_stage(folder, experiment, world_tables, market_stack, label, source or llm_source, quotas,
                          progress=not quiet, force=force, engine=engine)
    typer.echo((folder.root / "sweep" / "report.md").read_text())
    console.print(f"sweep done in {summary['seconds']} s; wrote {folder.root / 'sweep'} and {folder.root / 'plots'}")


@app.command("oracle")
def oracle(q: Annotated[float, typer.Option(help="target Recall@20 on the V1 eval labels, in [0, 1]")],
           run: RunOption = Path("runs/demo"),
           users: Annotated[str, typer.Option(help="whose lists: serving, heldout or eval, the user sets of "
                                                   "`adsim llm predict --users`, or everyone (every user at "
                                                   "every label anchor: Table 5 at the world's size)")] = "serving",
           llm_preset: Annotated[str, typer.Option(help="the LLM preset whose user sets (sizes, sample seed) "
                                                        "the lists cover")] = "small",
           tolerance: Annotated[Optional[float], typer.Option(help="accepted |Recall@20 - q| (default 0.02)")] = None,
           max_steps: Annotated[Optional[int], typer.Option(help="bisection steps on w (default 20)")] = None,
           seed: Annotated[Optional[int], typer.Option(help="seed of the draws (default 0)")] = None,
           clamp: Annotated[bool, typer.Option(help="measure a q outside the reachable range at the nearest end "
                                                    "(w = 0 or 1) instead of exiting")] = False,
           all_users: Annotated[bool, typer.Option(help="lists for every user of the set, not the LLM preset's "
                                                        "sample (small samples held-out users); the stage name "
                                                        "ends in _all")] = False,
           ranking: Annotated[str, typer.Option(help="what the lists rank by: impression (true expected "
                                                    "conversions of an impression, what the market rewards) or "
                                                    "next_conversion (the world's next-conversion probability, "
                                                    "what the labels are drawn from: the predictor's ceiling; "
                                                    "the stage is oracle_next_q<q>_<users>)")] = "impression",
           force: Annotated[bool, typer.Option(help="re-run even if the stage is complete with this config")] = False,
           ) -> None:
    """Positive control (reads *_truth): lists ranked by the true response, mixed with popularity draws to
    Recall@20 = q; writes <run>/oracle_q<q>_<users>/{predictions,interests}.parquet for --predictions."""
    from rich.console import Console

    from simulator.oracle import OracleConfig, oracle_stage

    console = Console()
    chosen = {"tolerance": tolerance, "max_steps": max_steps, "seed": seed}
    try:
        config = OracleConfig(q=q, clamp=clamp, all_users=all_users, ranking=ranking,
                              **{name: value for name, value in chosen.items() if value is not None})
        summary, is_skipped = oracle_stage(run, config, users, llm_preset, force)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    stage = run / config.stage(users)
    if is_skipped:
        console.print(f"[green]{stage.name}: complete with this config; skipping[/green]")
    recall = " / ".join(f"{summary[f'recall_at_{k}']:.3f} [{summary[f'recall_at_{k}_low']:.3f}, "
                        f"{summary[f'recall_at_{k}_high']:.3f}]" for k in (1, 5, 20))
    console.print(f"{summary['source']} (a control that reads *_truth): w = {summary['weight']:.4f}; "
                  f"Recall@1/5/20 on the {summary['calibration_labels']}: {recall}; reachable Recall@20 "
                  f"{summary['floor_recall_at_20']:.3f} (w = 0) to {summary['ceiling_recall_at_20']:.3f} (w = 1); "
                  f"{summary['lists']} lists of {summary['users']} users in {stage}")


@app.command("sensitivity")
def sensitivity(run: RunOption = Path("runs/demo"),
                q_grid: Annotated[Optional[str], typer.Option(
                    help="comma-separated target Recall@20 values of the oracle (default 0,0.25,0.5,0.75,1); "
                         "an unreachable q is skipped with the measured limit")] = None,
                parts: Annotated[Optional[str], typer.Option(
                    help="lift (Table 5), ab (the A/B) or lift,ab (default)")] = None,
                method: Annotated[Optional[list[str]], typer.Option(
                    help="a real method, repeatable: NAME=HELDOUT[,SERVING] PREDICTIONS parquets (held-out lists: "
                         "Recall@20 and the lift, with the interests.parquet beside them if any; serving: the A/B)")]
                = None,
                stack: Annotated[Optional[str], typer.Option(
                    help="the A/B's market: baseline (model-free, the default) or trained (the run's models and "
                         "`adsim ab`'s trained arms)")] = None,
                llm_preset: Annotated[Optional[str], typer.Option(
                    help="the LLM preset whose serving and heldout user sets the lists cover (default small)")] = None,
                config: Annotated[Optional[Path], typer.Option(help="sensitivity TOML (any SensitivityConfig field, "
                                                                     "with its ranking and experiment tables)")] = None,
                set_: Annotated[Optional[list[str]], typer.Option(
                    "--set", help="override a field: e.g. tolerance=0.05, experiment.simulation.days=1")] = None,
                force: Annotated[bool, typer.Option(help="re-measure every source even if complete")] = False,
                quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
                engine: Annotated[str, typer.Option(help="local or ray (each source's A/B as a Ray task while this "
                                                         "process measures the next sources' lists and Table 5): "
                                                         "the same numbers, the same records")] = "local",
                address: AddressOption = None) -> None:
    """Dose-response (issue #15): Table 5 and the A/B against Recall@20 for the oracle at each q, the random
    control and each --method; writes <run>/sensitivity/ and plots/sensitivity_*.png."""
    import json

    from rich.console import Console

    from simulator.sensitivity import SensitivityConfig, method_overrides, sensitivity_stage
    from simulator.stack import trained_arms
    from synthetic_data.config_io import load_config

    console = Console()
    try:
        grid = None if q_grid is None else [float(q) for q in q_grid.split(",")]
    except ValueError as error:
        raise typer.BadParameter(f"--q-grid must be comma-separated numbers like 0,0.5,1, got {q_grid!r}") from error
    _start_engine(engine, address)
    chosen = {"q_grid": grid, "parts": parts and [part.strip() for part in parts.split(",")], "stack": stack,
              "llm_preset": llm_preset}
    try:
        overrides = [f"{name}={json.dumps(value)}" for name, value in chosen.items() if value is not None]
        overrides += [override for spec in method or [] for override in method_overrides(spec)] + list(set_ or [])
        resolved = load_config(SensitivityConfig, path=config, overrides=overrides,
                               base={"experiment": {"arms": trained_arms()}} if stack == "trained" else None)
        summary = sensitivity_stage(run, resolved, progress=not quiet, force=force, engine=engine)
    except (FileNotFoundError, ValueError) as error:  # ConfigError and SchemaError are ValueErrors
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    typer.echo((run / "sensitivity" / "report.md").read_text())
    console.print(f"sensitivity done in {summary['seconds']} s; wrote {run / 'sensitivity'} and {run / 'plots'}")


@app.command("results")
def results(run: Annotated[Path, typer.Option(help="a run folder `adsim demo` completed (e.g. runs/demo)")]
            = Path("runs/demo"),
            out: Annotated[Path, typer.Option(help="the page whose generated part is (re)written")]
            = Path("docs/results.md")) -> None:
    """docs/results.md's generated part from a run folder's records (issue #16); the rest of the page is kept."""
    from rich.console import Console

    from simulator.results_page import write_results_page

    console = Console()
    try:
        write_results_page(run, out)
    except (FileNotFoundError, ValueError) as error:  # MissingRecordError names each missing file and its command
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    console.print(f"wrote the generated part of {out} from the records of {run}")

if __name__ == "__main__":
    app()
