"""``easynlp``: Alibaba EasyNLP's command line, run as Prefect flows tracked in MLflow.

The flags, their defaults and ``--user_defined_parameters`` are EasyNLP's (``easynlp/utils/arguments.py``);
what EasyNLP does with them wrongly is not copied: an unknown flag or key is an error (with a close match),
every accepted flag is honoured or refused with the reason, a key without ``=`` is named, a value keeps
every ``=`` after the first, ``enable_*=False`` means false, and rows of the wrong width are errors.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from dataclasses import fields as dataclass_fields
from pathlib import Path

from landing.data_contracts.easynlp_files import OUTPUT_COLUMNS
from landing.errors import DEBUG_VARIABLE, UserError

APPS = ("text_classify", "text_match", "data_augmentation", "sequence_labeling")
MODES = ("train", "evaluate", "predict")
FEWSHOT_TYPES = {"pet_fewshot": "pet", "cpt_fewshot": "cpt", "ptuning_fewshot": "ptuning"}
AUGMENT_TYPES = ("mlm_da", "eda")
# EasyNLP's names where the knob has another name here.
AUGMENT_ALIASES = {"append_original": "keep_originals"}

# Flags EasyNLP has that this command refuses, with the reason (never parsed and then dropped).
REFUSED_FLAGS = {
    "--resume_from_checkpoint": "a re-run of the same command resumes by itself from its last checkpoint "
    "(--save_checkpoint_steps); to start from a trained model, give it as pretrain_model_name_or_path",
    "--use_amp": "mixed precision needs a GPU, and this command trains in float32",
    "--use_torchacc": "TorchAcc is PAI's; not available here",
    "--do_lower_case": "lower-casing is the tokenizer's own setting (do_lower_case in its tokenizer_config.json)",
    "--buckets": "OSS buckets: give s3:// URIs (or local paths) in --tables instead",
    "--odps_config": "ODPS tables are PAI's; give local paths or s3:// URIs in --tables",
    "--save_all_checkpoints": "checkpoints are kept for resuming (the last two); the trained model is --checkpoint_dir",
    "--export_tf_checkpoint_type": "models are saved as safetensors and ONNX, never as TensorFlow checkpoints",
    "--user_script": "run your script directly; this command runs EasyNLP's built-in apps",
    "--user_entry_file": "run your script directly; this command runs EasyNLP's built-in apps",
}


class EasynlpUsageError(UserError, ValueError):
    """A flag, user-defined parameter or combination that this command cannot take as given."""


def _close(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own message, with a close match for an unknown flag
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            flag = unknown[0].split("=", 1)[0]
            if flag in REFUSED_FLAGS:
                raise EasynlpUsageError(f"{flag}: not supported here: {REFUSED_FLAGS[flag]}")
            known = [o for a in self._actions for o in a.option_strings] + list(REFUSED_FLAGS)
            raise EasynlpUsageError(f"unknown flag {flag}{_close(flag, known)}; `easynlp --help` lists the flags")
        raise EasynlpUsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="easynlp", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description=__doc__, epilog=_help_epilog())  # fmt: skip
    a = parser.add_argument
    a("--app_name", default="text_classify", choices=APPS)
    a("--mode", default="train", choices=MODES)
    a("--tables", help="train mode: train,eval; evaluate: the table(s), the last one is used; predict: the table")
    a("--outputs", help="predict / data_augmentation: the file to write")
    a("--input_schema", help="name:type:length,... (types str, int, float; length > 1: comma-separated values)")
    a("--output_schema", default="", help=f"predict: comma list of {', '.join(OUTPUT_COLUMNS)}")
    a("--append_cols", default=None, help="predict: input columns appended to each output line")
    a("--first_sequence")
    a("--second_sequence")
    a("--label_name")
    a("--label_enumerate_values", help="comma list, or a file with one label per line")
    a("--checkpoint_dir", "--checkpoint_path", dest="checkpoint_dir", help="train: written; predict, evaluate: read")
    a("--learning_rate", type=float, default=5e-5)
    a("--epoch_num", type=float, default=3.0)
    a("--random_seed", type=int, default=1234)
    a("--save_checkpoint_steps", type=int, default=None, help="default: the project's (500)")
    a("--sequence_length", type=int, default=16)
    a("--micro_batch_size", "--train_batch_size", dest="micro_batch_size", type=int, default=2)
    a("--weight_decay", "--wd", dest="weight_decay", type=float, default=1e-4)
    a("--max_grad_norm", "--mn", dest="max_grad_norm", type=float, default=1.0)
    a("--warmup_proportion", type=float, default=0.1)
    a("--logging_steps", type=int, default=100)
    a("--gradient_accumulation_steps", type=int, default=1)
    a("--optimizer_type", "--optimizer", dest="optimizer_type", default="AdamW",
      help="AdamW (transformers Trainer's); EasyNLP's BertAdam, Adam and SGD are refused")  # fmt: skip
    a("--skip_first_line", action="store_true")
    a("--worker_count", type=int, default=1, help="nodes (with CUDA; on a CPU-only machine: one process)")
    a("--worker_gpu", type=int, default=-1, help="GPUs per node (with CUDA; on a CPU-only machine: one process)")
    a("--worker_cpu", type=int, default=-1, help="> 0: torch CPU threads")
    a("--master_port", type=int, default=23456, help="with worker_count > 1: the rendezvous port on $MASTER_ADDR")
    a("--distributed_backend", default="nccl", choices=["nccl", "gloo"], help="used when several processes train")
    a("--modelzoo_base_dir", default="", help=f"where model names are looked up (default {_zoo()})")
    a("--user_defined_parameters", default=None, help="whitespace-separated key=value (quote a value with spaces)")
    a("--debug", action="store_true", help=f"tracebacks for mistakes in your input too (or {DEBUG_VARIABLE}=1)")
    return parser


def _zoo() -> str:
    from landing.infra.model_names import DEFAULT_MODELZOO

    return str(DEFAULT_MODELZOO)


# ---------------------------------------------------------------- user-defined parameters


def parse_user_defined(text: str | None) -> dict[str, str]:
    """EasyNLP's ``key=value key=value`` (newlines count as spaces). A value keeps every ``=`` after the
    first; double quotes group a value with spaces; a token without ``=`` and a repeated key are errors."""
    if not text or not text.strip():
        return {}
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError as exc:
        raise EasynlpUsageError(f"--user_defined_parameters: {exc} (quote a value with spaces as key=\"a b\")") from None
    out: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            after = f" (it follows {tokens[tokens.index(token) - 1]!r}: quote a value with spaces, as key=\"a b\")" \
                if tokens.index(token) > 0 else ""  # fmt: skip
            raise EasynlpUsageError(f"--user_defined_parameters: {token!r} is not key=value{after}")
        if key in out:
            raise EasynlpUsageError(f"--user_defined_parameters: {key} given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise EasynlpUsageError(f"--user_defined_parameters: {key}={value!r}: expected True or False")


def _prompt_keys() -> set[str]:
    from landing.models.fewshot.params import PromptParams

    return {f.name for f in dataclass_fields(PromptParams)} - {"method", "label_words"}


def _augment_keys(kind: str) -> set[str]:
    from landing.models.augment.eda import EdaParams
    from landing.models.augment.mlm import MlmAugmentParams

    params = MlmAugmentParams if kind == "mlm_da" else EdaParams
    return {f.name for f in dataclass_fields(params)} | set(AUGMENT_ALIASES)


KD_KEYS = {"enable_distillation", "type", "logits_name", "logits_saved_path", "temperature", "alpha",
           "teacher_model_path"}  # fmt: skip
FEWSHOT_KEYS = {"enable_fewshot", "type"}
# Our own keys (EasyNLP has none for it): adapt the named model into a masked LM first, as a cached step.
MLM_ADAPT_KEYS = {"mlm_adapt_steps": "max_steps", "mlm_adapt_learning_rate": "learning_rate",
                  "mlm_adapt_layers": "train_layers"}  # fmt: skip


def allowed_keys(app: str, mode: str, udp: dict[str, str]) -> set[str]:
    """The user-defined keys this app and mode take (``easynlp --help`` lists them)."""
    if app == "data_augmentation":
        return {"pretrain_model_name_or_path", "type"} | _augment_keys(udp.get("type", "mlm_da")) | set(MLM_ADAPT_KEYS)
    if app == "sequence_labeling":
        return {"pretrain_model_name_or_path"} if mode == "train" else set()
    keys = {"pretrain_model_name_or_path"} | FEWSHOT_KEYS | _prompt_keys()
    return keys | KD_KEYS | set(MLM_ADAPT_KEYS) | {"allow_unknown_tokens"} if mode == "train" else keys


def _check_keys(app: str, mode: str, udp: dict[str, str]) -> None:
    allowed = allowed_keys(app, mode, udp)
    for key in udp:
        if key not in allowed:
            raise EasynlpUsageError(f"--user_defined_parameters: unknown key {key!r} for --app_name={app} "
                                    f"--mode={mode}{_close(key, allowed)}")  # fmt: skip


def _help_epilog() -> str:
    prompt = ", ".join(sorted(_prompt_keys()))
    return (
        "apps and modes:\n"
        "  text_classify, text_match   train | evaluate | predict (pairs with --second_sequence; text_match needs it)\n"
        "  data_augmentation           predict (writes --outputs)\n"
        "  sequence_labeling           train | evaluate | predict (content: tokens separated by spaces, label: one tag "
        "each; predict --output_schema output,predictions)\n\n"
        "user-defined parameters (--user_defined_parameters=\"key=value ...\"):\n"
        "  train, evaluate, predict    pretrain_model_name_or_path; train: allow_unknown_tokens=True (mostly [UNK] text)\n"
        "  train, distillation         enable_distillation=True type=vanilla_kd (or e.g. vanilla_kd+hidden_mse) "
        "logits_name logits_saved_path temperature alpha teacher_model_path\n"
        f"  few-shot                    enable_fewshot=True type={'|'.join(FEWSHOT_TYPES)} pattern label_desc; also {prompt}\n"
        f"  data_augmentation           type={'|'.join(AUGMENT_TYPES)} pretrain_model_name_or_path (mlm_da's masked LM); "
        f"mlm_da: {', '.join(sorted(_augment_keys('mlm_da')))}; eda: {', '.join(sorted(_augment_keys('eda')))}\n"
        f"  a model without a masked-LM head (prompt types, mlm_da): {' '.join(MLM_ADAPT_KEYS)} adapt it first\n\n"
        "Every command is a Prefect flow run tracked in MLflow; see the README's EasyNLP section."
    )


# ---------------------------------------------------------------- flags → run config


def _require(args, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise EasynlpUsageError(f"--app_name={args.app_name} --mode={args.mode} needs {', '.join(missing)}")


def _labels(value: str | None) -> list[str] | None:
    """``--label_enumerate_values``: a comma list, or a file with one label per line (as EasyNLP)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if "," not in value and path.is_file():  # a long comma list is no file name (and may be too long for one)
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not labels:
            raise EasynlpUsageError(f"--label_enumerate_values={value}: the file has no labels")
        return labels
    return [v.strip() for v in value.split(",")]


