"""Run configuration: YAML files validated into typed flow parameters.

Every model forbids unknown keys, so a typo such as ``teacher.trainig`` fails
with the full key path instead of being ignored. Infrastructure (tracking URI,
object store, state directory) is *not* here: it comes from
``infra.settings.LandingSettings`` so one config runs on a laptop and a cluster.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from landing.data_contracts.schema import TableContract
from landing.data_contracts.splitting import ConflictPolicy
from landing.data_contracts.token_labels import TokenLabelContract
from landing.errors import UserError
from landing.models.augment.eda import EdaParams
from landing.models.augment.mlm import MlmAugmentParams
from landing.models.fewshot.params import PromptParams
from landing.models.mlm_adapt import MlmAdaptParams
from landing.models.model_files import ModelFilesError, check_model_dir, looks_like_path
from landing.models.params import (
    SLU_REFUSED,
    SLU_STRATEGIES,
    CompressionParams,
    KDParams,
    LatencyParams,
    Launch,
    TrainingParams,
)
from landing.models.specs import (  # noqa: F401  (the model kinds, re-exported: configs are written in them)
    ContrastiveModel,
    ModelSpec,
    PretrainedModel,
    PromptModel,
    RandomBert,
    RandomMPNet,
    TeacherLayers,
    WordStudentModel,
    base_model_name,
)


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
    validation_like: Literal["train", "eval"] = Field(
        "train",
        description="train: validation drawn like the training rows; eval: its rows chosen so their word-count "
        "distribution is the eval table's (length-binned, each bin stratified by label), for data whose labelled "
        "rows do not look like what is reported (SST-2: phrases to train on, full sentences in dev.tsv)",
    )
    validation_from: Literal["all_rows", "whole_texts"] = Field(
        "all_rows",
        description="all_rows: any labelled row may be a validation row; whole_texts: only rows that occur word for "
        "word inside no other labelled row, and the rows inside a validation row are kept out of train and transfer "
        "(SST-2: validation on full sentences, none of whose phrases is trained on)",
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
    allow_unknown_tokens: bool = Field(
        False, description="train even when most of the training text is [UNK] to the model's tokenizer (refused by default)"
    )

    @model_validator(mode="after")
    def _needs_eval(self) -> DataConfig:
        if self.eval is None and self.split.eval_size is None:
            raise ValueError("give data.eval (a held-out table) or data.split.eval_size")
        if self.eval is None and self.split.validation_like == "eval":
            raise ValueError("data.split.validation_like: eval matches the eval table's lengths; give data.eval")
        if self.contract.label_column is None:
            raise ValueError("data.contract.label_column is required for the labelled training table")
        return self


# Training, distributed and distillation knobs are declared once, next to the code that uses them
# (landing.models); pydantic validates them here as part of a run config.
DistributedConfig = Launch
TrainingConfig = TrainingParams
DistillationConfig = KDParams
CompressionConfig = CompressionParams


def canonical_prompt(contract: TableContract, key: str, prompt: PromptParams) -> PromptParams:
    """The prompt with its pattern in the contract's terms (``text``/``text_pair``, not column names), checked
    against the contract: its text field present, text_pair exactly when the table has pairs."""
    from landing.models.fewshot.patterns import TEXT_PAIR, PatternError, canonical_pattern, parse_pattern

    try:
        pattern = canonical_pattern(prompt.pattern, contract.first_sequence, contract.second_sequence)
        parts = parse_pattern(pattern)
    except PatternError as exc:
        raise ValueError(f"{key}: {exc}") from None
    has_pair = any(p.kind == TEXT_PAIR for p in parts)
    if has_pair != bool(contract.second_sequence):
        found = "uses text_pair, but the contract has no second_sequence" if has_pair else (
            f"leaves out the second_sequence {contract.second_sequence!r} (text_pair), which would be dropped")
        raise ValueError(f"{key}: {prompt.pattern!r} {found}")
    return dataclasses.replace(prompt, pattern=pattern)


class TeacherConfig(StrictModel):
    model: Annotated[PretrainedModel | RandomBert | RandomMPNet | PromptModel, Field(discriminator="kind")]
    training: TrainingConfig = TrainingConfig()


class StudentConfig(StrictModel):
    model: ModelSpec
    training: TrainingConfig = TrainingConfig()


class ModelSource(StrictModel):
    """A saved model directory: a local path, ``file://`` or ``s3://`` prefix (as written by ``distill``)."""

    uri: str


