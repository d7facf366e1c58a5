#!/usr/bin/env python3
"""Set up imessage-finetune in .venv with the PyTorch build that suits this machine.

    python3 install.py && .venv/bin/doit train

PyPI's PyTorch for Linux is a CUDA build: about 3 GB of NVIDIA libraries, which a machine
without an NVIDIA GPU downloads and never uses. So this script chooses, and says what it chose:

    macOS on Apple silicon         PyPI's build (the CPU, and Apple's GPU through MPS)
    macOS on Intel                 none: PyTorch has no build for it after 2.2, the local
                                   backend needs 2.4 (everything up to train.jsonl works)
    Linux with an NVIDIA GPU       PyPI's build (CUDA)
    Linux without one              PyTorch's CPU build, from PyTorch's CPU index
    Windows                        PyPI's build (CPU only; for CUDA see pytorch.org)

then installs the package with its test and local-backend extras (`pip install -e
".[test,local]"`), keeping a PyTorch that .venv already has. `--torch cpu` or `--torch default`
overrides the choice; `--dry-run` shows it without installing anything. Standard library only:
it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MIN_TORCH = (2, 4)  # the local extra's floor, pyproject.toml
REQUIRED_PYTHON = (3, 11)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Choice:
    """Which PyTorch build to install: "cpu" (PyTorch's CPU index), "default" (PyPI's) or
    "none" (no build exists for this machine: install without the local backend)."""

    build: str
    reason: str


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


def has_nvidia_gpu(
    proc: Path = Path("/proc/driver/nvidia/gpus"),
    run: Runner = _run,
    which: Callable[[str], str | None] = shutil.which,
) -> bool:
    """Whether an NVIDIA GPU is usable here: the driver lists one, or `nvidia-smi -L` does.

    The CUDA toolkit alone (nvcc, without a GPU or its driver) does not count.
    """
    try:
        if proc.is_dir() and any(proc.iterdir()):
            return True
    except OSError:
        pass
    if which("nvidia-smi") is None:
        return False
    try:
        listed = run(["nvidia-smi", "-L"])
    except OSError:
        return False
    return listed.returncode == 0 and any(line.startswith("GPU ") for line in listed.stdout.splitlines())


def choose(system: str, machine: str, nvidia_gpu: bool, requested: str = "auto") -> Choice:
    """The build for this operating system and processor (`platform.system()`,
    `platform.machine()`) and GPU, or the one asked for."""
    if requested == "cpu":
        return Choice("cpu", "PyTorch's CPU build, as asked (--torch cpu)")
    if requested == "default":
        return Choice("default", "PyPI's PyTorch build, as asked (--torch default)")
    if system == "Darwin" and machine == "x86_64":
        return Choice(
            "none",
            "macOS on Intel: no PyTorch, so no local backend (PyTorch has no build for Intel Macs after "
            "2.2 and the local backend needs 2.4); `.venv/bin/doit` builds everything up to train.jsonl, "
            'and [finetune] backend = "openai" trains at a service',
        )
    if system == "Darwin":
        return Choice("default", "macOS: PyPI's PyTorch build, which runs on the CPU and on Apple's GPU (MPS)")
    if system == "Linux" and nvidia_gpu:
        return Choice("default", "Linux with an NVIDIA GPU: PyPI's PyTorch build, for CUDA")
    if system == "Linux":
        return Choice(
            "cpu",
            "Linux without an NVIDIA GPU: PyTorch's CPU build (PyPI's is a CUDA build that brings "
            "about 3 GB of NVIDIA libraries this machine cannot use)",
        )
    return Choice("default", f"{system}: PyPI's PyTorch build (on Windows a CPU build; for CUDA see pytorch.org)")


def newest_cpu_version(pip_index_output: str, minimum: tuple[int, int] = MIN_TORCH) -> str | None:
    """The newest `+cpu` release (at least `minimum`) in what `pip index versions torch` printed."""
    match = re.search(r"^Available versions: (.+)$", pip_index_output, re.MULTILINE)
    if match is None:
        return None
    best: tuple[tuple[int, ...], str] | None = None
    for version in (v.strip() for v in match.group(1).split(",")):
        public, _, local = version.partition("+")
        parts = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?$", public)
        if local != "cpu" or parts is None:
            continue
        key = tuple(int(p or 0) for p in parts.groups())
        if key[:2] >= minimum and (best is None or key > best[0]):
            best = (key, version)
    return best[1] if best else None


def reachable(url: str, timeout: float = 10.0) -> bool:
    """Whether `url` answers at all (proxies from the environment are used, as pip does)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:  # an answer, if not the one hoped for: the host is there
        return True
    except OSError:  # no such host, refused, timed out
        return False