def _table_uris(args) -> list[str]:
    uris = [t.strip() for t in (args.tables or "").split(",") if t.strip()]
    if not uris:
        raise EasynlpUsageError("--tables: give the table(s) to read, comma-separated")
    for uri in uris:
        if "://" not in uri and not Path(uri).expanduser().is_file():
            raise EasynlpUsageError(f"--tables: {uri}: no such file")
    return [uri if "://" in uri else str(Path(uri).expanduser().resolve()) for uri in uris]


def _schema_and_columns(args, *, labelled: bool, logits_fields: list[str] = ()) -> tuple[dict, dict[str, str]]:
    """The data contract for EasyNLP's schema (TSV, no header unless --skip_first_line skips it), and each schema
    column's name in the validated table: a column that is not a role but is named like one of the validated
    table's own columns (id, text, text_pair, label) is kept under another name, so MRPC's ``id`` column is
    read as written."""
    from landing.data_contracts.schema import RESERVED_NAMES, parse_input_schema

    _require(args, "input_schema", "first_sequence")
    try:
        schema = [f for f in parse_input_schema(args.input_schema) if f.name not in logits_fields]
    except UserError as exc:
        raise EasynlpUsageError(f"--input_schema: {exc}") from None
    roles = {args.first_sequence: "text", args.second_sequence: "text_pair"}
    if labelled:
        roles[args.label_name] = "label"
    roles.pop(None, None)
    columns, entries = {}, []
    for f in schema:
        name = f.name if f.name in roles or f.name not in RESERVED_NAMES else f"{f.name}_column"
        columns[f.name] = roles.get(f.name, name)
        entries.append(f"{name}:{f.dtype}:{f.count}")
    contract = {"input_schema": ",".join(entries), "first_sequence": args.first_sequence,
                "second_sequence": args.second_sequence, "label_column": args.label_name if labelled else None,
                "label_enumerate_values": _labels(args.label_enumerate_values), "format": "tsv",
                "has_header": False, "skip_first_line": args.skip_first_line, "strip": False}  # fmt: skip
    if args.app_name == "text_match" and not args.second_sequence:
        raise EasynlpUsageError("--app_name=text_match needs --second_sequence (the second text of each pair)")
    return contract, columns