class LatencyTargetConfig(StrictModel):
    kind: Literal["host", "ssh", "adb"] = "host"
    options: dict[str, Any] = Field(default_factory=dict, description="arguments of the target (host, user, ...)")


class LatencyConfig(LatencyParams):
    """``latency:``: where to time (targets) and how often to repeat the comparison, on top of how to time."""

    targets: list[LatencyTargetConfig] = Field(default_factory=lambda: [LatencyTargetConfig()])
    rounds: int = Field(5, gt=0, description="interleaved rounds per comparison table; each a fresh process per variant")


FewshotModel = Annotated[PretrainedModel | PromptModel | ContrastiveModel, Field(discriminator="kind")]


class FewshotMethod(StrictModel):
    model: FewshotModel
    training: TrainingConfig = TrainingConfig()


class FewshotConfig(StrictModel):
    """The k-shot protocol: for each k and seed, k rows per label to train on and as many to validate on."""

    shots: list[int] = Field(default_factory=lambda: [16], min_length=1, description="k per label")
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    validation_k: int | None = Field(None, ge=1, description="validation rows per label; default k (FewCLUE)")


class FlowRunConfig(StrictModel):
    """What every flow's run config has: its MLflow experiment, seed and data."""

    experiment: str = "landing"
    seed: int = 42
    data: DataConfig


def one_vocabulary(teacher: BaseModel, student: BaseModel, what: str) -> None:
    """Intermediate-layer losses feed the student's input ids to the teacher: refused when the two tokenizers
    differ, before anything trains (a large teacher is hours of work to lose at the student step)."""
    from landing.models.kd_layers import same_vocabulary
    from landing.models.pretrained import load_tokenizer, resolve_name_or_path

    names = base_model_name(teacher), base_model_name(student)
    if None in names or resolve_name_or_path(names[0]) == resolve_name_or_path(names[1]):
        return
    if not same_vocabulary(load_tokenizer(names[0]), load_tokenizer(names[1])):
        raise ValueError(f"{what}: intermediate-layer losses feed the student's input ids to the teacher, but the "
                         f"teacher ({names[0]}) and the student ({names[1]}) have different vocabularies; use vanilla_kd "
                         "(logits are joined by row id, so they work across tokenizers)")  # fmt: skip


def layers_default_to_the_teacher(student: StudentConfig | SluModelConfig, teacher: TeacherConfig | SluModelConfig) -> None:
    """A ``teacher_layers`` student without ``name_or_path`` takes its layers from the teacher's pretrained model."""
    if isinstance(student.model, TeacherLayers) and student.model.name_or_path is None:
        student.model.name_or_path = base_model_name(teacher.model)


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


class AugmentationConfig(StrictModel):
    """More transfer rows for the teacher to label: ERNIE-Slim strategies (``eda``), masked-LM fills (``mlm_da``)
    and the unlabelled table, mixed as declared here (and logged as the run's params)."""

    eda: EdaParams | None = Field(None, description="UNK noise, same-POS replacement, n-gram sampling")
    mlm_da: MlmAugmentParams | None = Field(None, description="copies with whole words masked and refilled by mlm_model")
    mlm_model: str | None = Field(None, description="mlm_da's masked LM (a path with an MLM head); default: mlm_adapt's")
    mlm_adapt: MlmAdaptParams | None = Field(
        None, description="build the masked LM first: continued MLM training of mlm_base on the run's own text"
    )
    mlm_base: str | None = Field(None, description="mlm_adapt's starting model; default: the teacher's pretrained model")
    unlabelled_rows: int | None = Field(
        None, ge=0, description="at most this many rows of the transfer split (unlabelled table) join the augmented "
        "rows (seeded sample); default all",
    )

    @model_validator(mode="after")
    def _needs_a_masked_lm(self) -> AugmentationConfig:
        if self.eda is None and self.mlm_da is None:
            raise ValueError("give augmentation.eda and/or augmentation.mlm_da")
        if self.mlm_da is not None and self.mlm_model is None and self.mlm_adapt is None:
            raise ValueError("mlm_da needs a masked LM: set augmentation.mlm_model to a model with an MLM head, or "
                             "augmentation.mlm_adapt to build one from the teacher's model")  # fmt: skip
        return self


