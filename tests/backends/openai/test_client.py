"""OpenAIClient against the stand-in server: never two uploads or two jobs, typed errors, no key leaks.

Every client validates replies strictly against the openai package's models, so the stand-in
cannot drift from what the SDK expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from fake_openai import API_KEY, FakeOpenAI, VirtualTime
from imessage_finetune.backends.openai.client import OpenAIClient
from imessage_finetune.backends.openai.service import Job, JobEvent, ReadFailure, follow_job
from imessage_finetune.errors import (
    ServiceAuthError,
    ServiceError,
    JobFailed,
    ServiceRefused,
    JobStillRunning,
    ServiceUnavailable,
)

MODEL = "gpt-4o-mini-2024-07-18"
METADATA = {"pipeline": "imessage-finetune", "dataset_sha": "0123456789ab"}
JOBS = "/v1/fine_tuning/jobs"


def _train_file(folder: Path, examples: int = 12, name: str = "train.jsonl") -> Path:
    lines = [
        json.dumps({"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hey"}]})
        for i in range(examples)
    ]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _backend(fake: FakeOpenAI, *, key: str = API_KEY, timeout: float = 5.0) -> OpenAIClient:
    return OpenAIClient(key, fake.base_url, timeout=timeout, upload_timeout=timeout, strict=True)


def _create(backend: OpenAIClient, file_id: str, metadata: dict[str, str] = METADATA) -> Job:
    return backend.create_job(
        training_file=file_id,
        validation_file=None,
        model=MODEL,
        suffix="me",
        hyperparameters={"n_epochs": 2},
        seed=7,
        metadata=metadata,
    )


def _uploaded(fake: FakeOpenAI, tmp_path: Path, examples: int = 12) -> tuple[OpenAIClient, str]:
    backend = _backend(fake)
    remote, _ = backend.find_or_upload(_train_file(tmp_path, examples), "train-0123456789ab.jsonl")
    return backend, remote.id


def test_happy_path_uploads_trains_and_reports_model_and_tokens(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Upload, create with the given parameters, follow statuses and metric events to the model id."""
    backend = _backend(fake_openai)
    remote, uploaded = backend.find_or_upload(_train_file(tmp_path), "train-0123456789ab.jsonl")
    assert uploaded and remote.filename == "train-0123456789ab.jsonl"
    assert remote.bytes == (tmp_path / "train.jsonl").stat().st_size
    assert backend.find_job(METADATA) is None

    job = _create(backend, remote.id)
    statuses: list[str] = []
    events: list[JobEvent] = []
    done = follow_job(
        backend, job.id, deadline=30, poll_interval=0, on_status=lambda j: statuses.append(j.status), on_event=events.append
    )

    served = fake_openai.state.jobs[job.id]
    assert (served.model, served.suffix, served.seed, served.metadata) == (MODEL, "me", 7, METADATA)
    assert served.hyperparameters["n_epochs"] == 2
    assert statuses == ["queued", "running", "succeeded"]
    assert [(e.step, e.train_loss) for e in events if e.step is not None] == [(1, 1.0), (2, 0.6667), (3, 0.5)]
    assert events[0].message == f"Created fine-tuning job: {job.id}"
    assert done.fine_tuned_model == f"ft:{MODEL}:imessage-finetune:me:{job.id.removeprefix('ftjob-')}"
    assert done.trained_tokens == served.trained_tokens and done.trained_tokens > 0
    assert done.metadata == METADATA


