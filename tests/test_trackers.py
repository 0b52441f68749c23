"""`report_to` TensorBoard, Trackio and Weights & Biases (offline): one short AMPO run on the tiny model, launched as
`accelerate launch -m ampo_trl.cli.train`, logs to all three; the test reads each store back and finds the `ampo/*`
metrics of every step, the per-teacher shares (`ampo/teacher_share/<teacher>`) and, for Trackio and W&B, the
completions table with its `source` column. Nothing leaves the machine (TRACKIO_DIR and WANDB_DIR are temporary,
WANDB_MODE=offline, no Space)."""

import glob
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import Dataset
from helpers import addition_rows

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TEACHERS = {"terse", "steps", "verbose"}  # the pools of helpers.addition_rows
STEPS = [1, 2]
TIME_LIMIT_SECONDS = 420


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """Run 2 AMPO steps reporting to tensorboard, trackio and wandb; return the temporary directory."""
    root = tmp_path_factory.mktemp("trackers")
    Dataset.from_list(addition_rows(8)).to_parquet(root / "pool.parquet")
    recipe = {
        "model_name_or_path": "tiny",
        "dataset_name": str(root / "pool.parquet"),
        "reward_funcs": ["ampo_trl.demo.exact_answer_reward"],  # the random tiny model fails: every group guided
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 16,
        "max_teacher_length": 64,
        "max_steps": len(STEPS),
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "seed": 0,
        "torch_num_threads": 1,
        "save_strategy": "no",
        "output_dir": str(root / "out"),
        "report_to": ["tensorboard", "trackio", "wandb"],
        "project": "ampo-trackers",
        "run_name": "tiny-run",
        "log_completions": True,
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (root / "wandb").mkdir()
    env = {
        **os.environ,
        "AMPO_TRL_CACHE": str(root / "cache"),
        "TRACKIO_DIR": str(root / "trackio"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root / "wandb"),
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [ACCELERATE, "launch", "--num_processes", "1", "-m", "ampo_trl.cli.train", "--config", "recipe.yaml"]
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=TIME_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the tracked run did not finish in {TIME_LIMIT_SECONDS} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]
    return root


def _assert_ampo_metrics_per_step(rows_by_step: dict[int, dict], prefix: str = "train/") -> None:
    """Every step logged the AMPO metrics, guidance happened and the teacher shares sum to 1 over known teachers."""
    assert sorted(rows_by_step) == STEPS
    for step, row in rows_by_step.items():
        for key in ("ampo/replaced_rows", "ampo/replaced_row_fraction", "ampo/all_fail_fraction", "reward"):
            assert prefix + key in row, f"step {step}: {key} missing from {sorted(row)}"
        assert row[prefix + "ampo/replaced_rows"] > 0
        shares = {key.rsplit("/", 1)[-1]: value for key, value in row.items() if "/ampo/teacher_share/" in f"/{key}"}
        assert shares and set(shares) <= TEACHERS, shares
        assert sum(shares.values()) == pytest.approx(1.0)


def _assert_completions_table(rows: list[dict]) -> None:
    assert rows and {"prompt", "completion", "source", "advantage"} <= set(rows[0])
    sources = {row["source"] for row in rows}
    assert "policy" in sources and sources - {"policy"} <= TEACHERS and sources & TEACHERS


def test_tensorboard_event_files_hold_the_ampo_metrics(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = glob.glob(str(tracked_run / "out" / "runs" / "*" / "events.out.tfevents.*"))
    accumulator = EventAccumulator(events)
    accumulator.Reload()
    rows: dict[int, dict] = {}
    for tag in accumulator.Tags()["scalars"]:
        for event in accumulator.Scalars(tag):
            rows.setdefault(event.step, {})[tag] = event.value
    _assert_ampo_metrics_per_step(rows)


def test_trackio_store_holds_the_ampo_metrics_and_the_completions_table(tracked_run):
    # TRACKIO_DIR is read when trackio is imported (TRL imports it here already): read the store in a fresh process.
    reader = (
        "import json, sys\n"
        "from trackio.sqlite_storage import SQLiteStorage\n"
        "runs = SQLiteStorage.get_runs('ampo-trackers')\n"
        "print(json.dumps({'runs': runs, 'logs': SQLiteStorage.get_logs('ampo-trackers', 'tiny-run')}, default=str))\n"
    )
    env = {**os.environ, "TRACKIO_DIR": str(tracked_run / "trackio")}
    completed = subprocess.run([sys.executable, "-c", reader], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    stored = json.loads(completed.stdout.strip().splitlines()[-1])
    assert stored["runs"] == ["tiny-run"]
    logs = stored["logs"]
    rows = {int(entry["train/global_step"]): entry for entry in logs if "train/ampo/replaced_rows" in entry}
    _assert_ampo_metrics_per_step(rows)
    tables = [entry["completions"] for entry in logs if "completions" in entry]
    assert tables and tables[0]["_type"] == "trackio.table"
    _assert_completions_table(tables[0]["_value"])


def _wandb_records(path: Path) -> list[bytes]:
    """The records of an offline `.wandb` file: a 7-byte header, then LevelDB-log framing (32 KiB blocks, each
    chunk with a 7-byte header: CRC32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    block, position, records, pending = 32768, 7, [], b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            records.append(payload)
        elif kind in (2, 3):
            pending += payload
        elif kind == 4:
            records.append(pending + payload)
            pending = b""
    return records


def test_wandb_offline_run_holds_the_ampo_metrics_and_the_completions_table(tracked_run):
    from wandb.proto import wandb_internal_pb2

    (run_file,) = glob.glob(str(tracked_run / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    rows: dict[int, dict] = {}
    for payload in _wandb_records(Path(run_file)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            "/".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json)
            for item in record.history.item
        }
        if "train/ampo/replaced_rows" in items:
            rows[items["train/global_step"]] = items
    _assert_ampo_metrics_per_step(rows)
    tables = sorted(glob.glob(str(Path(run_file).parent / "files" / "media" / "table" / "completions_*.table.json")))
    assert tables
    table = json.loads(Path(tables[0]).read_text())
    _assert_completions_table([dict(zip(table["columns"], row)) for row in table["data"]])