class DistillRunConfig(TrainingRunConfig):
    flow: Literal["distill"] = "distill"
    name: str = "distill"
    teacher: TeacherConfig
    student: StudentConfig
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    baseline: BaselineConfig = BaselineConfig()
    latency_samples: int = Field(50, ge=0, description="batch-1 timings per model in the report; 0 skips")
    compression: CompressionConfig | None = Field(None, description="append the compress steps to the student")
    latency: LatencyConfig = LatencyConfig()
    augmentation: AugmentationConfig | None = Field(None, description="augmented rows, labelled by the teacher")

    @model_validator(mode="after")
    def _word_students_stand_alone(self) -> DistillRunConfig:
        layers_default_to_the_teacher(self.student, self.teacher)
        if isinstance(self.student.model, WordStudentModel) and (self.compression or self.registered_model):
            raise ValueError(f"student.model.kind {self.student.model.kind!r}: a word student is exported to ONNX as "
                             "it is; compression and registered_model need a transformer student")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _intermediate_losses_fit_the_models(self) -> DistillRunConfig:
        if not self.distillation.needs_teacher_model:
            return self
        if isinstance(self.student.model, WordStudentModel):
            raise ValueError(f"distillation.type {self.distillation.type!r}: a {self.student.model.kind} student has no "
                             "transformer layers to match; use vanilla_kd")  # fmt: skip
        if isinstance(self.teacher.model, PromptModel):
            raise ValueError(f"distillation.type {self.distillation.type!r}: a prompt teacher's layers see the prompt, "
                             "not the student's input; use vanilla_kd")  # fmt: skip
        one_vocabulary(self.teacher.model, self.student.model, f"distillation.type {self.distillation.type!r}")
        return self

    @model_validator(mode="after")
    def _prompt_teacher_has_a_masked_lm(self) -> DistillRunConfig:
        if isinstance(self.teacher.model, PromptModel):
            if self.teacher.model.mlm_model is None:
                raise ValueError(f"teacher.model.mlm_model: a {self.teacher.model.prompt.method} teacher needs a masked "
                                 "LM with its head (the fewshot flow's mlm_adapt builds one)")  # fmt: skip
            self.teacher.model.prompt = canonical_prompt(self.data.contract, "teacher.model.prompt.pattern",
                                                         self.teacher.model.prompt)  # fmt: skip
        return self

    @model_validator(mode="after")
    def _masked_lm_base(self) -> DistillRunConfig:
        aug = self.augmentation
        if aug is not None and aug.mlm_adapt is not None and aug.mlm_base is None:
            if getattr(self.teacher.model, "name_or_path", None) is None:
                raise ValueError("augmentation.mlm_base: the teacher is not a pretrained model, so name the model "
                                 "mlm_adapt starts from")  # fmt: skip
        return self


class CompressRunConfig(TrainingRunConfig):
    flow: Literal["compress"] = "compress"
    name: str = "compress"
    student: ModelSource | StudentConfig = Field(
        description="a saved student ({uri: ...}), or a model spec trained on the labelled split first"
    )
    teacher: ModelSource | None = Field(None, description="reference rows: the teacher in PyTorch and ONNX FP32")
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
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