def _common(args, argv: list[str], contract: dict, columns: dict[str, str], uris: list[str]) -> dict:
    return {"name": f"easynlp-{args.app_name}-{args.mode}", "seed": args.random_seed, "app_name": args.app_name,
            "argv": argv, "contract": contract, "columns": columns,
            "tables": [{"sources": [{"uri": uri}]} for uri in uris]}  # fmt: skip


def _launch(args) -> dict:
    """EasyNLP's workers as torchrun processes where there are GPUs; one process otherwise (said once)."""
    import torch

    asked = args.worker_count > 1 or args.worker_gpu > 1
    if not torch.cuda.is_available():
        if asked:
            print(f"easynlp: --worker_count={args.worker_count} --worker_gpu={args.worker_gpu}: no GPU on this "
                  "machine, so training runs in one CPU process", file=sys.stderr)  # fmt: skip
        return {}
    launch = {"nproc_per_node": max(1, args.worker_gpu), "nnodes": args.worker_count, "backend": args.distributed_backend}
    if args.worker_count > 1:
        if not os.environ.get("MASTER_ADDR"):
            raise EasynlpUsageError("--worker_count > 1: set MASTER_ADDR to the first node's address (as for EasyNLP)")
        launch |= {"rdzv_endpoint": f"{os.environ['MASTER_ADDR']}:{args.master_port}"}
    return launch


def _training(args) -> dict:
    if args.optimizer_type != "AdamW":
        raise EasynlpUsageError(f"--optimizer_type={args.optimizer_type}: only AdamW is available here (transformers "
                                "Trainer's, with decoupled weight decay); EasyNLP's BertAdam is AdamW without bias "
                                "correction")  # fmt: skip
    training = {"epochs": args.epoch_num, "batch_size": args.micro_batch_size, "eval_batch_size": args.micro_batch_size,
                "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
                "warmup_ratio": args.warmup_proportion, "max_seq_length": args.sequence_length,
                "logging_steps": args.logging_steps, "max_grad_norm": args.max_grad_norm,
                "gradient_accumulation_steps": args.gradient_accumulation_steps, "distributed": _launch(args)}  # fmt: skip
    if args.save_checkpoint_steps is not None:
        training["save_checkpoint_steps"] = args.save_checkpoint_steps
    return training


