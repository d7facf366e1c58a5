"""Benchmark: the two backends that train here, `local` (PyTorch) and `mlx` (MLX), on this
machine's CPU: the same tokenized examples, the same random base model, the same settings.

The question: what does a step cost in time and memory with each, on the same work? Both
train a LoRA adapter with the defaults of `[finetune.local]` / `[finetune.mlx]` (rank 16,
alpha 32, dropout 0.05, every linear layer of every block, learning rate 2e-4 with 5 %
warm-up and linear decay, batch 4, gradient norm 1.0), one epoch, on the demo's train.jsonl
(repeated) rendered once with the shared `ExampleBuilder`, from one random Qwen2-shaped base
model saved by transformers (hidden 256, 4 layers: the matrix work, not the per-step
overhead, dominates) that both load.

Contenders, each in a fresh interpreter:
- `torch`: the local backend's loop (`backends.local.trainer.train_adapter`) on the CPU;
- `mlx`: the MLX backend's loop (`backends.mlx.trainer.train_adapter`) as the backend runs it
  on a CPU, without mx.compile;
- `mlx-compiled`: the same with mx.compile on (as on a Mac's GPU), its C++ kernels already in
  MLX's cache; `mlx-compiled-cold` is the first such run, with an empty cache, which builds
  them (once: it shows what that costs).

Time per step is the steady rate (first step to last, divided by the steps between them); the
whole training call (loss before and after included) and the process are timed too. Peak RSS
comes from `os.wait4` in this process, which imports only the standard library (a
vfork-started child inherits its parent's peak RSS); MLX's own allocator peak is printed too.
Repetitions are interleaved and medians reported, with ratios mlx / torch. No message text is
printed.

A Mac's figures cannot be measured on this machine (Linux, no Apple GPU): these are CPU
figures only, and say nothing of MLX on Apple silicon.

    pip install -e '.[local,mlx]'
    python bench/bench_mlx_training.py                   # demo data x2, 3 repetitions
    python bench/bench_mlx_training.py --repeat 1 --repetitions 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The demo's train.jsonl and the base model both backends load. Argument: the work folder.
SETUP = """
import subprocess, sys
from pathlib import Path
work = Path(sys.argv[1])
(work / "finetune.toml").write_text('[source]\\npath = "demo"\\n[artifacts]\\ndir = "out"\\n')
subprocess.run([str(Path(sys.executable).parent / "imessage-finetune"), "--quiet", "--config",
                str(work / "finetune.toml"), "run", "dataset"], check=True)
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from imessage_finetune.backends.demo_tokenizer import build_demo_tokenizer
tokenizer = build_demo_tokenizer()
config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688,
                     num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                     max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=None,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
torch.manual_seed(0)
Qwen2ForCausalLM(config).save_pretrained(work / "base")
tokenizer.save_pretrained(work / "base")
"""

# The examples, from the shared builder with the base model's tokenizer (the same for both).
EXAMPLES = """
import json, sys, time
from pathlib import Path
work, repeat = Path(sys.argv[1]), int(sys.argv[2])
from transformers import AutoTokenizer
from imessage_finetune.backends.examples import ExampleBuilder
from imessage_finetune.backends.training import loss_sample
lines = [json.loads(l) for l in (work / "out" / "train.jsonl").read_text().splitlines()] * repeat
examples = ExampleBuilder(AutoTokenizer.from_pretrained(work / "base"), 1024).build(lines)
sample = loss_sample(examples)
stamps = []
on_event = lambda e: stamps.append(time.perf_counter())
def report(seconds, result, loss_after, **extra):
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    print(json.dumps({"step_s": steady, "train_s": seconds, "steps": result.steps, "examples": len(examples),
                      "loss_before": result.train_loss_start, "loss_after": loss_after, **extra}))
