"""CPT, SFT and GRPO on a `nano` model: each runs a few steps, learns in the right direction, resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llm_predictor.grpo as grpo_module
from llm_predictor.grpo import GRPOStageConfig, grpo, paper_reward_function
from llm_predictor.model import ModelConfig, prepare_base_model
from llm_predictor.pretrain import PretrainConfig, TrainConfig, pack_corpus, pack_documents, pretrain
from llm_predictor.reward import total_reward
from llm_predictor.sft import SFTStageConfig, completion_loss, length_filter, sft
from llm_predictor.tokenizer import TokenizerConfig, load_tokenizer

NAMES = ["Potean Collective", "Tratrea Co.", "Deachigrin House", "Vowis Labs"]
CORPUS = [f"{name} sells {thing} online at {name.split()[0].lower()}.shop."
          for name in NAMES for thing in ("gaming speakers", "boho candles", "farmhouse rugs")] * 8
PROMPTS = [f"#Input\nTop Brands [{name.split()[0]}]" for name in NAMES] * 8
TARGETS = NAMES * 8


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("base")
    return prepare_base_model(ModelConfig(size="nano"), TokenizerConfig(vocab_size=400), CORPUS + PROMPTS, directory)


def _train(**overrides) -> TrainConfig:
    return TrainConfig(**{"max_steps": 30, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 2,
                          "logging_steps": 5, "save_steps": 10, **overrides})


def test_pack_corpus_cuts_eos_joined_stream_into_blocks(base_dir):
    tokenizer = load_tokenizer(base_dir)
    ids = tokenizer(CORPUS[:3], add_special_tokens=False)["input_ids"]
    stream = [token for doc in ids for token in (*doc, tokenizer.eos_token_id)]
    blocks = pack_corpus(CORPUS[:3], tokenizer, 8)
    assert len(blocks) == len(stream) // 8
    assert [token for block in blocks["input_ids"] for token in block] == stream[: len(blocks) * 8]
    assert blocks["labels"] == blocks["input_ids"]


def test_pack_documents_keeps_documents_whole_and_each_attends_only_within_itself(base_dir):
    """Behaviour sequences' rows: whole documents (a longer one keeps its end), positions restarting per
    document, no target at a document's first token or the padding; each document then gets the logits it gets
    alone, where the same row without its positions lets documents read each other."""
    import torch

    from llm_predictor.model import load_model

    tokenizer = load_tokenizer(base_dir)
    texts = [CORPUS[0], CORPUS[1][:12], CORPUS[2]]
    docs = [doc + [tokenizer.eos_token_id] for doc in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert pack_documents(texts[:1], tokenizer, 6)["input_ids"] == [docs[0][-6:]]
    size = len(docs[0]) + len(docs[1]) + 1  # the first two fit in a row, the third starts the next
    rows = pack_documents(texts, tokenizer, size)
    pad = tokenizer.pad_token_id
    assert rows["input_ids"] == [docs[0] + docs[1] + [pad], docs[2][-size:] + [pad] * (size - len(docs[2][-size:]))]
    assert rows["position_ids"][0] == [*range(len(docs[0])), *range(len(docs[1])), 0]
    first_of_second = len(docs[0])
    assert rows["labels"][0][0] == rows["labels"][0][first_of_second] == rows["labels"][0][-1] == -100
    assert rows["labels"][0][1] == docs[0][1]
    model = load_model(base_dir).eval()
    row = torch.tensor(rows["input_ids"][:1])
    with torch.no_grad():
        packed = model(input_ids=row, position_ids=torch.tensor(rows["position_ids"][:1]), use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([doc])).logits[0] for doc in docs[:2]]
        unmasked = model(input_ids=row, use_cache=False).logits[0]
    second = slice(first_of_second, first_of_second + len(docs[1]))
    assert torch.allclose(packed[:first_of_second], alone[0], atol=1e-4)
    assert torch.allclose(packed[second], alone[1], atol=1e-4)
    assert not torch.allclose(unmasked[second], alone[1], atol=1e-4)


def test_pretrain_loss_goes_down_and_resumes(base_dir, tmp_path):
    config = PretrainConfig(train=_train(max_steps=20), block_size=32)
    first = pretrain(base_dir, CORPUS, config, tmp_path, show_progress=False)
    assert first["steps"] == 20 and first["resumed_from"] is None
    assert first["last_loss"] < 0.7 * first["first_loss"]
    assert first["tokens_seen"] % 32 == 0 and 0 < first["tokens_seen"] <= 20 * 8 * 32  # whole blocks
    longer = PretrainConfig(train=_train(max_steps=25), block_size=32)
    second = pretrain(base_dir, CORPUS, longer, tmp_path, show_progress=False)
    assert second["resumed_from"].endswith("checkpoint-20") and second["steps"] == 25


def test_pretrain_on_whole_documents_learns(base_dir, tmp_path):
    config = PretrainConfig(train=_train(max_steps=20), block_size=64, is_document_masked=True)
    summary = pretrain(base_dir, CORPUS, config, tmp_path, show_progress=False, validation_texts=CORPUS[:6],
                       eval_steps=10)
    assert summary["last_loss"] < 0.7 * summary["first_loss"]
    assert summary["validation_losses"][-1][0] == 20


def test_length_filter_counts_prompt_completion_and_eos(base_dir):
    tokenizer = load_tokenizer(base_dir)
    lengths = [len(tokenizer(p + c, add_special_tokens=False)["input_ids"]) + 1 for p, c in zip(PROMPTS, TARGETS)]
    cap = sorted(lengths)[len(lengths) // 2]
    assert (length_filter(PROMPTS, TARGETS, tokenizer, cap) == (np.array(lengths) <= cap)).all()


def test_sft_learns_the_target_and_counts_over_length_examples(base_dir, tmp_path):
    long_prompt = "#Input\n" + "noise " * 200
    config = SFTStageConfig(train=_train(), max_length=48)
    summary = sft(base_dir, PROMPTS + [long_prompt], TARGETS + [NAMES[0]], config, tmp_path, show_progress=False)
    assert summary["examples_over_max_length"] == 1 and summary["examples"] == len(PROMPTS) + 1
    assert summary["last_loss"] < 0.5 * summary["first_loss"]


def test_completion_loss_is_trl_sft_loss(base_dir, tmp_path):
    """The loss that sends only completion positions through the LM head equals TRL's own SFT loss
    (completion tokens only, prompts of different lengths padded in one batch)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from llm_predictor.model import load_model

    tokenizer = load_tokenizer(base_dir)
    prompts = [prompt + " and more" * index for index, prompt in enumerate(PROMPTS[:6])]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, completion_only_loss=True,
                     use_cpu=True, report_to="none", max_length=None)
    trainer = SFTTrainer(model=load_model(base_dir), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"prompt": prompts, "completion": TARGETS[:6]}))
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any(dim=1).all() and (batch["attention_mask"] == 0).any()  # prompts, padding
    with torch.no_grad():
        expected = trainer.compute_loss(trainer.model, dict(batch))
        ours = completion_loss(trainer.model, dict(batch))
    assert torch.isclose(ours, expected, rtol=1e-5), (ours, expected)


