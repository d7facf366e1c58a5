"""Fine-tuning backends behind one protocol (`base.FineTuneBackend`).

`openai_backend.OpenAIBackend` talks to OpenAI or any OpenAI-compatible endpoint; it is not
imported here so that using the protocol and its values does not need the `openai` package.
"""

from imessage_finetune.backends.base import (
    TERMINAL_STATUSES,
    FineTuneBackend,
    Job,
    JobEvent,
    RemoteFile,
    follow_job,
)

__all__ = ["TERMINAL_STATUSES", "FineTuneBackend", "Job", "JobEvent", "RemoteFile", "follow_job"]
