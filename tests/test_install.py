"""install.py, the quick start's set-up step: which PyTorch build it chooses for which machine,
and how it finds a CPU build (hermetic: pip looks only in a folder the test makes)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "install.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


install = _load()


@pytest.mark.parametrize(
    ("system", "machine", "gpu", "requested", "build"),
    [
        ("Darwin", "arm64", False, "auto", "default"),  # PyPI's macOS wheels are CPU + MPS builds
        ("Darwin", "x86_64", False, "auto", "none"),  # no PyTorch >= 2.4 for Intel Macs
        ("Linux", "x86_64", True, "auto", "default"),  # PyPI's Linux wheels are CUDA builds
        ("Linux", "x86_64", False, "auto", "cpu"),  # ... which a machine without an NVIDIA GPU cannot use
        ("Linux", "aarch64", False, "auto", "cpu"),  # PyPI's aarch64 wheels are CUDA builds too now
        ("Windows", "AMD64", False, "auto", "default"),  # PyPI's Windows wheels are CPU builds
        ("Linux", "x86_64", True, "cpu", "cpu"),
        ("Linux", "x86_64", False, "default", "default"),
    ],
)
def test_the_build_suits_the_machine_or_what_was_asked(
    system: str, machine: str, gpu: bool, requested: str, build: str
) -> None:
    choice = install.choose(system, machine, gpu, requested)
    assert choice.build == build and choice.reason


def _ran(returncode: int, stdout: str):  # type: ignore[no-untyped-def]
    return lambda command: subprocess.CompletedProcess(command, returncode, stdout, "")


def test_the_next_command_is_spelled_as_the_system_runs_it() -> None:
    """Windows keeps a virtual environment's commands in Scripts\\, not bin/."""
    assert install.venv_command("doit", "win32") == ".venv\\Scripts\\doit"
    assert install.venv_command("doit", "linux") == ".venv/bin/doit"
    assert install.venv_command("doit", "darwin") == ".venv/bin/doit"


def test_an_nvidia_gpu_is_one_the_driver_or_nvidia_smi_lists(tmp_path: Path) -> None:
    """The driver's GPU list, or `nvidia-smi -L`; the CUDA toolkit or a failing driver is not a GPU."""
    gpus = tmp_path / "gpus"
    gpus.mkdir()
    no_smi = lambda name: None  # noqa: E731
    smi = lambda name: "/usr/bin/nvidia-smi"  # noqa: E731
    assert not install.has_nvidia_gpu(tmp_path / "absent", _ran(0, ""), no_smi)
    assert not install.has_nvidia_gpu(gpus, _ran(0, ""), no_smi)  # driver loaded, no GPU listed
    (gpus / "0000:01:00.0").mkdir()
    assert install.has_nvidia_gpu(gpus, _ran(1, ""), no_smi)
    listed = "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-0f0e)\n"
    assert install.has_nvidia_gpu(tmp_path / "absent", _ran(0, listed), smi)
    failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    assert not install.has_nvidia_gpu(tmp_path / "absent", _ran(9, failed), smi)
    assert not install.has_nvidia_gpu(tmp_path / "absent", _ran(0, "No devices were found\n"), smi)


def test_the_newest_cpu_build_is_taken_from_pips_listing() -> None:
    """`+cpu` releases only, compared as numbers, not below the local extra's torch>=2.4."""
    here = "torch (2.15.0)\nAvailable versions: 2.15.0, 2.14.1, 2.14.0, 2.13.0+cpu, 2.13.0, 2.12.1\n"
    assert install.newest_cpu_version(here) == "2.13.0+cpu"
    index = "torch (2.10.0+cpu)\nAvailable versions: 2.10.0+cpu, 2.10.0, 2.9.1+cpu, 2.9.1, 2.3.1+cpu\n"
    assert install.newest_cpu_version(index) == "2.10.0+cpu"
    assert install.newest_cpu_version("Available versions: 2.9.1+cpu, 2.10.0+cpu") == "2.10.0+cpu"
    assert install.newest_cpu_version("Available versions: 2.3.1+cpu, 2.9.1+cu128, 2.9.1") is None
    assert install.newest_cpu_version("ERROR: No matching distribution found for torch") is None


class _Forbidden(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_index_that_answers_is_reachable_even_with_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any HTTP answer means the host is there; a refused connection means it is not."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = HTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert install.reachable(f"http://127.0.0.1:{server.server_address[1]}/whl/cpu/torch/", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert not install.reachable(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5)


def _dry_run(tmp_path: Path, wheels: list[str]) -> subprocess.CompletedProcess[str]:
    """install.py --dry-run --torch cpu in a copy of the project, pip limited to a folder of
    wheel names, and PyTorch's index made unreachable through a proxy that refuses."""
    project, links = tmp_path / "project", tmp_path / "wheels"
    project.mkdir()
    links.mkdir()
    shutil.copy(SCRIPT, project / "install.py")
    for name in wheels:
        (links / name).write_bytes(b"")  # pip lists releases by file name
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and "proxy" not in k.lower()}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links),
               HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    return subprocess.run(
        [sys.executable, str(project / "install.py"), "--dry-run", "--torch", "cpu"],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_a_dry_run_finds_the_newest_cpu_build_pip_can_see(tmp_path: Path) -> None:
    """The CPU index cannot be reached: the newest `+cpu` build among pip's own sources is chosen."""
    done = _dry_run(tmp_path, ["torch-2.11.0+cpu-py3-none-any.whl", "torch-2.12.0-py3-none-any.whl",
                               "torch-2.3.1+cpu-py3-none-any.whl"])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "install: chose PyTorch's CPU build, as asked (--torch cpu)"
    assert "cannot be reached; looking for a CPU build among pip's configured sources" in lines[1]
    assert "install: would run: pip install torch==2.11.0+cpu" in lines
    assert lines[-1].startswith("install: would run: pip install -e ") and lines[-1].endswith("[test,local]")
    assert not (tmp_path / "project" / ".venv").exists()


def test_without_a_cpu_build_it_stops_and_says_what_to_do(tmp_path: Path) -> None:
    """Only CUDA builds in sight: nothing is installed; the message names the way out."""
    done = _dry_run(tmp_path, ["torch-2.12.0-py3-none-any.whl"])
    assert done.returncode == 1
    assert "pip found no CPU build of PyTorch" in done.stderr and "--torch default" in done.stderr
