"""`doit evaluate` as a user runs it: on the demo with a tiny model trained here (local), and
through the stand-in OpenAI server (openai); rebuilds, bad input, interruptions, and the
report opened in real headless Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from fake_openai import API_KEY, FakeOpenAI  # noqa: E402
from headless_chromium import chromium, open_page  # noqa: E402
from imessage_finetune import artifacts  # noqa: E402
from imessage_finetune.backends.local.tiny_model import build_demo_model  # noqa: E402
from pipeline_runner import run_doit, write_config  # noqa: E402

MEASURE = "imessage_finetune.evaluation.measure:generate"
QUICK = "[evaluation]\nreplies = 6\nmax_new_tokens = 8\nsamples = 3\n"
SCREENSHOT_ENV = "IMESSAGE_FINETUNE_SCREENSHOT"  # where to keep the screenshot (README's)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "tiny-qwen")


def project(folder: Path, base: Path, extra: str = QUICK, source: str = "demo") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(
        folder,
        source,
        f'[finetune.local]\nbase_model = "{base}"\nlearning_rate = 5e-3\nepochs = 2\n{extra}',
    )


def evaluation(folder: Path) -> dict[str, Any]:
    document = json.loads((folder / "out" / artifacts.EVALUATION.filename).read_text())
    jsonschema.validate(document, json.loads(artifacts.EVALUATION.schema_path.read_text()))
    return document


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("evaluated")
    result = run_doit(project(folder, tiny_model), "evaluate")
    assert result["exit"] == "0", result.stderr
    return folder, result


def test_evaluate_writes_a_valid_evaluation_and_a_report_and_says_the_verdict(evaluated: tuple[Path, Any]) -> None:
    folder, result = evaluated
    document = evaluation(folder)
    loss = document["heldout_loss"]
    assert loss["tuned"] < loss["base"], "even the tiny model learns the owner's replies a little"
    assert document["heldout"]["generated"] == 6 and len(document["samples"]) == 3
    assert {"context", "real", "base", "tuned"} <= set(document["samples"][0])
    assert set(document["style"]) >= {"base", "tuned", "ceiling", "floor"}
    assert document["training"]["steps"][-1]["step"] == len(document["training"]["steps"])
    report = folder / "out" / artifacts.REPORT.filename
    assert f"evaluate: {document['verdict']} Report: {report}" in result.stderr
    assert oct(report.stat().st_mode & 0o777) == "0o600"
    page = report.read_text()
    assert document["verdict"].replace("'", "&#x27;") in page
    assert "<script" not in page and " src=" not in page and " href=" not in page


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (CI installs it: apt-get install chromium)")
def test_the_report_renders_in_headless_chromium_with_no_error_and_no_request(
    evaluated: tuple[Path, Any], tmp_path: Path
) -> None:
    folder, _ = evaluated
    report = folder / "out" / artifacts.REPORT.filename
    visit = open_page(report)
    assert visit.errors == []
    assert visit.requests == [report.resolve().as_uri()], "the page asked for something outside itself"
    assert visit.height > 1500 and visit.screenshot.startswith(b"\x89PNG")
    keep = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "report.png")
    keep.write_bytes(visit.screenshot)


def test_an_unchanged_evaluation_is_up_to_date_and_a_kill_or_ctrl_c_leaves_the_previous_report_whole(
    evaluated: tuple[Path, Any], tiny_model: Path
) -> None:
    folder, _ = evaluated
    out = folder / "out"
    again = run_doit(project(folder, tiny_model), "evaluate")
    assert again["evaluate"] == "up-to-date" and again["train"] == "up-to-date", again.stderr
    before = {name: (out / name).read_bytes() for name in (artifacts.EVALUATION.filename, artifacts.REPORT.filename)}
    # A changed evaluation setting reruns evaluate alone; it is killed, then interrupted.
    config = project(folder, tiny_model, QUICK.replace("samples = 3", "samples = 2") + "seed = 7\n")
    killed = run_doit(config, "evaluate", fault=f"{MEASURE}:5:sigkill")
    assert killed["exit"] == "-9"
    interrupted = run_doit(config, "evaluate", fault=f"{MEASURE}:3:sigint")
    assert interrupted["exit"] != "0"
    assert {name: (out / name).read_bytes() for name in before} == before
    finished = run_doit(config, "evaluate")
    assert finished["train"] == "up-to-date" and finished["evaluate"] == "success", finished.stderr
    assert len(evaluation(folder)["samples"]) == 2
    assert json.loads((out / "pipeline.lock.json").read_text())["stages"]["evaluate"]["params"]["evaluation.seed"] == 7
    assert not list(out.glob(".*.tmp-*")), "a killed run's temporary file was left behind"


def test_a_report_folder_that_cannot_be_written_is_one_line_before_any_measurement(
    evaluated: tuple[Path, Any], tiny_model: Path, tmp_path: Path
) -> None:
    folder, _ = evaluated
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the report folder should be")
    before = (folder / "out" / artifacts.EVALUATION.filename).read_bytes()
    result = run_doit(project(folder, tiny_model, QUICK + f'report_dir = "{blocker}/reports"\n'), "evaluate")
    assert result["evaluate"] == "fail"
    assert f"cannot write the report into {blocker}/reports" in result.stderr
    assert "set [evaluation] report_dir to a folder you can write" in result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / "out" / artifacts.EVALUATION.filename).read_bytes() == before


def test_a_report_folder_elsewhere_is_a_target_at_its_own_path(tmp_path: Path) -> None:
    from imessage_finetune.config import load_config
    from imessage_finetune.stages import evaluation as stage

    config = load_config(write_config(tmp_path, "demo", '[evaluation]\nreport_dir = "reports"\n'))
    written = [a.path(config.artifacts_dir) for a in stage.STAGE.outputs(stage.STAGE.view(config))]
    assert written == [config.artifacts_dir / artifacts.EVALUATION.filename, tmp_path / "reports" / "report.html"]


def test_a_history_too_short_to_hold_out_two_replies_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    """Twelve one-exchange conversations, 5% held out: one held-out reply, nothing to compare."""
    from chatdb_builder import ChatDbBuilder

    db = ChatDbBuilder(tmp_path / "chat.db")
    handle = db.handle("+15555550199")
    chat = db.chat("+15555550199", [handle])
    for day in range(12):
        db.message(chat, f"question number {day}?", handle=handle, at=1_700_000_000 + day * 86_400)
        db.message(chat, f"answer {day}", from_me=True, at=1_700_000_060 + day * 86_400)
    db.close()
    config = project(
        tmp_path, tiny_model, "[dataset]\nheldout_share = 0.05\n" + QUICK, source=str(tmp_path / "chat.db")
    )
    result = run_doit(config, "evaluate")
    assert result["train"] == "success" and result["evaluate"] == "fail"
    assert "cannot evaluate: the held-out set has 1 reply of the learned voice to another message" in result.stderr
    assert "raise [dataset] heldout_share or heldout_days" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / artifacts.EVALUATION.filename).exists()
    assert not (tmp_path / "out" / artifacts.REPORT.filename).exists()


KEY = {"OPENAI_API_KEY": API_KEY, "IMESSAGE_FINETUNE_STRICT_API": "1"}


def openai_project(folder: Path, fake: FakeOpenAI, confirm: bool) -> Path:
    return write_config(
        folder,
        "demo",
        f'[finetune]\nbackend = "openai"\nbase_url = "{fake.base_url}"\nconfirm = {str(confirm).lower()}\n'
        f"poll_interval = 0.01\nrequest_timeout = 2.0\n{QUICK}",
    )


def test_openai_evaluates_style_through_the_chat_api_after_showing_the_cost(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    config = openai_project(tmp_path, fake_openai, confirm=False)
    assert run_doit(config, "train", env=KEY)["exit"] == "0"
    chats = len(fake_openai.requests_to("POST", "/v1/chat/completions"))
    result = run_doit(config, "evaluate", env=KEY)
    assert result["evaluate"] == "success", result.stderr
    assert (
        "evaluate: about to send the contexts of 6 held-out replies" in result.stderr
        and "estimated cost $" in result.stderr
    )
    document = evaluation(tmp_path)
    assert "heldout_loss" not in document
    assert document["service_metrics"]["last_train_loss"] is not None
    assert document["training"]["steps"], "the job's reported losses are the training plot"
    assert document["model_id"].startswith("ft:") and document["base_model_id"] == "gpt-4.1-mini-2025-04-14"
    assert all(s["tuned"].startswith("You said:") for s in document["samples"])
    assert len(fake_openai.requests_to("POST", "/v1/chat/completions")) - chats == 2 * 6
    assert "the tuned model's replies are" in document["verdict"]


def test_openai_sends_nothing_for_evaluation_without_a_confirmation(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = openai_project(tmp_path, fake_openai, confirm=True)
    assert run_doit(config, "train", env={**KEY, "IMESSAGE_FINETUNE_YES": "1"})["exit"] == "0"
    chats = len(fake_openai.requests_to("POST", "/v1/chat/completions"))
    result = run_doit(config, "evaluate", env=KEY)
    assert result["evaluate"] == "fail"
    assert (
        "needs a confirmation, and there is no terminal to ask on" in result.stderr
        and "nothing was sent" in result.stderr
    )
    assert len(fake_openai.requests_to("POST", "/v1/chat/completions")) == chats


def test_the_partner_comparison_trains_the_other_setting_on_the_same_data(
    evaluated: tuple[Path, Any], tiny_model: Path
) -> None:
    """Last in this module: it changes the shared project's evaluation."""
    folder, _ = evaluated
    out = folder / "out"
    result = run_doit(project(folder, tiny_model, QUICK + "compare_partner = true\n"), "evaluate")
    assert result["evaluate"] == "success" and result["train"] == "up-to-date", result.stderr
    assert "evaluate: training a second model with partner names, for the comparison" in result.stderr
    partner = evaluation(folder)["partner"]
    assert partner["without"]["model_id"] == evaluation(folder)["model_id"] != partner["with"]["model_id"]
    assert all(v["heldout_loss"] is not None and v["style"] >= 0 for v in partner.values())
    variant = out / artifacts.PARTNER_VARIANT.filename
    without = (out / artifacts.HELDOUT.filename).read_text()
    with_names = (variant / artifacts.HELDOUT.filename).read_text()
    assert "You are texting with" in with_names and "You are texting with" not in without
    assert with_names.count("\n") == without.count("\n"), "not the same held-out conversations"
    assert json.loads((variant / artifacts.MODEL.filename).read_text())["partner_in_prompt"] is True
    assert "Does naming who you write to help?" in (out / artifacts.REPORT.filename).read_text()