def _model_spec(args, udp: dict[str, str]) -> tuple[dict, str | None, dict]:
    """(the model spec, the few-shot method or None, the mlm_adapt fields of the config: empty without it)."""
    from landing.infra.model_names import resolve_model_name

    name = udp.get("pretrain_model_name_or_path")
    if not name:
        raise EasynlpUsageError("--user_defined_parameters: train needs pretrain_model_name_or_path=<model>")
    path = resolve_model_name(name, args.modelzoo_base_dir)
    if not _bool("enable_fewshot", udp.get("enable_fewshot", "False")):
        stray = sorted(k for k in udp if k in _prompt_keys() | set(MLM_ADAPT_KEYS))
        if stray:
            raise EasynlpUsageError(f"--user_defined_parameters: {', '.join(stray)} need enable_fewshot=True")
        return {"kind": "pretrained", "name_or_path": path}, None, {}
    kind = udp.get("type", "pet_fewshot")
    if kind not in FEWSHOT_TYPES:
        raise EasynlpUsageError(f"--user_defined_parameters: type={kind}: few-shot types are "
                                f"{', '.join(FEWSHOT_TYPES)}{_close(kind, FEWSHOT_TYPES)}")  # fmt: skip
    prompt = {k: v for k, v in udp.items() if k in _prompt_keys()}
    if "label_desc" in prompt:
        prompt["label_desc"] = [w.strip() for w in prompt["label_desc"].split(",")]
    if "pseudo_init" in prompt:
        prompt["pseudo_init"] = [w.strip() for w in prompt["pseudo_init"].split(",")]
    if "label_desc" in prompt:
        _check_label_words(path, _labels(args.label_enumerate_values), prompt["label_desc"])
    adapt = _mlm_adapt(args, udp, name, path, f"type={kind}")
    spec = {"kind": "prompt", "mlm_model": None if adapt else path, "prompt": {"method": FEWSHOT_TYPES[kind], **prompt}}
    return spec, kind, {"mlm_adapt": adapt, "mlm_base": path} if adapt else {}


def _check_label_words(path: str, labels: list[str], label_desc: list[str]) -> None:
    """The verbalizer against the model's tokenizer (mlm_adapt keeps it), now rather than after an adaptation."""
    from landing.models.fewshot.patterns import PatternError, verbalizer
    from landing.models.fewshot.prompt_model import encode_label_words
    from landing.models.pretrained import load_tokenizer

    try:
        encode_label_words(load_tokenizer(path), verbalizer(labels, label_desc=label_desc))
    except PatternError as exc:
        raise EasynlpUsageError(f"--user_defined_parameters: label_desc: {exc}") from None


def _layers_to_adapt(knobs: dict[str, str], path: str) -> int:
    """mlm_adapt_layers, checked against the model's depth (mlm_adapt's default when not given)."""
    from transformers import AutoConfig

    from landing.models.mlm_adapt import MlmAdaptParams
    from landing.models.pretrained import resolve_name_or_path

    depth = getattr(AutoConfig.from_pretrained(resolve_name_or_path(path)), "num_hidden_layers", None)
    try:
        layers = int(knobs.get("train_layers", MlmAdaptParams().train_layers))
    except ValueError:
        raise EasynlpUsageError(f"--user_defined_parameters: mlm_adapt_layers={knobs['train_layers']!r}: expected a "
                                "whole number of encoder layers") from None  # fmt: skip
    if depth is not None and layers > depth:
        raise EasynlpUsageError(f"--user_defined_parameters: mlm_adapt_layers={layers}: the model has {depth} encoder "
                                f"layer(s); give mlm_adapt_layers={depth} or fewer")  # fmt: skip
    return layers


def _mlm_adapt(args, udp: dict[str, str], name: str, path: str, needs: str) -> dict | None:
    """The mlm_adapt knobs the user-defined keys give, or None (then ``path`` must have a masked-LM head:
    checked here, before any server starts or table is read)."""
    knobs = {field: udp[key] for key, field in MLM_ADAPT_KEYS.items() if key in udp}
    if knobs and "max_steps" not in knobs:
        raise EasynlpUsageError(f"--user_defined_parameters: {', '.join(k for k in MLM_ADAPT_KEYS if k in udp)} "
                                "need mlm_adapt_steps=<optimizer steps> (e.g. 800)")  # fmt: skip
    if knobs:
        return knobs | {"max_seq_length": args.sequence_length, "train_layers": _layers_to_adapt(knobs, path)}
    from landing.models.augment.mlm import has_mlm_head  # torch: only for commands that need a masked LM

    if not has_mlm_head(path):
        raise EasynlpUsageError(f"--user_defined_parameters: {needs} needs a masked LM, and "
                                f"pretrain_model_name_or_path={name} has no masked-LM head; add mlm_adapt_steps=800 to "
                                "adapt it into one first (a cached step; also mlm_adapt_learning_rate, "
                                "mlm_adapt_layers), or name a model that has one")  # fmt: skip
    return None


