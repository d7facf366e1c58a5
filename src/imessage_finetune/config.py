"""The one configuration file, and the options of a run: parsed once, into typed values.

The file is TOML. Its path comes from `IMESSAGE_FINETUNE_CONFIG`, else `finetune.toml` in the
project folder (beside `dodo.py`). Every key has a default, so an empty file is a valid
configuration; an unknown key or a value of the wrong type is an error that names the key.
Dates and the time zone are parsed here, once (`Config.dates`).

A stage sees the configuration through a `ConfigView`: the same attributes, but reading a key
the stage did not declare raises `UndeclaredKey`, so the keys a stage declares are exactly
those its work depends on (and its fingerprint holds).

`RunOptions` are how a run behaves rather than what it builds (how much it says, whether it
may send without asking...): the CLI's flags, or for plain `doit` the environment variables
read in `RunOptions.from_environ`, the one place they are read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Protocol, Union, cast, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imessage_finetune.errors import ConfigError

CONFIG_ENV = "IMESSAGE_FINETUNE_CONFIG"
# The run options' ways in for plain `doit` (the CLI sets them from its flags instead).
VERBOSITY_ENV = "IMESSAGE_FINETUNE_VERBOSITY"  # 0 quiet, 1 normal, 2 verbose
YES_ENV = "IMESSAGE_FINETUNE_YES"  # "1": send to the fine-tuning service without asking
RAISE_ERRORS_ENV = "IMESSAGE_FINETUNE_RAISE_ERRORS"  # non-empty: tracebacks instead of one line
STRICT_API_ENV = "IMESSAGE_FINETUNE_STRICT_API"  # "1": check every service reply's shape
CONFIG_FILENAME = "finetune.toml"
DEMO_SOURCE = "demo"
DEFAULT_CHAT_DB = "~/Library/Messages/chat.db"


@dataclass(frozen=True)
class SourceConfig:
    """`[source]`: the Messages database (or iPhone backup) to read and the Contacts databases
    that name its handles."""

    path: str = DEMO_SOURCE
    contacts: str | list[str] = "auto"
    busy_timeout: float = 10.0
    backup_password_file: str = ""


@dataclass(frozen=True)
class ArtifactsConfig:
    """`[artifacts]`: where the pipeline writes its outputs."""

    dir: str = "artifacts"
    lock_timeout: float = 600.0


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
    redact_known_names: bool = False
    phone_region: str = "auto"
    validation_share: float = 0.0
    split_seed: int = 0
    heldout_share: float = 0.1
    heldout_days: float = 0.0
    partner_in_prompt: bool = False


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
class MlxConfig:
    """`[finetune.mlx]`: LoRA fine-tuning with MLX (mlx-lm), made for Apple silicon; QLoRA
    when the base model is quantized."""

    base_model: str = DEFAULT_BASE_MODEL
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    layers: int = -1
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 4
    max_seq_length: int = 1024
    gradient_checkpointing: bool = False
    seed: int = 42
    device: Literal["auto", "cpu", "gpu"] = "auto"
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

    backend: Literal["local", "mlx", "openai"] = "local"
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
    mlx: MlxConfig = MlxConfig()


@dataclass(frozen=True)
class DateRange:
    """`[sessions] start_date`/`end_date` parsed (in `timezone`): Unix seconds, start
    inclusive, end exclusive; None is unbounded."""

    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """`[evaluation]`: what `evaluate` measures and where its report goes."""

    replies: int = 40
    max_new_tokens: int = 64
    temperature: float = 0.7
    seed: int = 42
    samples: int = 8
    probe_prompts: int = 20
    compare_partner: bool = False
    report_dir: str = ""
    chat_price_per_million_tokens: list[float] = field(default_factory=lambda: [0.8, 3.2])


@dataclass(frozen=True)
class Config:
    """The whole configuration, with the folder relative paths are resolved against."""

    base_dir: Path
    source: SourceConfig = SourceConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    sessions: SessionsConfig = SessionsConfig()
    dataset: DatasetConfig = DatasetConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    file: Path | None = None
    dates: DateRange = DateRange()

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

    def backup_password_path(self) -> Path | None:
        """The file holding an encrypted backup's password, if one is configured."""
        value = self.source.backup_password_file
        return (self.base_dir / Path(value).expanduser()).resolve() if value else None

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
    "evaluation": EvaluationConfig,
}


