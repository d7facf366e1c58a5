"""Benchmark: the local backend's training loop against transformers' `Trainer`.

The question: does our own loop (seeded order, checkpoints with random state, Ctrl-C between
steps, loss before and after) cost time or memory compared with what a user would otherwise
write, `transformers.Trainer` on a peft model? Both contenders train the same LoRA adapter
(the default `[finetune.local]` settings: rank 16, alpha 32, dropout 0.05, all linear
layers, learning rate 2e-4 with 5 % warm-up and linear decay, batch 4, 3 epochs, gradient
norm 1.0) on the same tokenized examples (the demo's train.jsonl, repeated), from the same
random base model, on the CPU. Tokenization is shared, so only the training is compared.

Each contender runs in a fresh interpreter; wall time of the training alone is measured in
the child, the whole child's wall time and peak RSS (`os.wait4`) in this process, which
imports only the standard library (a vfork-started child inherits its parent's peak RSS).
Repetitions are interleaved and medians reported, as ratios ours / reference. The loss on
the same sample of training examples after training is printed for both, to show they
trained alike. No message text is printed.

    pip install -e '.[local,bench]'
    python bench/bench_local_training.py                  # demo data x4, 3 repetitions
    python bench/bench_local_training.py --repeat 2 --repetitions 1   # quick check
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

# Builds the demo's train.jsonl (the pipeline up to `dataset`) and a random base model in
# the demo's shape but larger (hidden 256, 4 layers, 1.8M weights besides the embeddings),
# so that the matrix work, not the per-step overhead, dominates. Arguments: the work folder.
SETUP = """
import subprocess, sys
from pathlib import Path
work = Path(sys.argv[1])
(work / "finetune.toml").write_text('[source]\\npath = "demo"\\n[artifacts]\\ndir = "out"\\n')
subprocess.run([str(Path(sys.executable).parent / "imessage-finetune"), "--quiet", "--config",
                str(work / "finetune.toml"), "run", "dataset"], check=True)
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from imessage_finetune.backends.local.tiny_model import build_demo_model
demo = build_demo_model(work / "demo-model")
tokenizer = AutoTokenizer.from_pretrained(demo)
config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688,
                     num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                     max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=None,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
torch.manual_seed(0)
Qwen2ForCausalLM(config).save_pretrained(work / "base")
tokenizer.save_pretrained(work / "base")
"""

# Shared by both contenders: the base model and the tokenized examples, untimed.
# Arguments: the work folder, how many times the demo's train.jsonl is repeated.
LOAD = """
import json, sys, time
from pathlib import Path
work, repeat = Path(sys.argv[1]), int(sys.argv[2])
from imessage_finetune.backends import local
local.quiet_libraries()
import torch
from imessage_finetune.backends.local import base_model
from imessage_finetune.backends.examples import ExampleBuilder
from imessage_finetune.backends.local.trainer import loss_sample, mean_loss
from imessage_finetune.config import LocalConfig
settings = LocalConfig(base_model=str(work / "base"), checkpoint_steps=10**9)
model, tokenizer, _ = base_model.load(base_model.locate(settings.base_model, work, work / "out"), "cpu")
lines = [json.loads(l) for l in (work / "out" / "train.jsonl").read_text().splitlines()] * repeat
examples = ExampleBuilder(tokenizer, settings.max_seq_length).build(lines)
sample = loss_sample(examples)
"""

OURS = LOAD + """
import tempfile
from imessage_finetune.backends.local.checkpoints import CheckpointStore
from imessage_finetune.backends.local.trainer import train_adapter
start = time.perf_counter()
with tempfile.TemporaryDirectory() as checkpoints:
    model, result = train_adapter(model, examples, [], settings, pad_token_id=tokenizer.pad_token_id,
                                  device="cpu", store=CheckpointStore(Path(checkpoints)), run_id="bench")
seconds = time.perf_counter() - start
print(json.dumps({"train_s": seconds, "steps": result.steps, "examples": len(examples),
                  "loss_after": mean_loss(model, sample, 4, tokenizer.pad_token_id, "cpu")}))
"""

REFERENCE = LOAD + """
import tempfile
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments
from imessage_finetune.backends.examples import IGNORE

def collate(batch):
    width = max(len(e["input_ids"]) for e in batch)
    pad = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows])
    return {"input_ids": pad([e["input_ids"] for e in batch], tokenizer.pad_token_id),
            "labels": pad([e["labels"] for e in batch], IGNORE),
            "attention_mask": pad([[1] * len(e["input_ids"]) for e in batch], 0)}

start = time.perf_counter()
torch.manual_seed(settings.seed)
model = get_peft_model(model, LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                                         lora_dropout=settings.lora_dropout,
                                         target_modules=settings.target_modules, task_type="CAUSAL_LM"))
with tempfile.TemporaryDirectory() as out:
    arguments = TrainingArguments(
        output_dir=out, per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        lr_scheduler_type="linear", warmup_steps=max(1, round(0.05 * settings.epochs * -(-len(examples) // settings.batch_size))),
        weight_decay=0.0, max_grad_norm=1.0,
        logging_strategy="no", save_strategy="no", report_to=[], seed=settings.seed,
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    data = [{"input_ids": list(e.input_ids), "labels": list(e.labels)} for e in examples]
    state = Trainer(model=model, args=arguments, train_dataset=data, data_collator=collate).train()
seconds = time.perf_counter() - start
print(json.dumps({"train_s": seconds, "steps": state.global_step, "examples": len(examples),
                  "loss_after": mean_loss(model, sample, 4, tokenizer.pad_token_id, "cpu")}))
"""


def run(program: str, *args: str) -> dict[str, float]:
    """Run a program in a fresh interpreter; its JSON line, wall time and peak RSS."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", program, *args], stdout=subprocess.PIPE, stderr=errors)
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
    parser.add_argument("--repeat", type=int, default=4, help="copies of the demo's train.jsonl (default 4)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imessage-finetune-bench-local-") as folder:
        work = Path(folder)
        run(SETUP, str(work))
        samples: dict[str, list[dict[str, float]]] = {"ours": [], "reference": []}
        for _ in range(options.repetitions):
            for name, program in (("ours", OURS), ("reference", REFERENCE)):
                samples[name].append(run(program, str(work), str(options.repeat)))
                print(f"{name}: {json.dumps(samples[name][-1])}", file=sys.stderr)
    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for name, runs in samples.items()
    }
    ours, reference = medians["ours"], medians["reference"]
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "repetitions": options.repetitions,
        "medians": medians,
        "ratios": {
            "training_time": round(ours["train_s"] / reference["train_s"], 3),
            "process_time": round(ours["process_s"] / reference["process_s"], 3),
            "peak_rss": round(ours["peak_rss_mb"] / reference["peak_rss_mb"], 3),
        },
        "rss_floor_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(results, indent=2))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
