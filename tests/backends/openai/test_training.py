"""`doit train` against a real HTTP stand-in for OpenAI on 127.0.0.1: from train.jsonl to
model.json, exactly one upload and one job whatever fails, and nothing sent without a key."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from fake_openai import API_KEY, FakeOpenAI
from imessage_finetune import artifacts
from imessage_finetune.config import load_config
from imessage_finetune.pipeline.tasks import run_doit as doit_command
from pipeline_runner import run_doit, write_config

KEY = {"OPENAI_API_KEY": API_KEY, "IMESSAGE_FINETUNE_STRICT_API": "1"}


def project(tmp_path: Path, fake: FakeOpenAI, extra: str = "") -> Path:
    """The demo, with fine-tuning pointed at the stand-in and no confirmation prompt."""
    return write_config(
        tmp_path,
        "demo",
        f'[finetune]\nbackend = "openai"\nbase_url = "{fake.base_url}"\nconfirm = false\npoll_interval = 0.01\n'
        f"request_timeout = 2.0\n{extra}",
    )


def creations(fake: FakeOpenAI) -> tuple[int, int]:
    """How many files and jobs the service holds (training files only)."""
    files = [f for f in fake.state.files.values() if f.purpose == "fine-tune"]
    return len(files), len(fake.state.jobs)


def model_json(tmp_path: Path) -> dict:
    path = tmp_path / "out" / artifacts.MODEL.filename
    document = json.loads(path.read_text())
    jsonschema.validate(document, json.loads(artifacts.MODEL.schema_path.read_text()))
    return document


def test_train_goes_from_train_jsonl_to_model_json_and_a_rerun_creates_nothing(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """The whole chain to a schema-valid model.json; then no request that creates anything."""
    config = project(tmp_path, fake_openai)
    result = run_doit(config, "train", env=KEY)
    assert result["exit"] == "0", result.stderr
    model = model_json(tmp_path)
    job = fake_openai.state.jobs[model["job_id"]]
    assert model["model_id"] == job.fine_tuned_model and model["trained_tokens"] == job.trained_tokens
    assert job.metadata["pipeline"] == "imessage-finetune"
    assert creations(fake_openai) == (1, 1)
    assert "step 3, training loss" in result.stderr
    assert API_KEY not in result.stderr
    posts = len(fake_openai.requests_to("POST", "/v1/"))
    again = run_doit(config, "train", env=KEY)
    assert again["upload"] == "up-to-date" and again["train"] == "up-to-date"
    assert len(fake_openai.requests_to("POST", "/v1/")) == posts


def test_without_a_key_nothing_is_sent_and_the_dataset_still_builds(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """No OPENAI_API_KEY: the upload stops and says what to set; no request reaches the service."""
    config = project(tmp_path, fake_openai)
    result = run_doit(config, "train")
    assert result["exit"] != "0" and result["dataset"] == "success" and result["upload"] == "fail"
    assert "no API key: set OPENAI_API_KEY" in result.stderr
    assert fake_openai.state.requests == []


def test_cost_above_max_cost_is_refused_before_sending(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """The estimate is compared with max_cost before any request."""
    config = project(tmp_path, fake_openai, "max_cost = 0.01\n")
    result = run_doit(config, "train", env=KEY)
    assert result["upload"] == "fail" and "above [finetune] max_cost $0.01" in result.stderr
    assert fake_openai.state.requests == []


def test_confirmation_is_required_without_a_terminal(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """confirm = true and no terminal: stop, say how to confirm, send nothing."""
    config = write_config(tmp_path, "demo", f'[finetune]\nbackend = "openai"\nbase_url = "{fake_openai.base_url}"\n')
    result = run_doit(config, "train", env=KEY)
    assert result["upload"] == "fail" and "--yes" in result.stderr
    assert "about to send train.jsonl" in result.stderr
    assert not [r for r in fake_openai.state.requests if r.method == "POST"]


@pytest.mark.parametrize(
    ("method", "path", "action", "options"),
    [
        ("POST", "/v1/files", "error", {"status": 500}),
        ("POST", "/v1/fine_tuning/jobs", "error", {"status": 429, "retry_after_ms": 5}),
        ("POST", "/v1/fine_tuning/jobs", "slow_after", {"delay": 2.5}),
        ("POST", "/v1/fine_tuning/jobs", "drop_after", {}),
        ("POST", "/v1/files", "drop_after", {}),
        ("GET", "/v1/fine_tuning/jobs/", "error", {"status": 503, "times": 2}),
    ],
    ids=["upload-500", "create-429", "create-slower-than-timeout", "create-dropped", "upload-dropped", "poll-503"],
)
def test_network_faults_end_with_one_file_and_one_job(
    tmp_path: Path, fake_openai: FakeOpenAI, method: str, path: str, action: str, options: dict
) -> None:
    """Each fault is retried or reconciled: model.json, and exactly one upload and one job."""
    fake_openai.add_fault(method, path, action, **options)
    config = project(tmp_path, fake_openai)
    result = run_doit(config, "train", env=KEY)
    if result["exit"] != "0":  # a fault the client had to give up on: the rerun finishes
        result = run_doit(config, "train", env=KEY)
    assert result["exit"] == "0", result.stderr
    model_json(tmp_path)
    assert creations(fake_openai) == (1, 1)


@pytest.mark.parametrize(
    ("point", "kind"),
    [
        ("imessage_finetune.backends.openai.upload:atomic_write:1", "sigkill"),  # uploaded, receipt not written
        ("imessage_finetune.backends.openai.jobs:record_job:1", "sigkill"),  # job created, id not recorded
        ("imessage_finetune.backends.openai.service:JobEvent:2", "sigkill"),  # while following the job
        ("imessage_finetune.backends.openai.service:JobEvent:2", "sigint"),  # Ctrl-C while following
    ],
    ids=["after-upload", "after-create", "while-polling", "ctrl-c-while-polling"],
)
def test_a_run_killed_at_any_point_is_finished_by_the_next_on_the_same_job(
    tmp_path: Path, fake_openai: FakeOpenAI, point: str, kind: str
) -> None:
    """Kill or Ctrl-C mid-way: the job is never cancelled, and the rerun re-attaches to it."""
    config = project(tmp_path, fake_openai)
    fake_openai.total_steps = 6
    first = run_doit(config, "train", env=KEY, fault=f"{point}:{kind}")
    assert first["exit"] != "0"
    if kind == "sigint":
        assert "keeps running at the service" in first.stderr and "doit train" in first.stderr
    assert all(job.status != "cancelled" for job in fake_openai.state.jobs.values())
    second = run_doit(config, "train", env=KEY)
    assert second["exit"] == "0", second.stderr
    assert creations(fake_openai) == (1, 1)
    assert model_json(tmp_path)["job_id"] == next(iter(fake_openai.state.jobs))


def test_an_account_that_may_no_longer_fine_tune_is_told_so(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """A refusal names the shutdown and the other ways to train; no model.json."""
    config = project(tmp_path, fake_openai)
    fake_openai.refuse_fine_tuning()
    result = run_doit(config, "train", env=KEY)
    assert result["train"] == "fail"
    assert "2027-01-06" in result.stderr and "base_url" in result.stderr
    assert not (tmp_path / "out" / artifacts.MODEL.filename).exists()


def test_a_failed_job_reports_the_service_error_verbatim(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service fails the job: its error code and message, word for word; no model.json."""
    import fake_openai as server

    monkeypatch.setattr(server, "MIN_EXAMPLES", 1000)
    config = project(tmp_path, fake_openai)
    result = run_doit(config, "train", env=KEY)
    assert result["train"] == "fail"
    assert "invalid_n_examples" in result.stderr
    assert "but must have at least 1000 examples" in result.stderr
    assert not (tmp_path / "out" / artifacts.MODEL.filename).exists()


