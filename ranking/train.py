"""Training of the DCN-v2 conversion model: AdamW on BCE, early stopping, calibration on validation.

Seeds come from the caller: the weight initialisation runs under a forked, seeded torch RNG and the
batch order uses its own torch.Generator, so no global random state is read or changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ranking.calibration import Calibrator, fit_calibrator
from ranking.config import DCNConfig, TrainConfig
from ranking.dcn import DCNv2
from ranking.features import FeatureTable
from ranking.scaling import DenseScaler


@dataclass
class FittedDCN:
    """A trained DCN-v2 with its tasks, input layout, per-task calibrators and training curve."""

    model: DCNv2
    tasks: tuple[str, ...]
    sparse_names: tuple[str, ...]
    dense_names: tuple[str, ...]
    calibrators: dict[str, Calibrator]
    history: list[dict]
    use_bf16: bool

    def logits(self, table: FeatureTable, batch_size: int = 8192) -> np.ndarray:
        """Raw logits [rows, tasks] (batched, no gradients)."""
        if table.dense_names != self.dense_names:
            raise ValueError(f"feature layout differs from training: got {table.dense_names}, "
                             f"the model was trained on {self.dense_names}")
        return batched_logits(self._scoring_model(), table, batch_size)

    def _scoring_model(self) -> DCNv2:
        """The fitted model as it scores, built once: the bf16 copy deep-copies every embedding table,
        which cost a fifth of the simulator's scoring time when made on every call."""
        if getattr(self, "scoring_model_", None) is None:
            self.scoring_model_ = self.model.for_scoring(self.use_bf16)
        return self.scoring_model_

    def __getstate__(self) -> dict:  # the scoring copy is rebuilt on first use, not written
        return {name: value for name, value in self.__dict__.items() if name != "scoring_model_"}

    def probabilities(self, table: FeatureTable) -> dict[str, np.ndarray]:
        """Calibrated probabilities per task."""
        logits = self.logits(table)
        return {task: self.calibrators[task](logits[:, i]) for i, task in enumerate(self.tasks)}


def _tensors(table: FeatureTable, index: np.ndarray | slice) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(table.sparse[index]), torch.from_numpy(table.dense[index])


def predict_logits(model: DCNv2, table: FeatureTable, batch_size: int, use_bf16: bool) -> np.ndarray:
    """Logits in batches; with `use_bf16` the dense layers run on a bf16 copy of the weights."""
    return batched_logits(model.for_scoring(use_bf16), table, batch_size)


@torch.inference_mode()
def batched_logits(model: DCNv2, table: FeatureTable, batch_size: int) -> np.ndarray:
    """Logits [rows, tasks] of `model` as it is, in batches of `batch_size` rows."""
    outputs = []
    for start in range(0, len(table), batch_size):
        sparse, dense = _tensors(table, slice(start, start + batch_size))
        outputs.append(model(sparse, dense))
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, model.heads.out_features), np.float32)


def _labels(table: FeatureTable, tasks: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([table.labels[task] for task in tasks]).astype(np.float32)


def _mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(labels)))


def fit_dcn(train: FeatureTable, validation: FeatureTable, vocab_sizes: dict[str, int],
            tasks: tuple[str, ...], dcn: DCNConfig, config: TrainConfig, seed: int,
            progress: bool = False) -> FittedDCN:
    """Train on `train`, stop early and calibrate on `validation`; returns the best-epoch model."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DCNv2(vocab_sizes, train.dense.shape[1], len(tasks), dcn)
    model.set_dense_scaler(DenseScaler.fit(train.dense))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    train_labels = torch.from_numpy(_labels(train, tasks))
    validation_labels = _labels(validation, tasks)
    best_loss, best_state, history, stale = float("inf"), None, [], 0
    epochs = tqdm(range(config.epochs), desc=f"DCN {'+'.join(tasks)} seed {seed}", disable=not progress)
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(train), generator=generator).numpy()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            sparse, dense = _tensors(train, index)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.use_bf16):
                logits = model(sparse, dense)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        validation_loss = _mean_loss(predict_logits(model, validation, 8192, config.use_bf16), validation_labels)
        history.append({"epoch": epoch + 1, "train_loss": total / len(train), "validation_loss": validation_loss})
        epochs.set_postfix(train=f"{total / len(train):.4f}", validation=f"{validation_loss:.4f}")
        if validation_loss < best_loss:
            best_loss, best_state, stale = validation_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale > config.patience:
                break
    model.load_state_dict(best_state)
    validation_logits = predict_logits(model, validation, 8192, config.use_bf16)
    calibrators = {task: fit_calibrator(validation_logits[:, i], validation_labels[:, i], config.calibration)
                   for i, task in enumerate(tasks)}
    return FittedDCN(model=model, tasks=tuple(tasks), sparse_names=train.sparse_names,
                     dense_names=train.dense_names, calibrators=calibrators, history=history,
                     use_bf16=config.use_bf16)