def say(text: str) -> None:
    print(f"install: {text}", file=sys.stderr, flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def venv_command(name: str, platform: str = sys.platform) -> str:
    """How to run one of .venv's commands from the project folder, as this system spells it."""
    return f".venv\\Scripts\\{name}" if platform == "win32" else f".venv/bin/{name}"


def pip(python: Path | str, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(python), "-m", "pip", *args]
    if capture:
        return _run(command)
    return subprocess.run(command, text=True, check=False)


def installed_torch(python: Path) -> str | None:
    """The torch version installed for `python`, or None."""
    if not python.exists():
        return None
    found = _run([str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"])
    return found.stdout.strip() if found.returncode == 0 else None


def cpu_torch(python: Path | str) -> tuple[str, list[str]] | str:
    """The requirement of the newest CPU build of torch pip can get and pip's options for it,
    or why there is none.

    From PyTorch's CPU index when it answers; otherwise from the sources pip is configured
    with (a local mirror or wheel folder may hold one).
    """
    options = ["--extra-index-url", CPU_INDEX]
    if not reachable(f"{CPU_INDEX}/torch/"):
        say(f"{CPU_INDEX} cannot be reached; looking for a CPU build among pip's configured sources")
        options = []
    listed = pip(python, "index", "versions", "torch", *options, capture=True)
    if listed.returncode != 0:
        lines = listed.stderr.strip().splitlines()
        return f"pip could not list PyTorch's releases ({lines[-1] if lines else 'no message'})"
    version = newest_cpu_version(listed.stdout)
    return (f"torch=={version}", options) if version else "pip found no CPU build of PyTorch"


def main(argv: Sequence[str] | None = None) -> int:
    """Create .venv, install the chosen PyTorch and the package; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", choices=("auto", "cpu", "default"), default="auto",
                        help="which PyTorch build: chosen for this machine (auto), the CPU build, or PyPI's")
    parser.add_argument("--dry-run", action="store_true", help="say what would be installed, install nothing")
    args = parser.parse_args(argv)

    if sys.version_info < REQUIRED_PYTHON:
        say(f"imessage-finetune needs Python 3.11 or newer, this is {platform.python_version()}: "
            "install a newer Python (python.org, Homebrew or your distribution) and run this with it")
        return 1
    python = venv_python()
    choice = choose(platform.system(), platform.machine(), has_nvidia_gpu(), args.torch)
    torch = installed_torch(python)
    if torch:
        say(f"PyTorch {torch} is already in .venv; keeping it (to choose again, remove .venv first)")
    else:
        say(f"chose {choice.reason}")
    if not python.exists() and not args.dry_run:
        say(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip(python, "install", "--quiet", "--upgrade", "pip")
    steps: list[list[str]] = []
    if torch is None and choice.build == "cpu":
        found = cpu_torch(python if python.exists() else sys.executable)
        if isinstance(found, str):
            say(f"{found}: connect to the internet and run this again, or run `python3 install.py "
                "--torch default` to install PyPI's build (CUDA on Linux, about 3 GB more)")
            return 1
        steps.append(["install", found[0], *found[1]])
    # With torch in place, the local extra's `torch>=2.4` is satisfied and pip keeps that build.
    extras = "test" if choice.build == "none" and torch is None else "test,local"
    steps.append(["install", "-e", f"{HERE}[{extras}]"])
    if args.dry_run:
        for step in steps:
            say(f"would run: pip {' '.join(step)}")
        return 0
    for step in steps:
        if pip(python, *step).returncode != 0:
            say(f"`pip {' '.join(step)}` failed (see above); fix that and run this again")
            return 1
    torch = installed_torch(python)
    if torch is None:
        say(f"done: imessage-finetune without the local backend in {VENV}; next: {venv_command('doit')}")
    else:
        say(f"done: PyTorch {torch} and imessage-finetune in {VENV}; next: {venv_command('doit')} train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
