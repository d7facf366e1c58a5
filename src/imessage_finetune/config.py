"""The one configuration file: where it is, what keys it may hold, and their types.

The file is TOML. Its path comes from `IMESSAGE_FINETUNE_CONFIG`, else `finetune.toml` in the
project folder (beside `dodo.py`). Every key has a default, so an empty file is a valid
configuration; an unknown key or a value of the wrong type is an error that names the key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imessage_finetune.errors import ConfigError

CONFIG_ENV = "IMESSAGE_FINETUNE_CONFIG"
CONFIG_FILENAME = "finetune.toml"
DEMO_SOURCE = "demo"
DEFAULT_CHAT_DB = "~/Library/Messages/chat.db"


@dataclass(frozen=True)
class SourceConfig:
    """`[source]`: the Messages database to read and the Contacts databases that name its handles."""

    path: str = DEMO_SOURCE
    contacts: str | list[str] = "auto"
    busy_timeout: float = 10.0


@dataclass(frozen=True)
class ArtifactsConfig:
    """`[artifacts]`: where the pipeline writes its outputs."""

    dir: str = "artifacts"


@dataclass(frozen=True)
class SessionsConfig:
    """`[sessions]`: what the reader keeps from the database."""

    owner_name: str = "Me"
    attachments: Literal["skip", "placeholder"] = "skip"
    attachment_placeholder: str = "[attachment]"
    include_chats: list[str] = field(default_factory=list)
    exclude_chats: list[str] = field(default_factory=list)
    start_date: str = ""
    end_date: str = ""
    timezone: str = "UTC"
    groups: bool = True
    drop_sms_reactions: bool = True


@dataclass(frozen=True)
class DatasetConfig:
    """`[dataset]`: how conversations become training examples."""

    ai_sender: str = "me"
    merge_separator: str = "\n\n"
    idle_gap_hours: float = 4.0
    max_tokens: int = 4096
    overlap_messages: int = 4
    group_chats: Literal["name", "prefix", "exclude"] = "name"
    system_prompt: str = ""
    redact_phones: bool = False
    redact_emails: bool = False
    redact_codes: bool = False
    redact_urls: bool = False
    validation_share: float = 0.0
    split_seed: int = 0


DEMO_BASE_MODEL = "demo"
DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@dataclass(frozen=True)
class LocalConfig:
    """`[finetune.local]`: LoRA fine-tuning of an open-weights model on this machine."""

    base_model: str = DEFAULT_BASE_MODEL
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 4
    max_seq_length: int = 1024
    gradient_checkpointing: bool = False
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    checkpoint_steps: int = 50
    max_new_tokens: int = 200
    temperature: float = 0.7

    @property
    def is_demo(self) -> bool:
        """True for the tiny random model the package builds for demonstrations."""
        return self.base_model == DEMO_BASE_MODEL


@dataclass(frozen=True)
class FinetuneConfig:
    """`[finetune]`: where and how to fine-tune; the model also sets tokenizer, limits, price."""

    backend: Literal["local", "openai"] = "local"
    base_url: str = ""
    api_key_file: str = ""
    model: str = "gpt-4.1-mini-2025-04-14"
    suffix: str = "imessage"
    n_epochs: int = 3
    batch_size: int | str = "auto"
    learning_rate_multiplier: float | str = "auto"
    seed: int = 42
    max_cost: float = 10.0
    confirm: bool = True
    poll_interval: float = 15.0
    deadline_hours: float = 24.0
    request_timeout: float = 60.0
    price_per_million_tokens: dict[str, float] = field(
        default_factory=lambda: {
            "gpt-4.1-mini-2025-04-14": 5.0,
            "gpt-4.1-2025-04-14": 25.0,
            "gpt-4o-mini-2024-07-18": 3.0,
            "gpt-4o-2024-08-06": 25.0,
        }
    )
    local: LocalConfig = LocalConfig()


@dataclass(frozen=True)
class Config:
    """The whole configuration, with the folder relative paths are resolved against."""

    base_dir: Path
    source: SourceConfig = SourceConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    sessions: SessionsConfig = SessionsConfig()
    dataset: DatasetConfig = DatasetConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    file: Path | None = None

    @property
    def artifacts_dir(self) -> Path:
        """The artifacts folder, absolute (relative paths are relative to the config file)."""
        return (self.base_dir / Path(self.artifacts.dir).expanduser()).resolve()

    @property
    def uses_demo(self) -> bool:
        """True when the source is the built-in demo database."""
        return self.source.path == DEMO_SOURCE

    def source_path(self) -> Path:
        """The configured chat.db, `~` expanded (not meaningful for the demo source)."""
        return (self.base_dir / Path(self.source.path).expanduser()).resolve()

    def contacts_paths(self) -> list[Path] | None:
        """Explicit Contacts databases; None for `auto` (detect them), [] for `none`."""
        value = self.source.contacts
        if value == "auto":
            return None
        if value == "none":
            return []
        paths = [value] if isinstance(value, str) else value
        return [(self.base_dir / Path(p).expanduser()).resolve() for p in paths]

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (for fingerprints and reports)."""
        return dataclasses.asdict(getattr(self, name))


SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "artifacts": ArtifactsConfig,
    "sessions": SessionsConfig,
    "dataset": DatasetConfig,
    "finetune": FinetuneConfig,
}


def find_config(project_dir: Path) -> Path:
    """The config file to use: `$IMESSAGE_FINETUNE_CONFIG`, else `finetune.toml` in project_dir."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (project_dir / CONFIG_FILENAME).resolve()


def load_config(path: Path) -> Config:
    """Read and check a config file; every problem is a ConfigError naming the file and key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; create it (see finetune.toml in the project for "
            f"every key) or point {CONFIG_ENV} at one"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return config_from_dict(raw, base_dir=path.parent, file=path)


def config_from_dict(raw: dict[str, Any], *, base_dir: Path, file: Path | None = None) -> Config:
    """Build a Config from parsed TOML, checking every section, key and type."""
    where = str(file) if file else "config"
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; known sections: "
            + ", ".join(f"[{s}]" for s in SECTIONS)
        )
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{name}] must be a table, not {type(values).__name__}")
        sections[name] = _build_section(cls, name, values, where)
    config = Config(base_dir=base_dir.resolve(), file=file, **sections)
    _check_semantics(config, where)
    return config


def _build_section(cls: type, section: str, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {section}.{key}; known keys in [{section}]: "
                + ", ".join(sorted(known))
            )
    nested = {
        key: _build_section(hints[key], f"{section}.{key}", value, where)
        for key, value in values.items()
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict)
    }
    for key, value in values.items():
        if key not in nested and not _matches(value, hints[key]):
            raise ConfigError(
                f"{where}: {section}.{key} must be {_describe(hints[key])}, got {value!r}"
            )
    coerced = {
        k: float(v) if hints[k] is float else dict(sorted(v.items())) if isinstance(v, dict) else v
        for k, v in values.items()
        if k not in nested
    }
    return cls(**coerced, **nested)


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = get_args(hint)
        return isinstance(value, dict) and all(
            _matches(k, key) and _matches(v, item) for k, v in value.items()
        )
    if origin in (UnionType, Union):
        return any(_matches(value, h) for h in get_args(hint))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "a table"
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return "a list of " + _describe(get_args(hint)[0]).removeprefix("a ") + "s"
    if origin is dict:
        return "a table of " + _describe(get_args(hint)[1]).removeprefix("a ") + "s"
    if get_args(hint):
        return " or ".join(_describe(h) for h in get_args(hint))
    return {str: "a string", bool: "true or false", float: "a number", int: "an integer"}.get(
        hint, hint.__name__
    )


