"""Where the base model comes from: a folder, a Hugging Face id, or the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from imessage_finetune.backends.local.base_model import BaseModelNotFound, folder_files, locate  # noqa: E402
from imessage_finetune.backends.local.tiny_model import VERSION_FILE  # noqa: E402


def test_the_demo_model_is_built_once_and_rebuilt_when_its_version_changes(tmp_path: Path) -> None:
    source = locate("demo", tmp_path, tmp_path / "out")
    assert source.is_demo and (Path(source.location) / "model.safetensors").is_file()
    marker = Path(source.location) / VERSION_FILE
    built = marker.stat().st_mtime_ns
    locate("demo", tmp_path, tmp_path / "out")
    assert marker.stat().st_mtime_ns == built
    marker.write_text("0\n")
    locate("demo", tmp_path, tmp_path / "out")
    assert marker.read_text() != "0\n"


def test_a_folder_is_taken_relative_to_the_config_and_its_files_are_watched(tmp_path: Path) -> None:
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    (tmp_path / "models" / "mine" / "model.safetensors").write_text("weights")
    source = locate("models/mine", tmp_path, tmp_path / "out")
    assert source.is_folder and source.location == str(tmp_path / "models" / "mine")
    assert [p.name for p in folder_files("models/mine", tmp_path)] == ["config.json", "model.safetensors"]
    assert folder_files("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == folder_files("demo", tmp_path) == []


def test_a_hub_id_is_left_to_the_hub_and_a_wrong_folder_is_named(tmp_path: Path) -> None:
    hub = locate("Qwen/Qwen2.5-0.5B-Instruct", tmp_path, tmp_path / "out")
    assert not hub.is_folder and hub.location == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(BaseModelNotFound, match=r"base_model folder .*/nope does not exist"):
        locate("./nope", tmp_path, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelNotFound, match="is a folder without config.json"):
        locate("empty", tmp_path, tmp_path / "out")


def test_target_modules_the_model_lacks_are_refused_with_the_names_it_has(tmp_path: Path) -> None:
    from imessage_finetune.backends.local import base_model
    from imessage_finetune.backends.local.checkpoints import CheckpointStore
    from imessage_finetune.backends.local.trainer import train_adapter
    from imessage_finetune.config import LocalConfig
    from imessage_finetune.errors import TrainingError

    settings = LocalConfig(base_model="demo", target_modules=["c_attn"])
    model, tokenizer, _ = base_model.load(locate("demo", tmp_path, tmp_path / "out"), "cpu")
    with pytest.raises(TrainingError, match=r"target_modules \['c_attn'\] do not fit .* some of its linear layers: .*q_proj"):
        train_adapter(model, [], [], settings, pad_token_id=tokenizer.pad_token_id, device="cpu",
                      store=CheckpointStore(tmp_path / "checkpoints"), run_id="x")
    assert not (tmp_path / "checkpoints").exists()


def test_a_model_without_a_chat_template_is_refused_with_what_to_choose(tmp_path: Path) -> None:
    from imessage_finetune.backends.local import base_model
    from imessage_finetune.backends.local.tiny_model import build_demo_model
    from imessage_finetune.errors import TrainingError

    folder = build_demo_model(tmp_path / "plain")
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(TrainingError, match="has no chat template: choose an instruct"):
        base_model.load(locate("plain", tmp_path, tmp_path / "out"), "cpu")


def test_gradient_checkpointing_learns_the_same_adapter(tmp_path: Path) -> None:
    """It trades time for memory; the adapter it learns is the same (to float rounding)."""
    import torch

    from imessage_finetune.backends.local import base_model
    from imessage_finetune.backends.local.checkpoints import CheckpointStore
    from imessage_finetune.backends.examples import ExampleBuilder
    from imessage_finetune.backends.local.trainer import train_adapter
    from imessage_finetune.config import LocalConfig

    lines = [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i % 3}"}]}
        for i in range(12)
    ]
    adapters = []
    for checkpointing in (False, True):
        settings = LocalConfig(base_model="demo", epochs=2, learning_rate=5e-3, gradient_checkpointing=checkpointing)
        model, tokenizer, _ = base_model.load(locate("demo", tmp_path, tmp_path / "out"), "cpu")
        examples = ExampleBuilder(tokenizer, 256).build(lines)
        adapted, result = train_adapter(model, examples, [], settings, pad_token_id=tokenizer.pad_token_id,
                                        device="cpu", store=CheckpointStore(tmp_path / f"c{checkpointing}"), run_id="x")
        assert result.train_loss < result.train_loss_start
        adapters.append({k: v.detach().clone() for k, v in adapted.named_parameters() if "lora_" in k})
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.allclose(adapters[0][k], adapters[1][k], atol=1e-5) for k in adapters[0])
