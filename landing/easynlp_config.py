"""The run configs of ``easynlp`` commands: what ``landing.easynlp_cli`` builds from EasyNLP's flags, and the
``easynlp-*`` flows take. They reuse the YAML configs' pieces (contract, tables, training, distillation,
prompt and augmentation knobs), so each knob is declared once."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from landing.config import (
    AugmentationConfig,
    PretrainedModel,
    PromptModel,
    SluModelConfig,
    StrictModel,
    TableConfig,
    canonical_prompt,
)
from landing.data_contracts.easynlp_files import OUTPUT_COLUMNS
from landing.data_contracts.schema import TableContract
from landing.data_contracts.token_labels import TokenLabelContract
from landing.models.mlm_adapt import MlmAdaptParams
from landing.models.params import KDParams, SeqLength, TrainingParams

App = Literal["text_classify", "text_match", "data_augmentation"]
OutputColumn = Literal[OUTPUT_COLUMNS]  # type: ignore[valid-type]  # Literal flattens the tuple


class CheckpointReader(StrictModel):
    """What evaluate and predict read a trained checkpoint with."""

    checkpoint_path: str
    sequence_length: SeqLength
    batch_size: int = Field(gt=0)


class EasynlpCommand(StrictModel):
    """What every command has: the MLflow experiment and run name, the seed, the tables and how to read them."""

    experiment: str = "easynlp"
    name: str
    seed: int
    app_name: App
    argv: list[str] = Field(description="the command as typed (secrets never are: EasyNLP has no secret flags)")
    contract: TableContract
    tables: list[TableConfig] = Field(min_length=1)
    columns: dict[str, str] = Field(
        default_factory=dict, description="the user's column name → its column in the validated (canonical) table"
    )


class TeacherLogitsFile(StrictModel):
    """``logits_saved_path``: a predict file of the teacher, joined to the training rows by id when it has our
    sidecar, else by position (then its line count must equal the training table's row count)."""

    path: str
    columns: list[str] = Field(min_length=1, description="its tab-separated columns, in input_schema's names")
    logits_name: str
    width: int = Field(gt=0)
    teacher_model: str | None = Field(None, description="the teacher's checkpoint (intermediate-layer losses read it)")


class EasynlpTrainConfig(EasynlpCommand):
    """``--mode=train``: fine-tune (or few-shot, or distil) on ``tables[0]``, report on ``tables[-1]``."""

    mode: Literal["train"] = "train"
    model: Annotated[PretrainedModel | PromptModel, Field(discriminator="kind")]
    training: TrainingParams
    distillation: KDParams | None = None
    logits: TeacherLogitsFile | None = None
    checkpoint_dir: str
    labels: list[str] = Field(min_length=2)
    mlm_adapt: MlmAdaptParams | None = Field(None, description="build the prompt model's masked LM from mlm_base first")
    mlm_base: str | None = None
    allow_unknown_tokens: bool = Field(False, description="train even when most of the text is [UNK] to the tokenizer")

    @model_validator(mode="after")
    def _a_masked_lm(self) -> EasynlpTrainConfig:
        if isinstance(self.model, PromptModel) and self.model.mlm_model is None and self.mlm_adapt is None:
            raise ValueError("a prompt model needs a masked LM: mlm_model, or mlm_adapt with mlm_base")
        if self.mlm_adapt is not None and self.mlm_base is None:
            raise ValueError("mlm_adapt needs mlm_base, the model it starts from")
        return self

    @model_validator(mode="after")
    def _distillation_has_logits(self) -> EasynlpTrainConfig:
        if (self.distillation is None) != (self.logits is None):
            raise ValueError("distillation and its logits file come together (enable_distillation=True)")
        if self.distillation is not None and self.distillation.needs_teacher_model and not self.logits.teacher_model:
            raise ValueError(f"type={self.distillation.type}: intermediate-layer losses need the teacher model; add "
                             "teacher_model_path=<the teacher's --checkpoint_dir> to --user_defined_parameters")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _pattern_in_the_contract_terms(self) -> EasynlpTrainConfig:
        if isinstance(self.model, PromptModel):
            self.model.prompt = canonical_prompt(self.contract, "pattern", self.model.prompt)
        return self


class EasynlpPredictConfig(EasynlpCommand, CheckpointReader):
    """``--mode=predict``: label ``tables[0]`` with ``checkpoint_path``, in EasyNLP's output format."""

    mode: Literal["predict"] = "predict"
    outputs: str
    output_schema: list[OutputColumn] = Field(min_length=1)
    append_cols: list[str] = Field(default_factory=list)


class EasynlpEvaluateConfig(EasynlpCommand, CheckpointReader):
    """``--mode=evaluate``: accuracy and macro-F1 of ``checkpoint_path`` on ``tables[-1]``."""

    mode: Literal["evaluate"] = "evaluate"


class EasynlpAugmentConfig(EasynlpCommand):
    """``--app_name=data_augmentation``: the rows of ``tables[0]`` and their copies, in the input schema's order."""

    mode: Literal["predict"] = "predict"
    outputs: str
    augmentation: AugmentationConfig


LabelingOutput = Literal["output", "predictions"]


class EasynlpLabelingCommand(StrictModel):
    """``--app_name=sequence_labeling``: EasyNLP's token tagging (``content``: tokens separated by spaces,
    ``label``: one tag each), run as the ``slu`` flow's joint model with the one intent of tag-only tables."""

    experiment: str = "easynlp"
    name: str
    seed: int
    app_name: Literal["sequence_labeling"] = "sequence_labeling"
    argv: list[str]
    contract: TokenLabelContract
    tables: list[str] = Field(min_length=1, description="local paths of EasyNLP tables")


class EasynlpLabelingTrainConfig(EasynlpLabelingCommand):
    """``--mode=train``: train on ``tables[0]`` (all of it, deduplicated and without eval's token sequences),
    report on ``tables[-1]``, write ``checkpoint_dir`` (the model, its ONNX bundle and ``label_mapping.json``)."""

    mode: Literal["train"] = "train"
    model: SluModelConfig
    checkpoint_dir: str


class EasynlpLabelingEvaluateConfig(EasynlpLabelingCommand, CheckpointReader):
    """``--mode=evaluate``: slot F1 (seqeval), precision, recall and sentence accuracy on ``tables[-1]``."""

    mode: Literal["evaluate"] = "evaluate"


class EasynlpLabelingPredictConfig(EasynlpLabelingCommand, CheckpointReader):
    """``--mode=predict``: per row of ``tables[0]``, in order, the spans (``output``) and the word tags
    (``predictions``), then ``append_cols``."""

    mode: Literal["predict"] = "predict"
    outputs: str
    output_schema: list[LabelingOutput] = Field(min_length=1)
    append_cols: list[str] = Field(default_factory=list)
