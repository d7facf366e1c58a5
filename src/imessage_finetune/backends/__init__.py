"""Fine-tuning backends.

Remote services sit behind one protocol (`base.FineTuneBackend`): files, jobs, events,
chat. `openai_backend.OpenAIBackend` talks to OpenAI or any OpenAI-compatible endpoint; it
is not imported here so that using the protocol and its values does not need the `openai`
package. `local` trains on this machine instead: there is no job to poll, so it is a
training loop with the same reporting (steps, loss, Ctrl-C, resume), not a service.
"""

from imessage_finetune.backends.openai.service import (
    TERMINAL_STATUSES,
    FineTuneBackend,
    Job,
    JobEvent,
    ReadFailure,
    RemoteFile,
    follow_job,
)

__all__ = ["TERMINAL_STATUSES", "FineTuneBackend", "Job", "JobEvent", "ReadFailure", "RemoteFile", "follow_job"]
