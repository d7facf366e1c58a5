"""`doit train` with the local backend, on CPU and offline: a tiny model with random weights
(built in a temporary folder) is fine-tuned for real on the demo's train.jsonl."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from click.testing import CliRunner  # noqa: E402

from imessage_finetune import artifacts  # noqa: E402
from imessage_finetune.backends.local.tiny_model import build_demo_model  # noqa: E402
from imessage_finetune.cli import cli  # noqa: E402
from pipeline_runner import DoitResult, run_doit, write_config  # noqa: E402

# A learning rate that moves a random model visibly in 39 steps.
SETTINGS = "learning_rate = 5e-3\nlora_rank = 8\nlora_alpha = 16\n"
STEP_EVENT = "imessage_finetune.backends.local.trainer:StepEvent"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "tiny-qwen")


def project(folder: Path, base: Path | str, extra: str = "", dataset: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(
        folder,
        "demo",
        f"[dataset]\n{dataset}[finetune]\nbackend = \"local\"\n[finetune.local]\nbase_model = \"{base}\"\n{SETTINGS}{extra}",
    )


def model_json(folder: Path) -> dict[str, Any]:
    document = json.loads((folder / "out" / artifacts.MODEL.filename).read_text())
    jsonschema.validate(document, json.loads(artifacts.MODEL.schema_path.read_text()))
    return document


def train(config: Path, fault: str = "", env: dict[str, str] | None = None) -> DoitResult:
    return run_doit(config, "train", fault=fault, env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Any]:
    """One clean run, the reference for the interrupted ones."""
    folder = tmp_path_factory.mktemp("clean")
    result = train(project(folder, tiny_model, "checkpoint_steps = 10\n"))
    assert result["exit"] == "0", result.stderr
    return model_json(folder)


def test_train_goes_from_chat_db_to_an_adapter_that_reloads_and_chats(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss on the training examples goes down, the saved adapter is the trained one,
    a rerun trains nothing, and `chat` answers from the adapter with the training prompt."""
    config = project(tmp_path, tiny_model, dataset='validation_share = 0.2\nsystem_prompt = "You are me."\n')
    result = train(config)
    assert result["exit"] == "0", result.stderr
    model = model_json(tmp_path)
    assert model["backend"] == "local" and not model["demonstration"] and model["device"] == "cpu"
    assert model["train_loss"] < model["train_loss_start"] - 0.1
    assert model["validation_examples"] > 0 and model["validation_loss"] is not None
    assert model["examples"]["trained_tokens_per_epoch"] > 0 and model["steps"] > 10
    assert model["trained_tokens"] == model["examples"]["trained_tokens_per_epoch"] * 3  # epochs
    assert "training loss" in result.stderr and "loss on training examples" in result.stderr
    assert not (tmp_path / "out" / artifacts.CHECKPOINTS.filename).exists()
    assert oct((tmp_path / "out" / artifacts.ADAPTER.filename).stat().st_mode & 0o777) == "0o700"

    from imessage_finetune.backends.local import base_model, quiet_libraries
    from imessage_finetune.backends.examples import ExampleBuilder
    from imessage_finetune.backends.local.trainer import loss_sample, mean_loss
    from peft import PeftModel

    quiet_libraries()
    base, tokenizer, _ = base_model.load(base_model.locate(str(tiny_model), tmp_path, tmp_path / "out"), "cpu")
    lines = [json.loads(x) for x in (tmp_path / "out" / artifacts.TRAIN.filename).read_text().splitlines()]
    sample = loss_sample(ExampleBuilder(tokenizer, 1024).build(lines))
    assert mean_loss(base, sample, 4, tokenizer.pad_token_id, "cpu") == pytest.approx(model["train_loss_start"], abs=1e-3)
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "out" / model["adapter_path"]))
    assert mean_loss(adapted, sample, 4, tokenizer.pad_token_id, "cpu") == pytest.approx(model["train_loss"], abs=1e-3)

    again = train(config)
    assert again["train"] == "up-to-date", again.stderr

    # Through the Backend interface: the same losses from `score`, seeded replies with usage,
    # and the export, whose merged weights score as the adapter does.
    from imessage_finetune.backends import backend_for
    from imessage_finetune.backends.interface import GenerationSettings
    from imessage_finetune.config import load_config

    backend = backend_for(load_config(config))
    tuned, untuned = backend.load(model), backend.load(model, tuned=False)
    conversations = [line["messages"] for line in lines]
    assert tuned.score(conversations) == pytest.approx(model["train_loss"], abs=1e-3)
    assert untuned.score(conversations) == pytest.approx(model["train_loss_start"], abs=1e-3)
    assert (tuned.model_id, untuned.model_id, tuned.system_prompt) == (model["model_id"], str(tiny_model), "You are me.")
    settings = GenerationSettings(max_tokens=6, temperature=0.9, seed=7)
    reply = tuned.stream([{"role": "user", "content": "hi"}], settings)
    text = "".join(reply)
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 6
    assert reply.usage.finish_reason == ("length" if reply.usage.completion_tokens == 6 else "stop")
    assert "".join(tuned.stream([{"role": "user", "content": "hi"}], settings)) == text
    begun = tuned.stream([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "well"}], settings)
    "".join(begun)  # a reply begun is continued: its prompt ends inside the assistant's turn
    prompt = tuned.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "well"}],
        continue_final_message=True,
        return_dict=True,
    )["input_ids"]
    assert begun.usage.prompt_tokens == len(prompt)
    exported = backend.export(model, tmp_path / "exported")
    merged = backend.load({**model, "base_model": str(exported), "base_model_revision": None}, tuned=False)
    assert merged.score(conversations) == pytest.approx(model["train_loss"], abs=1e-3)

    from imessage_finetune.backends.local.chat import LocalChat

    asked: list[Any] = []
    real_stream = LocalChat.stream
    monkeypatch.setattr(LocalChat, "stream", lambda self, messages: asked.append(list(messages)) or real_stream(self, messages))
    chat = CliRunner().invoke(cli, ["--config", str(config), "chat", "are you free tonight?"])
    assert chat.exit_code == 0, chat.output
    assert chat.stdout.strip(), "the model generated nothing"
    assert not [c for c in chat.stdout if unicodedata.category(c) == "Cc" and c not in "\n\t"], chat.stdout
    assert "(local)" in chat.stderr
    assert asked == [[{"role": "system", "content": "You are me."}, {"role": "user", "content": "are you free tonight?"}]]


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes_to_the_same_adapter(
    tmp_path: Path, tiny_model: Path, uninterrupted: dict[str, Any]
) -> None:
    config = project(tmp_path, tiny_model, "checkpoint_steps = 10\n")
    stopped = train(config, fault=f"{STEP_EVENT}:13:sigint")
    assert stopped["exit"] != "0" and stopped["train"] == "fail"
    assert "training stopped at step 13 of 39; a checkpoint was saved" in stopped.stderr
    assert not (tmp_path / "out" / artifacts.MODEL.filename).exists()
    resumed = train(config)
    assert resumed["exit"] == "0", resumed.stderr
    assert "resuming from the checkpoint at step 13 of 39" in resumed.stderr
    assert model_json(tmp_path) == uninterrupted


