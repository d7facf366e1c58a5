"""A pytest plugin: one project whose demo model is trained briefly, shared by the tests of
everything that uses a trained model (`serve`, `export`).

The demo pipeline runs as a user runs it (doit, in its own process) on the built-in demo
data; the tiny random base model is trained for one epoch (15 steps) at a learning rate that
moves it visibly. `chat` settings are chosen so replies run to a few characters: the
demonstration model otherwise tends to end its turn at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_runner import run_doit, write_config

SYSTEM_PROMPT = "You are me."
SETTINGS = (
    f'[dataset]\nsystem_prompt = "{SYSTEM_PROMPT}"\n'
    '[finetune]\nbackend = "local"\n'
    '[finetune.local]\nbase_model = "demo"\nlearning_rate = 5e-3\nepochs = 1\n'
    "temperature = 1.3\nmax_new_tokens = 24\nseed = 7\n"
)


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config file of a project with artifacts/model.json and its adapter (in `out/`)."""
    pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")
    folder = tmp_path_factory.mktemp("trained-demo")
    config = write_config(folder, "demo", SETTINGS)
    result = run_doit(config, "train")
    assert result["exit"] == "0", result.stderr
    return config
