"""The few-shot methods' knobs, each declared once; plain pydantic (no torch), so configs validate cheaply."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as validated_dataclass

from landing.models.fewshot.patterns import PSEUDO, parse_pattern


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ContrastiveParams:
    """The knobs of :func:`train_contrastive` beyond the run's ``training`` (whose epochs, batch_size, learning_rate
    and max_seq_length stage 1 uses: epochs over the pairs, pairs per step); SetFit's defaults where it has one."""

    max_pairs: int = Field(2000, ge=1, description="the one bound on pairs: never more are drawn or held in memory")
    positive_fraction: float = Field(0.5, ge=0, le=1, description="share of same-label pairs, where enough exist")
    head: Literal["logistic", "linear"] = Field(
        "logistic",
        description="logistic: sklearn LogisticRegression on the frozen embeddings (SetFit's default), copied "
        "into the linear layer; linear: the linear layer trained with cross-entropy on them",
    )
    head_epochs: int = Field(50, gt=0, description="linear head only")
    head_learning_rate: float = Field(1e-2, gt=0, description="linear head only (AdamW, batches of batch_size)")


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PromptParams:
    """PET, P-tuning or CPT on a masked LM: the pattern, the verbalizer and the prompt-training losses."""

    pattern: str = Field(description="EasyNLP's comma form (text,It was,label,.) or a template ({text} It was {mask}.)")
    method: Literal["pet", "ptuning", "cpt"] = "pet"
    label_desc: list[str] | str | None = Field(None, description="one label word per label, in the labels' order")
    label_file: str | None = Field(None, description="PaddleNLP's label file: label==word lines (relative to the config)")
    label_words: dict[str, str] | None = Field(None, description="label → word (read from label_file if that is given)")
    pseudo_init: list[str] = Field(default_factory=list, description="words whose embeddings start the pseudo tokens")
    prompt_encoder: Literal["none", "lstm", "mlp"] = Field("none", description="P-tuning's reparametrisation")
    ppt_learning_rate: float | None = Field(None, gt=0, description="pseudo tokens' learning rate; default: training's")
    freeze_plm: bool = Field(False, description="train the pseudo tokens (and encoder) only")
    mlm_loss_weight: float = Field(0.0, ge=0, description="EasyNLP's full-vocabulary MLM loss on the gold label word")
    unlabelled_mlm_weight: float = Field(0.0, ge=0, description="auxiliary MLM loss on unlabelled text, per step")
    rdrop_alpha: float = Field(0.0, ge=0, description="R-Drop: symmetric KL between two dropout passes")
    cpt_temperature: float = Field(0.1, gt=0, description="CPT: contrastive and prototype-similarity temperature")

    @model_validator(mode="after")
    def _consistent(self) -> PromptParams:
        parts = parse_pattern(self.pattern, require_text=False)  # the text field needs the contract: checked by the run config
        has_pseudo = any(p.kind == PSEUDO for p in parts)
        if self.method == "ptuning" and not has_pseudo:
            raise ValueError(f"method ptuning: pattern {self.pattern!r} has no <pseudo> token")
        if self.freeze_plm and not has_pseudo:
            raise ValueError("freeze_plm: nothing would train; the pattern has no <pseudo> token")
        given = [k for k in ("label_desc", "label_file", "label_words") if getattr(self, k) is not None]
        if len(given) != 1 and given != ["label_file", "label_words"]:
            raise ValueError(f"give the verbalizer once: label_desc, label_file or label_words (found {given or 'none'})")
        return self
