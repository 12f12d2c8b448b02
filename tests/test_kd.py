import math

import pytest
import torch

from landing.models.kd import IGNORE_LABEL, get_kd_loss, register_kd_loss, vanilla_kd_loss
from landing.models.params import KDParams


def _softmax(xs, t):
    exps = [math.exp(x / t) for x in xs]
    return [e / sum(exps) for e in exps]


def test_vanilla_kd_matches_hand_computed_value():
    student, teacher, label, t, alpha = [1.0, -1.0], [2.0, 0.0], 0, 2.0, 0.3
    p_t, p_s = _softmax(teacher, t), _softmax(student, t)
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    ce = -math.log(_softmax(student, 1.0)[label])
    expected = alpha * t * t * kl + (1 - alpha) * ce

    got = vanilla_kd_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([label]), KDParams(t, alpha))

    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_unlabelled_rows_use_the_soft_targets_only():
    student, teacher = torch.tensor([[0.5, 0.1]]), torch.tensor([[1.5, -0.5]])
    params = KDParams(temperature=4.0, alpha=0.1)
    unlabelled = vanilla_kd_loss(student, teacher, torch.tensor([IGNORE_LABEL]), params)
    pure_kd = vanilla_kd_loss(student, teacher, torch.tensor([0]), KDParams(temperature=4.0, alpha=1.0))
    assert unlabelled.item() == pytest.approx(pure_kd.item())


def test_identical_logits_and_alpha_one_give_zero_loss():
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    loss = vanilla_kd_loss(logits, logits.clone(), torch.tensor([0, 1, 2, 0]), KDParams(5.0, 1.0))
    assert loss.item() == pytest.approx(0.0, abs=1e-5)  # float32 KL scaled by T² = 25


def test_registry_rejects_unknown_and_duplicate_names():
    with pytest.raises(ValueError, match="unknown loss 'nope'.*vanilla_kd"):
        get_kd_loss("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_kd_loss("vanilla_kd")(vanilla_kd_loss)


def _batch(student, teacher, labels, weights=None, hidden=None):
    from landing.models.kd import DistillBatch, ForwardOutputs

    return DistillBatch(ForwardOutputs(student, hidden_states=hidden), ForwardOutputs(teacher), labels,
                        example_weights=weights)  # fmt: skip


def test_the_combined_loss_is_vanilla_kd_when_it_is_the_only_term():
    from landing.models.kd import distillation_loss

    g = torch.Generator().manual_seed(1)
    student, teacher, labels = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.tensor([0, 2, -100, 1, 0])
    params = KDParams(3.0, 0.4)
    assert distillation_loss(_batch(student, teacher, labels), params).item() == pytest.approx(
        vanilla_kd_loss(student, teacher, labels, params).item(), rel=1e-6
    )


def test_per_example_weights_and_loss_weights():
    from landing.models.kd import distillation_loss, vanilla_kd_per_example

    g = torch.Generator().manual_seed(2)
    student, teacher, labels = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g), torch.tensor([0, 1, 1, 0])
    params = KDParams(2.0, 0.5)
    per_example = vanilla_kd_per_example(student, teacher, labels, params)
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0])  # e.g. an augmented row counted less, one left out
    expected = (weights * per_example).sum() / weights.sum()
    assert distillation_loss(_batch(student, teacher, labels, weights), params).item() == pytest.approx(expected.item())
    doubled = KDParams(2.0, 0.5, weights={"vanilla_kd": 2.0})
    assert distillation_loss(_batch(student, teacher, labels), doubled).item() == pytest.approx(2 * per_example.mean().item())


def test_losses_are_composed_by_name_and_see_hidden_states():
    from landing.models.kd import KD_LOSSES, distillation_loss

    @register_kd_loss("test_hidden_norm", needs_hidden_states=True)
    def hidden_norm(batch, params):
        return batch.student.hidden_states[-1].pow(2).mean(dim=(1, 2))

    try:
        student, teacher, labels = torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([0, 1])
        hidden = (torch.ones(2, 3, 4), torch.full((2, 3, 4), 2.0))
        params = KDParams(1.0, 1.0, type="vanilla_kd+test_hidden_norm", weights={"test_hidden_norm": 0.5})
        assert get_kd_loss("test_hidden_norm").needs_hidden_states
        assert distillation_loss(_batch(student, teacher, labels, hidden=hidden), params).item() == pytest.approx(2.0)
        with pytest.raises(ValueError, match="not among the losses"):
            KDParams(type="vanilla_kd", weights={"test_hidden_norm": 1.0})
    finally:
        del KD_LOSSES["test_hidden_norm"]
    with pytest.raises(ValueError, match="unknown loss 'test_hidden_norm'"):
        KDParams(type="vanilla_kd+test_hidden_norm")
