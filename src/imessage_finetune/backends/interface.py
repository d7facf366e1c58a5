"""The one interface of a training backend, and of the models it trains.

Every backend (`local`: PyTorch + peft on this machine; `mlx`: mlx-lm on Apple silicon;
`openai`: OpenAI or a compatible service) is reached through `Backend`, and the model it
trained, or the base model it started from, through `ChatModel`. `chat`, `serve`,
`evaluate` and `export` use only these, so nothing outside `backends/` asks which backend
it is: the choice is made once, from the config, by `backends.backend_for`.

Library code: nothing here prints, prompts or exits; progress goes through callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from imessage_finetune.artifacts import Artifact

Messages = Sequence[Mapping[str, Any]]
"""A conversation in OpenAI's chat form: `{"role", "content"}` (and `name`, `weight`)."""


@dataclass(frozen=True)
class GenerationSettings:
    """How one reply is generated. `temperature` 0 answers greedily; `seed` makes sampling
    repeatable (the same messages, settings and seed give the same reply)."""

    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = 42
    stop: tuple[str, ...] = ()


@dataclass
class Usage:
    """Filled in by a `Completion` once it is exhausted."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) or "length"


class Completion(Iterator[str]):
    """A reply as it is generated: iterate for the text pieces; `usage` is complete once the
    iteration ends. `close()` stops the generation early (a client that went away)."""

    usage: Usage

    def close(self) -> None:
        """Stop generating; the pieces not yet produced are never computed."""


class ChatModel(Protocol):
    """A model ready to answer: a tuned model, or the base model it was trained from."""

    model_id: str
    """The id users call it by (model.json's `model_id`, or the base model's name)."""

    system_prompt: str
    """The system prompt the model was trained with ("" for none)."""

    def stream(self, messages: Messages, settings: GenerationSettings | None = None) -> Completion:
        """The reply to `messages`, piece by piece; `settings` None means the backend's own
        defaults for `chat` (the local backend's [finetune.local] max_new_tokens, temperature
        and seed; a service's defaults).

        When the last message is the assistant's, it is a reply already begun: a model that
        can (local, mlx) continues it, rendering the conversation with the template's
        `continue_final_message`, and yields only the continuation (evaluate's private-text
        probe needs this). A chat service that cannot answers after it instead."""
        ...

    def default_settings(self) -> GenerationSettings:
        """The settings `stream` uses when given none (`chat`'s): `serve` fills the parameters
        a request leaves out from these, so the same request gets `chat`'s reply."""
        ...

    def score(self, conversations: Iterable[Messages]) -> float | None:
        """Mean loss in nats per token of the assistant turns of `conversations` (those tokens
        only, in the model's own chat template, with the context before them); None when the
        backend cannot score text (a remote service)."""
        ...


@dataclass(frozen=True)
class TrainingStep:
    """One step of training as the stage shows it: a bar's position, or the line `text`
    (e.g. "step 4/45 (epoch 1), training loss 5.5358") where no bar is drawn."""

    step: int
    total_steps: int | None
    text: str


@dataclass(frozen=True)
class TrainingCallbacks:
    """How a backend reports while it trains (the stage turns these into lines or a bar)."""

    on_start: Callable[[str, int, int], None] | None = None  # device, examples, steps
    on_step: Callable[[TrainingStep], None] | None = None  # each optimiser step (or metric event)
    on_resume: Callable[[int, int], None] | None = None  # step resumed at, total steps
    on_message: Callable[[str], None] | None = None  # a line worth showing (job status...)


@dataclass(frozen=True)
class TrainingPlan:
    """The train stage of a backend: what it reads and writes, and what its model depends on.

    The train stage (`stages/model.py`) is declared from this, so choosing a backend changes
    the stage's inputs, outputs and fingerprint without any other module asking which one.
    """

    reads: tuple[Artifact, ...]
    """Artifacts training reads (train.jsonl...; never the whole dataset report)."""
    writes: tuple[Artifact, ...]
    """Artifacts it publishes (model.json, an adapter...)."""
    keys: tuple[str, ...]
    """Config keys whose change gives another model (`training_keys()`)."""
    side_keys: tuple[str, ...] = ()
    """Config keys it reads that do not change the model (checkpoint interval, poll interval)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """What else the model depends on (library versions, the endpoint)."""
    watched: tuple[Path, ...] = ()
    """Files outside the artifacts folder it reads (a base model given as a folder)."""
    forgettable: tuple[Artifact, ...] = ()
    """What `imessage-finetune forget` deletes (receipts, the model, checkpoints)."""


@dataclass(frozen=True)
class Disclosure:
    """What will leave the machine, shown before anything is sent."""

    endpoint: str
    conversations: int
    examples: int
    validation_examples: int
    tokens: int
    estimated_cost_usd: float | None
    files: tuple[str, ...]


class Backend(Protocol):
    """A place to fine-tune: chosen once from `[finetune] backend`."""

    name: str
    """"local", "mlx" or "openai"; recorded in model.json's `backend`."""

    sends_data: bool
    """True when training sends the conversations off this machine (asks first)."""

    def training_keys(self) -> tuple[str, ...]:
        """The config keys whose change gives another trained model (the train stage's)."""
        ...

    def training(self) -> TrainingPlan:
        """What the train stage reads, writes and depends on with this backend."""
        ...

    def train(self, artifacts_dir: Path, callbacks: TrainingCallbacks) -> Mapping[str, Any]:
        """Train on the artifacts `training().reads` names, publish `training().writes`
        (model.json last) and return model.json's document. Reports only through
        `callbacks`; a FinetuneError says in one line what went wrong and what to do."""
        ...

    def load(self, model: Mapping[str, Any], *, tuned: bool = True) -> ChatModel:
        """The model model.json describes (`tuned`), or the base model it was trained from."""
        ...

    def export(self, model: Mapping[str, Any], folder: Path) -> Path:
        """Write the tuned model, adapter merged into the base weights, as a Hugging Face
        folder into `folder` (replaced whole); raise for a backend with nothing to export."""
        ...


class Sender(Protocol):
    """A backend whose training sends the data to a service first (`sends_data`): the upload
    stage shows what will leave the machine, asks, and sends."""

    def disclose(self, artifacts_dir: Path) -> Disclosure:
        """What the upload will send; raises (nothing sent) when the files fail the service's
        rules or the estimated cost is above the limit."""
        ...

    def notices(self) -> list[str]:
        """Lines to show before asking (the service's shutdown calendar...)."""
        ...

    def upload(self, artifacts_dir: Path) -> tuple[dict[str, Any], list[str]]:
        """Send the files not already there; publish the receipt; return it and the names of
        the files found already sent (not sent again)."""
        ...