def test_doit_clean_keeps_the_receipt_and_the_model(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """Remote work is never forgotten by `doit clean`."""
    config = project(tmp_path, fake_openai)
    assert run_doit(config, "train", env=KEY)["exit"] == "0"
    assert doit_command(load_config(config), ["clean"]) == 0
    assert (tmp_path / "out" / artifacts.UPLOAD.filename).exists()
    assert (tmp_path / "out" / artifacts.MODEL.filename).exists()
    assert not (tmp_path / "out" / artifacts.TRAIN.filename).exists()


def test_an_outage_while_following_is_reported_and_outlived(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run train` through a bad minute of the service: the job read answers 500, 500, then
    429 (Retry-After 1), its events once 503; each is said on stderr and tried again, and the
    run ends with the model id, one uploaded file and one job (virtual time: no real waits)."""
    from click.testing import CliRunner

    from fake_openai import VirtualTime
    from imessage_finetune.backends.openai import service as base
    from imessage_finetune.cli import cli

    clock = VirtualTime()
    monkeypatch.setattr(base, "time", clock)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("IMESSAGE_FINETUNE_STRICT_API", "1")
    config = project(tmp_path, fake_openai)
    config.write_text(config.read_text().replace("poll_interval = 0.01", "poll_interval = 10"))
    job_path = "/v1/fine_tuning/jobs/ftjob-fake000001"  # the stand-in's ids count up from 1
    fake_openai.add_fault("GET", job_path, "error", status=500, times=2)
    fake_openai.add_fault("GET", job_path, "error", status=429, headers={"retry-after": "1"})
    fake_openai.add_fault("GET", f"{job_path}/events", "error", status=503)

    result = CliRunner().invoke(cli, ["--config", str(config), "run", "train", "--yes"])

    assert result.exit_code == 0, result.output
    model = model_json(tmp_path)
    assert model["model_id"] == fake_openai.state.jobs["ftjob-fake000001"].fine_tuned_model
    assert creations(fake_openai) == (1, 1)
    said = [line for line in result.stderr.splitlines() if "trying again in" in line]
    assert len(said) == 4, result.stderr
    for line, (status, delay) in zip(said, [(500, "10 s"), (500, "20 s"), (429, "1 s"), (503, "10 s")]):
        assert f"HTTP {status}" in line and f"trying again in {delay}" in line and "the job runs on" in line
    assert said[3].startswith("train: reading the events of job ftjob-fake000001")
    assert clock.sleeps[:4] == [10, 20, 1, 10]
    assert f"fine-tuned model {model['model_id']}" in result.stderr