def test_an_earlier_upload_of_the_same_content_is_reused(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Same name and size: the earlier file is returned and nothing is uploaded; other bytes upload."""
    backend = _backend(fake_openai)
    first, uploaded_first = backend.find_or_upload(_train_file(tmp_path), "train-aaaa.jsonl")
    again, uploaded_again = _backend(fake_openai).find_or_upload(_train_file(tmp_path), "train-aaaa.jsonl")
    assert (uploaded_first, uploaded_again) == (True, False)
    assert again == first
    assert len(fake_openai.requests_to("POST", "/v1/files")) == 1

    other, uploaded_other = backend.find_or_upload(_train_file(tmp_path, 20), "train-aaaa.jsonl")
    assert uploaded_other and other.id != first.id


def test_an_upload_whose_reply_was_lost_is_adopted_not_repeated(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The connection drops after the server stored the file: the retry finds it, one upload."""
    fake_openai.add_fault("POST", "/v1/files", "drop_after")
    remote, uploaded = _backend(fake_openai).find_or_upload(_train_file(tmp_path), "train-bbbb.jsonl")
    assert uploaded
    assert [f.id for f in fake_openai.state.files.values()] == [remote.id]
    assert len(fake_openai.requests_to("POST", "/v1/files")) == 1


def test_429_with_retry_after_ms_is_retried_then_succeeds(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Reads are retried by the SDK on 429, the create by the backend: both succeed, one job."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.add_fault("POST", JOBS, "error", status=429, retry_after_ms=20)
    job = _create(backend, file_id)
    assert list(fake_openai.state.jobs) == [job.id]
    assert [r.status for r in fake_openai.requests_to("POST", JOBS)] == [429, 200]

    fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "error", status=429, retry_after_ms=20, times=2)
    assert backend.get_job(job.id).id == job.id
    reads = fake_openai.requests_to("GET", f"{JOBS}/{job.id}")
    assert [(r.status, r.retry_count) for r in reads] == [(429, 0), (429, 1), (200, 2)]


def test_a_500_storm_ends_in_a_typed_error_after_bounded_retries(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Three attempts (max_retries=2) on reads and on the create, then ServiceUnavailable; no job."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.add_fault("POST", JOBS, "error", status=500, retry_after_ms=10, times=100)
    with pytest.raises(ServiceUnavailable, match="HTTP 500.*Sorry about that.*request req-") as caught:
        _create(backend, file_id)
    assert caught.value.status == 500
    assert len(fake_openai.requests_to("POST", JOBS)) == 3
    assert fake_openai.state.jobs == {}

    fake_openai.add_fault("GET", "/v1/files", "error", status=503, retry_after_ms=10, times=100)
    with pytest.raises(ServiceUnavailable, match="after 3 attempts"):
        backend.find_or_upload(_train_file(tmp_path), "train-cccc.jsonl")
    assert len(fake_openai.requests_to("GET", "/v1/files")) == 1 + 3


@pytest.mark.parametrize("action", ["slow_before", "slow_after"])
def test_a_create_slower_than_the_client_timeout_makes_exactly_one_job(
    fake_openai: FakeOpenAI, tmp_path: Path, action: str
) -> None:
    """The server makes the job after (or while) the client gives up: listing adopts it, no retry."""
    _, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.add_fault("POST", JOBS, action, delay=0.45)
    job = _create(_backend(fake_openai, timeout=0.3), file_id)
    assert list(fake_openai.state.jobs) == [job.id]
    assert len(fake_openai.requests_to("POST", JOBS)) == 1


def test_a_connection_dropped_after_the_create_makes_exactly_one_job(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The job exists but its reply is lost: the backend adopts it instead of creating another."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.add_fault("POST", JOBS, "drop_after")
    job = _create(backend, file_id)
    assert list(fake_openai.state.jobs) == [job.id]
    assert job.metadata == METADATA


def test_the_sdks_own_retry_would_pay_twice(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Why create_job reconciles: a plain SDK create after a dropped reply makes two jobs here."""
    _, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.add_fault("POST", JOBS, "drop_after")
    client = openai.OpenAI(api_key=API_KEY, base_url=fake_openai.base_url, _strict_response_validation=True)
    client.fine_tuning.jobs.create(model=MODEL, training_file=file_id, metadata=METADATA)
    assert len(fake_openai.state.jobs) == 2


def test_find_job_adopts_the_job_of_a_run_that_crashed_before_its_receipt(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """A job created by a run that died before writing its job id is found by its metadata."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    lost = _create(backend, file_id)  # the crash: this id never reached the receipt

    rerun = _backend(fake_openai)
    found = rerun.find_job(METADATA)
    assert found is not None and found.id == lost.id
    assert rerun.find_job({**METADATA, "dataset_sha": "another"}) is None
    assert len(fake_openai.requests_to("POST", JOBS)) == 1


def test_failed_and_cancelled_jobs_are_not_adopted(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Rerunning after a cancel means a new job; list_jobs still shows the cancelled one."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    job = _create(backend, file_id)
    assert backend.cancel(job.id).status == "cancelled"
    assert backend.find_job(METADATA) is None
    assert [(j.id, j.status) for j in backend.list_jobs(METADATA)] == [(job.id, "cancelled")]
    with pytest.raises(ServiceError, match="was cancelled"):
        follow_job(backend, job.id, deadline=5, poll_interval=0)


def test_a_failed_job_reports_the_services_code_and_message_verbatim(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Too few examples: JobFailed carries invalid_n_examples and OpenAI's message."""
    backend, file_id = _uploaded(fake_openai, tmp_path, examples=5)
    job = _create(backend, file_id)
    with pytest.raises(JobFailed) as caught:
        follow_job(backend, job.id, deadline=5, poll_interval=0)
    expected = "Training file has 5 example(s), but must have at least 10 examples"
    assert (caught.value.job_id, caught.value.code, caught.value.message) == (job.id, "invalid_n_examples", expected)
    assert f"invalid_n_examples: {expected}" in str(caught.value)


def test_follow_job_stops_at_the_deadline_and_leaves_the_job_running(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """A job that does not move raises JobStillRunning at the deadline and is not cancelled."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    job = _create(backend, file_id)
    fake_openai.auto_advance = False
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(JobStillRunning, match="still validating_files after 25 s"):
        follow_job(backend, job.id, deadline=25, poll_interval=10, sleep=sleep, clock=lambda: now[0])
    assert sleeps == [10, 10, 5]
    assert fake_openai.state.jobs[job.id].status == "validating_files"
    assert fake_openai.requests_to("POST", f"{JOBS}/{job.id}/cancel") == []


def test_following_a_job_outlives_500_429_and_503_replies(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Reading a job is idempotent: 500, 500, 429 (Retry-After 1) on the job and 503 on its
    events are each reported and tried again (a poll interval doubling, or the delay the
    service asked for), one attempt per request, and the job is followed to its model id."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    job = _create(backend, file_id)
    fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "error", status=500, times=2)
    fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "error", status=429, headers={"retry-after": "1"})
    fake_openai.add_fault("GET", f"{JOBS}/{job.id}/events", "error", status=503)
    time = VirtualTime()
    failures: list[ReadFailure] = []

    done = follow_job(
        backend, job.id, deadline=3600, poll_interval=10, on_retry=failures.append, sleep=time.sleep, clock=time.monotonic
    )

    assert done.status == "succeeded" and done.fine_tuned_model
    assert [(f.error.status, f.failures, f.delay) for f in failures] == [(500, 1, 10), (500, 2, 20), (429, 3, 1), (503, 1, 10)]
    assert "reading job" in str(failures[0].error) and "HTTP 500" in str(failures[0].error)
    assert "try again later" not in str(failures[0].error)  # the loop is trying again
    assert "reading the events of job" in str(failures[3].error) and "HTTP 503" in str(failures[3].error)
    assert time.sleeps[:4] == [10, 20, 1, 10] and set(time.sleeps[4:]) == {10}
    reads = fake_openai.requests_to("GET", f"{JOBS}/{job.id}")
    assert [r.status for r in reads if not r.path.endswith("/events")][:4] == [500, 500, 429, 200]
    assert [r.status for r in reads if r.path.endswith("/events")][:2] == [503, 200]
    assert {r.retry_count for r in reads} == {0}  # the SDK did not retry behind the loop's back
    assert len(fake_openai.state.jobs) == 1 and len(fake_openai.state.files) == 2  # training + results


def test_following_a_job_outlives_timeouts_and_dropped_connections(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """No reply within the timeout, a connection closed without a reply, retry-after-ms: all retried."""
    _, file_id = _uploaded(fake_openai, tmp_path)
    backend = _backend(fake_openai, timeout=0.3)
    job = _create(backend, file_id)
    fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "slow_before", delay=0.6)
    fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "drop_before")
    fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "error", status=429, retry_after_ms=2500)
    time = VirtualTime()
    failures: list[ReadFailure] = []
    done = follow_job(backend, job.id, deadline=3600, poll_interval=4, on_retry=failures.append, sleep=time.sleep, clock=time.monotonic)
    assert done.status == "succeeded"
    messages = [str(f.error) for f in failures]
    assert "no reply from" in messages[0] and "within 0.3 s" in messages[0]
    assert "cannot reach" in messages[1]
    assert [f.delay for f in failures] == [4, 8, 2.5]


def test_a_final_error_ends_following_at_once(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """404 (and 400/401/403) cannot pass by waiting: no retry, no sleep, the service's words."""
    backend = _backend(fake_openai)
    time = VirtualTime()
    failures: list[ReadFailure] = []
    with pytest.raises(ServiceError, match="HTTP 404, code fine_tune_not_found") as caught:
        follow_job(backend, "ftjob-nope", deadline=3600, poll_interval=10, on_retry=failures.append, sleep=time.sleep, clock=time.monotonic)
    assert caught.value.status == 404 and not isinstance(caught.value, ServiceUnavailable)
    assert failures == [] and time.sleeps == []
    assert len(fake_openai.requests_to("GET", f"{JOBS}/ftjob-nope")) == 1


def test_an_outage_that_outlasts_the_deadline_stops_following_and_says_why(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The backoff doubles up to the deadline, never past it; the error names the last failure
    and the job's last status, and the job is left running."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    job = _create(backend, file_id)
    time = VirtualTime()

    def outage_begins(seen: Job) -> None:  # after the first good read, the service goes down
        fake_openai.add_fault("GET", f"{JOBS}/{job.id}", "error", status=502, times=100)

    with pytest.raises(JobStillRunning) as caught:
        follow_job(backend, job.id, deadline=100, poll_interval=10, on_status=outage_begins, sleep=time.sleep, clock=time.monotonic)
    assert time.sleeps == [10, 10, 20, 40, 20]
    text = str(caught.value)
    assert "last seen queued" in text and "still failing after 100 s" in text and "HTTP 502" in text
    assert "keeps running on the service" in text
    assert fake_openai.state.jobs[job.id].status == "queued"
    assert fake_openai.requests_to("POST", f"{JOBS}/{job.id}/cancel") == []


def test_events_after_an_id_are_the_newer_ones_oldest_first(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Events are read across pages (newest first on the wire) and returned chronologically."""
    fake_openai.total_steps = 150  # more events than one page of 100
    backend, file_id = _uploaded(fake_openai, tmp_path)
    job = _create(backend, file_id)
    fake_openai.advance(job.id, steps=200)

    everything = backend.events(job.id, after=None)
    assert [e.id for e in everything] == [e["id"] for e in fake_openai.state.jobs[job.id].events]
    assert [e.step for e in everything if e.step is not None] == list(range(1, 151))
    assert backend.events(job.id, after=everything[-3].id) == everything[-2:]
    assert backend.events(job.id, after=everything[-1].id) == []


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "This organization does not have access to fine-tuning."),
        (400, "Your organization is no longer allowed to create fine-tuning jobs."),
    ],
)
def test_a_refused_create_says_the_account_may_no_longer_fine_tune(
    fake_openai: FakeOpenAI, tmp_path: Path, status: int, message: str
) -> None:
    """The refusal names the 2027-01-06 shutdown and the other backends, with the service's words."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.refuse_fine_tuning(status=status, message=message)
    with pytest.raises(ServiceRefused) as caught:
        _create(backend, file_id)
    text = str(caught.value)
    for needle in ("may no longer fine-tune", "2027-01-06", "[finetune] base_url", "local backend", message):
        assert needle in text
    assert len(fake_openai.requests_to("POST", JOBS)) == 1


def test_a_403_about_the_model_is_not_a_refusal(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """403 model_not_found is the project's model access: a permission error, not a shutdown notice."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    fake_openai.refuse_fine_tuning(
        status=403, message=f"Project `proj_x` does not have access to model `{MODEL}`", code="model_not_found"
    )
    with pytest.raises(ServiceAuthError, match="permission denied.*code model_not_found") as caught:
        _create(backend, file_id)
    assert not isinstance(caught.value, ServiceRefused)


def test_a_400_is_final_and_names_the_param(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """An unknown training file: one request, the service's message and param in the error."""
    backend, _ = _uploaded(fake_openai, tmp_path)
    with pytest.raises(ServiceError, match="HTTP 400, param training_file: invalid training_file: file-nope") as caught:
        _create(backend, "file-nope")
    assert caught.value.status == 400 and not isinstance(caught.value, ServiceUnavailable)
    assert len(fake_openai.requests_to("POST", JOBS)) == 1


def test_a_401_raises_an_auth_error_that_never_contains_the_key(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The stand-in echoes the wrong key in its 401; the error, its repr and the backend mask it."""
    secret = "sk-wrong-5up3r53cr3t-k3y-do-not-print"
    backend = _backend(fake_openai, key=secret)
    with pytest.raises(ServiceAuthError) as caught:
        backend.find_or_upload(_train_file(tmp_path), "train-dddd.jsonl")
    error = caught.value
    assert error.status == 401 and "Incorrect API key provided: [API key]" in str(error)
    for text in (str(error), repr(error), repr(error.args), repr(backend)):
        assert secret not in text
    assert error.__cause__ is None and error.__suppress_context__
    assert len(fake_openai.requests_to("GET", "/v1/files")) == 1  # 401 is not retried


def test_chat_stream_yields_the_streamed_pieces(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """The fine-tuned model's streamed reply arrives piece by piece; an unknown model is a 404."""
    backend, file_id = _uploaded(fake_openai, tmp_path)
    model = follow_job(backend, _create(backend, file_id).id, deadline=30, poll_interval=0).fine_tuned_model
    assert model is not None
    pieces = list(backend.chat_stream(model, [{"role": "user", "content": "hi there"}]))
    assert pieces == ["You ", "said: ", "hi ", "there"]

    with pytest.raises(ServiceError, match="HTTP 404, code model_not_found: The model `ft:nope` does not exist"):
        list(backend.chat_stream("ft:nope", [{"role": "user", "content": "hi"}]))


def test_an_empty_key_is_refused_before_any_request(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty key is an auth error at once; the SDK's fallback to OPENAI_API_KEY is not used."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with pytest.raises(ServiceAuthError, match="no API key"):
        OpenAIClient("", fake_openai.base_url, strict=True)
    assert fake_openai.state.requests == []


def test_a_reply_that_is_not_json_is_a_clear_error_and_a_create_is_reconciled(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """Bad JSON on a read: a typed error naming the endpoint, no traceback. On a create (the job
    may exist): listed and adopted, so still one job."""
    backend = OpenAIClient(API_KEY, fake_openai.base_url, timeout=1.0, strict=True)
    fake_openai.add_fault("GET", "/v1/fine_tuning/jobs", "bad_json", times=5)
    with pytest.raises(ServiceUnavailable, match="is not valid JSON"):
        backend.list_jobs({"pipeline": "x"})
    fake_openai.state.faults.clear()
    path = tmp_path / "train.jsonl"
    path.write_text("".join('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' for _ in range(10)))
    remote, _ = backend.find_or_upload(path, "train-x.jsonl")
    fake_openai.add_fault("POST", "/v1/fine_tuning/jobs", "bad_json")
    job = backend.create_job(training_file=remote.id, validation_file=None, model="gpt-4o-mini-2024-07-18",
                             suffix=None, hyperparameters={"n_epochs": 1}, seed=1, metadata={"pipeline": "x"})
    assert list(fake_openai.state.jobs) == [job.id]
