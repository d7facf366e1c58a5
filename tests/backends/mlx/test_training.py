"""`doit train` with `backend = "mlx"`, on Linux's CPU build of MLX and offline: the MLX demo
model (random weights, built in code) is fine-tuned for real on the demo's train.jsonl, then
chatted with, stopped and resumed, and retrained only when a training setting changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytest.importorskip("mlx_lm", reason="the mlx backend's extra is not installed: pip install -e '.[mlx]'")

from click.testing import CliRunner  # noqa: E402

from imessage_finetune import artifacts  # noqa: E402
from imessage_finetune.cli import cli  # noqa: E402
from pipeline_runner import DoitResult, run_doit, write_config  # noqa: E402

# A learning rate that moves a random model visibly in one epoch of 12 steps (the newest 10 % held out for evaluate).
SETTINGS = 'base_model = "demo"\nlearning_rate = 1e-2\nlora_rank = 8\nlora_alpha = 16\nepochs = 1\ncheckpoint_steps = 5\n'
DATASET = 'validation_share = 0.2\nsystem_prompt = "You are me."\n'
STEP_EVENT = "imessage_finetune.backends.mlx.trainer:StepEvent"


def project(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder, "demo", f'[dataset]\n{DATASET}[finetune]\nbackend = "mlx"\n[finetune.mlx]\n{SETTINGS}{extra}')


def model_json(folder: Path) -> dict[str, Any]:
    document = json.loads((folder / "out" / artifacts.MODEL.filename).read_text())
    jsonschema.validate(document, json.loads(artifacts.MODEL.schema_path.read_text()))
    return document


def train(config: Path, fault: str = "") -> DoitResult:
    return run_doit(config, "train", fault=fault)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], DoitResult]:
    """One clean run: the project folder, its model.json, and what the run said."""
    folder = tmp_path_factory.mktemp("clean")
    result = train(project(folder))
    assert result["exit"] == "0", result.stderr
    return folder, model_json(folder), result


def test_train_goes_from_chat_db_to_an_mlx_adapter_and_a_rerun_trains_nothing(
    trained: tuple[Path, dict[str, Any], DoitResult],
) -> None:
    folder, model, result = trained
    assert model["backend"] == "mlx" and model["demonstration"] and model["device"] == "cpu"
    assert model["adapter_path"] == artifacts.MLX_ADAPTER.filename
    assert model["train_loss"] < model["train_loss_start"] - 0.1
    assert model["validation_examples"] > 0 and model["validation_loss"] is not None
    assert model["hyperparameters"]["qlora"] is False and model["versions"]["mlx-lm"] != "absent"
    assert "steps on cpu with MLX (demo)" in result.stderr and "training loss" in result.stderr
    assert "conversations in train.jsonl -> " in result.stderr
    assert "loss on training examples" in result.stderr
    adapter = folder / "out" / artifacts.MLX_ADAPTER.filename
    assert sorted(p.name for p in adapter.iterdir()) == sorted(artifacts.MLX_ADAPTER_FILES)
    assert oct(adapter.stat().st_mode & 0o777) == "0o700"
    assert not (folder / "out" / artifacts.MLX_CHECKPOINTS.filename).exists()
    log = json.loads((folder / "out" / artifacts.TRAINING_LOG.filename).read_text())
    assert log["backend"] == "mlx" and [s["step"] for s in log["steps"]] == list(range(1, model["steps"] + 1))
    assert not (folder / "out" / artifacts.MLX_LOSS_LOG_PARTIAL.filename).exists()
    assert train(folder / "finetune.toml")["train"] == "up-to-date"


def test_chat_answers_from_the_mlx_adapter_with_the_training_system_prompt(
    trained: tuple[Path, dict[str, Any], DoitResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imessage_finetune.backends.mlx.chat import MlxChatModel

    folder, model, _ = trained
    asked: list[Any] = []
    real_stream = MlxChatModel.stream
    monkeypatch.setattr(
        MlxChatModel, "stream", lambda self, messages, settings=None: asked.append(list(messages)) or real_stream(self, messages, settings)
    )
    chat = CliRunner().invoke(cli, ["--config", str(folder / "finetune.toml"), "chat", "are you free tonight?"])
    assert chat.exit_code == 0, chat.output
    assert chat.stdout.strip(), "the model generated nothing"
    assert f"loading {model['model_id']} (mlx)" in chat.stderr
    assert asked == [[{"role": "system", "content": "You are me."}, {"role": "user", "content": "are you free tonight?"}]]


def test_ctrl_c_then_a_kill_then_a_rerun_end_with_the_uninterrupted_adapter(
    tmp_path: Path, trained: tuple[Path, dict[str, Any], DoitResult]
) -> None:
    """Ctrl-C saves a checkpoint where it stops; a kill loses only the steps since the last
    periodic checkpoint; each rerun resumes, and the adapter is byte for byte the same."""
    config = project(tmp_path)
    stopped = train(config, fault=f"{STEP_EVENT}:3:sigint")
    assert stopped["exit"] != "0" and stopped["train"] == "fail"
    assert "training stopped at step 3 of 12; a checkpoint was saved" in stopped.stderr
    assert not (tmp_path / "out" / artifacts.MODEL.filename).exists()
    # Resumes at 3 (checkpoints at 5 and 10), killed at step 11, its 8th in this process.
    killed = train(config, fault=f"{STEP_EVENT}:8:sigkill")
    assert killed["exit"] == "-9"
    resumed = train(config)
    assert resumed["exit"] == "0", resumed.stderr
    assert "resuming from the checkpoint at step 10 of 12" in resumed.stderr
    assert model_json(tmp_path) == trained[1]


def test_training_settings_retrain_and_chat_settings_do_not(trained: tuple[Path, dict[str, Any], DoitResult]) -> None:
    folder = trained[0]

    def train_stage(extra: str) -> dict[str, Any]:
        status = CliRunner().invoke(cli, ["--config", str(project(folder, extra)), "status", "--json"])
        return {s["name"]: s for s in json.loads(status.stdout)}["train"]

    assert train_stage("temperature = 0.0\nmax_new_tokens = 5\n")["status"] == "up-to-date"
    stale = train_stage("lora_dropout = 0.1\n")
    assert stale["status"] == "run" and "lora_dropout: 0.05 -> 0.1" in " ".join(stale["reasons"])
    project(folder)  # as it was


def test_without_the_extra_choosing_mlx_is_one_line_that_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "mlx_lm", None)
    result = CliRunner().invoke(cli, ["--config", str(project(tmp_path)), "run", "train"])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if "mlx backend needs" in line]
    assert lines == [lines[0]] and "pip install 'imessage-finetune[mlx]'" in lines[0], result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out" / artifacts.MODEL.filename).exists()