def _check_semantics(config: Config, where: str) -> None:
    sessions = config.sessions
    zone = parse_timezone(sessions.timezone, where)
    start = parse_date(sessions.start_date, zone, "sessions.start_date", where)
    end = parse_date(sessions.end_date, zone, "sessions.end_date", where)
    if start is not None and end is not None and end <= start:
        raise ConfigError(
            f"{where}: sessions.end_date ({sessions.end_date}) must be after "
            f"sessions.start_date ({sessions.start_date}); the end date is exclusive"
        )
    if config.source.busy_timeout < 0:
        raise ConfigError(f"{where}: source.busy_timeout must be zero or more seconds")
    if not config.sessions.owner_name.strip():
        raise ConfigError(f"{where}: sessions.owner_name must not be empty")
    if not config.sessions.attachment_placeholder.strip():
        raise ConfigError(f"{where}: sessions.attachment_placeholder must not be empty")
    dataset = config.dataset
    positive = {
        "dataset.idle_gap_hours": dataset.idle_gap_hours,
        "dataset.max_tokens": dataset.max_tokens,
        "finetune.n_epochs": config.finetune.n_epochs,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where}: {key} must be more than 0, got {value}")
    if dataset.overlap_messages < 0:
        raise ConfigError(f"{where}: dataset.overlap_messages must be 0 or more")
    if not 0 <= dataset.validation_share < 1:
        raise ConfigError(
            f"{where}: dataset.validation_share must be at least 0 and below 1 (0 disables the "
            f"validation file), got {dataset.validation_share}"
        )
    finetune = config.finetune
    for key in ("batch_size", "learning_rate_multiplier"):
        value = getattr(finetune, key)
        if isinstance(value, str) and value != "auto":
            raise ConfigError(f'{where}: finetune.{key} must be a number or "auto", got {value!r}')
    if len(finetune.suffix) > 64:
        raise ConfigError(f"{where}: finetune.suffix must be at most 64 characters")
    if finetune.max_cost < 0 or min(finetune.poll_interval, finetune.deadline_hours, finetune.request_timeout) <= 0:
        raise ConfigError(
            f"{where}: finetune.max_cost must be 0 or more; poll_interval, deadline_hours and "
            "request_timeout more than 0"
        )
    local = finetune.local
    for key in ("lora_rank", "lora_alpha", "epochs", "batch_size", "max_seq_length", "checkpoint_steps", "max_new_tokens"):
        if getattr(local, key) <= 0:
            raise ConfigError(f"{where}: finetune.local.{key} must be more than 0, got {getattr(local, key)}")
    if not 0 <= local.lora_dropout < 1 or local.learning_rate <= 0 or local.temperature < 0:
        raise ConfigError(
            f"{where}: finetune.local.lora_dropout must be at least 0 and below 1, learning_rate "
            "more than 0 and temperature 0 or more (0 answers greedily)"
        )
    if not local.base_model.strip() or not local.target_modules:
        raise ConfigError(
            f'{where}: finetune.local.base_model must name a model (a Hugging Face id, a folder, or "demo") '
            'and target_modules must be "all-linear" or a list of module names'
        )
    if not dataset.ai_sender.strip():
        raise ConfigError(f'{where}: dataset.ai_sender must be "me" or a sender\'s name or handle')


def parse_timezone(name: str, where: str = "config") -> dt.tzinfo:
    """`UTC`, `local` (this machine's zone) or an IANA name such as `Europe/Paris`."""
    if name == "UTC":
        return dt.timezone.utc
    if name == "local":
        local = dt.datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: sessions.timezone {name!r} is not a time zone; use UTC, local or an "
            "IANA name such as Europe/Paris"
        ) from None


def parse_date(value: str, zone: dt.tzinfo, key: str, where: str = "config") -> float | None:
    """A `YYYY-MM-DD` (midnight in `zone`) or ISO 8601 date-time, as Unix seconds; '' is None."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{where}: {key} must be a date like 2024-01-31 or 2024-01-31T18:00:00+01:00, "
            f"got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()
