"""The registry of artifacts: every path the pipeline writes, and the schema each must match.

No other module spells an artifact's file name; stages, tasks, the CLI and tests ask here.
A stage declares what it reads and writes with these (`stages/stage.py`); the schema of an
artifact it writes is then one of its inputs, so a schema change rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class Artifact:
    """One output of the pipeline: its file name in the artifacts folder and its JSON Schema."""

    name: str
    filename: str
    schema: str | None = None

    def path(self, artifacts_dir: Path) -> Path:
        """Where this artifact lives under `artifacts_dir`."""
        return artifacts_dir / self.filename

    @property
    def schema_path(self) -> Path | None:
        """The JSON Schema file this artifact is validated against, if any."""
        return SCHEMAS_DIR / self.schema if self.schema else None


DEMO_SOURCE_DIR = "demo-source"
DEMO_CHAT_DB = "chat.db"
DEMO_ADDRESSBOOK = "AddressBook-v22.abcddb"
STATE_FILE = ".doit-state.json"

# The built-in demo's source databases, generated into the artifacts folder.
DEMO_SOURCE_CHAT_DB = Artifact("demo_source_chat_db", f"{DEMO_SOURCE_DIR}/{DEMO_CHAT_DB}")
DEMO_SOURCE_ADDRESSBOOK = Artifact("demo_source_addressbook", f"{DEMO_SOURCE_DIR}/{DEMO_ADDRESSBOOK}")

SNAPSHOT = Artifact("snapshot", "chat.db")
CONTACTS = Artifact("contacts", "contacts.json", schema="contacts.schema.json")
SESSIONS = Artifact("sessions", "sessions.json", schema="sessions.schema.json")

MERGED = Artifact("merged", "merged.json", schema="merged.schema.json")
TRAIN = Artifact("train", "train.jsonl", schema="train_line.schema.json")
VALIDATION = Artifact("validation", "validation.jsonl", schema="train_line.schema.json")
# The newest conversations, never trained on: what `evaluate` measures the model on.
HELDOUT = Artifact("heldout", "heldout.jsonl", schema="train_line.schema.json")
DATASET_REPORT = Artifact("dataset_report", "dataset-report.json", schema="dataset_report.schema.json")

# Receipts of remote work: never deleted by `doit clean` (forgetting them takes `forget`).
UPLOAD = Artifact("upload", "upload.json", schema="upload.schema.json")
JOB = Artifact("job", "job.json", schema=None)
MODEL = Artifact("model", "model.json", schema="model.schema.json")

# The local backend's outputs: the trained LoRA adapter, the checkpoints of an unfinished run,
# and the demo base model the package builds itself.
LOCAL_MODEL_DIR = "local-model"
ADAPTER = Artifact("adapter", f"{LOCAL_MODEL_DIR}/adapter")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
ADAPTER_CONFIG = Artifact("adapter_config", f"{LOCAL_MODEL_DIR}/adapter/{ADAPTER_FILES[0]}")
ADAPTER_WEIGHTS = Artifact("adapter_weights", f"{LOCAL_MODEL_DIR}/adapter/{ADAPTER_FILES[1]}")
CHECKPOINTS = Artifact("checkpoints", f"{LOCAL_MODEL_DIR}/checkpoints")
# `imessage-finetune export`'s default folder: merged weights and an Ollama Modelfile.
EXPORT = Artifact("export", "export")
DEMO_BASE_MODEL = Artifact("demo_base_model", f"{LOCAL_MODEL_DIR}/demo-base")
LOSS_LOG_PARTIAL = Artifact("loss_log_partial", f"{LOCAL_MODEL_DIR}/training-log.partial.json")

# The train stage's loss by step (any backend), and what `evaluate` writes: the figures and
# the page that shows them.
TRAINING_LOG = Artifact("training_log", "training-log.json", schema="training_log.schema.json")
EVALUATION = Artifact("evaluation", "evaluation.json", schema="evaluation.schema.json")
REPORT = Artifact("report", "report.html")
# [evaluation] compare_partner: a whole second project folder (dataset and model) trained with
# the other partner_in_prompt setting.
PARTNER_VARIANT = Artifact("partner_variant", "evaluation-partner")

# The MLX backend's, in a folder of their own (its adapters are in mlx-lm's format).
MLX_MODEL_DIR = "mlx-model"
MLX_ADAPTER = Artifact("mlx_adapter", f"{MLX_MODEL_DIR}/adapter")
MLX_ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")
MLX_ADAPTER_CONFIG = Artifact("mlx_adapter_config", f"{MLX_MODEL_DIR}/adapter/{MLX_ADAPTER_FILES[0]}")
MLX_ADAPTER_WEIGHTS = Artifact("mlx_adapter_weights", f"{MLX_MODEL_DIR}/adapter/{MLX_ADAPTER_FILES[1]}")
MLX_CHECKPOINTS = Artifact("mlx_checkpoints", f"{MLX_MODEL_DIR}/checkpoints")
MLX_LOSS_LOG_PARTIAL = Artifact("mlx_loss_log_partial", f"{MLX_MODEL_DIR}/training-log.partial.json")
MLX_DEMO_BASE_MODEL = Artifact("mlx_demo_base_model", f"{MLX_MODEL_DIR}/demo-base")

ALL: tuple[Artifact, ...] = (SNAPSHOT, CONTACTS, SESSIONS, MERGED, TRAIN, VALIDATION, HELDOUT, DATASET_REPORT)
RECEIPTS: tuple[Artifact, ...] = (UPLOAD, JOB, MODEL)


def state_file(artifacts_dir: Path) -> Path:
    """doit's state database (JSON backend), kept with the artifacts it describes."""
    return artifacts_dir / STATE_FILE


def demo_source_dir(artifacts_dir: Path) -> Path:
    """Where the built-in demo chat.db and its Contacts database are generated."""
    return artifacts_dir / DEMO_SOURCE_DIR


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the owner only; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
