"""Typed errors, one family per domain. Each message says what went wrong and what to do.

Library code only raises them. The CLI turns them into a one-line error and exit 1 in one
place (`cli._Group.invoke`); in doit runs a failing stage reports its message through the
generic stage action (`pipeline.tasks`), and dodo.py does the same for configuration errors.

Two names a newcomer may confuse: `FinetuneError` is the base of every error here;
`ServiceError` is a fine-tuning service's refusal or outage (HTTP status and code attached).
"""

from __future__ import annotations


class FinetuneError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FinetuneError):
    """The configuration file is missing, malformed, or has an unknown key or wrong type."""


class ChatDbError(FinetuneError):
    """The Messages database cannot be read."""


class ChatDbNotFound(ChatDbError):
    """No file at the configured path."""


class ChatDbIsDirectory(ChatDbError):
    """The configured path is a folder."""


class NotSqlite(ChatDbError):
    """The file is not a SQLite database."""


class NotAChatDb(ChatDbError):
    """A SQLite database without the Messages tables."""


class ChatDbPermissionDenied(ChatDbError):
    """The operating system refused to open the file (on macOS: Full Disk Access)."""


class ChatDbBusy(ChatDbError):
    """The database stayed locked by another process for longer than the bounded wait."""


class BackupError(ChatDbError):
    """An iPhone or iPad backup folder cannot be read as the Messages source."""


class NotABackup(BackupError):
    """A folder that is not a Finder, iTunes or idevicebackup2 backup."""


class BackupWithoutMessages(BackupError):
    """A backup that holds no messages (the phone keeps them in iCloud only)."""


class BackupDamaged(BackupError):
    """A backup whose files are truncated, missing or undecipherable."""


class BackupPasswordError(BackupError):
    """An encrypted backup with no password given, or a wrong one (never shown)."""


class BackupUnsupported(BackupError):
    """A backup made by an iOS version whose format or encryption the readers do not know."""


class BackupPermissionDenied(BackupError):
    """The operating system refused to read the backup (on macOS: Full Disk Access)."""


class ContactsError(FinetuneError):
    """The Contacts (AddressBook) database cannot be read."""


class TypedStreamError(FinetuneError):
    """An `attributedBody` blob is not a typedstream this decoder understands."""


class SchemaValidationError(FinetuneError):
    """An artifact does not match its JSON Schema; nothing was published."""

    def __init__(self, artifact: str, pointer: str, message: str) -> None:
        self.artifact, self.pointer, self.detail = artifact, pointer, message
        super().__init__(
            f"{artifact}{pointer}: {message} (the artifact was not written; "
            "this is a bug in imessage-finetune, please report it)"
        )


class ChatSessionError(FinetuneError, ValueError):
    """A chat session cannot be shaped as asked (non-text content, missing time, bad parameter).

    Also a `ValueError`, which is what LangChain's chat-loader helpers raise for the same inputs,
    so code written against them keeps working.
    """


class DatasetError(FinetuneError):
    """The conversations cannot be turned into training data as configured."""


class Interrupted(FinetuneError):
    """Ctrl-C stopped the work at a point where what was done is kept (the message says what,
    and how to go on): a run ends as interrupted (exit 130), not as failed."""


class TrainingError(FinetuneError):
    """Training or loading a model on this machine cannot go on (missing packages, a base
    model that cannot be found or loaded, no example left, Ctrl-C during training)."""


class ServiceError(FinetuneError):
    """A fine-tuning service refused a request or stayed unreachable.

    The message carries the service's status, code, param, message and request id verbatim,
    with the API key masked should the service echo it. `status` is the HTTP status or None.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status, self.code = status, code
        super().__init__(message)


class ServiceSetupError(ServiceError):
    """Nothing was sent: no API key, a cost over the limit, or no confirmation."""


class ServiceAuthError(ServiceError):
    """The service rejected the API key (401) or denied it the operation (403)."""


class ServiceRefused(ServiceError):
    """The service refused to create a job because the account may no longer fine-tune."""

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(
            "the service refused to create a fine-tuning job: this account may no longer "
            "fine-tune (OpenAI closed self-serve fine-tuning to most organisations during 2026 "
            "and accepts no new jobs from anyone from 2027-01-06). Use another backend: any "
            "OpenAI-compatible endpoint via [finetune] base_url, or the local backend. "
            f"The service said: {detail}",
            status=status,
            code=code,
        )


class ServiceUnavailable(ServiceError):
    """A timeout, a dropped connection, a 429 or a 5xx reply (after the retries asked for).

    `retry_after` is the delay in seconds the service asked for (Retry-After), if any.
    """

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)


class JobFailed(ServiceError):
    """The job ended in `failed`; `code` and `message` are the service's, verbatim."""

    def __init__(self, job_id: str, code: str | None, message: str | None) -> None:
        self.job_id, self.message = job_id, message
        super().__init__(
            f"fine-tuning job {job_id} failed: {code or 'no error code'}: {message or 'the service gave no message'}",
            code=code,
        )


class JobStillRunning(ServiceError):
    """The job did not finish before the deadline; it keeps running and can be re-attached."""

    def __init__(self, job_id: str, status: str | None, waited: float, *, last_error: str | None = None) -> None:
        self.job_id, self.job_status = job_id, status
        if last_error is None:
            what = f"fine-tuning job {job_id} is still {status} after {waited:.0f} s"
        else:  # the deadline came during an outage: say what the service last answered
            seen = f"last seen {status}" if status else "not read yet"
            what = (
                f"fine-tuning job {job_id} ({seen}): the service was still failing after {waited:.0f} s "
                f"([finetune] deadline_hours), last with: {last_error}"
            )
        super().__init__(f"{what}; it keeps running on the service: run the stage again to follow it, or cancel it")


class ContextLengthExceeded(FinetuneError):
    """The conversation is longer than the model's context: nothing was generated."""