def _distillation(args, udp: dict[str, str], spec_kind: str | None) -> tuple[dict | None, dict | None, list[str]]:
    """(distillation params, the teacher logits file, the schema fields the logits file supplies)."""
    if not _bool("enable_distillation", udp.get("enable_distillation", "False")):
        stray = sorted(k for k in udp if k in KD_KEYS - {"enable_distillation", "type"})
        if stray:
            raise EasynlpUsageError(f"--user_defined_parameters: {', '.join(stray)} need enable_distillation=True")
        return None, None, []
    if spec_kind is not None:
        raise EasynlpUsageError("--user_defined_parameters: enable_distillation and enable_fewshot are separate "
                                "commands: train the few-shot teacher, predict its logits, then distil")  # fmt: skip
    for key in ("logits_name", "logits_saved_path"):
        if not udp.get(key):
            raise EasynlpUsageError(f"--user_defined_parameters: enable_distillation=True needs {key}")
    from landing.data_contracts.schema import parse_input_schema

    schema = parse_input_schema(args.input_schema)
    names = [f.name for f in schema]
    logits_name = udp["logits_name"]
    if logits_name not in names:
        raise EasynlpUsageError(f"logits_name={logits_name}: not a column of --input_schema ({', '.join(names)}); "
                                f"EasyNLP's KD schema ends with it, e.g. {logits_name}:float:<labels>")  # fmt: skip
    teacher_fields = names[_table_width(args, len(names), names.index(logits_name)):]
    path = Path(udp["logits_saved_path"]).expanduser()
    teacher_model = udp.get("teacher_model_path")
    logits = {"path": str(path.resolve()), "columns": teacher_fields, "logits_name": logits_name,
              "width": schema[names.index(logits_name)].count,
              "teacher_model": str(Path(teacher_model).expanduser().resolve()) if teacher_model else None}  # fmt: skip
    kd = {"type": udp.get("type", "vanilla_kd")}
    for key in ("temperature", "alpha"):
        if key in udp:
            kd[key] = udp[key]
    return kd, logits, teacher_fields


def _table_width(args, schema_width: int, logits_index: int) -> int:
    """How many schema columns the training table has; the rest come from the teacher's file (EasyNLP appends
    line n of that file to row n). Counted on the first data line of a local table; otherwise the columns
    from logits_name on are the teacher's."""
    first = (args.tables or "").split(",")[0].strip()
    path = Path(first).expanduser()
    if "://" in first or not path.is_file():
        return logits_index
    with path.open(encoding="utf-8-sig") as fh:
        lines = (line.rstrip("\r\n") for line in fh)
        if args.skip_first_line:
            next(lines, None)
        line = next((ln for ln in lines if ln.strip()), None)
    width = len(line.split("\t")) if line is not None else logits_index
    if not 0 < width <= logits_index:
        raise EasynlpUsageError(f"--input_schema has {schema_width} columns and {first} has {width} per row, so the "
                                f"teacher's file would supply none of them, but logits_name is column "
                                f"{logits_index + 1}; the KD schema is the table's columns, then the logits file's")  # fmt: skip
    return width


def build_config(args, argv: list[str], udp: dict[str, str]):
    """The run config of one command, validated (errors name the flag or key)."""
    from pydantic import ValidationError

    from landing import easynlp_config as c

    _check_keys(args.app_name, args.mode, udp)
    uris = _table_uris(args)
    if len(uris) > 1 and (args.mode == "predict" or args.app_name == "data_augmentation"):
        raise EasynlpUsageError(f"--tables: --mode={args.mode} reads one table, found {len(uris)} ({args.tables})")
    if len(uris) > 1 and args.mode == "evaluate":
        print(f"easynlp: --mode=evaluate: evaluating on the last table, {uris[-1]}", file=sys.stderr)
    if args.app_name == "sequence_labeling":
        return _labeling_config(args, argv, udp, uris)
    try:
        if args.app_name == "data_augmentation":
            return c.EasynlpAugmentConfig(**_augment(args, argv, udp, uris))
        if args.mode == "train":
            return c.EasynlpTrainConfig(**_train(args, argv, udp, uris))
        _require(args, "checkpoint_dir")
        checkpoint = _checkpoint(args.checkpoint_dir)
        if any(k in udp for k in FEWSHOT_KEYS | _prompt_keys() | {"pretrain_model_name_or_path"}):
            print(f"easynlp: {', '.join(sorted(udp))}: not needed to {args.mode}; the checkpoint "
                  f"{args.checkpoint_dir} carries its model (and prompt)", file=sys.stderr)  # fmt: skip
        if args.mode == "evaluate":
            _require(args, "label_name")
            contract, columns = _schema_and_columns(args, labelled=True)
            return c.EasynlpEvaluateConfig(**_common(args, argv, contract, columns, uris), checkpoint_path=checkpoint,
                                           sequence_length=args.sequence_length, batch_size=args.micro_batch_size)  # fmt: skip
        return c.EasynlpPredictConfig(**_predict(args, argv, uris), checkpoint_path=checkpoint)
    except ValidationError as exc:
        raise EasynlpUsageError(_validation_message(exc)) from None


