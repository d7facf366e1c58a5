"""Shared fixtures: the real Apple test data beside the project, a chat.db builder, and a
phone's databases for iPhone backups."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatdb_builder import ChatDbBuilder
from ios_backup_builder import PhoneHistory, phone_history

pytest_plugins = ["fake_openai", "trained_demo"]
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "chatdb-fixtures"


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/chatdb-fixtures (GPL-3.0 test data, read in place; skip when absent)."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"Apple test data not found at {SHARED_FIXTURES} (it lives beside the project)")
    return SHARED_FIXTURES


@pytest.fixture
def builder(tmp_path: Path) -> ChatDbBuilder:
    """An empty chat.db in the macOS 15 schema, in rollback-journal mode."""
    db = ChatDbBuilder(tmp_path / "chat.db")
    yield db
    db.conn.close()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> PhoneHistory:
    """A phone's Messages and Contacts databases (built once per module) for backups of it."""
    return phone_history(tmp_path_factory.mktemp("phone"))
