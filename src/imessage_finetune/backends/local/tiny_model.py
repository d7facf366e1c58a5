"""The demo base model: a tiny Qwen2-shaped model with random weights, built on this machine.

It lets `doit train` run end to end with no download and no account, in seconds on a CPU.
Its tokenizer is byte-level (every UTF-8 byte is a token, no merges), its chat template is
ChatML like Qwen's (both from `backends.demo_tokenizer`), and its weights come from a fixed
seed, so every build has the same bytes. It learns the shape of the demo's replies at best:
it is a demonstration, not a model to talk to.
"""

from __future__ import annotations

from pathlib import Path

from imessage_finetune.atomic import atomic_dir
from imessage_finetune.backends.demo_tokenizer import build_demo_tokenizer

# Bumped whenever the model below changes: the train stage reruns and the folder is rebuilt.
DEMO_MODEL_VERSION = 1
VERSION_FILE = "imessage-finetune-demo-version"
SEED = 0


def build_demo_model(folder: Path) -> Path:
    """Write the demo model and tokenizer into `folder` (replaced whole, never half-written)."""
    from imessage_finetune.backends.local import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_demo_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM(config)
    with atomic_dir(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / VERSION_FILE).write_text(f"{DEMO_MODEL_VERSION}\n", encoding="utf-8")
    return folder


def is_current(folder: Path) -> bool:
    """True when `folder` holds the demo model of this version."""
    marker = folder / VERSION_FILE
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == str(DEMO_MODEL_VERSION)