"""

TORCH = EXAMPLES + """
import tempfile
from imessage_finetune.backends import local
local.quiet_libraries()
from imessage_finetune.backends.local import base_model
from imessage_finetune.backends.local.checkpoints import CheckpointStore
from imessage_finetune.backends.local.trainer import mean_loss, train_adapter
from imessage_finetune.config import LocalConfig
settings = LocalConfig(base_model=str(work / "base"), epochs=1, checkpoint_steps=10**9)
model, tokenizer, _ = base_model.load(base_model.locate(settings.base_model, work, work / "out"), "cpu")
start = time.perf_counter()
with tempfile.TemporaryDirectory() as checkpoints:
    model, result = train_adapter(model, examples, [], settings, pad_token_id=tokenizer.pad_token_id, device="cpu",
                                  store=CheckpointStore(Path(checkpoints)), run_id="bench", on_event=on_event)
seconds = time.perf_counter() - start
report(seconds, result, mean_loss(model, sample, 4, tokenizer.pad_token_id, "cpu"))
"""

MLX = EXAMPLES + """
import tempfile
import mlx.core as mx
from imessage_finetune.backends import mlx as mlx_backend
mlx_backend.quiet_libraries()
mlx_backend.resolve_device("cpu")
if sys.argv[3] == "compiled":
    mx.enable_compile()
from imessage_finetune.backends.mlx import base_model
from imessage_finetune.backends.mlx.checkpoints import CheckpointStore
from imessage_finetune.backends.mlx.trainer import add_lora, mean_loss, train_adapter
from imessage_finetune.config import MlxConfig
settings = MlxConfig(base_model=str(work / "base"), epochs=1, checkpoint_steps=10**9)
model, tokenizer = base_model.load(base_model.locate(settings.base_model, work, work / "out"))
start = time.perf_counter()
add_lora(model, settings)
with tempfile.TemporaryDirectory() as checkpoints:
    result = train_adapter(model, examples, [], settings, store=CheckpointStore(Path(checkpoints)), run_id="bench",
                           on_event=on_event)
seconds = time.perf_counter() - start
report(seconds, result, mean_loss(model, sample, 4), mlx_peak_mb=mx.get_peak_memory() / 2**20)
"""


def run(program: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a program in a fresh interpreter; its JSON line, wall time and peak RSS."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", program, *args], stdout=subprocess.PIPE, stderr=errors, env={**os.environ, **(env or {})}
        )
        output = child.stdout.read() if child.stdout else b""
        # wait4 rather than wait(): it also returns this child's own resource usage.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(errors.read().decode(errors="replace")[-2000:])
    result = json.loads(output.decode().strip().splitlines()[-1]) if output.strip() else {}
    return {**result, "process_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="copies of the demo's train.jsonl (default 2)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imessage-finetune-bench-mlx-") as folder:
        work = Path(folder)
        run(SETUP, str(work))
        args = (str(work), str(options.repeat))
        # MLX keeps compiled CPU kernels in $TMPDIR/mlx: a private one, empty for the first run.
        cache = work / "mlx-kernels"
        cache.mkdir()
        cold = run(MLX, *args, "compiled", env={"TMPDIR": str(cache)})
        print(f"mlx-compiled-cold: {json.dumps(cold)}", file=sys.stderr)
        contenders = {
            "torch": lambda: run(TORCH, *args),
            "mlx": lambda: run(MLX, *args, "plain", env={"TMPDIR": str(cache)}),
            "mlx-compiled": lambda: run(MLX, *args, "compiled", env={"TMPDIR": str(cache)}),
        }
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for _ in range(options.repetitions):
            for name, contender in contenders.items():
                samples[name].append(contender())
                print(f"{name}: {json.dumps(samples[name][-1])}", file=sys.stderr)
        samples["mlx-compiled-cold"] = [cold]
    medians = {name: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for name, runs in samples.items()}
    torch = medians["torch"]
    results = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "repetitions": options.repetitions,
        "medians": medians,
        "ratios_to_torch": {
            name: {
                "step_time": round(m["step_s"] / torch["step_s"], 3),
                "training_time": round(m["train_s"] / torch["train_s"], 3),
                "peak_rss": round(m["peak_rss_mb"] / torch["peak_rss_mb"], 3),
            }
            for name, m in medians.items()
            if name != "torch"
        },
        "rss_floor_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(results, indent=2))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
