"""Batch inference: every user predicted exactly once after an interrupted run resumes, the backend
contract, prompts with allowed names on the tiny world, incremental re-inference."""

from __future__ import annotations

import importlib.util
from datetime import date, datetime, timezone

import polars as pl
import pytest

from llm_predictor.backends import Generation, TransformersBackend, VLLMBackend
from llm_predictor.decoding import DecodingConfig
from llm_predictor.features import FeatureConfig
from llm_predictor.model import ModelConfig, prepare_base_model
from llm_predictor.predict import (
    PredictConfig, build_prompts, generate_predictions, merge_generations, read_generations,
    users_with_new_activity,
)
from llm_predictor.tokenizer import TokenizerConfig

ANCHOR = date(2026, 1, 23)
GREEDY = DecodingConfig(strategy="greedy", max_new_tokens=6)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts = [f"user {i} likes rugs|Potean Collective|Vowis Labs" for i in range(50)]
    return prepare_base_model(ModelConfig(size="nano"), TokenizerConfig(vocab_size=350), texts,
                              tmp_path_factory.mktemp("model"))


def _prompts(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": list(range(n, 0, -1)), "anchor_date": [ANCHOR] * n,
        "prompt": [f"user {i} likes rugs" + " and more" * (i % 3) for i in range(n, 0, -1)],
        "allowed_names": [["Potean Collective", "Vowis Labs"]] * n,
    }, schema_overrides={"user_id": pl.Int64})


