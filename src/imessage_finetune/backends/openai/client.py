"""Fine-tuning through OpenAI or any OpenAI-compatible endpoint with the `openai` package 3.x.

Why it is not a thin wrapper: the SDK retries POSTs on timeouts and dropped connections and
sends no idempotency key, so one `jobs.create()` can start two paid jobs (measured, see
../shared/notes/openai-finetuning.md §3). Uploads and job creation therefore go out with SDK
retries off; after an ambiguous failure (timeout, lost connection, 408/409/429/5xx) this module
waits, lists what the service has, adopts what the lost request made, and only then retries,
a bounded number of times. Reads keep the SDK's own retries, except the reads of a job being
followed (`retry=False`): `follow_job` paces those itself, for as long as the job may run.

SDK errors become the `ServiceError` family of `imessage_finetune.errors`, carrying the service's
status, code, param, message and request id; the API key is masked should a service echo it,
and the SDK exception (whose request holds the key) is not chained.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import openai
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from imessage_finetune.backends.interface import Completion, GenerationSettings, Usage
from imessage_finetune.backends.openai.service import Hyperparameter, Job, JobEvent, RemoteFile
from imessage_finetune.errors import (
    ServiceAuthError,
    ServiceError,
    ServiceRefused,
    ServiceUnavailable,
)

PURPOSE: Literal["fine-tune"] = "fine-tune"

# The SDK's own schedule (0.5 s doubling, at most 8 s; server delays honoured up to 120 s),
# without its random jitter: one client per run has nobody to de-synchronise from.
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 8.0
_MAX_SERVER_DELAY = 120.0
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_PAGE = 100

_T = TypeVar("_T")


class OpenAIClient:
    """A `FineTuneService` for OpenAI's files, fine-tuning and chat APIs.

    `base_url` None or "" means `OPENAI_BASE_URL` or OpenAI itself. `timeout` bounds each request
    attempt, `upload_timeout` each upload attempt; `max_retries` is the number of retries
    after a transient failure, for reads (by the SDK) and for uploads and job creation (by
    this class, reconciling first). `strict` validates every reply against the SDK's models.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        upload_timeout: float = 600.0,
        max_retries: int = 2,
        strict: bool = False,
    ) -> None:
        if not api_key:
            raise ServiceAuthError("no API key: set OPENAI_API_KEY or configure a key file")
        self._key = api_key
        self._timeout = timeout
        self._upload_timeout = upload_timeout
        self._max_retries = max_retries
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url or None,
            timeout=timeout,
            max_retries=max_retries,
            _strict_response_validation=strict,
        )
        self._once = self._client.with_options(max_retries=0)
        self.base_url = str(self._client.base_url)

    def __repr__(self) -> str:
        return f"OpenAIClient(base_url={self.base_url!r})"

    # -- files -------------------------------------------------------------------------------

    def find_or_upload(self, path: Path, filename: str) -> tuple[RemoteFile, bool]:
        """Return the `purpose=fine-tune` file named `filename` with `path`'s size, or upload it.

        Files carry no metadata, so name and size identify the content: name files after their
        content hash. The boolean is True when this call uploaded the file.
        """
        size = path.stat().st_size
        action = f"upload of {filename}"
        found = self._call(action, lambda: self._find_file(filename, size))
        if found is not None:
            return found, False

        def upload() -> RemoteFile:
            with path.open("rb") as handle:
                uploaded = self._once.files.create(
                    file=(filename, handle), purpose=PURPOSE, timeout=self._upload_timeout
                )
            return _remote_file(uploaded)

        return self._create_reconciled(action, upload, lambda: self._find_file(filename, size)), True

    def _find_file(self, filename: str, size: int) -> RemoteFile | None:
        matches = [
            f
            for f in self._client.files.list(purpose=PURPOSE)
            # `status` is deprecated but still says when the service rejected a file.
            if f.filename == filename and f.bytes == size and f.status != "error"
        ]
        # The oldest match, so that every run settles on the same file.
        return _remote_file(min(matches, key=lambda f: (f.created_at, f.id))) if matches else None

    # -- jobs --------------------------------------------------------------------------------

    def find_job(self, metadata: Mapping[str, str]) -> Job | None:
        """The newest job tagged with all of `metadata` that did not fail or get cancelled.

        Failed and cancelled jobs are not adopted: running the stage again means trying again.
        """
        jobs = self._call("listing jobs", lambda: self._matching_jobs(metadata))
        alive = [j for j in jobs if j.status not in ("failed", "cancelled")]
        return _job(alive[0]) if alive else None

    def list_jobs(self, metadata: Mapping[str, str]) -> list[Job]:
        """Every job tagged with all of `metadata` (all jobs if empty), newest first."""
        return [_job(j) for j in self._call("listing jobs", lambda: self._matching_jobs(metadata))]

    def _matching_jobs(self, metadata: Mapping[str, str]) -> list[FineTuningJob]:
        wanted = dict(metadata)
        listed = self._client.fine_tuning.jobs.list(limit=_PAGE, metadata=wanted or openai.omit)
        # Filtered here too: an OpenAI-compatible endpoint may ignore the metadata filter.
        jobs = [j for j in listed if wanted.items() <= (j.metadata or {}).items()]
        return sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)

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
        """Start one supervised job tagged with `metadata`; never two, even if a reply is lost.

        `metadata` must identify this dataset and these parameters (at most 16 pairs). A job
        that appears with these tags after a failed attempt is adopted instead of retrying.
        """
        if not metadata:
            raise ValueError("create_job needs metadata: it is how a lost create is found again")
        action = f"creating a fine-tuning job on {model}"
        before = {j.id for j in self._call(action, lambda: self._matching_jobs(metadata))}

        def create() -> Job:
            method: Any = {"type": "supervised", "supervised": {"hyperparameters": dict(hyperparameters)}}
            return _job(
                self._once.fine_tuning.jobs.create(
                    model=model,
                    training_file=training_file,
                    validation_file=_given(validation_file),
                    suffix=_given(suffix),
                    seed=_given(seed),
                    method=method if hyperparameters else openai.omit,
                    metadata=dict(metadata),
                )
            )

        def made_by_a_lost_attempt() -> Job | None:
            new = [j for j in self._matching_jobs(metadata) if j.id not in before]
            return _job(new[-1]) if new else None  # the oldest, should there be several

        return self._create_reconciled(action, create, made_by_a_lost_attempt, creating_job=True)

    def get_job(self, job_id: str, *, retry: bool = True) -> Job:
        """The job's current state; `retry=False` makes one attempt (the caller paces retries)."""
        client = self._client if retry else self._once
        return self._call(f"reading job {job_id}", lambda: _job(client.fine_tuning.jobs.retrieve(job_id)), retry=retry)

    def events(self, job_id: str, after: str | None, *, retry: bool = True) -> list[JobEvent]:
        """The job's events newer than the event `after` (all if None), oldest first.

        The service lists events newest first, so reading stops at `after`. `retry=False`
        makes one attempt per page (the caller paces retries).
        """
        client = self._client if retry else self._once

        def read() -> list[JobEvent]:
            newer: list[JobEvent] = []
            for event in client.fine_tuning.jobs.list_events(job_id, limit=_PAGE):
                if event.id == after:
                    break
                newer.append(_event(event))
            return newer[::-1]

        return self._call(f"reading the events of job {job_id}", read, retry=retry)

    def cancel(self, job_id: str) -> Job:
        """Ask the service to cancel the job; returns its state after the request."""
        return self._call(f"cancelling job {job_id}", lambda: _job(self._client.fine_tuning.jobs.cancel(job_id)))

    # -- chat --------------------------------------------------------------------------------

    def chat_stream(self, model: str, messages: Sequence[Mapping[str, str]]) -> Iterator[str]:
        """Stream a chat completion from `model`, yielding the text pieces as they arrive."""
        return self.chat(model, messages, None)

    def chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], settings: GenerationSettings | None
    ) -> Completion:
        """A streamed chat completion from `model` with `settings` (None: the service's own
        defaults); `usage` is the service's count, once the stream has ended."""
        return _RemoteCompletion(self, model, messages, settings)

    # -- retries and errors ------------------------------------------------------------------

    def _create_reconciled(
        self,
        action: str,
        create: Callable[[], _T],
        find: Callable[[], _T | None],
        *,
        creating_job: bool = False,
    ) -> _T:
        """Call `create` once; after an ambiguous failure wait, adopt what `find` sees, retry."""
        attempt = 0
        while True:
            try:
                return create()
            # A reply that is not JSON leaves it unknown whether the work was done: reconcile.
            except (openai.OpenAIError, ValueError) as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc, action, creating_job=creating_job) from None
                # Wait before listing too: a slow server may still be completing the lost request.
                time.sleep(delay)
                found = self._call(action, find)
                if found is not None:
                    return found
                if attempt == self._max_retries:
                    raise self._error(exc, action, creating_job=creating_job) from None
                attempt += 1

    def _retry_delay(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before reconciling, or None when the failure is final."""
        if isinstance(exc, openai.APIStatusError):
            status, headers = exc.status_code, exc.response.headers
            if status not in _RETRYABLE_STATUS and status < 500:
                return None
            if exc.code == "insufficient_quota" or headers.get("x-should-retry") == "false":
                return None
            asked = _server_delay(headers)
            if asked is not None and asked > _MAX_SERVER_DELAY:
                return None  # as the SDK: a service asking for minutes is not retried now
            if asked is not None and asked > 0:
                return asked
        elif not isinstance(exc, openai.APIConnectionError | ValueError):
            return None
        return min(_FIRST_BACKOFF * 2**attempt, _MAX_BACKOFF)

    def _call(self, action: str, call: Callable[[], _T], *, retry: bool = True) -> _T:
        with self._translated(action, attempts=None if retry else 1):
            return call()

    @contextmanager
    def _translated(self, action: str, *, attempts: int | None = None) -> Iterator[None]:
        try:
            yield
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: a reply that is not JSON
            raise self._error(exc, action, attempts=attempts) from None

    def _error(
        self, exc: Exception, action: str, *, creating_job: bool = False, attempts: int | None = None
    ) -> ServiceError:
        """The typed error for an SDK exception, with the key masked.

        `attempts` is how many were made (default: all the retries allowed); after a single
        one the message describes the failure without advising to try again later.
        """
        once = attempts == 1
        tries = f"{attempts or self._max_retries + 1} attempts"
        later = "" if once else f" after {tries}; try again later"
        if isinstance(exc, openai.APIStatusError):
            status, code = exc.status_code, exc.code
            detail = self._redact(_status_detail(exc))
            if status == 401:
                return ServiceAuthError(
                    f"{action}: the service rejected the API key ({detail}); check OPENAI_API_KEY or the key file",
                    status=status,
                    code=code,
                )
            if creating_job and _is_refusal(exc):
                return ServiceRefused(detail, status=status, code=code)
            if status == 403:
                return ServiceAuthError(
                    f"{action}: permission denied ({detail}); the key's project or role lacks access",
                    status=status,
                    code=code,
                )
            if code == "insufficient_quota":
                return ServiceError(f"{action}: quota exhausted ({detail}); check billing", status=status, code=code)
            if status in _RETRYABLE_STATUS or status >= 500:
                return ServiceUnavailable(
                    f"{action}: the service {'failed' if once else 'kept failing'} ({detail}){later}",
                    status=status,
                    code=code,
                    retry_after=_server_delay(exc.response.headers),
                )
            return ServiceError(f"{action} failed ({detail})", status=status, code=code)
        if isinstance(exc, openai.APITimeoutError):
            return ServiceUnavailable(
                f"{action}: no reply from {self.base_url} within {self._timeout:g} s"
                + ("" if once else f" in {tries}; try again later")
            )
        if isinstance(exc, openai.APIConnectionError):
            return ServiceUnavailable(
                f"{action}: cannot reach {self.base_url}" + ("" if once else f" ({tries}); try again later")
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return ServiceError(
                f"{action}: the reply from {self.base_url} does not match the openai package's "
                f"schema (HTTP {exc.status_code}); is it an OpenAI-compatible endpoint?",
                status=exc.status_code,
            )
        if isinstance(exc, ValueError):
            return ServiceUnavailable(
                f"{action}: the reply from {self.base_url} is not valid JSON"
                + ("" if once else f" ({tries})")
                + "; is [finetune] base_url an OpenAI-compatible endpoint?"
            )
        return ServiceError(f"{action}: {self._redact(str(exc))}")

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[API key]")


class _RemoteCompletion(Completion):
    """A streamed chat completion, read piece by piece; closing it closes the connection."""

    def __init__(
        self,
        client: OpenAIClient,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        settings: GenerationSettings | None,
    ) -> None:
        self.usage = Usage()
        self._client, self._model, self._messages, self._settings = client, model, messages, settings
        self._pieces: Generator[str] | None = None
        self._stream: Any = None

    def __next__(self) -> str:
        if self._pieces is None:
            self._pieces = self._read()
        return next(self._pieces)

    def close(self) -> None:
        """Stop reading: the connection is closed and the service stops generating."""
        if self._stream is not None:
            self._stream.close()
        if self._pieces is not None:
            self._pieces.close()

    def _read(self) -> Generator[str]:
        settings, payload = self._settings, [dict(m) for m in self._messages]
        options: dict[str, Any] = {}
        if settings is not None:
            options = {
                "max_completion_tokens": settings.max_tokens,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "seed": _given(settings.seed),
                "stop": list(settings.stop) or openai.omit,
            }
        with self._client._translated(f"chatting with {self._model}"):
            self._stream = self._client._client.chat.completions.create(
                model=self._model,
                messages=cast(Any, payload),
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
            with self._stream as stream:
                for chunk in stream:
                    if chunk.usage is not None:
                        self.usage.prompt_tokens = chunk.usage.prompt_tokens
                        self.usage.completion_tokens = chunk.usage.completion_tokens
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    if choice.finish_reason is not None:
                        self.usage.finish_reason = "length" if choice.finish_reason == "length" else "stop"
                    if choice.delta.content:
                        yield choice.delta.content


def _given(value: _T | None) -> _T | openai.Omit:
    return openai.omit if value is None else value


def _server_delay(headers: Mapping[str, str]) -> float | None:
    """The delay asked by `retry-after-ms` or `retry-after` (seconds or an HTTP date), as the SDK reads them."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            delay = float(headers[name]) / divisor
        except KeyError:
            continue
        except ValueError:
            if name != "retry-after":
                continue
            try:  # Retry-After may be an HTTP date (RFC 9110 §10.2.3)
                when = email.utils.parsedate_to_datetime(headers[name])
            except (TypeError, ValueError):
                continue
            if when.tzinfo is None:
                continue
            delay = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
        if math.isfinite(delay):
            return delay
    return None


def _status_detail(exc: openai.APIStatusError) -> str:
    """`HTTP 400, code …, param …: message (request …)`, all as the service sent them."""
    body = exc.body
    if isinstance(body, Mapping) and body.get("message") is not None:
        message = str(body["message"])
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    else:
        message = "no message"
    parts = [f"HTTP {exc.status_code}"]
    if exc.code:
        parts.append(f"code {exc.code}")
    if exc.param:
        parts.append(f"param {exc.param}")
    request = f" (request {exc.request_id})" if exc.request_id else ""
    return f"{', '.join(parts)}: {message}{request}"


def _is_refusal(exc: openai.APIStatusError) -> bool:
    """Whether a create was refused because the account may not fine-tune (not a bad request).

    OpenAI answers such organisations with 403 on `POST /fine_tuning/jobs`; a 403 about a
    model is the model's access, not the account's. A 400 counts when its message says the
    organisation or account cannot fine-tune.
    """
    if exc.status_code == 403:
        return exc.code != "model_not_found"
    if exc.status_code != 400 or not isinstance(exc.body, Mapping):
        return False
    message = str(exc.body.get("message") or "").lower()
    about_account = "organization" in message or "organisation" in message or "account" in message
    negative = any(word in message for word in ("not ", "no longer", "cannot", "unavailable", "disabled"))
    return "fine-tun" in message and about_account and negative


def _remote_file(file: FileObject) -> RemoteFile:
    return RemoteFile(id=file.id, filename=file.filename, bytes=file.bytes)


def _job(job: FineTuningJob) -> Job:
    return Job(
        id=job.id,
        status=job.status,
        model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        error_code=job.error.code if job.error else None,
        error_message=job.error.message if job.error else None,
        metadata=dict(job.metadata or {}),
    )


def _event(event: FineTuningJobEvent) -> JobEvent:
    data = event.data if isinstance(event.data, Mapping) else {}
    step, loss, total = data.get("step"), data.get("train_loss"), data.get("total_steps")
    return JobEvent(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        step=step if isinstance(step, int) else None,
        train_loss=float(loss) if isinstance(loss, int | float) else None,
        total_steps=total if isinstance(total, int) else None,
        # OpenAI's metric events also carry the validation loss when a validation file was given.
        valid_loss=float(data["valid_loss"]) if isinstance(data.get("valid_loss"), int | float) else None,
    )
