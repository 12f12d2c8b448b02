"""Token-labelled data contracts (``data_contracts/token_labels.py``): the four layouts, one error case each
(named by file, line and token), the multi-intent policy, dedup and splits on the token sequence, and the real
ATIS / SNIPS folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from landing.data_contracts.token_labels import (
    NO_INTENT,
    TokenLabelContract,
    TokenLabelError,
    deduplicate_utterances,
    jointbert_label_sets,
    read_token_table,
    split_utterances,
)
from landing.data_contracts.validation import DataFileNotFoundError, DataValidationError

SLU = Path(__file__).resolve().parents[2] / "shared/data/slu"
SLOTS = ["O", "B-city", "I-city", "B-date"]
INTENTS = ["flight", "airfare", "weather"]


def jointbert(folder: Path, texts: list[str], tags: list[str], intents: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in zip(("seq.in", "seq.out", "label"), (texts, tags, intents), strict=True):
        (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return folder


def contract(fmt: str = "jointbert", **extra) -> TokenLabelContract:
    return TokenLabelContract(format=fmt, slot_labels=SLOTS, intents=INTENTS, **extra)


def issues_of(path: Path, c: TokenLabelContract) -> str:
    with pytest.raises(DataValidationError) as caught:
        read_token_table(path, c)
    return str(caught.value)


def test_a_jointbert_folder_reads_into_one_row_per_utterance(tmp_path):
    folder = jointbert(tmp_path / "d", ["fly to new york", "weather today"], ["O O B-city I-city ", "O B-date"],
                       ["flight", "weather"])  # fmt: skip  (a trailing space, as in ATIS)
    frame = read_token_table(folder, contract())
    assert frame["tokens"][0] == ["fly", "to", "new", "york"] and frame["tags"][0] == ["O", "O", "B-city", "I-city"]
    assert list(frame["intent"]) == ["flight", "weather"] and frame["text"][1] == "weather today"
    assert frame["id"].nunique() == 2


def test_a_tag_count_other_than_the_token_count_names_the_file_and_line(tmp_path):
    folder = jointbert(tmp_path / "d", ["fly to boston", "fly"], ["O O B-city", "O O"], ["flight", "flight"])
    assert f"{folder}/seq.out:2: expected 1 tags (one per token of seq.in), found 2" in issues_of(folder, contract())


def test_an_i_tag_without_its_b_tag_names_the_token(tmp_path):
    folder = jointbert(tmp_path / "d", ["fly to york"], ["O O I-city"], ["flight"])
    assert "token 3 ('york')" in (message := issues_of(folder, contract())) and "found 'O'" in message


def test_a_tag_outside_the_declared_set_is_named(tmp_path):
    folder = jointbert(tmp_path / "d", ["fly to boston"], ["O O B-town"], ["flight"])
    assert "expected a declared slot tag at token 3 ('boston'), found 'B-town'" in issues_of(folder, contract())


def test_an_intent_outside_the_declared_set_is_named(tmp_path):
    folder = jointbert(tmp_path / "d", ["fly to boston"], ["O O B-city"], ["hotel"])
    assert "column 'intent': expected a declared intent, found 'hotel'" in issues_of(folder, contract())


def test_an_empty_utterance_is_named(tmp_path):
    folder = jointbert(tmp_path / "d", ["fly to boston", ""], ["O O B-city", ""], ["flight", "flight"])
    assert f"{folder}/seq.in:2: expected an utterance of at least one token, found an empty one" in issues_of(folder, contract())


def test_files_of_different_lengths_and_a_missing_file_are_refused(tmp_path):
    folder = jointbert(tmp_path / "d", ["a", "b"], ["O", "O"], ["flight"])
    with pytest.raises(TokenLabelError, match="found 2, 2 and 1 lines"):
        read_token_table(folder, contract())
    (folder / "label").unlink()
    with pytest.raises(DataFileNotFoundError, match="missing: label"):
        read_token_table(folder, contract())


def test_a_joined_intent_keeps_the_first_by_default_or_all_of_them(tmp_path):
    folder = jointbert(tmp_path / "d", ["fare of flights to boston"], ["O O O O B-city"], ["airfare#flight"])
    assert read_token_table(folder, contract())["intent"][0] == "airfare"
    assert read_token_table(folder, contract(multi_intent="multi"))["intents"][0] == ["airfare", "flight"]


def test_conll_columns_with_an_intent_comment(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("# intent = flight\nfly O\nto O\nboston B-city\n\n# intent = weather\nrain O\ntoday B-date\n\n"
                    "# intent = flight\nfly O\nto\tO\nnew B-city\nyork I-city extra\n")  # fmt: skip
    message = issues_of(path, contract("conll"))
    assert f"{path}:14: expected a token and its tag, found 3 fields" in message
    path.write_text(path.read_text().replace(" extra", ""))
    frame = read_token_table(path, contract("conll"))
    assert list(frame["intent"]) == ["flight", "weather", "flight"] and frame["tags"][2][-1] == "I-city"


def test_jsonl_rows_name_their_line_and_key(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"tokens": ["fly", "to", "boston"], "tags": ["O", "O", "B-city"], "intent": "flight"},
            {"tokens": ["fly"], "tags": "O", "intent": "flight"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    message = issues_of(path, contract("jsonl"))
    assert f"{path}:2: column 'tags': expected a list of strings, found 'O'" in message
    assert f"{path}:3: expected a JSON object, found invalid JSON" in message


def test_easynlp_tables_read_their_declared_columns_with_the_one_intent(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("content\tlabel\tsource\nfly to  boston\tO O B-city\tweb\nrain today\tO B-date\tapp\n"
                    "new york\tB-city I-city\n")  # fmt: skip
    easynlp = TokenLabelContract(format="easynlp", slot_labels=SLOTS, columns=["content", "label", "source"],
                                 tokens_column="content", tags_column="label", skip_first_line=True)  # fmt: skip
    assert f"{path}:4: expected 3 tab-separated columns (content, label, source), found 2" in issues_of(path, easynlp)
    path.write_text(path.read_text().replace("I-city\n", "I-city\tweb\n"))
    frame = read_token_table(path, easynlp)
    assert list(frame["tokens"][0]) == ["fly", "to", "boston"] and set(frame["intent"]) == {NO_INTENT}
    unlabelled = read_token_table(path, easynlp.model_copy(update={"tags_column": None}))
    assert list(unlabelled["line"]) == [2, 3, 4] and all(len(t) == 0 for t in unlabelled["tags"])
    with pytest.raises(ValueError, match="tokens_column .* must be among columns"):
        TokenLabelContract(format="easynlp", columns=["text"], tokens_column="content")


def test_dedup_and_splits_work_on_the_token_sequence(tmp_path):
    texts = [f"fly to boston {i}" for i in range(30)] + ["fly to boston 0", "fly to boston 1"]
    tags = ["O O B-city O"] * 31 + ["O O O O"]  # the last repeats tokens with other tags: a conflict
    intents = ["flight" if i % 3 else "airfare" for i in range(30)] + ["flight" if 0 % 3 else "airfare", "flight"]
    frame = read_token_table(jointbert(tmp_path / "d", texts, tags, intents),
                             TokenLabelContract(format="jointbert"))  # fmt: skip
    result = deduplicate_utterances(frame)
    assert len(result.frame) == 29 and result.conflicts == 1  # the exact repeat kept once, the conflict dropped
    parts = split_utterances(result.frame, {"validation": 9, "train": 20}, seed=0)
    assert set(parts["validation"]["text"]).isdisjoint(parts["train"]["text"])
    share = (parts["validation"]["intent"] == "airfare").mean()
    assert abs(share - (result.frame["intent"] == "airfare").mean()) <= 1 / 9 + 1e-9  # stratified by intent


@pytest.mark.parametrize("name", ["atis", "snips"])
def test_the_real_folders_read_clean_under_their_own_label_sets(name):
    slots, intents = jointbert_label_sets(SLU / name)
    declared = TokenLabelContract(format="jointbert", slot_labels=slots, intents=intents)
    frame = read_token_table(SLU / name / "train", declared)
    assert len(frame) == {"atis": 4478, "snips": 13084}[name] and (frame["tokens"].map(len) == frame["tags"].map(len)).all()
    if name == "atis":  # its dev has one tag that train (and so slot_label.txt) lacks
        assert "dev/seq.in:17: column 'tags': expected a declared slot tag at token 27 ('second'), found " \
               "'I-return_date.day_number'" in issues_of(SLU / name / "dev", declared)  # fmt: skip
        declared = declared.model_copy(update={"undeclared_tags": "keep"})
    assert len(read_token_table(SLU / name / "dev", declared)) == {"atis": 500, "snips": 700}[name]