def _labeling_config(args, argv: list[str], udp: dict[str, str], uris: list[str]):
    """``--app_name=sequence_labeling``: the joint model of the ``slu`` flow on tag-only tables."""
    from pydantic import ValidationError

    from landing import easynlp_config as c
    from landing.data_contracts.schema import parse_input_schema

    if any("://" in uri for uri in uris):
        raise EasynlpUsageError(f"--tables: sequence_labeling reads local files; found {', '.join(uris)}")
    _require(args, "input_schema", "first_sequence")
    try:
        columns = [f.name for f in parse_input_schema(args.input_schema)]
    except UserError as exc:
        raise EasynlpUsageError(f"--input_schema: {exc}") from None
    labelled = args.mode != "predict"
    if labelled:
        _require(args, "label_name")
    contract = {"format": "easynlp", "columns": columns, "tokens_column": args.first_sequence,
                "tags_column": args.label_name if labelled else None, "skip_first_line": args.skip_first_line,
                "slot_labels": _labels(args.label_enumerate_values)}  # fmt: skip
    common = {"name": f"easynlp-{args.app_name}-{args.mode}", "seed": args.random_seed, "argv": argv,
              "contract": contract, "tables": uris}  # fmt: skip
    try:
        if args.mode == "train":
            _require(args, "label_enumerate_values", "checkpoint_dir")
            if len(uris) < 2:
                raise EasynlpUsageError(f"--tables: train needs the training table and the evaluation table "
                                        f"(train.tsv,dev.tsv); found only {uris[0]}")  # fmt: skip
            spec, _, _ = _model_spec(args, udp)
            return c.EasynlpLabelingTrainConfig(**common, model={"model": spec, "training": _training(args)},
                                                checkpoint_dir=str(Path(args.checkpoint_dir).expanduser().resolve()))  # fmt: skip
        _require(args, "checkpoint_dir")
        reading = {"checkpoint_path": _labeling_checkpoint(args.checkpoint_dir), "sequence_length": args.sequence_length,
                   "batch_size": args.micro_batch_size}  # fmt: skip
        if args.mode == "evaluate":
            return c.EasynlpLabelingEvaluateConfig(**common, **reading)
        _require(args, "outputs")
        output_schema = [col.strip() for col in (args.output_schema or "").split(",") if col.strip()]
        append = [col.strip() for col in (args.append_cols or "").split(",") if col.strip()]
        for column in append:
            if column not in columns:
                raise EasynlpUsageError(f"--append_cols: {column!r} is not a column of --input_schema "
                                        f"({', '.join(columns)}){_close(column, columns)}")  # fmt: skip
        return c.EasynlpLabelingPredictConfig(**common, **reading, outputs=str(Path(args.outputs).expanduser().resolve()),
                                              output_schema=output_schema, append_cols=append)  # fmt: skip
    except ValidationError as exc:
        raise EasynlpUsageError(_validation_message(exc)) from None


def _labeling_checkpoint(path: str) -> str:
    from landing.models.slu_export import SLU_META

    model_dir = Path(path).expanduser()
    if not (model_dir / SLU_META).is_file():
        raise EasynlpUsageError(f"--checkpoint_path: {path} is not a sequence_labeling checkpoint (no {SLU_META}; "
                                "write one with --app_name=sequence_labeling --mode=train)")  # fmt: skip
    return str(model_dir.resolve())


def _checkpoint(path: str) -> str:
    from landing.models.model_files import check_model_dir

    model_dir = Path(path).expanduser()
    check_model_dir(model_dir, field="--checkpoint_path")
    return str(model_dir.resolve())


def _train(args, argv: list[str], udp: dict[str, str], uris: list[str]) -> dict:
    _require(args, "label_name", "label_enumerate_values", "checkpoint_dir")
    if len(uris) < 2:
        raise EasynlpUsageError(f"--tables: train needs the training table and the evaluation table "
                                f"(train.tsv,dev.tsv); found only {uris[0]}")  # fmt: skip
    spec, fewshot, adapt = _model_spec(args, udp)
    if "type" in udp and fewshot is None and not _bool("enable_distillation", udp.get("enable_distillation", "False")):
        raise EasynlpUsageError(f"--user_defined_parameters: type={udp['type']} needs enable_distillation=True or "
                                "enable_fewshot=True")  # fmt: skip
    kd, logits, teacher_fields = _distillation(args, udp, fewshot)
    contract, columns = _schema_and_columns(args, labelled=True, logits_fields=teacher_fields)
    return {**_common(args, argv, contract, columns, uris), "model": spec, "training": _training(args), **adapt,
            "allow_unknown_tokens": _bool("allow_unknown_tokens", udp.get("allow_unknown_tokens", "False")),
            "distillation": kd, "logits": logits, "checkpoint_dir": str(Path(args.checkpoint_dir).expanduser().resolve()),
            "labels": _labels(args.label_enumerate_values)}  # fmt: skip


