"""Training curves of a training stage, as a PNG beside its model (issue 14: a stage's steps are chosen
from its validation curve, never from eval users): the loss curves of CPT and SFT, GRPO's reward curves."""

from __future__ import annotations

from pathlib import Path


def _axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.5))


def _save(figure, axis, path: Path, ylabel: str, title: str) -> Path:
    import matplotlib.pyplot as plt

    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_loss_curves(summary: dict, path: Path, title: str) -> Path:
    """Plot `summary`'s train losses (`loss_steps`, `losses`) and validation losses (`validation_losses`,
    [step, loss] pairs; may be empty) against the step, and the step of the model kept (`best_step`, when
    set); returns `path`."""
    figure, axis = _axis()
    axis.plot(summary["loss_steps"], summary["losses"], label="train", color="tab:blue")
    if summary["validation_losses"]:
        steps, losses = zip(*summary["validation_losses"])
        axis.plot(steps, losses, "o-", label="validation (held-out train users)", color="tab:orange")
    if summary.get("best_step") is not None:
        axis.axvline(summary["best_step"], color="tab:gray", linestyle="--",
                     label=f"model kept: step {summary['best_step']:,} (lowest validation loss)")
    axis.set_yscale("log")
    return _save(figure, axis, path, "loss (nats per token, log scale)", title)


def plot_reward_curves(summary: dict, path: Path, title: str) -> Path:
    """Plot a GRPO run's mean reward per logged step (`loss_steps`): of the sampled lists (`rewards`) and of the
    greedy list, the served top 20 (`greedy_rewards`); returns `path`. Within the first epoch each batch is
    scored before the model trains on it, so these are rewards on prompts it has not seen yet."""
    figure, axis = _axis()
    steps = summary["loss_steps"][:len(summary["rewards"])]
    axis.plot(steps, summary["rewards"], label="sampled lists", color="tab:blue")
    axis.plot(steps, summary["greedy_rewards"], label="greedy list (served top 20)", color="tab:orange")
    return _save(figure, axis, path, "mean reward (eq. 1-5)", title)