def test_a_kill_resumes_from_the_last_periodic_checkpoint(
    tmp_path: Path, tiny_model: Path, uninterrupted: dict[str, Any]
) -> None:
    config = project(tmp_path, tiny_model, "checkpoint_steps = 10\n")
    killed = train(config, fault=f"{STEP_EVENT}:25:sigkill")
    assert killed["exit"] == "-9"
    resumed = train(config)
    assert "resuming from the checkpoint at step 20 of 39" in resumed.stderr, resumed.stderr
    assert model_json(tmp_path) == uninterrupted


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path: Path, tiny_model: Path, uninterrupted: dict[str, Any]) -> None:
    stopped = train(project(tmp_path, tiny_model, "checkpoint_steps = 10\nlora_dropout = 0.1\n"), fault=f"{STEP_EVENT}:12:sigint")
    assert "a checkpoint was saved" in stopped.stderr
    fresh = train(project(tmp_path, tiny_model, "checkpoint_steps = 10\n"))
    assert fresh["exit"] == "0" and "resuming" not in fresh.stderr
    assert model_json(tmp_path) == uninterrupted


def test_chat_settings_retrain_nothing_and_training_settings_or_base_model_files_retrain(tmp_path: Path) -> None:
    base = build_demo_model(tmp_path / "base")
    config = project(tmp_path, base, "epochs = 1\n")
    assert train(config)["exit"] == "0"
    config = project(tmp_path, base, "epochs = 1\ntemperature = 0.0\nmax_new_tokens = 5\ncheckpoint_steps = 3\n")
    assert train(config)["train"] == "up-to-date"

    def train_status(config: Path) -> dict[str, Any]:
        status = CliRunner().invoke(cli, ["--config", str(config), "status", "--json"])
        stages = {s["name"]: s for s in json.loads(status.stdout)}
        assert stages["dataset"]["status"] == "up-to-date"
        return stages["train"]

    stale = train_status(project(tmp_path, base, "epochs = 2\n"))
    assert stale["status"] == "run" and "epochs: 1 -> 2" in " ".join(stale["reasons"])
    (base / "generation_config.json").write_text('{"temperature": 0.1}')
    stale = train_status(config)
    assert stale["status"] == "run" and "generation_config.json changed" in " ".join(stale["reasons"])