class FewshotRunConfig(TrainingRunConfig):
    """``fewshot``: standard fine-tuning (``baseline``) and ``methods`` per k and seed on one held-out split; the
    best by validation accuracy registered as the teacher candidate, optionally distilled into ``student``."""

    flow: Literal["fewshot"] = "fewshot"
    name: str = "fewshot"
    fewshot: FewshotConfig = FewshotConfig()
    baseline: TeacherConfig = Field(description="standard fine-tuning, the comparison every method is reported against")
    methods: dict[str, FewshotMethod] = Field(default_factory=dict, description="name → method")
    mlm_adapt: MlmAdaptParams | None = Field(None, description="build the prompt methods' masked LM from mlm_base")
    mlm_base: str | None = Field(None, description="mlm_adapt's starting model; default: the baseline's model")
    registered_teacher: str | None = Field(None, description="register the best method's model as <name>, alias candidate")
    student: StudentConfig | None = Field(None, description="distil the best few-shot model into this student")
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    latency_samples: int = Field(0, ge=0, description="batch-1 timings of the student; 0 skips")

    @model_validator(mode="after")
    def _prompt_methods_have_a_masked_lm(self) -> FewshotRunConfig:
        for name, method in self.methods.items():
            if isinstance(method.model, PromptModel) and method.model.mlm_model is None and self.mlm_adapt is None:
                raise ValueError(f"methods.{name}: {method.model.prompt.method} needs a masked LM: set "
                                 f"methods.{name}.model.mlm_model to a model with an MLM head, or mlm_adapt to build "
                                 "one from mlm_base")  # fmt: skip
            if isinstance(method.model, PromptModel):
                method.model.prompt = canonical_prompt(self.data.contract, f"methods.{name}.model.prompt.pattern",
                                                       method.model.prompt)  # fmt: skip
        if self.mlm_adapt is not None and self.mlm_base is None and getattr(self.baseline.model, "name_or_path", None) is None:
            raise ValueError("mlm_base: the baseline is not a pretrained model, so name the model mlm_adapt starts from")
        if self.student is not None and isinstance(self.student.model, WordStudentModel) and self.registered_model:
            raise ValueError("registered_model needs a transformer student")
        return self


class MetaKDConfig(StrictModel):
    """Meta-KD (Pan et al., 2021): prototype weights → meta-teacher on every domain → per target domain a student
    in two stages (intermediate layers, then soft labels)."""

    domain_column: str = Field("domain", description="the contract's field that names each row's domain")
    target_domains: list[str] | None = Field(None, description="default: every domain in the training table")
    min_examples: int = Field(2, ge=1, description="rows a (domain, class) needs for its centroid")
    domain_loss_weight: float = Field(0.5, ge=0)
    domain_loss: Literal["confusion", "reversal"] = Field(
        "confusion", description="confusion: against shuffled domain labels (EasyNLP); reversal: gradient reversal"
    )
    stage1: DistillationConfig = Field(
        default_factory=lambda: KDParams(type="hidden_mse+attention_mse+pooled_mse"),
        description="hidden states, attentions and the domain representation (pooled_mse: the pooled vector the "
        "meta-teacher's domain head reads)",
    )
    stage2: DistillationConfig = Field(default_factory=lambda: KDParams(type="vanilla_kd", temperature=2.0, alpha=1.0))


class MetakdRunConfig(TrainingRunConfig):
    """``metakd``: the Meta-KD student per target domain against, in the same run, the student without KD and
    vanilla KD from a teacher of the target domain alone and from a teacher of every domain."""

    flow: Literal["metakd"] = "metakd"
    name: str = "metakd"
    teacher: TeacherConfig
    student: StudentConfig
    metakd: MetaKDConfig = MetaKDConfig()
    distillation: DistillationConfig = Field(default_factory=DistillationConfig, description="the vanilla-KD baselines")
    latency_samples: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _domains_and_models(self) -> MetakdRunConfig:
        column = self.metakd.domain_column
        if column not in self.data.contract.extra_field_names:
            raise ValueError(f"metakd.domain_column: {column!r} is not a field of data.contract.input_schema without a "
                             f"role (found {self.data.contract.extra_field_names})")  # fmt: skip
        if isinstance(self.student.model, WordStudentModel) or isinstance(self.teacher.model, PromptModel):
            raise ValueError("metakd matches transformer layers: the teacher and student must be transformers")
        layers_default_to_the_teacher(self.student, self.teacher)
        if self.metakd.stage1.needs_teacher_model:
            one_vocabulary(self.teacher.model, self.student.model, f"metakd.stage1 {self.metakd.stage1.type!r}")
        return self


