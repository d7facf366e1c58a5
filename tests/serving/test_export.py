"""`imessage-finetune export`: merged weights that equal base + adapter, a Modelfile whose
TEMPLATE renders (in Go's text/template, as Ollama does) exactly what the tokenizer's chat
template gives, a folder that plain transformers loads and that answers like `chat`, and a
folder that stays private."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from click.testing import CliRunner
from trained_demo import SYSTEM_PROMPT

from imessage_finetune.cli import REPLY_KEEPS, cli
from imessage_finetune.serving.export import ExportError, check_destination
from imessage_finetune.serving.modelfile import (
    TemplateNotTranslatable,
    hf_render,
    infer_turn_format,
    modelfile,
    sample_conversations,
    stop_tokens,
)
from imessage_finetune.terminal import printable

HARNESS = Path(__file__).parent / "ollama_template"
LOGIT_TOLERANCE = 1e-5  # float32 merge: W + s·B·A computed once instead of on every call

# The structure of Qwen2.5-Instruct's chat template (its branch without tools): a default
# system message when the conversation has none.
QWEN25_LIKE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Llama 3's way: every message's text trimmed, which a Go template cannot do.
TRIMMING = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def exported(trained_demo: Path) -> Path:
    """`imessage-finetune export` of the trained demo, into its (git-ignored) default folder."""
    result = CliRunner().invoke(cli, ["--config", str(trained_demo), "export"])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    assert folder == trained_demo.parent / "out" / "export"
    assert "PRIVATE" in result.stderr and "(0700/0600)" in result.stderr
    assert f"ollama create NAME -f {folder / 'Modelfile'}" in result.stderr
    return folder


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go program that parses a Modelfile and renders its TEMPLATE as Ollama does."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go; .ci/run installs it)")
    binary = tmp_path_factory.mktemp("go") / "ollama-template"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=HARNESS, check=True, capture_output=True)
    return binary


def ollama(harness: Path, modelfile_text: str, conversations: list[list[dict[str, str]]]) -> dict[str, Any]:
    done = subprocess.run(
        [str(harness)], input=json.dumps({"modelfile": modelfile_text, "conversations": conversations}),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def with_system(conversation: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """The conversation the model gets from `chat`/`serve` (and Ollama, from SYSTEM)."""
    if system_prompt and conversation[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *conversation]
    return conversation


def test_the_folder_is_a_private_hugging_face_model_with_a_modelfile(exported: Path) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "Modelfile"} <= names
    assert oct(exported.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in exported.iterdir()} == {"0o600"}
    lines = (exported / "Modelfile").read_text().splitlines()
    assert "FROM ." in lines and f'SYSTEM """{SYSTEM_PROMPT}"""' in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    # chat's settings (trained_demo: temperature 1.3, max_new_tokens 24), top_k as transformers samples
    for parameter in ("temperature 1.3", "top_p 0.95", "top_k 50", "repeat_penalty 1.0", "num_predict 24"):
        assert f"PARAMETER {parameter}" in lines
    assert str(exported.parent) not in (exported / "config.json").read_text()


def test_merged_logits_equal_base_plus_adapter(exported: Path, trained_demo: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = trained_demo.parent / "out"
    model = json.loads((out / "model.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(out / "local-model" / "demo-base", dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(out / model["adapter_path"])).eval()
    merged = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported)
    moved = False
    with torch.no_grad():
        for conversation in sample_conversations(SYSTEM_PROMPT)[:6]:
            ids = tokenizer(hf_render(tokenizer, conversation), return_tensors="pt")["input_ids"]
            expected, got = adapted(ids).logits, merged(ids).logits
            assert torch.allclose(got, expected, rtol=0, atol=LOGIT_TOLERANCE), (got - expected).abs().max()
            with adapted.disable_adapter():
                moved |= not torch.allclose(adapted(ids).logits, expected, atol=1e-3)
    assert moved, "the adapter changes nothing: the comparison would prove nothing"


PLAIN_TRANSFORMERS = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt, system, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
torch.manual_seed(seed)
with torch.no_grad():
    out = model.generate(**inputs)  # the folder's generation_config: chat's sampling settings
reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps({"reply": reply, "modules": sorted(m for m in sys.modules if m.startswith("imessage"))}))
"""


def test_plain_transformers_loads_the_folder_and_answers_like_chat(exported: Path, trained_demo: Path) -> None:
    prompt = "are you free tonight?"
    chat = CliRunner().invoke(cli, ["--config", str(trained_demo), "chat", prompt])
    assert chat.exit_code == 0, chat.output
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(exported), prompt, SYSTEM_PROMPT, "7"],
        capture_output=True, text=True, cwd=exported, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    # chat shows a reply's control characters as escapes; the folder gives the text as it is.
    assert printable(result["reply"], keep=REPLY_KEEPS) == chat.stdout.removesuffix("\n") and len(result["reply"]) >= 3


