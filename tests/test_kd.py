import math

import pytest
import torch

from models.kd import IGNORE_LABEL, KDParams, get_kd_loss, register_kd_loss, vanilla_kd_loss


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