class AugmentRunConfig(DistillRunConfig):
    """``landing augment``: a distill config's data and augmentation steps alone (teacher and student unused)."""

    flow: Literal["augment"] = "augment"  # type: ignore[assignment]


class SluDataConfig(StrictModel):
    """Token-labelled utterances (``data_contracts/token_labels.py``): a train and an eval table in one layout;
    the label sets from ``contract`` or a JointBERT folder's label files (``labels_from``)."""

    contract: TokenLabelContract
    train: str = Field(description="the training table: a JointBERT folder, a CoNLL or a JSONL file (relative to the config)")
    eval: str = Field(description="the evaluation table, only ever reported")
    labels_from: str | None = Field(None, description="a JointBERT dataset folder whose slot_label.txt and "
                                    "intent_label.txt declare the label sets")  # fmt: skip
    eval_undeclared_tags: Literal["error", "keep"] = Field(
        "keep", description="eval tags outside the training label set: kept (scored as missed) or an error")
    validation_size: ValidationSize = Field(0.1, description="held out of train, stratified by intent, for selection")
    max_train_rows: int | None = Field(None, gt=0, description="the first N deduplicated training rows (smoke runs)")
    conflicts: ConflictPolicy = "drop"

    @model_validator(mode="after")
    def _one_intent_head(self) -> SluDataConfig:
        if self.contract.multi_intent != "first":
            raise ValueError("contract.multi_intent: the joint model has one (single-label) intent head; use 'first'")
        return self


class SluModelConfig(StrictModel):
    model: Annotated[PretrainedModel | RandomBert | RandomMPNet | TeacherLayers, Field(discriminator="kind")]
    training: TrainingConfig = TrainingConfig()
    slot_loss_weight: float = Field(1.0, ge=0, description="loss = intent CE + this × slot CE")


class SluDistillationConfig(StrictModel):
    """``vanilla_kd`` on both heads, each with its weight; plus, where the student reads the teacher's vocabulary,
    the intermediate-layer losses of ``models/kd_layers.py`` on the encoders (``type: vanilla_kd+hidden_mse``)."""

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="the KL's share; 1 - alpha is the hard labels' CE")
    intent_weight: float = Field(1.0, ge=0)
    slot_weight: float = Field(1.0, ge=0)
    type: str = Field("vanilla_kd", description="vanilla_kd, then intermediate-layer losses joined by '+'")
    weights: dict[str, float] = Field(default_factory=dict, description="the intermediate losses' weights (default 1)")
    layer_map: dict[int, int] | None = Field(None, description="student layer → teacher layer; default uniform")

    @model_validator(mode="after")
    def _vanilla_kd_first(self) -> SluDistillationConfig:
        if self.kd.loss_names[0] != "vanilla_kd" or "vanilla_kd" in self.weights:
            raise ValueError(f"type {self.type!r}: the joint model's heads distil by vanilla_kd (weighted by "
                             "intent_weight and slot_weight), so type starts with vanilla_kd; layer losses follow")  # fmt: skip
        return self

    @property
    def kd(self) -> KDParams:
        return KDParams(temperature=self.temperature, alpha=self.alpha, type=self.type, weights=self.weights,
                        layer_map=self.layer_map)  # fmt: skip


class SluAugmentationConfig(StrictModel):
    """Tag-keeping copies of each training utterance, labelled by the teacher for the KD student."""

    copies: int = Field(2, ge=0)
    substitute_p: float = Field(0.5, ge=0, le=1, description="each slot span replaced by another value of its type")
    swap_p: float = Field(0.1, ge=0, le=1, description="EDA swap of O tokens")
    delete_p: float = Field(0.1, ge=0, le=1, description="EDA deletion of O tokens")