def test_ollamas_rendering_of_the_template_is_the_tokenizers_text(exported: Path, harness: Path) -> None:
    """Parsed by Ollama's Modelfile parser and rendered by Go's text/template with Ollama's
    data, for conversations with and without a system message (SYSTEM then comes first)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    text = (exported / "Modelfile").read_text()
    conversations = sample_conversations(SYSTEM_PROMPT)
    result = ollama(harness, text, conversations)
    commands = {name: args for name, args in result["commands"] if name != "stop"}
    assert commands["model"] == "." and commands["system"] == SYSTEM_PROMPT
    assert commands["template"] == infer_turn_format(tokenizer).go_template()
    assert [args for name, args in result["commands"] if name == "stop"] == ["<|im_end|>"]
    for conversation, rendered in zip(conversations, result["rendered"], strict=True):
        assert rendered == hf_render(tokenizer, with_system(conversation, SYSTEM_PROMPT))


def test_a_default_system_message_and_no_system_prompt_render_the_same_too(exported: Path, harness: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    tokenizer.chat_template = QWEN25_LIKE
    fmt = infer_turn_format(tokenizer)
    assert fmt.default_header.startswith("<|im_start|>system\nYou are Qwen")
    text = modelfile(fmt, stop_tokens(tokenizer, {}, fmt), "", {"do_sample": False}, "m")
    assert "SYSTEM" not in text and "PARAMETER temperature 0" in text
    conversations = sample_conversations("")
    result = ollama(harness, text, conversations)
    for conversation, rendered in zip(conversations, result["rendered"], strict=True):
        assert rendered == hf_render(tokenizer, conversation)
    assert "You are Qwen" in result["rendered"][0]


def test_a_template_that_changes_the_text_is_refused_not_approximated(exported: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    tokenizer.chat_template = TRIMMING
    with pytest.raises(TemplateNotTranslatable, match="trims spaces"):
        infer_turn_format(tokenizer)


def test_export_refuses_a_git_work_tree_unless_ignored_or_forced(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([git, "init", "-q", str(repo)], check=True)
    with pytest.raises(ExportError, match="inside the git work tree .* pass --force"):
        check_destination(repo / "models" / "me", force=False)
    check_destination(repo / "models" / "me", force=True)
    (repo / ".gitignore").write_text("/models/\n")
    check_destination(repo / "models" / "me", force=False)
    check_destination(tmp_path / "elsewhere", force=False)


def test_export_never_replaces_a_folder_that_is_not_an_earlier_export(tmp_path: Path, exported: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not an earlier export"):
        check_destination(tmp_path, force=True)
    check_destination(exported, force=False)  # an earlier export is replaced whole


def test_export_in_a_git_work_tree_is_one_line_with_the_way_out(tmp_path: Path, trained_demo: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    result = CliRunner().invoke(cli, ["--config", str(trained_demo), "export", str(tmp_path / "me")])
    assert result.exit_code == 1 and "pass --force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # the error alone, before any work
    assert not (tmp_path / "me").exists()


def test_no_model_yet_and_a_model_at_the_service_are_one_line_each(tmp_path: Path) -> None:
    from imessage_finetune import artifacts

    (tmp_path / "out").mkdir()
    config = tmp_path / "finetune.toml"
    config.write_text('[artifacts]\ndir = "out"\n[finetune]\nbackend = "openai"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "export", str(tmp_path / "me")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["Error: no model yet: run `imessage-finetune run train` first"]
    remote = {
        "backend": "openai", "endpoint": "https://api.openai.com/v1", "model_id": "ft:gpt-4.1-mini:me::abc",
        "job_id": "ftjob-1", "base_model": "gpt-4.1-mini-2025-04-14", "training_file": "file-1",
        "validation_file": None, "hyperparameters": {}, "seed": 42, "suffix": "imessage",
        "trained_tokens": 100, "cost_usd": 0.01,
    }  # fmt: skip
    (tmp_path / "out" / artifacts.MODEL.filename).write_text(json.dumps(remote))
    result = CliRunner().invoke(cli, ["--config", str(config), "export", str(tmp_path / "me")])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "nothing to export here: ft:gpt-4.1-mini:me::abc was fine-tuned at the service" in result.stderr
    assert not (tmp_path / "me").exists()
