"""Stage `demo`: the built-in demonstration database (`artifacts/demo-source/chat.db` and its
Contacts database), generated in code (`fixtures/demo.py`), for the demo source only."""

from __future__ import annotations

from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.config import Config, ConfigView
from imessage_finetune.fixtures.demo import DEMO_VERSION, build_demo
from imessage_finetune.stages.stage import Stage, StageContext


def run(ctx: StageContext) -> None:
    """Write the demo's chat.db and AddressBook, byte-identical on every run."""
    paths = build_demo(artifacts.demo_source_dir(ctx.artifacts_dir))
    ctx.say(f"built the demonstration database {paths.chat_db}")


def params(config: ConfigView) -> dict[str, Any]:
    """The demo's bytes change only with its version."""
    return {"demo_version": DEMO_VERSION}


def applies(config: Config) -> bool:
    """Only the demo source has a demo stage."""
    return config.uses_demo


STAGE = Stage(
    name="demo",
    doc="Generate the built-in demo chat.db and Contacts database.",
    run=run,
    writes=(artifacts.DEMO_SOURCE_CHAT_DB, artifacts.DEMO_SOURCE_ADDRESSBOOK),
    params=params,
    applies=applies,
    not_applicable='the demo stage builds the demonstration database, and [source] path is not "demo"',
)
