"""The config file: defaults, location, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from imessage_finetune.config import (
    CONFIG_ENV,
    SECTIONS,
    ConfigView,
    DateRange,
    RunOptions,
    UndeclaredKey,
    config_from_dict,
    find_config,
    load_config,
)
from imessage_finetune.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]


def test_committed_finetune_toml_is_valid_and_equals_the_defaults() -> None:
    """finetune.toml documents every key with its default value, and selects the demo data
    and the demo base model (the one value that is not a default)."""
    committed = load_config(PROJECT / "finetune.toml")
    defaults = config_from_dict({"finetune": {"local": {"base_model": "demo"}, "mlx": {"base_model": "demo"}}}, base_dir=PROJECT)
    for section in SECTIONS:
        assert committed.section(section) == defaults.section(section)
    assert committed.uses_demo and committed.finetune.local.is_demo and committed.finetune.mlx.is_demo
    assert config_from_dict({}, base_dir=PROJECT).finetune.local.base_model == "Qwen/Qwen2.5-0.5B-Instruct"
    text = (PROJECT / "finetune.toml").read_text()
    for section in SECTIONS:
        for key, value in committed.section(section).items():
            keys = value.keys() if key in ("local", "mlx") else [key]
            for name in keys:
                documented = f"\n{name} = " in text or f"[{section}.{name}]" in text
                assert documented, f"{section}.{name} is not documented in finetune.toml"


def test_env_variable_overrides_the_project_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IMESSAGE_FINETUNE_CONFIG wins; else finetune.toml in the project folder."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert find_config(tmp_path) == tmp_path.resolve() / "finetune.toml"
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "other.toml"))
    assert find_config(tmp_path) == tmp_path / "other.toml"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """[artifacts] dir and [source] path resolve against the config's folder, ~ expanded."""
    (tmp_path / "c.toml").write_text('[source]\npath = "~/x/chat.db"\n[artifacts]\ndir = "build"\n')
    config = load_config(tmp_path / "c.toml")
    assert config.artifacts_dir == tmp_path.resolve() / "build"
    assert config.source_path() == Path("~/x/chat.db").expanduser().resolve()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sourse": {}}, r"unknown section \[sourse\]"),
        ({"source": {"pth": "x"}}, r"unknown key source\.pth; known keys in \[source\]: backup_password_file, busy_timeout, contacts, path"),
        ({"sessions": {"groups": "yes"}}, r"sessions\.groups must be true or false, got 'yes'"),
        ({"sessions": {"attachments": "keep"}}, r"sessions\.attachments must be one of 'skip', 'placeholder'"),
        ({"sessions": {"include_chats": "Alice"}}, r"sessions\.include_chats must be a list of strings"),
        ({"source": {"busy_timeout": "10"}}, r"source\.busy_timeout must be a number"),
        ({"sessions": {"start_date": "yesterday"}}, r"sessions\.start_date must be a date like 2024-01-31"),
        ({"sessions": {"start_date": "2024-02-01", "end_date": "2024-01-01"}}, r"end_date .* must be after"),
        ({"sessions": {"timezone": "Mars/Olympus"}}, r"sessions\.timezone 'Mars/Olympus' is not a time zone"),
        ({"dataset": {"ai_sender": 3}}, r"dataset\.ai_sender must be a string, got 3"),
        ({"dataset": {"phone_region": "UK"}}, r"dataset\.phone_region must be \"auto\" or a two-letter region code"),
        ({"dataset": {"redact_known_names": 1}}, r"dataset\.redact_known_names must be true or false, got 1"),
    ],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    """Each mistake is a ConfigError that names the key and what it accepts."""
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, base_dir=Path("."))


def test_missing_or_malformed_file_is_explained(tmp_path: Path) -> None:
    """No file, or a file that is not TOML: the error names it and says what to do."""
    with pytest.raises(ConfigError, match="not found; create it"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[source\npath = 1")
    with pytest.raises(ConfigError, match="is not valid TOML") as bad:
        load_config(tmp_path / "bad.toml")
    assert "backslash" not in str(bad.value)


def test_a_windows_config_is_read_or_its_mistake_explained(tmp_path: Path) -> None:
    """A byte-order mark (Notepad's "UTF-8 with BOM") is not a mistake; a Windows path pasted
    in double quotes is explained, with the spelling TOML keeps as it is."""
    config = tmp_path / "finetune.toml"
    config.write_bytes("\ufeff[source]\npath = 'C:\\Users\\ana\\Backup'\n".encode())
    assert str(load_config(config).source.path) == "C:\\Users\\ana\\Backup"
    config.write_text('[source]\npath = "C:\\Users\\ana\\Backup"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML") as pasted:
        load_config(config)
    assert "write a Windows path in single quotes (path = 'C:\\Users\\...')" in str(pasted.value)


def test_a_view_allows_only_declared_keys_and_what_derives_from_them() -> None:
    """Tables declare their keys, properties read through the view, paths are always there."""
    config = config_from_dict(
        {"sessions": {"start_date": "2024-01-01", "timezone": "Europe/Paris"}, "finetune": {"local": {"base_model": "demo"}}},
        base_dir=PROJECT,
    )
    view = ConfigView(config, ["finetune.local", "sessions.start_date", "sessions.end_date", "sessions.timezone"], "stage x")
    assert view.finetune.local.is_demo and view.finetune.local.seed == 42
    assert view.dates == config.dates == DateRange(start=1704063600.0, end=None)  # parsed once, midnight in Paris
    assert view.artifacts_dir == config.artifacts_dir
    for read in (lambda: view.finetune.model, lambda: view.source.path, lambda: view.uses_demo, lambda: view.get("dataset.ai_sender")):
        with pytest.raises(UndeclaredKey, match="stage x read the config key"):
            read()
    with pytest.raises(UndeclaredKey, match="declares dataset.no_such_key, which the configuration does not have"):
        ConfigView(config, ["dataset.no_such_key"], "stage y")


def test_run_options_come_from_the_environment_in_one_place() -> None:
    assert RunOptions.from_environ({}) == RunOptions()
    options = RunOptions.from_environ(
        {"IMESSAGE_FINETUNE_VERBOSITY": "0", "IMESSAGE_FINETUNE_YES": "1", "IMESSAGE_FINETUNE_RAISE_ERRORS": "1"}
    )
    assert (options.verbosity, options.assume_yes, options.raise_errors) == (0, True, True)
    assert RunOptions.from_environ({"IMESSAGE_FINETUNE_VERBOSITY": "loud"}).verbosity == 1