def _predict(args, argv: list[str], uris: list[str]) -> dict:
    _require(args, "outputs")
    output_schema = [c.strip() for c in (args.output_schema or "").split(",") if c.strip()]
    if not output_schema:
        raise EasynlpUsageError(f"--output_schema: give the columns to write, comma-separated ({', '.join(OUTPUT_COLUMNS)})")
    for column in output_schema:
        if column not in OUTPUT_COLUMNS:
            raise EasynlpUsageError(f"--output_schema: unknown column {column!r}{_close(column, OUTPUT_COLUMNS)}; "
                                    f"expected some of {', '.join(OUTPUT_COLUMNS)}")  # fmt: skip
    contract, columns = _schema_and_columns(args, labelled=False)
    append = [c.strip() for c in (args.append_cols or "").split(",") if c.strip()]
    for column in append:
        if column not in columns:
            raise EasynlpUsageError(f"--append_cols: {column!r} is not a column of --input_schema "
                                    f"({', '.join(columns)}){_close(column, columns)}")  # fmt: skip
    return {**_common(args, argv, contract, columns, uris), "outputs": str(Path(args.outputs).expanduser().resolve()),
            "output_schema": output_schema, "append_cols": append, "sequence_length": args.sequence_length,
            "batch_size": args.micro_batch_size}  # fmt: skip


def _augment(args, argv: list[str], udp: dict[str, str], uris: list[str]) -> dict:
    from landing.infra.model_names import resolve_model_name

    if args.mode != "predict":
        raise EasynlpUsageError(f"--app_name=data_augmentation runs with --mode=predict, found --mode={args.mode}")
    _require(args, "outputs")
    if args.output_schema not in ("", "augmented_data") or args.append_cols:
        raise EasynlpUsageError(f"--app_name=data_augmentation writes the input schema's columns: --output_schema is "
                                f"augmented_data (or left out) and --append_cols is not taken; found "
                                f"--output_schema={args.output_schema!r} --append_cols={args.append_cols!r}")  # fmt: skip
    kind = udp.get("type", "mlm_da")
    if kind not in AUGMENT_TYPES:
        raise EasynlpUsageError(f"--user_defined_parameters: type={kind}: data_augmentation types are "
                                f"{', '.join(AUGMENT_TYPES)}{_close(kind, AUGMENT_TYPES)}")  # fmt: skip
    params = {AUGMENT_ALIASES.get(k, k): v for k, v in udp.items() if k not in ("type", "pretrain_model_name_or_path")}
    if "strategies" in params:  # eda: unk:0.3,pos:0.4,ngram:0.3
        params["strategies"] = dict(_share(item) for item in params["strategies"].split(","))
    params = {k: v for k, v in params.items() if k not in MLM_ADAPT_KEYS}
    augmentation = {kind: params}
    if kind == "mlm_da":
        name = udp.get("pretrain_model_name_or_path")
        if not name:
            raise EasynlpUsageError("--user_defined_parameters: type=mlm_da needs pretrain_model_name_or_path=<a "
                                    "masked LM, or any encoder with mlm_adapt_steps=800>")  # fmt: skip
        path = resolve_model_name(name, args.modelzoo_base_dir)
        adapt = _mlm_adapt(args, udp, name, path, "type=mlm_da")
        augmentation |= {"mlm_adapt": adapt, "mlm_base": path} if adapt else {"mlm_model": path}
    elif any(k in udp for k in MLM_ADAPT_KEYS):
        raise EasynlpUsageError(f"--user_defined_parameters: {', '.join(k for k in MLM_ADAPT_KEYS if k in udp)}: "
                                f"type={kind} uses no masked LM")  # fmt: skip
    contract, columns = _schema_and_columns(args, labelled=bool(args.label_name))
    return {**_common(args, argv, contract, columns, uris), "outputs": str(Path(args.outputs).expanduser().resolve()),
            "augmentation": augmentation}  # fmt: skip


def _share(item: str) -> tuple[str, str]:
    name, sep, share = item.partition(":")
    if not sep:
        raise EasynlpUsageError(f"--user_defined_parameters: strategies: {item!r} is not strategy:share")
    return name.strip(), share.strip()


def _validation_message(exc) -> str:
    """pydantic's errors as ``key: message`` lines, with the user's flag or key names where they differ."""
    names = {"epochs": "--epoch_num", "batch_size": "--micro_batch_size", "max_seq_length": "--sequence_length",
             "warmup_ratio": "--warmup_proportion", "mlm_model": "pretrain_model_name_or_path",
             "keep_originals": "append_original", "name_or_path": "pretrain_model_name_or_path"}  # fmt: skip
    lines = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"] if not isinstance(p, int) and p not in ("pretrained", "prompt", "function-after")]
        key, message = names.get(loc[-1], loc[-1]) if loc else "command", e["msg"]
        if "mlm_adapt" in loc:  # its knobs are user-defined keys of their own
            for udp_key, field in MLM_ADAPT_KEYS.items():
                key = udp_key if field == loc[-1] else key
                message = message.replace(f"{field}:", f"{udp_key}:")
        lines.append(f"{key}: {message} (found {e.get('input')!r})" if "input" in e and not isinstance(e["input"], dict)
                     else f"{key}: {message}")  # fmt: skip
    return "; ".join(lines)