class SluRunConfig(StrictModel):
    """``flow: slu``: joint intent detection + slot filling, teacher → logits → KD student, no-KD baseline,
    evaluated on eval (reported) and validation (selection), exported to ONNX with both heads."""

    flow: Literal["slu"] = "slu"
    name: str = "slu"
    experiment: str = "landing-slu"
    seed: int = 42
    data: SluDataConfig
    teacher: SluModelConfig
    student: SluModelConfig
    distillation: SluDistillationConfig = SluDistillationConfig()
    augmentation: SluAugmentationConfig | None = None
    compression: CompressionConfig = Field(
        default_factory=lambda: CompressionConfig(strategies="dynamic_int8"),
        description=f"the KD student's compression: strategies from {'+'.join(SLU_STRATEGIES)}")  # fmt: skip
    latency: LatencyConfig = Field(default_factory=LatencyConfig, description="every ONNX variant, timed interleaved")

    @model_validator(mode="after")
    def _layers_from_the_teacher(self) -> SluRunConfig:
        layers_default_to_the_teacher(self.student, self.teacher)
        return self

    @model_validator(mode="after")
    def _joint_compression(self) -> SluRunConfig:
        refused = [s for s in self.compression.strategy_list if s not in SLU_STRATEGIES]
        if refused:
            raise ValueError(f"compression.strategies: {refused} not offered for the joint model ({SLU_REFUSED}); "
                             f"use {'+'.join(SLU_STRATEGIES)}")  # fmt: skip
        if self.compression.recover_distillation.needs_teacher_model:
            raise ValueError("compression.recover_distillation.type: the joint model recovers from the uncompressed "
                             "student's logits per word (vanilla_kd); intermediate-layer losses are not offered there")  # fmt: skip
        if "vocab" in self.compression.strategy_list and self.compression.dropped_tokens != "pieces":
            raise ValueError("compression.dropped_tokens: the joint model takes 'pieces' only (the 'nearest' remap "
                             "is built into the sentence classifier)")  # fmt: skip
        return self


RunConfig = (DistillRunConfig | CompressRunConfig | PromoteRunConfig | AugmentRunConfig | FewshotRunConfig
             | MetakdRunConfig | SluRunConfig)  # fmt: skip
# Flow name → its run config, from each config's own `flow:` field (declared once, there).
FLOW_CONFIGS: dict[str, type[StrictModel]] = {cls.model_fields["flow"].default: cls for cls in get_args(RunConfig)}


class ConfigError(UserError, ValueError):
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


def _key_path(loc: tuple, raw: Any) -> str:
    """The error's location as the YAML key path: pydantic also puts validator names and, for a model chosen by
    ``kind``, the kind's value in it (``model.prompt.prompt.patern``); those are not keys of the file."""
    keys, node, tagged = [], raw, None
    for part in loc:
        if str(part).startswith("function-after"):
            continue
        if isinstance(node, dict) and node.get("kind") == part and tagged is not node:
            tagged = node  # the discriminator's tag, once per node (a key may have the same name)
            continue
        keys.append(str(part))
        node = node.get(part) if isinstance(node, dict) else node[part] if isinstance(node, list) and isinstance(
            part, int) and part < len(node) else None  # fmt: skip
    return ".".join(keys)


def _format_validation_error(path: Path, err: ValidationError, raw: dict) -> str:
    lines = [f"{path}: invalid run config"]
    for e in err.errors():
        loc = _key_path(e["loc"], raw)
        found = e.get("input")
        found_txt = f" (found {found!r})" if e["type"] != "missing" and not isinstance(found, dict) else ""
        # Pydantic words an unknown key differently for models and for the dataclasses of landing.models.
        msg = "Extra inputs are not permitted" if e["type"] == "unexpected_keyword_argument" else e["msg"]
        lines.append(f"  {loc or '<root>'}: {msg}{found_txt}")
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
        config = FLOW_CONFIGS[flow].model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err, raw)) from None
    _check_local_models(config, path)
    _check_masked_lm(config, path)
    _check_verbalizers(config, path)
    return config  # type: ignore[return-value]


def _prompt_models(config: StrictModel) -> dict[str, PromptModel]:
    """Config key → prompt-method model spec."""
    found = {f"methods.{name}.model": m.model for name, m in (getattr(config, "methods", None) or {}).items()
             if isinstance(m.model, PromptModel)}  # fmt: skip
    teacher = getattr(getattr(config, "teacher", None), "model", None)
    if isinstance(teacher, PromptModel):
        found["teacher.model"] = teacher
    return found


