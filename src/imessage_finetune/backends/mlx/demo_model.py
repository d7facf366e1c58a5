"""The MLX demo base model: a tiny Qwen2-shaped model with random weights, built on this
machine in the layout mlx-lm loads (a Hugging Face folder: config.json, model.safetensors,
the tokenizer), so `doit train` with `backend = "mlx"` runs end to end with no download.

The weights are drawn with NumPy's PCG64 from a fixed seed and written with safetensors'
NumPy writer, so every build on every machine has the same bytes, and neither MLX nor
PyTorch is needed to build it (transformers can load it too). Its shape and tokenizer are the
torch demo model's (byte-level, ChatML). It is a demonstration, not a model to talk to.
"""

from __future__ import annotations

import json
from pathlib import Path

from imessage_finetune.atomic import atomic_dir
from imessage_finetune.backends.demo_tokenizer import build_demo_tokenizer

# Bumped whenever the model below changes: the train stage reruns and the folder is rebuilt.
DEMO_MODEL_VERSION = 1
VERSION_FILE = "imessage-finetune-demo-version"
SEED = 0
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
INIT_STD = 0.02  # transformers' initializer_range for Qwen2


def build_demo_model(folder: Path) -> Path:
    """Write the demo model and tokenizer into `folder` (replaced whole, never half-written)."""
    import numpy as np
    from safetensors.numpy import save_file

    tokenizer = build_demo_tokenizer()
    vocab = len(tokenizer)
    head = HIDDEN // HEADS
    random = np.random.default_rng(SEED)

    def normal(*shape: int) -> np.ndarray:
        return random.normal(0.0, INIT_STD, shape).astype(np.float32)

    weights = {"model.embed_tokens.weight": normal(vocab, HIDDEN), "model.norm.weight": np.ones(HIDDEN, np.float32)}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        shapes = {
            "self_attn.q_proj": (HEADS * head, HIDDEN),
            "self_attn.k_proj": (KV_HEADS * head, HIDDEN),
            "self_attn.v_proj": (KV_HEADS * head, HIDDEN),
            "self_attn.o_proj": (HIDDEN, HEADS * head),
            "mlp.gate_proj": (INTERMEDIATE, HIDDEN),
            "mlp.up_proj": (INTERMEDIATE, HIDDEN),
            "mlp.down_proj": (HIDDEN, INTERMEDIATE),
        }
        for name, shape in shapes.items():
            weights[f"{prefix}{name}.weight"] = normal(*shape)
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                weights[f"{prefix}{name}.bias"] = np.zeros(shape[0], np.float32)
        weights[f"{prefix}input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[f"{prefix}post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "torch_dtype": "float32",
    }
    with atomic_dir(folder) as staging:
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(staging)
        (staging / VERSION_FILE).write_text(f"{DEMO_MODEL_VERSION}\n", encoding="utf-8")
    return folder


def is_current(folder: Path) -> bool:
    """True when `folder` holds the demo model of this version."""
    marker = folder / VERSION_FILE
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == str(DEMO_MODEL_VERSION)