class CountingBackend:
    """Wraps a backend, counts calls and can fail on a given call (a crashed worker)."""

    def __init__(self, inner, fail_on_call: int | None = None):
        self.inner, self.fail_on_call, self.calls = inner, fail_on_call, 0

    def generate(self, prompts, params, allowed_names=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("worker lost")
        return self.inner.generate(prompts, params, allowed_names)


def test_interrupted_job_resumes_and_predicts_each_user_once(model_dir, tmp_path):
    prompts = _prompts(10)
    config = PredictConfig(decoding=GREEDY, virtual_epoch_size=3, batch_size=2)
    inner = TransformersBackend(model_dir, batch_size=2)
    crashing = CountingBackend(inner, fail_on_call=3)
    with pytest.raises(RuntimeError, match="worker lost"):
        generate_predictions(model_dir, prompts, GREEDY, tmp_path, crashing, config, show_progress=False)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.parquet")) == ["epoch_00000.parquet", "epoch_00001.parquet"]
    with pytest.raises(FileNotFoundError, match="lacks 2 of its 4 epochs"):
        read_generations(tmp_path)  # half a job is never read as the whole
    resumed_backend = CountingBackend(inner)
    resumed = generate_predictions(model_dir, prompts, GREEDY, tmp_path, resumed_backend, config, show_progress=False)
    assert resumed_backend.calls == 2  # epochs 2 and 3 only
    assert resumed["user_id"].to_list() == list(range(1, 11))  # each user exactly once, in order
    fresh = generate_predictions(model_dir, prompts, GREEDY, None, inner, config, show_progress=False)
    assert resumed.equals(fresh) and read_generations(tmp_path).equals(fresh)


def test_resume_refuses_other_prompts(model_dir, tmp_path):
    config = PredictConfig(decoding=GREEDY, virtual_epoch_size=4)
    backend = TransformersBackend(model_dir)
    generate_predictions(model_dir, _prompts(4), GREEDY, tmp_path, backend, config, show_progress=False)
    with pytest.raises(ValueError, match="delete the folder"):
        generate_predictions(model_dir, _prompts(5), GREEDY, tmp_path, backend, config, show_progress=False)


def test_several_sequences_per_prompt_get_ranks(model_dir):
    decoding = DecodingConfig(strategy="beam", num_beams=3, num_return_sequences=3, max_new_tokens=4)
    out = generate_predictions(model_dir, _prompts(4), decoding, backend=TransformersBackend(model_dir),
                               show_progress=False)
    assert out.height == 12 and out.columns == ["user_id", "anchor_date", "rank", "text", "num_tokens"]
    assert out.group_by("user_id").agg(pl.col("rank").sort())["rank"].to_list() == [[1, 2, 3]] * 4


BACKENDS = [
    pytest.param(TransformersBackend, id="transformers"),
    pytest.param(VLLMBackend, id="vllm", marks=pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (optional extra: make install-vllm)")),
]


@pytest.mark.parametrize("backend_class", BACKENDS)
def test_backend_contract(model_dir, backend_class):
    prompts = ["user 1 likes rugs", "user 2", "user 3 likes rugs and more"]
    for params in (GREEDY, DecodingConfig(strategy="sampling", num_return_sequences=2, max_new_tokens=6)):
        generations = backend_class(model_dir).generate(prompts, params)
        n = params.num_return_sequences
        assert all(isinstance(g, Generation) for g in generations)
        assert [(g.prompt_index, g.rank) for g in generations] == [(i, r) for i in range(3) for r in range(1, n + 1)]
        assert all(0 <= g.num_tokens <= params.max_new_tokens for g in generations)


def test_build_prompts_on_tiny_world(tiny_world):
    labels = tiny_world.labels.head(20)
    prompts = build_prompts(tiny_world, labels, FeatureConfig(), 5, "inference")
    assert prompts.height == labels.select("user_id", "anchor_date").n_unique()
    assert prompts["prompt"].str.contains("<advertiser_names>").all()
    pool = tiny_world.preset_pool.filter(pl.col("day") <= labels["anchor_date"].max())
    assert prompts["allowed_names"].list.len().min() >= 5
    for names in prompts["allowed_names"].to_list():
        assert len(names) == len(set(names)) and "" not in names
    assert pool.height > 0


def test_incremental_reinference_replaces_only_active_users():
    events = pl.DataFrame({
        "user_id": [1, 2, 2, 3],
        "ts": [datetime(2026, 1, d, tzinfo=timezone.utc) for d in (1, 2, 9, 10)],
    })
    assert users_with_new_activity(events, datetime(2026, 1, 5, tzinfo=timezone.utc)).to_list() == [2, 3]
    assert users_with_new_activity(events, datetime(2026, 1, 9, tzinfo=timezone.utc)).to_list() == [3]  # after only
    previous = pl.DataFrame({"user_id": [1, 2, 3], "anchor_date": [ANCHOR] * 3, "text": ["a", "b", "c"]})
    fresh = pl.DataFrame({"user_id": [3, 2], "anchor_date": [ANCHOR] * 2, "text": ["c2", "b2"]})
    assert merge_generations(previous, fresh)["text"].to_list() == ["a", "b2", "c2"]


def test_sid_prompts_need_the_item_sids(tiny_world):
    with pytest.raises(ValueError, match="adsim llm sid"):
        build_prompts(tiny_world, tiny_world.labels.head(3), FeatureConfig(), 5, "sft_sid")


def test_decoding_rows_time_packed_and_generate_on_the_same_prompts(model_dir, monkeypatch):
    """The bench's packed-against-generate rows decode every prompt both ways (the backend's `is_packed`)."""
    from llm_predictor import decoding
    from llm_predictor.throughput import decoding_rows

    packed_calls = []
    real = decoding.generate_texts
    monkeypatch.setattr(decoding, "generate_texts",
                        lambda *args: packed_calls.append(args[-1]) or real(*args))
    config = DecodingConfig(strategy="beam", num_beams=3, num_return_sequences=3, max_new_tokens=5)
    rows = decoding_rows(model_dir, _prompts(5)["prompt"].to_list(), config, batch_size=2)
    assert [row["decoding"] for row in rows] == ["packed", "generate"]
    assert all(row["users"] == 5 and row["seconds"] > 0 for row in rows)
    assert rows[1]["speed-up"] == 1.0 and 0 <= rows[0]["outputs_alike"] <= 1
    assert packed_calls == [True] * 4 + [False] * 4  # a warm-up batch, then 3 batches of 2, 2 and 1, each way
