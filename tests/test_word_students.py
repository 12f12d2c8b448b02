"""Word students: vocabulary (English regex, Chinese jieba), BoW and BiLSTM training with hard labels and
KD soft targets, safetensors files, ONNX export with parity, and the unchanged predictor serving the bundles."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import jieba
import numpy as np
import pytest
import torch
from torch import nn

from landing.models.kd import IGNORE_LABEL
from landing.models.onnx_export import ParityError
from landing.models.onnx_predictor import BundleError, BundleTokenizer, OnnxClassifier, read_bundle_meta
from landing.models.params import KDParams, TrainingParams
from landing.models.word_onnx import check_parity, export_word_student
from landing.models.word_students import (
    PAD_ID,
    UNK_ID,
    BiLstmClassifier,
    build_word_student,
    build_word_tokenizer,
    fit_word_student,
    load_word_student,
    predict_logits,
    save_word_student,
)

LABELS = ["pos", "neg"]
KINDS = ["bow", "bilstm"]
SMALL = {"embedding_dim": 16, "hidden_size": 16}
PARAMS = TrainingParams(epochs=15, batch_size=8, learning_rate=3e-2, warmup_ratio=0.0, logging_steps=1000)
MAX_LEN = 24


def toy_set(rows: int = 40, seed: int = 0) -> tuple[list[str], list[int]]:
    """Sentences of filler words with one sentiment word: 'good'-like -> pos (0), 'bad'-like -> neg (1)."""
    rng = random.Random(seed)
    good, bad = ["good", "great", "nice", "Fine"], ["bad", "awful", "poor", "Dull"]
    filler = ["the", "movie", "was", "really", "plot", "actors", "quite", "a", "film", "and"]
    texts, labels = [], []
    for i in range(rows):
        words = rng.sample(filler, rng.randint(2, 7))
        words.insert(rng.randint(0, len(words)), rng.choice(good if i % 2 == 0 else bad))
        texts.append(" ".join(words) + rng.choice(["", "!", "."]))
        labels.append(i % 2)
    return texts, labels


TEXTS, Y = toy_set()
EXTRA = ["", "completely unseen words here", "GOOD", "bad " * 40, "nice, really nice movie"]


def accuracy(logits: np.ndarray, labels) -> float:
    return float((logits.argmax(-1) == np.asarray(labels)).mean())


@pytest.fixture(scope="module")
def vocab():
    return build_word_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def trained(vocab, tmp_path_factory):
    """Each kind trained on hard labels and saved: {kind: (model, model_dir)}."""
    out = {}
    for kind in KINDS:
        model = build_word_student(kind, vocab, LABELS, seed=0, **SMALL)
        fit_word_student(model, vocab, TEXTS, Y, None, PARAMS, None, seed=0)
        model_dir = tmp_path_factory.mktemp(kind)
        save_word_student(model, vocab, model_dir)
        out[kind] = (model, model_dir)
    return out


def test_vocabulary_special_ids_lowercase_and_unk(vocab):
    ids = vocab.tokenizer.get_vocab()
    assert ids["[PAD]"] == PAD_ID == 0 and ids["[UNK]"] == UNK_ID == 1
    assert "fine" in ids and "Fine" not in ids  # lower-cased
    assert vocab.words("Nice, REALLY nice!!") == ["nice", ",", "really", "nice", "!!"]
    enc = vocab.encode(["Good movie", "zebra good"], MAX_LEN)
    assert enc["input_ids"][0].tolist() == [ids["good"], ids["movie"]]
    assert enc["input_ids"][1].tolist() == [UNK_ID, ids["good"]]
    assert enc["attention_mask"].tolist() == [[1, 1], [1, 1]]
    padded = vocab.encode(["good", "the movie was good"], 3)  # truncation on the right, padding with [PAD]
    assert padded["input_ids"][0].tolist() == [ids["good"], PAD_ID, PAD_ID]
    assert padded["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]


def test_vocabulary_min_freq_max_size_and_order():
    tok = build_word_tokenizer(["b a c", "a b", "a d", "e"], min_freq=2)
    assert tok.tokenizer.get_vocab() == {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3}  # by count, then alphabetical
    tok = build_word_tokenizer(["b a c", "a b", "a d", "e"], max_size=4)
    assert tok.tokenizer.get_vocab() == {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3}
    assert build_word_tokenizer(["z y x"]).tokenizer.get_vocab() == {"[PAD]": 0, "[UNK]": 1, "x": 2, "y": 3, "z": 4}
    with pytest.raises(ValueError, match="language"):
        build_word_tokenizer(["x"], language="fr")


ZH_POS = ["这部电影非常好看，我很喜欢", "演员的表演很精彩", "故事感人，值得推荐", "画面漂亮，音乐动听"]
ZH_NEG = ["这部电影太难看了，浪费时间", "剧情无聊，令人失望", "演技糟糕，不推荐", "节奏拖沓，非常无聊"]
ZH_TEXTS, ZH_Y = (ZH_POS + ZH_NEG) * 4, ([0] * 4 + [1] * 4) * 4


def test_chinese_vocabulary_is_jieba_words():
    tok = build_word_tokenizer(ZH_TEXTS, language="zh")
    expected = [w for w in jieba.lcut("这部电影非常好看") if w.strip()]
    assert expected == ["这部", "电影", "非常", "好看"]
    assert tok.words("这部电影非常好看") == expected
    ids = tok.tokenizer.get_vocab()
    assert {"电影", "好看", "无聊", "浪费时间"} <= set(ids) and "电" not in ids
    assert tok.encode(["电影很好看"], MAX_LEN)["input_ids"][0].tolist() == [ids["电影"], ids["很"], ids["好看"]]
    assert tok.encode(["飞机"], MAX_LEN)["input_ids"][0].tolist() == [UNK_ID]
    assert tok.words("Hello 世界") == ["hello", "世界"]  # mixed text: jieba keeps Latin words, lower-cased


@pytest.mark.parametrize("kind", KINDS)
def test_trains_on_hard_labels(trained, vocab, kind):
    model, _ = trained[kind]
    assert accuracy(predict_logits(model, vocab, TEXTS, max_length=MAX_LEN), Y) >= 0.9
    held_out, held_y = toy_set(20, seed=1)
    assert accuracy(predict_logits(model, vocab, held_out, max_length=MAX_LEN), held_y) >= 0.8


@pytest.mark.parametrize("kind", KINDS)
def test_trains_on_teacher_logits_through_the_kd_loss(vocab, kind):
    """Unlabelled rows only (IGNORE_LABEL): everything it learns comes from the soft targets via vanilla_kd."""
    teacher = np.array([[2.5, -2.5] if y == 0 else [-2.5, 2.5] for y in Y], dtype=np.float32)
    model = build_word_student(kind, vocab, LABELS, seed=1, **SMALL)
    result = fit_word_student(model, vocab, TEXTS, [IGNORE_LABEL] * len(Y), teacher, PARAMS,
                              KDParams(temperature=2.0, alpha=0.5), seed=1)  # fmt: skip
    assert result.global_step == 15 * 5 and np.isfinite(result.train_loss)
    assert accuracy(predict_logits(model, vocab, TEXTS, max_length=MAX_LEN), Y) >= 0.9
    mixed = build_word_student(kind, vocab, LABELS, seed=2, **SMALL)  # labelled rows: KL and CE mixed by alpha
    fit_word_student(mixed, vocab, TEXTS, Y, teacher, PARAMS, KDParams(temperature=2.0, alpha=0.5), seed=2)
    assert accuracy(predict_logits(mixed, vocab, TEXTS, max_length=MAX_LEN), Y) >= 0.9


def test_training_refuses_inconsistent_inputs(vocab):
    model = build_word_student("bow", vocab, LABELS, **SMALL)
    with pytest.raises(ValueError, match="teacher logits"):
        fit_word_student(model, vocab, TEXTS, Y, None, PARAMS, KDParams(), seed=0)
    with pytest.raises(ValueError, match="without distillation"):
        fit_word_student(model, vocab, TEXTS, Y, np.zeros((len(Y), 2)), PARAMS, None, seed=0)
    with pytest.raises(ValueError, match="shape"):
        fit_word_student(model, vocab, TEXTS, Y, np.zeros((3, 2)), PARAMS, KDParams(), seed=0)


def test_bilstm_equals_a_packed_bidirectional_lstm(vocab):
    """The per-row reversal gives exactly what pack_padded_sequence gives, so padding changes nothing."""
    torch.manual_seed(0)
    model = BiLstmClassifier(vocab.vocab_size, LABELS, embedding_dim=8, hidden_size=6, pooling="mean").eval()
    reference = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
    fw, bw = model.forward_lstms[0], model.backward_lstms[0]
    with torch.no_grad():
        for name, value in fw.named_parameters():
            getattr(reference, name).copy_(value)
        for name, value in bw.named_parameters():
            getattr(reference, f"{name}_reverse").copy_(value)
    batch = vocab.encode(TEXTS[:6] + ["good"], MAX_LEN)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        x = model.embedding(batch["input_ids"])
        packed = nn.utils.rnn.pack_padded_sequence(x, mask.sum(1), batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True)
        expected = model.classifier((out * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
        np.testing.assert_allclose(model(**batch).logits.numpy(), expected.numpy(), atol=1e-5)
        alone = model(**vocab.encode(["good"], MAX_LEN)).logits
        np.testing.assert_allclose(alone.numpy(), expected[-1:].numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(trained, vocab, kind, tmp_path):
    model, _ = trained[kind]
    sha = save_word_student(model, vocab, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "tokenizer.json", "word_student.json"]
    assert len(sha) == 64
    loaded, tok = load_word_student(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    assert tok.tokenizer.get_vocab() == vocab.tokenizer.get_vocab() and tok.language == "en"
    texts = TEXTS[:10] + EXTRA
    np.testing.assert_array_equal(predict_logits(loaded, tok, texts, max_length=MAX_LEN),
                                  predict_logits(model, vocab, texts, max_length=MAX_LEN))  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_bundle_parity_and_predictor(trained, vocab, kind, tmp_path):
    model, model_dir = trained[kind]
    onnx_path = export_word_student(model_dir, tmp_path, max_length=MAX_LEN)
    meta = read_bundle_meta(tmp_path)
    # The fields export_onnx writes, so everything that reads transformer bundles reads these.
    assert {"format", "onnx", "precision", "labels", "max_length", "input_names", "output_names", "opset",
            "pad_token", "pad_token_id", "pad_token_type_id", "variants"} <= set(meta)  # fmt: skip
    assert meta["input_names"] == ["input_ids", "attention_mask"] and meta["labels"] == LABELS
    assert "pre_segment" not in meta and meta["student"]["kind"] == kind
    texts = TEXTS + EXTRA + toy_set(20, seed=3)[0]
    parity = check_parity(model, onnx_path, BundleTokenizer(tmp_path), texts)
    assert parity["max_abs_diff"] <= 1e-4
    clf = OnnxClassifier.load(tmp_path)
    torch_logits = predict_logits(model, vocab, texts, max_length=MAX_LEN)
    table = clf.predict(texts, return_logits=True)  # sorted by length into batches: padding differs from torch's
    assert list(table["label"]) == [LABELS[i] for i in torch_logits.argmax(-1)]
    np.testing.assert_allclose(np.array(table["logits"].tolist()), torch_logits, atol=1e-4)
    assert clf.predict([""])["label"].tolist()[0] in LABELS  # a batch of only empty texts (sequence length 0)


def test_parity_failure_names_the_difference(trained, vocab, tmp_path):
    model_dir = trained["bow"][1]
    onnx_path = export_word_student(model_dir, tmp_path, max_length=MAX_LEN)
    other, _ = load_word_student(model_dir)
    with torch.no_grad():
        other.head[-1].bias.add_(0.5)
    with pytest.raises(ParityError, match=r"max \|Δlogits\| = 0.5"):
        check_parity(other, onnx_path, BundleTokenizer(tmp_path), TEXTS[:4])


def test_chinese_bundle_round_trip_through_the_predictor(tmp_path):
    tok = build_word_tokenizer(ZH_TEXTS, language="zh")
    model = build_word_student("bilstm", tok, LABELS, seed=0, **SMALL)
    fit_word_student(model, tok, ZH_TEXTS, ZH_Y, None, PARAMS, None, seed=0)
    save_word_student(model, tok, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "word_student.json").read_text())
    assert config["tokenizer"] == {"language": "zh", "pre_segment": "jieba"}
    loaded, loaded_tok = load_word_student(tmp_path / "model")
    assert loaded_tok.language == "zh"
    export_word_student(tmp_path / "model", tmp_path / "bundle", max_length=MAX_LEN)
    assert read_bundle_meta(tmp_path / "bundle")["pre_segment"] == "jieba"
    texts = ZH_POS + ZH_NEG + ["电影很好看", "非常无聊的电影", "", "Hello 世界"]
    bundle_ids = BundleTokenizer(tmp_path / "bundle")(texts)
    train_ids = tok.encode(texts, MAX_LEN)
    for name, array in bundle_ids.items():
        np.testing.assert_array_equal(array, train_ids[name].numpy(), err_msg=name)
    torch_logits = predict_logits(loaded, loaded_tok, texts, max_length=MAX_LEN)
    table = OnnxClassifier.load(tmp_path / "bundle").predict(texts)
    assert list(table["label"]) == [LABELS[i] for i in torch_logits.argmax(-1)]
    assert list(table["label"][:8]) == ["pos"] * 4 + ["neg"] * 4


def test_unknown_segmenter_fails_when_the_bundle_loads(trained, tmp_path):
    export_word_student(trained["bow"][1], tmp_path, max_length=MAX_LEN)
    meta = read_bundle_meta(tmp_path) | {"pre_segment": "mecab"}
    (tmp_path / "landing_model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unknown segmenter 'mecab'"):
        OnnxClassifier.load(tmp_path)


def test_chinese_bundle_is_served_without_torch(trained, tmp_path):
    """The jieba hook is a lazy import in the torch-free predictor: serving needs no torch or transformers."""
    tok = build_word_tokenizer(ZH_TEXTS, language="zh")
    model = build_word_student("bow", tok, LABELS, seed=0, **SMALL)
    save_word_student(model, tok, tmp_path / "model")
    export_word_student(tmp_path / "model", tmp_path / "bundle", max_length=MAX_LEN)
    code = (
        "import json, sys\n"
        "from landing.models.onnx_predictor import OnnxClassifier\n"
        f"table = OnnxClassifier.load({str(tmp_path / 'bundle')!r}).predict(['电影很好看', ''])\n"
        "print(json.dumps({'rows': len(table), 'leaked': sorted({'torch', 'transformers'} & set(sys.modules))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rows": 2, "leaked": []}


class Crash(Exception):
    pass


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_killed_mid_epoch_resumes_from_its_checkpoint_to_the_same_weights(kind, vocab, tmp_path):
    """40 rows at batch 8 are 5 steps an epoch; checkpoints every 3 steps land mid-epoch, the crash at step 8."""
    params = TrainingParams(epochs=3, batch_size=8, learning_rate=3e-2, save_checkpoint_steps=3, logging_steps=1000)
    whole = build_word_student(kind, vocab, LABELS, seed=0, **SMALL)
    expected = fit_word_student(whole, vocab, TEXTS, Y, None, params, None, seed=0, checkpoint_dir=tmp_path / "a")

    def crash_at_8(step: int) -> None:
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        fit_word_student(build_word_student(kind, vocab, LABELS, seed=0, **SMALL), vocab, TEXTS, Y, None, params,
                         None, seed=0, checkpoint_dir=tmp_path / "b", on_step=crash_at_8)  # fmt: skip
    resumed_model = build_word_student(kind, vocab, LABELS, seed=0, **SMALL)
    resumed = fit_word_student(resumed_model, vocab, TEXTS, Y, None, params, None, seed=0,
                               checkpoint_dir=tmp_path / "b")  # fmt: skip
    assert expected.resumed_from is None and resumed.resumed_from == str(tmp_path / "b")
    assert resumed.global_step == expected.global_step == 15 and resumed.train_loss == expected.train_loss
    for (name, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
