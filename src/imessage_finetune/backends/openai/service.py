"""What a fine-tuning service offers (`FineTuneService`), the values it returns, and the poll
loop over a job.

A service is OpenAI or any OpenAI-compatible endpoint (`client.OpenAIClient`). It never pays
twice: `find_or_upload` reuses an upload of the same content, `find_job` re-attaches to the
job for the same dataset and parameters (found by metadata), and `create_job` reconciles an
ambiguous create by listing before it retries. Statuses are open strings: anything outside
`TERMINAL_STATUSES` (for example `pausing`) means "keep polling".

Following a job outlives outages: reading a job is idempotent and a job runs for hours, so
`follow_job` retries a failed read (timeout, dropped connection, 408/409/429, 5xx) until the
deadline, reporting each one; only a final error (400/401/403/404...) or the deadline stops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from imessage_finetune.errors import JobFailed, JobStillRunning, ServiceError, ServiceUnavailable

TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# After a failed read of a followed job: wait a poll interval, doubling while the outage lasts,
# up to this many seconds (or the poll interval, if longer). A service that says how long to
# wait (Retry-After) is obeyed instead. Never past the deadline.
RETRY_MAX_DELAY = 120.0

_T = TypeVar("_T")

Hyperparameter = int | float | str


@dataclass(frozen=True)
class RemoteFile:
    """An uploaded training or validation file."""

    id: str
    filename: str
    bytes: int


@dataclass(frozen=True)
class Job:
    """A fine-tuning job as the service last reported it.

    `fine_tuned_model` and `trained_tokens` are set once it succeeded; `error_code` and
    `error_message` (the service's, verbatim) once it failed.
    """

    id: str
    status: str
    model: str
    fine_tuned_model: str | None
    trained_tokens: int | None
    error_code: str | None
    error_message: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once the status is terminal (succeeded, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log; metric events carry `step` and `train_loss`."""

    id: str
    created_at: int
    level: str
    message: str
    step: int | None = None
    train_loss: float | None = None
    total_steps: int | None = None
    valid_loss: float | None = None


class FineTuneService(Protocol):
    """The operations the pipeline and the CLI need from a fine-tuning service (not to be
    confused with `interface.Backend`, the place to fine-tune that uses one)."""

    def find_or_upload(self, path: Path, filename: str) -> tuple[RemoteFile, bool]:
        """Return the remote copy of `path` named `filename`, uploading only if there is none.

        The boolean is True when this call uploaded the file.
        """
        ...

    def find_job(self, metadata: Mapping[str, str]) -> Job | None:
        """The newest job tagged with all of `metadata` that did not fail or get cancelled."""
        ...

    def create_job(
        self,
        *,
        training_file: str,
        validation_file: str | None,
        model: str,
        suffix: str | None,
        hyperparameters: Mapping[str, Hyperparameter],
        seed: int | None,
        metadata: Mapping[str, str],
    ) -> Job:
        """Start one job tagged with `metadata`; never two, even when the reply is lost."""
        ...

    def get_job(self, job_id: str, *, retry: bool = True) -> Job:
        """The job's current state. `retry=False`: one attempt, the caller paces its retries."""
        ...

    def events(self, job_id: str, after: str | None, *, retry: bool = True) -> list[JobEvent]:
        """The job's events newer than the event `after` (all if None), oldest first.

        `retry=False`: one attempt, the caller paces its retries.
        """
        ...

    def cancel(self, job_id: str) -> Job:
        """Ask the service to cancel the job; returns its state after the request."""
        ...

    def list_jobs(self, metadata: Mapping[str, str]) -> list[Job]:
        """Every job tagged with all of `metadata`, newest first."""
        ...

    def chat_stream(self, model: str, messages: Sequence[Mapping[str, str]]) -> Iterator[str]:
        """Stream a chat completion from `model`, yielding the text pieces as they arrive."""
        ...


@dataclass(frozen=True)
class ReadFailure:
    """A read of the followed job that failed and will be tried again.

    `error` says what failed (the service's status and message), `failures` how many reads
    in a row have failed, `delay` the seconds until the next try and `remaining` the seconds
    left before the deadline.
    """

    error: ServiceUnavailable
    failures: int
    delay: float
    remaining: float


def follow_job(
    backend: FineTuneService,
    job_id: str,
    *,
    deadline: float,
    poll_interval: float = 15.0,
    on_status: Callable[[Job], None] | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    on_retry: Callable[[ReadFailure], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> Job:
    """Poll the job until it is terminal or `deadline` seconds have passed; return it on success.

    `on_status` gets the job whenever its status changes, `on_event` every new event in order,
    `on_retry` every failed read before it is tried again, so the caller can show progress
    (step, loss) and outages without this module printing anything. A read that fails for a
    reason that may pass (ServiceUnavailable: timeout, dropped connection, 408/409/429, 5xx)
    is tried again after the delay the service asked for (Retry-After), else after a poll
    interval doubling up to RETRY_MAX_DELAY, until the deadline; any other error ends it.
    Raises JobFailed (the service's code and message verbatim) when it failed,
    ServiceError when it was cancelled, JobStillRunning at the deadline. Leaving this
    loop never cancels the job. `sleep` and `clock` default to time.sleep and time.monotonic.
    """
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    start = clock()
    last_event: str | None = None
    last_status: str | None = None
    failures = 0

    def read(call: Callable[[], _T]) -> _T:
        nonlocal failures
        while True:
            try:
                value = call()
            except ServiceUnavailable as error:
                waited = clock() - start
                if waited >= deadline:
                    raise JobStillRunning(job_id, last_status, waited, last_error=str(error)) from None
                failures += 1
                if error.retry_after is not None and error.retry_after > 0:
                    delay = error.retry_after
                else:
                    delay = min(poll_interval * 2 ** (failures - 1), max(RETRY_MAX_DELAY, poll_interval))
                delay = min(delay, deadline - waited)
                if on_retry is not None:
                    on_retry(ReadFailure(error, failures, delay, deadline - waited))
                sleep(delay)
            else:
                failures = 0
                return value

    def new_events() -> list[JobEvent]:
        return backend.events(job_id, after=last_event, retry=False)

    while True:
        job = read(lambda: backend.get_job(job_id, retry=False))
        # Events after the job: the final events are then already there when it is terminal.
        for event in read(new_events):
            last_event = event.id
            if on_event is not None:
                on_event(event)
        if job.status != last_status:
            last_status = job.status
            if on_status is not None:
                on_status(job)
        if job.finished:
            break
        waited = clock() - start
        if waited >= deadline:
            raise JobStillRunning(job_id, job.status, waited)
        sleep(min(poll_interval, deadline - waited))
    if job.status == "failed":
        raise JobFailed(job.id, job.error_code, job.error_message)
    if job.status == "cancelled":
        raise ServiceError(f"fine-tuning job {job.id} was cancelled; run the stage again to start a new one")
    return job
