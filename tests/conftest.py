"""Shared fixtures: the real Apple test data beside the project, and a chat.db builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatdb_builder import ChatDbBuilder

pytest_plugins = ["fake_openai"]
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
