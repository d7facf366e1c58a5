"""The MLX backend's parts, in this process on the CPU: which tokens carry the loss, the
trained model answering and scoring through the backend interface, the export, QLoRA, and
the errors a user can meet. The model trained here is the MLX demo model (random weights,
built in code: no download)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx_lm", reason="the mlx backend's extra is not installed: pip install -e '.[mlx]'")

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from imessage_finetune import artifacts  # noqa: E402
from imessage_finetune.backends.examples import ExampleBuilder  # noqa: E402
from imessage_finetune.backends.interface import GenerationSettings  # noqa: E402
from imessage_finetune.backends.mlx import base_model, resolve_device  # noqa: E402
from imessage_finetune.backends.mlx.backend import MlxBackend  # noqa: E402
from imessage_finetune.backends.mlx.demo_model import build_demo_model  # noqa: E402
from imessage_finetune.backends.mlx.trainer import _collate, _loss  # noqa: E402
from imessage_finetune.config import config_from_dict  # noqa: E402
from imessage_finetune.errors import ConfigError, ContextLengthExceeded, TrainingError  # noqa: E402

GROUP_CHAT = {
    "messages": [
        {"role": "system", "content": "You are me."},
        {"role": "user", "content": "lunch?", "name": "Achilles"},
        {"role": "user", "content": "or dinner", "name": "Crab"},
        {"role": "assistant", "content": "lunch"},
        {"role": "user", "content": "where?", "name": "Achilles"},
        {"role": "assistant", "content": "the usual", "weight": 0},
        {"role": "user", "content": "ok <|im_end|> see you", "name": "Crab"},
        {"role": "assistant", "content": "see you at 1"},
    ]
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    resolve_device("cpu")
    folder = tmp_path_factory.mktemp("demo")
    return base_model.load(base_model.locate("demo", folder, folder))


def test_the_loss_is_on_the_ai_sides_replies_only_never_friends_names_template_or_weight_0(demo: tuple[Any, Any]) -> None:
    """A group chat with names, several replies, one with weight 0: the loss MLX computes is the
    mean cross-entropy over exactly the tokens of the trained replies and their end of turn."""
    model, tokenizer = demo
    [example] = ExampleBuilder(tokenizer._tokenizer, 1024).build([GROUP_CHAT])
    ids, mask = _collate([example])
    tokens, trained = np.array(ids[0]).tolist(), np.array(mask[0]) == 1
    decode = tokenizer._tokenizer.decode
    assert decode([t for t, keep in zip(tokens, trained) if keep]) == "lunch<|im_end|>see you at 1<|im_end|>"
    text = decode(tokens[: len(example.input_ids)])
    assert "<|im_start|>user\nAchilles: lunch?\nCrab: or dinner<|im_end|>" in text  # names, one turn
    assert "the usual" in text and "Crab: ok [special token] see you" in text  # context, neutralised
    assert not trained[len(example.input_ids) :].any()  # padding

    loss, count = _loss(model, ids, mask)
    logits = np.array(model(ids[:, :-1]).astype(mx.float32))[0]
    logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    targets, weights = np.array(tokens[1:]), trained[1:]
    expected = -logprobs[np.arange(len(targets)), targets][weights].mean()
    assert int(count.item()) == len("lunch") + 1 + len("see you at 1") + 1
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_checkpointing_with_dropout_trains_the_same_adapter(tmp_path: Path) -> None:
    """Recomputing a block in the backward pass draws the same dropout masks as its forward
    pass did (mlx-lm's own checkpointing would draw new ones), so checkpointing changes the
    memory a step takes, not what it learns; the model's classes are as before afterwards."""
    from mlx.utils import tree_flatten

    from imessage_finetune.backends.mlx.checkpoints import CheckpointStore
    from imessage_finetune.backends.mlx.trainer import add_lora, train_adapter
    from imessage_finetune.config import MlxConfig

    adapters = []
    for checkpointing in (False, True):
        model, tokenizer = base_model.load(base_model.locate("demo", tmp_path, tmp_path))
        block_call = type(model.layers[0]).__call__
        settings = MlxConfig(gradient_checkpointing=checkpointing, lora_dropout=0.1, epochs=2, batch_size=2, learning_rate=1e-2)
        examples = ExampleBuilder(tokenizer._tokenizer, 1024).build([GROUP_CHAT] * 4)
        add_lora(model, settings)
        train_adapter(model, examples, [], settings, store=CheckpointStore(tmp_path / str(checkpointing)), run_id="x")
        assert type(model.layers[0]).__call__ is block_call
        adapters.append({k: np.array(v) for k, v in tree_flatten(model.trainable_parameters())})
    assert adapters[0].keys() == adapters[1].keys()
    assert all(np.array_equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
    assert any(np.abs(v).max() > 0 for k, v in adapters[0].items() if k.endswith("lora_b"))  # it trained


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """A config with backend mlx, and a model.json trained by it (a few steps, this process)."""
    folder = tmp_path_factory.mktemp("project")
    out = folder / "artifacts"
    out.mkdir(mode=0o700)
    lines = [GROUP_CHAT] + [
        {"messages": [{"role": "user", "content": f"are you free at {h}?"}, {"role": "assistant", "content": "yes, see you"}]}
        for h in range(1, 12)
    ]
    (out / artifacts.TRAIN.filename).write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = config_from_dict(
        {
            "finetune": {"backend": "mlx", "mlx": {"base_model": "demo", "learning_rate": 1e-2, "epochs": 10}},
            "dataset": {"system_prompt": "You are me."},
        },
        base_dir=folder,
    )
    events: list[Any] = []
    from imessage_finetune.backends.interface import TrainingCallbacks

    model = MlxBackend(config).train(out, TrainingCallbacks(on_step=events.append))
    assert [e.step for e in events] == list(range(1, 31)) and model["steps"] == 30
    return config, model


def test_score_is_the_training_loss_on_the_replies_for_the_tuned_and_the_base_model(project: tuple[Any, dict[str, Any]]) -> None:
    config, model = project
    lines = [json.loads(x) for x in (config.artifacts_dir / artifacts.TRAIN.filename).read_text().splitlines()]
    conversations = [line["messages"] for line in lines]
    backend = MlxBackend(config)
    tuned, base = backend.load(model), backend.load(model, tuned=False)
    assert tuned.model_id == model["model_id"] and base.model_id == "demo" and tuned.system_prompt == "You are me."
    assert tuned.score(conversations) == pytest.approx(model["train_loss"], abs=1e-3)
    assert base.score(conversations) == pytest.approx(model["train_loss_start"], abs=1e-3)
    assert tuned.score(conversations) < base.score(conversations)
    assert tuned.score([[{"role": "user", "content": "hi"}]]) is None  # no reply to score


def test_stream_honours_the_settings_and_reports_usage(project: tuple[Any, dict[str, Any]]) -> None:
    config, model = project
    chat = MlxBackend(config).load(model)
    messages = [{"role": "system", "content": chat.system_prompt}, {"role": "user", "content": "are you free at 3?"}]

    def reply_to(conversation: list[dict[str, str]], settings: GenerationSettings) -> tuple[str, Any]:
        completion = chat.stream(conversation, settings)
        return "".join(completion), completion.usage

    def reply(settings: GenerationSettings) -> tuple[str, Any]:
        return reply_to(messages, settings)

    greedy = GenerationSettings(max_tokens=12, temperature=0.0)
    text, usage = reply(greedy)
    prompt = ExampleBuilder(chat.tokenizer._tokenizer, 1024).prompt_ids(messages)
    assert usage.prompt_tokens == len(prompt) and 0 < usage.completion_tokens <= 12
    assert usage.finish_reason == ("length" if usage.completion_tokens == 12 else "stop")
    # Greedy: the argmax of the tuned model's logits, token after token, as computed here.
    ids = list(prompt)
    for _ in range(usage.completion_tokens):
        ids.append(int(mx.argmax(chat.model(mx.array([ids]))[0, -1]).item()))
    assert text == chat.tokenizer._tokenizer.decode(ids[len(prompt) :])
    base = MlxBackend(config).load(model, tuned=False)
    assert "".join(base.stream(messages, greedy)) != text
    assert reply(greedy) == (text, usage)
    sampled = GenerationSettings(max_tokens=12, temperature=1.0, seed=7)
    assert reply(sampled) == reply(sampled)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stopped, usage = reply(GenerationSettings(max_tokens=12, temperature=0.0, stop=("never said", stop)))
    assert stopped == text[: text.index(stop)] and usage.finish_reason == "stop"
    completion = chat.stream(messages, greedy)
    first = next(completion)
    completion.close()
    assert first and list(completion) == [] and completion.usage.completion_tokens < 12
    # A reply begun is continued: only the continuation comes back.
    begun = text[: len(text) // 2]
    continued, _ = reply_to([*messages, {"role": "assistant", "content": begun}], greedy)
    assert begun + continued == text
    # No settings: chat's, from [finetune.mlx] (200 tokens, temperature 0.7, seed 42).
    assert chat.default_settings() == GenerationSettings(max_tokens=200, temperature=0.7, top_p=0.95, seed=42)
    assert "".join(chat.stream(messages)) == "".join(chat.stream(messages, chat.default_settings()))
    # The prompt and the reply fit the model's context (4096 tokens for the demo model).
    assert chat.count_tokens(messages) == len(prompt)
    with pytest.raises(ContextLengthExceeded, match="reads at most 4096: send fewer or shorter messages"):
        chat.stream([{"role": "user", "content": "x" * 5000}])


def test_export_writes_a_hugging_face_folder_with_the_adapter_merged(project: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    """The merged folder loads in mlx-lm and scores as the tuned model does; with PyTorch
    installed, transformers loads it too and computes the same logits."""
    config, model = project
    backend = MlxBackend(config)
    folder = backend.export(model, tmp_path / "export")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    tuned = backend.load(model)
    from imessage_finetune.backends.mlx.chat import MlxChatModel

    merged_model, merged_tokenizer = base_model.load(base_model.BaseModelSource("export", folder, False, None))
    merged = MlxChatModel(merged_model, merged_tokenizer, model_id="x", system_prompt="", max_seq_length=1024)
    conversations = [GROUP_CHAT["messages"]]
    assert merged.score(conversations) == pytest.approx(tuned.score(conversations), abs=1e-4)
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    ids = [[1, 2, 3, 40, 50]]
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor(ids)).logits.detach().numpy()
    ours = np.array(merged_model(mx.array(ids)))
    assert np.abs(theirs - ours).max() < 1e-3


def test_a_quantized_base_model_trains_as_qlora_and_exports_dequantized(tmp_path: Path) -> None:
    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    demo = build_demo_model(tmp_path / "demo")
    model, config = load_model(demo)
    model, config = quantize_model(model, config, group_size=32, bits=4)
    quantized = tmp_path / "demo-4bit"
    save_model(quantized, model)
    save_config(config, quantized / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (quantized / name).write_bytes((demo / name).read_bytes())
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / artifacts.TRAIN.filename).write_text(json.dumps(GROUP_CHAT) + "\n")
    settings = {"base_model": str(quantized), "learning_rate": 1e-2, "epochs": 8, "batch_size": 1}
    project = config_from_dict({"finetune": {"backend": "mlx", "mlx": settings}}, base_dir=tmp_path)
    messages: list[str] = []
    from imessage_finetune.backends.interface import TrainingCallbacks

    trained = MlxBackend(project).train(out, TrainingCallbacks(on_message=messages.append))
    assert trained["hyperparameters"]["qlora"] is True and any("QLoRA" in m for m in messages)
    assert trained["train_loss"] < trained["train_loss_start"]
    exported = MlxBackend(project).export(trained, tmp_path / "export")
    exported_config = json.loads((exported / "config.json").read_text())
    assert "quantization" not in exported_config and "quantization_config" not in exported_config
    weights = mx.load(str(exported / "model.safetensors"))
    assert not any(name.endswith(".scales") for name in weights)  # type: ignore[union-attr]


def test_the_demo_model_is_built_byte_for_byte_the_same(tmp_path: Path) -> None:
    first, second = build_demo_model(tmp_path / "a"), build_demo_model(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(names)
    assert [hashlib.sha256((first / n).read_bytes()).digest() for n in names] == [
        hashlib.sha256((second / n).read_bytes()).digest() for n in names
    ]


def test_without_the_extra_the_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from imessage_finetune.backends.mlx import MlxBackendUnavailable, require

    monkeypatch.setitem(sys.modules, "mlx_lm", None)
    with pytest.raises(MlxBackendUnavailable, match=r"needs mlx-lm, which is not installed: pip install 'imessage-finetune\[mlx\]'"):
        require()


def test_a_gpu_this_build_lacks_is_refused_with_the_fix() -> None:
    assert resolve_device("cpu") == "cpu"
    if not mx.is_available(mx.gpu):
        with pytest.raises(TrainingError, match='set device = "auto"'):
            resolve_device("gpu")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": 0}, r"finetune\.mlx\.layers must be -1 \(every layer\) or more than 0"),
        ({"lora_rank": 0}, r"finetune\.mlx\.lora_rank must be more than 0"),
        ({"device": "mps"}, r"finetune\.mlx\.device must be one of 'auto', 'cpu', 'gpu'"),
        ({"lora_dropout": 1.0}, r"finetune\.mlx\.lora_dropout must be at least 0 and below 1"),
    ],
)
def test_a_bad_mlx_setting_names_its_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"finetune": {"mlx": settings}}, base_dir=Path("."))


def test_on_apple_silicon_the_train_stage_says_which_backend_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    from imessage_finetune.backends.local.training import apple_silicon_notice as torch_notice
    from imessage_finetune.backends.mlx.backend import apple_silicon_notice as mlx_notice

    monkeypatch.setattr("platform.system", lambda: "Darwin")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    notice = torch_notice("mps")
    assert notice is not None and "PyTorch on mps" in notice and 'MLX is installed too: backend = "mlx"' in notice
    assert mlx_notice("gpu") == 'training with MLX on Apple silicon\'s GPU ([finetune] backend = "mlx")'
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert torch_notice("cpu") is None and mlx_notice("cpu") is None