def find_config(project_dir: Path) -> Path:
    """The config file to use: `$IMESSAGE_FINETUNE_CONFIG`, else `finetune.toml` in project_dir."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (project_dir / CONFIG_FILENAME).resolve()


def _backslash_hint(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """What to do when the line TOML refused holds a backslash in double quotes: most likely a
    Windows path pasted as it is (`"C:\\Users\\..."`), where TOML reads escapes."""
    found = re.search(r"at line (\d+)", str(exc))
    lines = text.splitlines()
    if found is None or not 0 < int(found.group(1)) <= len(lines):
        return ""
    if not re.search(r'"[^"]*\\', lines[int(found.group(1)) - 1]):
        return ""
    return "; in double quotes a backslash starts an escape: write a Windows path in single quotes (path = 'C:\\Users\\...') or with forward slashes"


def load_config(path: Path) -> Config:
    """Read and check a config file; every problem is a ConfigError naming the file and key."""
    try:
        # utf-8-sig: Windows editors may save the file with a byte-order mark first.
        text = path.read_text(encoding="utf-8-sig")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; create it (see finetune.toml in the project for "
            f"every key) or point {CONFIG_ENV} at one"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}{_backslash_hint(text, exc)}") from None
    return config_from_dict(raw, base_dir=path.parent, file=path)


def config_from_dict(raw: dict[str, Any], *, base_dir: Path, file: Path | None = None) -> Config:
    """Build a Config from parsed TOML, checking every section, key and type."""
    where = str(file) if file else "config"
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown section [{unknown[0]}]; known sections: " + ", ".join(f"[{s}]" for s in SECTIONS)
        )
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{name}] must be a table, not {type(values).__name__}")
        sections[name] = _build_section(cls, name, values, where)
    config = Config(base_dir=base_dir.resolve(), file=file, **sections)
    return dataclasses.replace(config, dates=_check_semantics(config, where))


def _build_section(cls: type, section: str, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {section}.{key}; known keys in [{section}]: " + ", ".join(sorted(known))
            )
    nested = {
        key: _build_section(hints[key], f"{section}.{key}", value, where)
        for key, value in values.items()
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict)
    }
    for key, value in values.items():
        if key not in nested and not _matches(value, hints[key]):
            raise ConfigError(f"{where}: {section}.{key} must be {_describe(hints[key])}, got {value!r}")
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
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
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
    return {str: "a string", bool: "true or false", float: "a number", int: "an integer"}.get(hint, hint.__name__)


def _check_semantics(config: Config, where: str) -> DateRange:
    """Check what the types alone cannot; return the date range, parsed once here."""
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
    if config.artifacts.lock_timeout < 0:
        raise ConfigError(f"{where}: artifacts.lock_timeout must be zero or more seconds")
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
    if not 0 <= dataset.heldout_share < 1 or dataset.heldout_days < 0:
        raise ConfigError(
            f"{where}: dataset.heldout_share must be at least 0 and below 1, and dataset.heldout_days "
            f"0 or more (0 and 0 hold out nothing), got {dataset.heldout_share} and {dataset.heldout_days}"
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
    for key in (
        "lora_rank",
        "lora_alpha",
        "epochs",
        "batch_size",
        "max_seq_length",
        "checkpoint_steps",
        "max_new_tokens",
    ):
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
    evaluation = config.evaluation
    for key in ("replies", "max_new_tokens"):
        if getattr(evaluation, key) < 2:
            raise ConfigError(f"{where}: evaluation.{key} must be 2 or more, got {getattr(evaluation, key)}")
    if evaluation.samples < 0 or evaluation.probe_prompts < 0 or evaluation.temperature < 0:
        raise ConfigError(f"{where}: evaluation.samples, probe_prompts and temperature must be 0 or more")
    prices = evaluation.chat_price_per_million_tokens
    if len(prices) != 2 or min(prices) < 0:
        raise ConfigError(
            f"{where}: evaluation.chat_price_per_million_tokens must be [input, output] in US dollars "
            f"per million tokens, got {prices}"
        )
    if dataset.phone_region != "auto":
        import phonenumbers  # only here: the rest of the config needs no phone metadata

        if dataset.phone_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(
                f'{where}: dataset.phone_region must be "auto" or a two-letter region code such '
                f'as "US", "GB" or "FR", got {dataset.phone_region!r}'
            )
    mlx = finetune.mlx
    for key in (
        "lora_rank",
        "lora_alpha",
        "epochs",
        "batch_size",
        "max_seq_length",
        "checkpoint_steps",
        "max_new_tokens",
    ):
        if getattr(mlx, key) <= 0:
            raise ConfigError(f"{where}: finetune.mlx.{key} must be more than 0, got {getattr(mlx, key)}")
    if mlx.layers == 0 or mlx.layers < -1:
        raise ConfigError(f"{where}: finetune.mlx.layers must be -1 (every layer) or more than 0, got {mlx.layers}")
    if not 0 <= mlx.lora_dropout < 1 or mlx.learning_rate <= 0 or mlx.temperature < 0:
        raise ConfigError(
            f"{where}: finetune.mlx.lora_dropout must be at least 0 and below 1, learning_rate "
            "more than 0 and temperature 0 or more (0 answers greedily)"
        )
    if not mlx.base_model.strip():
        raise ConfigError(
            f'{where}: finetune.mlx.base_model must name a model (a Hugging Face id, a folder, or "demo")'
        )
    if not dataset.ai_sender.strip():
        raise ConfigError(f'{where}: dataset.ai_sender must be "me" or a sender\'s name or handle')
    return DateRange(start, end)


def parse_timezone(name: str, where: str = "config") -> dt.tzinfo:
    """`UTC`, `local` (this machine's zone) or an IANA name such as `Europe/Paris`."""
    if name == "UTC":
        return dt.UTC
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
            f"{where}: {key} must be a date like 2024-01-31 or 2024-01-31T18:00:00+01:00, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()


@dataclass(frozen=True)
class RunOptions:
    """How a run behaves, as opposed to what it builds (nothing here enters a fingerprint)."""

    verbosity: int = 1
    """0 says only errors and the closing summary, 1 is normal, 2 says more."""
    assume_yes: bool = False
    """Send to the fine-tuning service without asking (`run --yes`)."""
    raise_errors: bool = False
    """Show the traceback of an error instead of its one line."""
    strict_api: bool = False
    """Check every reply of the fine-tuning service against the SDK's models."""
    forced: frozenset[str] = frozenset()
    """Stages to rebuild even when up to date (`run STAGE --force`)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> RunOptions:
        """The options plain `doit` users set through the environment (the only place the
        package reads these variables)."""
        env = os.environ if environ is None else environ
        try:
            verbosity = min(max(int(env.get(VERBOSITY_ENV, "1")), 0), 2)
        except ValueError:
            verbosity = 1
        return cls(
            verbosity=verbosity,
            assume_yes=env.get(YES_ENV) == "1",
            raise_errors=bool(env.get(RAISE_ERRORS_ENV)),
            strict_api=env.get(STRICT_API_ENV) == "1",
        )


class UndeclaredKey(LookupError):
    """A stage read a config key it did not declare: a bug in that stage (its fingerprint
    would miss the key, so a change of it would not rebuild what depends on it)."""


class ConfigLike(Protocol):
    """What stages and backends read: a `Config`, or a `ConfigView` restricted to the keys a
    stage declared."""

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against."""

    @property
    def file(self) -> Path | None:
        """The configuration file."""

    @property
    def source(self) -> SourceConfig:
        """`[source]`."""

    @property
    def artifacts(self) -> ArtifactsConfig:
        """`[artifacts]`."""

    @property
    def sessions(self) -> SessionsConfig:
        """`[sessions]`."""

    @property
    def dataset(self) -> DatasetConfig:
        """`[dataset]`."""

    @property
    def finetune(self) -> FinetuneConfig:
        """`[finetune]`."""

    @property
    def evaluation(self) -> EvaluationConfig:
        """`[evaluation]`."""

    @property
    def dates(self) -> DateRange:
        """The date range, parsed."""

    @property
    def artifacts_dir(self) -> Path:
        """The artifacts folder, absolute."""

    @property
    def uses_demo(self) -> bool:
        """True for the built-in demo source."""

    def source_path(self) -> Path:
        """The configured chat.db."""

    def contacts_paths(self) -> list[Path] | None:
        """Explicit Contacts databases; None for auto."""

    def backup_password_path(self) -> Path | None:
        """The file holding an encrypted backup's password, if configured."""


def config_keys(section: Any, prefix: str) -> list[str]:
    """Every key of a section (dataclass) as `prefix.key`, nested tables expanded."""
    keys = []
    for f in fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{prefix}.{f.name}")
        else:
            keys.append(f"{prefix}.{f.name}")
    return keys


class ConfigView:
    """A `Config` that lets its owner (a stage) read only the keys it declared.

    Keys are spelled `section.key` (`finetune.local.seed`); declaring a table (`finetune.local`)
    declares every key in it. Where things are (`base_dir`, `artifacts_dir`, `file`) is always
    readable: it says where to read and write, not what to make.
    """

    # Derived values read the keys they are derived from, through the view.
    uses_demo = Config.uses_demo
    source_path = Config.source_path
    contacts_paths = Config.contacts_paths
    backup_password_path = Config.backup_password_path

    def __init__(self, config: Config, keys: Iterable[str], owner: str) -> None:
        self._config = config
        self._keys = frozenset(keys)
        self._owner = owner
        known = set(config_keys(config.source, "source")) | set(config_keys(config.artifacts, "artifacts"))
        for name in ("sessions", "dataset", "finetune", "evaluation"):
            known |= set(config_keys(getattr(config, name), name))
        tables = {key.rsplit(".", 1)[0] for key in known} | {"finetune.local"}
        unknown = sorted(k for k in self._keys if k not in known and k not in tables)
        if unknown:
            raise UndeclaredKey(f"{owner} declares {', '.join(unknown)}, which the configuration does not have")

    def allows(self, key: str) -> bool:
        """Whether `key` (or a table holding it) was declared."""
        parts = key.split(".")
        return any(".".join(parts[:i]) in self._keys for i in range(1, len(parts) + 1))

    def require(self, key: str) -> None:
        """Raise UndeclaredKey unless `key` was declared."""
        if not self.allows(key):
            raise UndeclaredKey(
                f"{self._owner} read the config key {key} without declaring it: add it to the "
                "stage's keys (it changes the outputs) or side_keys (it does not)"
            )

    def get(self, key: str) -> Any:
        """The value of a declared key, e.g. `view.get("dataset.ai_sender")`."""
        self.require(key)
        value: Any = self._config
        for part in key.split("."):
            value = getattr(value, part)
        return value

    @property
    def config(self) -> Config:
        """The whole configuration: for the pipeline, never for a stage's work."""
        return self._config

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against."""
        return self._config.base_dir

    @property
    def file(self) -> Path | None:
        """The configuration file."""
        return self._config.file

    @property
    def artifacts_dir(self) -> Path:
        """The artifacts folder, absolute."""
        return self._config.artifacts_dir

    @property
    def dates(self) -> DateRange:
        """The parsed date range (reads sessions.start_date, end_date and timezone)."""
        for key in ("sessions.start_date", "sessions.end_date", "sessions.timezone"):
            self.require(key)
        return self._config.dates

    @property
    def source(self) -> SourceConfig:
        """`[source]`, declared keys only."""
        return cast(SourceConfig, _SectionView(self._config.source, "source", self))

    @property
    def artifacts(self) -> ArtifactsConfig:
        """`[artifacts]`, declared keys only."""
        return cast(ArtifactsConfig, _SectionView(self._config.artifacts, "artifacts", self))

    @property
    def sessions(self) -> SessionsConfig:
        """`[sessions]`, declared keys only."""
        return cast(SessionsConfig, _SectionView(self._config.sessions, "sessions", self))

    @property
    def dataset(self) -> DatasetConfig:
        """`[dataset]`, declared keys only."""
        return cast(DatasetConfig, _SectionView(self._config.dataset, "dataset", self))

    @property
    def finetune(self) -> FinetuneConfig:
        """`[finetune]`, declared keys only."""
        return cast(FinetuneConfig, _SectionView(self._config.finetune, "finetune", self))

    @property
    def evaluation(self) -> EvaluationConfig:
        """`[evaluation]`, declared keys only."""
        return cast(EvaluationConfig, _SectionView(self._config.evaluation, "evaluation", self))


class _SectionView:
    """One table of a ConfigView: its fields are read through the view's check; its
    properties (such as `LocalConfig.is_demo`) run on the view, so they are checked too."""

    def __init__(self, section: Any, path: str, view: ConfigView) -> None:
        self._section, self._path, self._view = section, path, view

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        section = self._section
        if name in {f.name for f in fields(section)}:
            key = f"{self._path}.{name}"
            value = getattr(section, name)
            if dataclasses.is_dataclass(value):
                return _SectionView(value, key, self._view)
            self._view.require(key)
            return value
        attribute = getattr(type(section), name, None)
        if isinstance(attribute, property) and attribute.fget is not None:
            return attribute.fget(self)
        raise AttributeError(f"[{self._path}] has no key {name}")
