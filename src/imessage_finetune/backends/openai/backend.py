"""The openai backend as a `Backend`: OpenAI or any OpenAI-compatible service fine-tunes,
after the upload stage has shown what leaves the machine, asked and sent it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.backends.interface import (
    Completion,
    Disclosure,
    GenerationSettings,
    Messages,
    TrainingCallbacks,
    TrainingPlan,
    TrainingStep,
)
from imessage_finetune.backends.openai.keys import connect, endpoint
from imessage_finetune.config import ConfigLike, RunOptions
from imessage_finetune.errors import ConfigError, ServiceError
from imessage_finetune.jsonio import load_json

# Every config key the job depends on (its tags hash the training ones, see jobs.TRAINING_KEYS),
# the price of the cost in model.json, and where it runs.
KEYS = (
    "finetune.backend",
    "finetune.base_url",
    "finetune.model",
    "finetune.suffix",
    "finetune.n_epochs",
    "finetune.batch_size",
    "finetune.learning_rate_multiplier",
    "finetune.seed",
    "finetune.price_per_million_tokens",
)
# Read while sending or following the job; the model does not depend on them.
SIDE_KEYS = (
    "finetune.api_key_file",
    "finetune.request_timeout",
    "finetune.poll_interval",
    "finetune.deadline_hours",
    "finetune.max_cost",
)


class OpenAIBackend:
    """`[finetune] backend = "openai"`: a fine-tuning job at the service (`base_url`)."""

    name = "openai"
    sends_data = True

    def __init__(self, config: ConfigLike, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()

    def service(self) -> Any:
        """A client of the configured endpoint, with the API key (raises, nothing sent,
        without one)."""
        return connect(self.config, strict=self.options.strict_api)

    def training_keys(self) -> tuple[str, ...]:
        """The config keys whose change gives another job."""
        return KEYS

    def training(self) -> TrainingPlan:
        """The upload receipt in, model.json out (job.json while the job runs)."""
        return TrainingPlan(
            reads=(artifacts.UPLOAD,),
            writes=(artifacts.MODEL, artifacts.TRAINING_LOG),
            keys=KEYS,
            side_keys=SIDE_KEYS,
            params={"endpoint": endpoint(self.config.finetune)},
            forgettable=(artifacts.UPLOAD, artifacts.JOB, artifacts.MODEL),
        )

    # -- the upload stage ----------------------------------------------------------------------

    def disclose(self, artifacts_dir: Path) -> Disclosure:
        """What will be sent; raises before anything is when there is no key, the files fail
        OpenAI's rules or the cost is above max_cost."""
        from imessage_finetune.backends.openai.upload import check_before_sending

        self.service()  # no key: stop here, before anything is shown or sent
        return check_before_sending(artifacts_dir, self.config.finetune)

    def notices(self) -> list[str]:
        """OpenAI's shutdown calendar, when the data goes to OpenAI itself."""
        from imessage_finetune.backends.openai.upload import calendar_notice

        return calendar_notice(self.config.finetune, dt.date.today())

    def upload(self, artifacts_dir: Path) -> tuple[dict[str, Any], list[str]]:
        """Send the files not already at the service; publish the receipt."""
        from imessage_finetune.backends.openai.upload import upload_files

        return upload_files(self.service(), artifacts_dir, self.config.finetune)

    # -- training ------------------------------------------------------------------------------

    def train(self, artifacts_dir: Path, callbacks: TrainingCallbacks) -> Mapping[str, Any]:
        """Start the job for the uploaded files (or re-attach to it) and follow it to the end;
        Ctrl-C stops following, never the job."""
        from imessage_finetune.backends.openai.jobs import recorded_job_id, train

        say = callbacks.on_message or (lambda text: None)
        service = self.service()
        receipt = load_json(artifacts.UPLOAD.path(artifacts_dir).read_bytes())

        def started(job: Any, created: bool) -> None:
            verb = "started" if created else "re-attached to"
            say(f"{verb} job {job.id} ({job.status}); Ctrl-C stops following it, not the job")

        def event(e: Any) -> None:
            if e.step is None:
                say(e.message)
            elif callbacks.on_step is not None:
                callbacks.on_step(TrainingStep(e.step, e.total_steps, f"step {e.step}, training loss {e.train_loss}"))

        def retrying(failure: Any) -> None:
            # An outage of the service is not the job's: say so and keep following.
            delay = f"{failure.delay:.0f} s" if failure.delay >= 1 else f"{failure.delay:.2g} s"
            say(
                f"{failure.error}; trying again in {delay} ({failure.failures} failed read(s) "
                f"in a row; the job runs on, followed for up to {failure.remaining / 3600:.1f} h more)"
            )

        try:
            model = train(
                service,
                receipt,
                self.config.finetune,
                artifacts_dir,
                on_start=started,
                on_status=lambda job: say(f"job {job.id} is {job.status}"),
                on_event=event,
                on_retry=retrying,
            )
        except KeyboardInterrupt:
            job_id = recorded_job_id(artifacts_dir)
            raise ServiceError(
                f"stopped following job {job_id}; it keeps running at the service. Run "
                f"`doit train` again to resume, or `imessage-finetune jobs cancel {job_id}` to stop it"
            ) from None
        say(f"fine-tuned model {model['model_id']} ({model['trained_tokens']} trained tokens)")
        return model

    # -- the trained model ---------------------------------------------------------------------

    def load(self, model: Mapping[str, Any], *, tuned: bool = True) -> RemoteModel:
        """The fine-tuned model at the service (`tuned`), or the base model it started from."""
        model_id = model["model_id"] if tuned else model["base_model"]
        return RemoteModel(self.service(), model_id, model.get("system_prompt") or "")

    def export(self, model: Mapping[str, Any], folder: Path) -> Path:
        """Nothing to export: the weights stay at the service."""
        raise ConfigError(
            f"{model.get('model_id')} was fine-tuned at the service and its weights stay there, so "
            "there is nothing to export; export works for models trained on this machine "
            '([finetune] backend = "local")'
        )


class RemoteModel:
    """A model at the service, as a `ChatModel` (the service does not score text)."""

    def __init__(self, service: Any, model_id: str, system_prompt: str) -> None:
        self.service, self.model_id, self.system_prompt = service, model_id, system_prompt

    def default_settings(self) -> GenerationSettings:
        """The interface's defaults (the service applies its own to what is not sent)."""
        return GenerationSettings()

    def stream(self, messages: Messages, settings: GenerationSettings | None = None) -> Completion:
        """The service's reply, streamed (settings None: the service's defaults)."""
        completion: Completion = self.service.chat(self.model_id, messages, settings)
        return completion

    def score(self, conversations: Iterable[Messages]) -> float | None:
        """None: a chat service gives no loss of given text."""
        return None
