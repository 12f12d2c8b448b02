"""The knobs of training, torchrun, distillation and compression, each declared once.

Pydantic dataclasses: ``models/`` consumes them as plain dataclasses, and the run-config schemas
(landing/config.py) use them as fields, so pydantic validates a YAML config into exactly these.
This module imports only pydantic; the registries that name losses and quantizers (models/kd.py,
models/quantize.py) are imported when a value is validated, so reading the schemas stays cheap.
"""

from __future__ import annotations

from dataclasses import asdict, field
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass as validated_dataclass
from pydantic_core import InitErrorDetails, PydanticCustomError

if TYPE_CHECKING:
    from landing.models.kd_registry import RegisteredLoss

# Tokens a row is cut to: one type for every step that encodes text (BERT-sized position tables: at most 512).
SeqLength = Annotated[int, Field(ge=8, le=512)]


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Launch:
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
    def _rendezvous(self) -> Launch:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be < nnodes {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("rdzv_endpoint (host:port reachable from every node) is required when nnodes > 1")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainerParams:
    """The optimisation knobs of one Trainer run; everything else keeps Trainer's defaults."""

    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, gt=0, description="the global batch, split across distributed processes")
    eval_batch_size: int = Field(128, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    save_checkpoint_steps: int = Field(500, gt=0)
    logging_steps: int = Field(50, gt=0)
    max_grad_norm: float = Field(1.0, gt=0, description="gradients clipped to this global norm")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches whose gradients add up to one optimizer step")
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    bf16: Literal["auto", "off"] = Field(
        "off", description="auto: bf16 autocast where the CPU computes bf16 natively (AVX-512 BF16, AMX), else FP32"
    )
    group_by_length: bool = Field(False, description="batches of similar lengths (less padding), still shuffled")


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RecoveryParams(TrainerParams):
    """``compression.recover``: KD after pruning. It runs in the compress step's own process, on the rows as
    ``compression.max_seq_length`` encodes them, so it has no length or torchrun knob of its own."""


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class QATParams(TrainerParams):
    """``compression.qat``: the fake-quantized fine-tuning, in process and at ``compression.max_seq_length``."""


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainingParams(TrainerParams):
    """The training knobs a run config exposes (``training:``): a Trainer run, its row length and torchrun."""

    max_seq_length: SeqLength = 128
    freeze_embeddings: bool = Field(False, description="the embeddings are not trained (fewer gradients to compute)")
    freeze_layers: int = Field(0, ge=0, description="the lowest N encoder layers are not trained")
    early_stopping_patience: int = Field(
        0, ge=0, description="evaluate validation accuracy every save_checkpoint_steps, stop after N evaluations "
        "without a better one and keep the best checkpoint's weights; 0: off (train the whole budget)",
    )  # fmt: skip
    distributed: Launch = Field(
        default_factory=Launch, description="torchrun DDP; batch_size stays the global batch, split across processes"
    )

    @model_validator(mode="after")
    def _batch_splits_evenly(self) -> TrainingParams:
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


class LatencyParams(BaseModel):
    """How one model is timed, on any target: every ``LatencyTarget.measure`` takes these, and the run config's
    ``latency:`` block extends them with its targets and rounds. A model (BaseModel, not a dataclass) for that."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seq_lens: list[int] = Field(default_factory=lambda: [16, 32], min_length=1, description="token lengths timed")
    threads: int = Field(1, gt=0, description="intra-op threads")
    warmup: int = Field(20, ge=0, description="untimed runs first (onnxruntime_perf_test does its own one)")
    runs: int = Field(200, gt=0, description="timed runs per length")
    batch: int = Field(1, gt=0, description="rows per run")


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class OnlineTeacher:
    """Online distillation (ERNIE Slim's online mode): the teacher is served over HTTP while the student
    trains, and each training batch asks it for logits; no logits file is written."""

    host: str = Field("127.0.0.1", description="where the flow serves the teacher (loopback by default)")
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    server_batch_size: int = Field(32, gt=0, description="rows per request")
    concurrency: int = Field(2, gt=0, description="requests in flight at once for one training batch")
    timeout_s: float = Field(30.0, gt=0, description="per request")
    retries: int = Field(2, ge=0, description="further attempts per request, with exponential backoff")


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class KDParams:
    """The distillation knobs (the run config's ``distillation:`` and ``recover_distillation:``).

    ``type`` names one registered loss or several joined by ``+``; ``weights`` scales them (default 1).
    """

    temperature: float = Field(5.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    type: str = "vanilla_kd"
    weights: dict[str, float] = field(default_factory=dict)
    online: OnlineTeacher | None = Field(None, description="ask a served teacher for logits per batch")
    layer_map: dict[int, int] | None = Field(
        None, description="intermediate losses: student layer → teacher layer (1-based); default uniform"
    )
    match_embeddings: bool = Field(False, description="intermediate losses: also match the embedding outputs (0 ← 0)")
    teacher_labels: Literal["soft", "hard"] = Field(
        "soft", description="soft: the KD losses on the teacher's logits; hard: its argmax as the transfer rows' "
        "labels, trained with cross-entropy (ERNIE Slim's offline data distillation)",
    )

    @model_validator(mode="after")
    def _hard_labels_are_offline(self) -> KDParams:
        if self.teacher_labels == "hard" and self.online is not None:
            raise ValueError("teacher_labels: hard labels are read from the logits file; online needs soft")
        return self

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        from landing.models.kd import get_kd_loss  # the registry; imported when a config is validated

        for name in value.split("+"):
            get_kd_loss(name.strip())
        return value

    @model_validator(mode="after")
    def _weights_name_losses(self) -> KDParams:
        unknown = sorted(set(self.weights) - set(self.loss_names))
        if unknown:
            raise ValueError(f"weights: {unknown} are not among the losses of type {self.type!r}")
        return self

    @model_validator(mode="after")
    def _intermediate_needs_the_teacher_model(self) -> KDParams:
        if self.needs_teacher_model and (self.online is not None or self.teacher_labels == "hard"):
            raise ValueError(f"type {self.type!r}: intermediate-layer losses run the teacher alongside the student; "
                             "not with online or hard teacher labels")  # fmt: skip
        return self

    @property
    def needs_teacher_model(self) -> bool:
        """Whether a loss reads the teacher's hidden states or attentions (so the teacher runs per batch)."""
        return any(loss.needs_teacher_outputs for loss, _ in self.losses())

    @property
    def loss_names(self) -> list[str]:
        return [name.strip() for name in self.type.split("+")]

    def losses(self) -> list[tuple[RegisteredLoss, float]]:
        from landing.models.kd import get_kd_loss

        return [(get_kd_loss(name), self.weights.get(name, 1.0)) for name in self.loss_names]


PRUNING_STRATEGIES = ("vocab", "depth", "width")

def strategy_names() -> tuple[str, ...]:
    """Every name ``strategies`` may use: pruning, ``qat`` and the quantizers' registry (models/quantize.py)."""
    from landing.models.quantize import QUANTIZERS  # imported when a config is validated, not with the schemas

    return (*PRUNING_STRATEGIES, "qat", *QUANTIZERS)


# Settings that only change the QAT step or the exported variants: not part of the pruning
# fingerprint (its pruning strategies are, separately), so adding `qat` reuses the recovery checkpoints.
QAT_ONLY_SETTINGS = {"qat", "qat_embeddings", "graph_fusion", "strategies", "reduce_range"}


# The joint intent + slot model's share of the compression chain (models/slu_compression.py), and why not the rest.
SLU_STRATEGIES = ("vocab", "width", "qat", "dynamic_int8", "int8_embeddings")  # width: FFN neurons, heads kept
SLU_REFUSED = ("depth pruning rewrites a sentence classifier (a student's teacher_layers picks its depth); static INT8 "
               "calibrates the classifier's inputs")  # fmt: skip


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CompressionParams:
    """The run config's ``compression:``; strategy names come from the registries above."""

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
    max_seq_length: SeqLength = Field(128, description="every compression step's row length (recovery and QAT too)")
    keep_layers: list[int] | None = Field(
        None, description="depth: the student's encoder layers to keep, in order, e.g. [1] (layer dropping)"
    )
    width_multiplier: float = Field(0.5, gt=0, le=1)
    importance_rows: int = Field(512, gt=0, description="training rows used to rank heads and neurons")
    recover: RecoveryParams = field(default_factory=lambda: RecoveryParams(epochs=2, learning_rate=1e-4))
    recover_distillation: KDParams = field(default_factory=lambda: KDParams(temperature=2.0, alpha=0.5))
    qat: QATParams = Field(
        default_factory=lambda: QATParams(epochs=1, learning_rate=2e-5),
        description="qat: the fake-quantized fine-tuning (KD as recover)",
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
    def _known_strategies(self) -> CompressionParams:
        known = strategy_names()
        unknown = [s for s in self.strategy_list if s not in known]
        if unknown:
            raise ValueError(f"strategies: unknown {unknown}; expected names from {list(known)} joined by '+'")
        if "qat" in self.strategy_list and not {"dynamic_int8", "int8_embeddings"} & set(self.strategy_list):
            raise ValueError("strategies: qat trains for onnxruntime's dynamic INT8; add dynamic_int8 or int8_embeddings")
        if "depth" in self.strategy_list and not self.keep_layers:
            raise ValueError("keep_layers: the depth strategy needs the encoder layers to keep, e.g. [1]")
        return self

    @property
    def strategy_list(self) -> list[str]:
        return [s.strip() for s in self.strategies.split("+") if s.strip()]

    @property
    def pruning(self) -> list[str]:
        return [s for s in self.strategy_list if s in PRUNING_STRATEGIES]

    @property
    def quantizers(self) -> list[str]:
        pruning_or_qat = (*PRUNING_STRATEGIES, "qat")
        return [s for s in self.strategy_list if s not in pruning_or_qat]  # validated: the rest are quantizers

    @property
    def qat_embeddings_on(self) -> bool:
        """QAT fake-quantizes the embeddings only when an INT8-embeddings variant will be built from it."""
        return self.qat_embeddings and "int8_embeddings" in self.strategy_list

    def pruning_fingerprint(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in QAT_ONLY_SETTINGS}

    @model_validator(mode="after")
    def _intermediate_recovery_keeps_the_vocabulary(self) -> CompressionParams:
        if self.recover_distillation.needs_teacher_model and "vocab" in self.strategy_list:
            raise ValueError(f"recover_distillation.type {self.recover_distillation.type!r}: intermediate-layer losses "
                             "run the unpruned student alongside on the same input ids, which vocabulary pruning "
                             "renumbers; drop vocab from the strategies or use logits-only losses (vanilla_kd)")  # fmt: skip
        return self
