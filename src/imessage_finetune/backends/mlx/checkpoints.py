"""The resumable state of an MLX training run: adapter weights, optimiser state, the loss
measured before training.

Each checkpoint is a folder `step-00000040/` written completely under a temporary name and
then renamed (`atomic_dir`); `latest.json` (replaced atomically) names the newest and the
run it belongs to. A kill at any moment leaves either the previous checkpoint or the new
one, and a checkpoint of another run (other data, settings or base model) is never resumed.
The random state needs no saving: each step's dropout is seeded by the seed and the step.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune.atomic import atomic_dir, atomic_write
from imessage_finetune.jsonio import dump_json, load_json

POINTER = "latest.json"
ADAPTER_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    """A saved point of a run: the step reached, and what to restore (flat name -> array)."""

    step: int
    adapter: dict[str, Any]
    optimizer: dict[str, Any]
    state: dict[str, Any]


class CheckpointStore:
    """The checkpoints folder of one project."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(
        self, run_id: str, step: int, adapter: dict[str, Any], optimizer: dict[str, Any], state: dict[str, Any]
    ) -> None:
        """Record `step` of run `run_id`; older checkpoints are removed once it is safe."""
        import mlx.core as mx

        name = f"step-{step:08d}"
        with atomic_dir(self.folder / name) as staging:
            mx.save_safetensors(str(staging / ADAPTER_FILE), adapter)
            mx.save_safetensors(str(staging / OPTIMIZER_FILE), optimizer)
            (staging / STATE_FILE).write_bytes(dump_json(state))
        with atomic_write(self.folder / POINTER) as handle:
            handle.write(dump_json({"run": run_id, "step": step, "folder": name}))
        for old in self.folder.iterdir():
            if old.name not in (name, POINTER):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)

    def load(self, run_id: str) -> Checkpoint | None:
        """The newest checkpoint of run `run_id`, or None (none, or another run's)."""
        import mlx.core as mx

        pointer = self.folder / POINTER
        if not pointer.is_file():
            return None
        saved = load_json(pointer.read_bytes())
        if saved.get("run") != run_id:
            return None
        folder = self.folder / saved["folder"]
        return Checkpoint(
            step=saved["step"],
            adapter=_arrays(mx.load(str(folder / ADAPTER_FILE))),
            optimizer=_arrays(mx.load(str(folder / OPTIMIZER_FILE))),
            state=load_json((folder / STATE_FILE).read_bytes()),
        )

    def clear(self) -> None:
        """Remove every checkpoint (after a run finished, or before a different run starts)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _arrays(loaded: Any) -> dict[str, Any]:
    """mx.load's result for a safetensors file: a dict of arrays."""
    assert isinstance(loaded, dict)
    return dict(loaded)