def test_grpo_raises_the_reward(base_dir, tmp_path, monkeypatch):
    """Direction of learning with a reward the nano model can find quickly: the share of '|' characters."""

    def pipe_share(completions, target_advertiser, **kwargs):
        return [text.count("|") / max(len(text), 1) for text in completions]

    monkeypatch.setattr(grpo_module, "paper_reward_function", lambda credit: pipe_share)
    config = GRPOStageConfig(beta=0.0, train=_train(max_steps=40, batch_size=16, learning_rate=3e-2, logging_steps=4),
                             num_generations=8, max_completion_length=8)
    summary = grpo(base_dir, PROMPTS, TARGETS, config, tmp_path, show_progress=False)
    assert summary["steps"] == 40
    assert np.mean(summary["rewards"][-2:]) > np.mean(summary["rewards"][:2]) + 0.5


def test_paper_reward_function_is_equations_1_to_5():
    reward = paper_reward_function(0.0)
    names = [f"Advertiser {i}" for i in range(1, 21)]
    xml = ("<answer>\n<interests>\n[a|b|c|d|e]\n</interests>\n<advertiser_names>\n" + "|".join(names)
           + "\n</advertiser_names>\n</answer>")
    assert reward([xml], ["Advertiser 3"]) == [pytest.approx(0.1 * (20 - 3) + 2.0)]
    assert reward([xml], ["Advertiser 3"]) == [pytest.approx(total_reward(names, list("abcde"), "Advertiser 3"))]


def test_grpo_batch_must_hold_whole_groups():
    with pytest.raises(Exception, match="num_generations"):
        GRPOStageConfig(train=TrainConfig(batch_size=6), num_generations=4, policy="text")


def test_pretrain_keeps_the_checkpoint_of_lowest_validation_loss_and_stops_early(base_dir, tmp_path):
    """Validation texts are the corpus' words in another order: its loss falls while the model learns the
    words and rises once it learns the corpus' order, so the lowest loss comes before the last step."""
    import torch

    from llm_predictor.model import load_model

    shuffled = [" ".join(sorted(text.split(), key=len)) for text in CORPUS[::8]]
    config = PretrainConfig(train=_train(max_steps=200, learning_rate=1e-2, save_steps=5), block_size=32)
    summary = pretrain(base_dir, CORPUS, config, tmp_path, show_progress=False, validation_texts=shuffled,
                       eval_steps=5, early_stopping_patience=2)
    losses = dict(summary["validation_losses"])
    best = min(losses, key=losses.get)
    assert summary["best_step"] == best and summary["steps"] == best + 2 * 5 < 200  # stopped after 2 higher losses
    tokenizer = load_tokenizer(base_dir)
    rows = pack_corpus(shuffled, tokenizer, 32)
    batch = {key: torch.tensor(rows[key]) for key in ("input_ids", "labels")}
    with torch.no_grad():
        saved = load_model(tmp_path / "model")(**batch).loss.item()
    assert saved == pytest.approx(losses[best], rel=1e-2)  # the saved model is the best checkpoint's
    with pytest.raises(ValueError, match="save_steps=5 is not a multiple of eval_steps=2"):
        pretrain(base_dir, CORPUS, config, tmp_path / "other", show_progress=False, validation_texts=shuffled,
                 eval_steps=2)


@pytest.mark.slow
def test_compiled_training_on_two_threads_is_reproducible(tmp_path):
    """Two compiled trainings of one seed give the same weights (without `deterministic_algorithms`, 2 CPU
    threads summed in a varying order and each run trained another model)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        base = prepare_base_model(ModelConfig(size="small"), TokenizerConfig(vocab_size=400), CORPUS + PROMPTS,
                                  tmp_path / "base")
        config = PretrainConfig(train=_train(max_steps=6, save_steps=6, torch_compile=True), block_size=64)
        weights = []
        for run in ("first", "second"):
            summary = pretrain(base, CORPUS * 4, config, tmp_path / run, show_progress=False)
            weights.append((Path(summary["model_dir"]) / "model.safetensors").read_bytes())
    finally:
        torch.set_num_threads(threads)
    assert weights[0] == weights[1]