# ---------------------------------------------------------------- running


def _reuse_prefect_server() -> None:
    """One Prefect server for a session of commands, not a temporary one each (unless an API is set, the
    stack runs, or ``LANDING_REUSE_PREFECT_SERVER=false``)."""
    from landing.infra.settings import get_settings

    settings = get_settings()
    if os.environ.get("PREFECT_API_URL") or not settings.reuse_prefect_server:
        return
    from landing.infra.stack import StackConfig, reused_prefect_api

    url = reused_prefect_api(StackConfig(settings.state_dir), out=lambda line: print(f"easynlp: {line}", file=sys.stderr))
    if url is not None:
        os.environ["PREFECT_API_URL"] = url


def prepare_process() -> None:
    """What a command sets up before Prefect's first import, which reads its settings once: the embedded
    defaults (or the local stack), then the reused server. The warm process (``landing.warm``) does the same."""
    from landing.cli import _runtime

    _runtime()
    _reuse_prefect_server()


def warm_imports() -> None:
    """What the warm process imports ahead of a command: the flows, and what their steps import lazily."""
    import alembic.migration  # noqa: F401  (MLflow's schema check, at a run's start)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import onnxruntime  # noqa: F401
    import transformers.trainer  # noqa: F401

    import landing.easynlp_config  # noqa: F401
    import landing.flows.easynlp  # noqa: F401
    import landing.models.training  # noqa: F401


def run_command(argv: list[str]) -> dict:
    """Parse, validate and run one command; returns the flow's summary."""
    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ[DEBUG_VARIABLE] = "1"
    udp = parse_user_defined(args.user_defined_parameters)
    config = build_config(args, argv, udp)
    if args.worker_cpu > 0:
        import torch

        torch.set_num_threads(args.worker_cpu)
    from landing.cli import _quiet_console_logs

    prepare_process()
    from landing.flows import easynlp as flows

    _quiet_console_logs(prefect_progress=False)  # an EasyNLP user expects its own few lines, not Prefect's
    if not args.debug:  # loading and saving bars per model; training keeps its own progress bar
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if args.app_name == "data_augmentation":
        flow = flows.easynlp_augment
    elif args.app_name == "sequence_labeling":
        flow = {"train": flows.easynlp_labeling_train, "evaluate": flows.easynlp_labeling_evaluate,
                "predict": flows.easynlp_labeling_predict}[args.mode]  # fmt: skip
    else:
        flow = {"train": flows.easynlp_train, "evaluate": flows.easynlp_evaluate, "predict": flows.easynlp_predict}[args.mode]
    out = _summary_dir(config.name)
    return flow(config=config, output_dir=str(out)) | {"summary_path": str(out / "summary.json")}


def _summary_dir(name: str) -> Path:
    """``runs/<command kind>/<UTC time>-<pid>``: one folder per command, so a second run of the same kind never
    overwrites the first one's summary."""
    from datetime import datetime, timezone

    return Path("runs") / name / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}Z-{os.getpid()}"


def _report(summary: dict) -> None:
    if "eval" in summary and "slot_f1" in summary["eval"]:
        e = summary["eval"]
        print(f"eval: slot F1 {100 * e['slot_f1']:.2f}% (seqeval), sentence accuracy {100 * e['sentence_accuracy']:.2f}%",
              file=sys.stderr)  # fmt: skip
    elif "eval" in summary:
        e = summary["eval"]
        print(f"eval: accuracy {100 * e['accuracy']:.2f}%, macro-F1 {100 * e['macro_f1']:.2f}%", file=sys.stderr)
    if "checkpoint" in summary:
        print(f"model written to {summary['checkpoint']['checkpoint_dir']} (also an ONNX bundle: landing predict "
              f"--model {summary['checkpoint']['checkpoint_dir']})", file=sys.stderr)  # fmt: skip
    for key in ("predict", "augment"):
        if key in summary:
            part = summary[key]
            print(f"{part.get('rows', part.get('rows_out'))} rows written to {part['outputs']}", file=sys.stderr)
    print(f"MLflow run {summary['mlflow_run_id']}, Prefect flow run {summary['prefect_flow_run_id']}; summary: "
          f"{summary['summary_path']}", file=sys.stderr)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """The ``easynlp`` console script: a mistake in the command or its data ends it with one message (exit 2 for
    the command line, 1 for data or models); a bug keeps its traceback."""
    from landing.cli import explained_or_exit

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        os.environ[DEBUG_VARIABLE] = "1"
    try:
        summary = run_command(argv)
    except SystemExit:
        raise
    except Exception as exc:
        user = explained_or_exit(exc)
        print(f"easynlp: error: {user}", file=sys.stderr)
        print(f"(a traceback: --debug or {DEBUG_VARIABLE}=1)", file=sys.stderr)
        sys.exit(2 if isinstance(user, EasynlpUsageError) else 1)
    _report(summary)


if __name__ == "__main__":
    main()