def test_a_base_model_that_cannot_be_found_offline_is_named_with_the_way_out(tmp_path: Path) -> None:
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    result = train(project(tmp_path, "Qwen/Qwen2.5-0.5B-Instruct"), env=offline)
    assert result["train"] == "fail"
    assert "cannot load base model 'Qwen/Qwen2.5-0.5B-Instruct'" in result.stderr
    assert "set [finetune.local] base_model to that folder" in result.stderr
    missing = train(project(tmp_path, "./models/none"))
    assert "[finetune.local] base_model folder" in missing.stderr and "does not exist" in missing.stderr
    assert not (tmp_path / "out" / artifacts.MODEL.filename).exists()


def test_without_the_extra_the_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from imessage_finetune.backends.local import LocalBackendUnavailable, require

    monkeypatch.setitem(os.sys.modules, "peft", None)
    with pytest.raises(LocalBackendUnavailable, match=r"needs peft, which is not installed: in a clone of the project run `python3 install.py`.*pip install 'imessage-finetune\[local\]'"):
        require()


def test_a_device_this_machine_lacks_is_refused_with_the_fix() -> None:
    import torch

    from imessage_finetune.backends.local import resolve_device
    from imessage_finetune.errors import TrainingError

    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match='set device = "auto"'):
            resolve_device("cuda")


def test_each_epoch_covers_every_example_once_in_seeded_batches_of_similar_length() -> None:
    from imessage_finetune.backends.local.trainer import epoch_batches

    lengths = [(i * 37) % 101 + 1 for i in range(150)]
    first = epoch_batches(lengths, 4, seed=42, epoch=0)
    assert first == epoch_batches(lengths, 4, seed=42, epoch=0) != epoch_batches(lengths, 4, seed=42, epoch=1)
    assert sorted(i for batch in first for i in batch) == list(range(150))
    assert all(len(batch) <= 4 for batch in first) and len(first) == 38
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in first)
    assert padding < 0.1 * sum(lengths)


def test_chat_says_what_to_do_when_model_json_or_the_adapter_is_damaged(
    tmp_path: Path, tiny_model: Path, uninterrupted: dict[str, Any]
) -> None:
    config = project(tmp_path, tiny_model)
    (tmp_path / "out").mkdir()
    model_path = tmp_path / "out" / artifacts.MODEL.filename
    model_path.write_text('{"backend":')
    chat = CliRunner().invoke(cli, ["--config", str(config), "chat", "hi"])
    assert chat.exit_code == 1 and "model.json is damaged: run `imessage-finetune run train`" in chat.stderr
    model_path.write_text(json.dumps(uninterrupted))  # a good model.json, but no adapter here
    chat = CliRunner().invoke(cli, ["--config", str(config), "chat", "hi"])
    assert chat.exit_code == 1 and "the trained adapter is missing from" in chat.stderr
    assert "Traceback" not in chat.output