def _check_verbalizers(config: StrictModel, path: Path) -> None:
    """A prompt method's ``label_file`` (relative to the config) read into its label words, and the words checked
    against the contract's labels and the masked LM's tokenizer: a label file naming unknown labels or a word
    the tokenizer cannot encode fails here, not in the middle of the run."""
    from dataclasses import replace

    from landing.models.fewshot.patterns import PatternError, read_label_file, verbalizer

    prompts = _prompt_models(config)
    labels = config.data.contract.label_enumerate_values if prompts else None
    for key, spec in prompts.items():
        prompt = spec.prompt
        try:
            if prompt.label_file is not None:
                words = read_label_file((path.parent / prompt.label_file).expanduser())
                spec.prompt = prompt = replace(prompt, label_words=words)
            if labels:
                words = verbalizer(labels, label_desc=prompt.label_desc, label_words=prompt.label_words)
                _check_label_words(config, spec, words)
        except FileNotFoundError:
            raise ConfigError(f"{path}: {key}.prompt.label_file: no such file {prompt.label_file!r}") from None
        except PatternError as exc:
            raise ConfigError(f"{path}: {key}.prompt: {exc}") from None
        except ModelFilesError as exc:  # the label words need the masked LM's tokenizer: e.g. an extra not installed
            raise ConfigError(f"{path}: {key}.prompt: checking its label words: {exc}") from None


def _check_masked_lm(config: StrictModel, path: Path) -> None:
    """``mlm_da`` or a prompt method on a model without an MLM head fails here, naming it and the options,
    not mid-run."""
    aug = getattr(config, "augmentation", None)
    named = {"augmentation.mlm_model": aug.mlm_model} if isinstance(aug, AugmentationConfig) and aug.mlm_da is not None else {}
    named |= {f"{key}.mlm_model": spec.mlm_model for key, spec in _prompt_models(config).items()}
    named = {key: value for key, value in named.items() if value is not None}
    if not named:
        return
    from landing.models.augment.mlm import has_mlm_head  # torch: only for configs that name a masked LM

    for key, model in named.items():
        if not has_mlm_head(model):
            build = "augmentation.mlm_adapt" if key.startswith("augmentation") else "mlm_adapt"
            raise ConfigError(f"{path}: {key}: {model!r} has no masked-LM head; give a model with one, or drop "
                              f"mlm_model and set {build} to build one")  # fmt: skip


def _check_label_words(config: StrictModel, spec: PromptModel, words: dict[str, str]) -> None:
    """The words against the tokenizer of the masked LM (mlm_adapt keeps its base model's vocabulary)."""
    from landing.models.fewshot.prompt_model import encode_label_words  # torch: only for prompt configs
    from landing.models.pretrained import load_tokenizer

    baseline = getattr(config, "baseline", None)
    name = spec.mlm_model or getattr(config, "mlm_base", None) or getattr(getattr(baseline, "model", None), "name_or_path", None)
    if name is not None:
        encode_label_words(load_tokenizer(name), words)


def _local_model_paths(config: StrictModel) -> dict[str, str]:
    """Config key → local model directory, for every model the config names by a path."""
    found = {}
    for name, method in (getattr(config, "methods", None) or {}).items():
        for field in ("name_or_path", "mlm_model"):
            value = getattr(method.model, field, None)
            if value and looks_like_path(value):
                found[f"methods.{name}.model.{field}"] = value
    for role in ("teacher", "student", "baseline"):
        node = getattr(config, role, None)
        spec = getattr(node, "model", node)  # a model spec, or a saved ModelSource {uri}
        value = getattr(spec, "name_or_path", None) or getattr(spec, "uri", None)
        key = f"{role}.model.name_or_path" if hasattr(spec, "name_or_path") else f"{role}.uri"
        if value and looks_like_path(value):
            found[key] = value
    return found


def _check_local_models(config: StrictModel, path: Path) -> None:
    """Model directories are checked before anything runs, not an hour into the run."""
    for key, value in _local_model_paths(config).items():
        try:
            check_model_dir(Path(value).expanduser(), field=key)
        except ModelFilesError as exc:
            raise ConfigError(f"{path}: {exc}") from None
