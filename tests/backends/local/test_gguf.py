"""GGUF base models: found by path or inside an installed package, refused in one line when the
file is not GGUF or of an architecture transformers cannot dequantize."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the local backend's extra is not installed: pip install -e '.[local]'")
gguf = pytest.importorskip("gguf", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from imessage_finetune import artifacts  # noqa: E402
from imessage_finetune.backends.local import base_model  # noqa: E402
from imessage_finetune.errors import TrainingError  # noqa: E402
from pipeline_runner import run_doit, write_config  # noqa: E402


def write_gguf(path: Path, architecture: str) -> Path:
    """A small but real GGUF file (one tensor) declaring `architecture`."""
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_file_is_found_by_path_or_inside_an_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    write_gguf(tmp_path / "models" / "m.Q4.gguf", "llama")
    source = base_model.locate("models/m.Q4.gguf", tmp_path, tmp_path / "out")
    assert source.file == tmp_path / "models" / "m.Q4.gguf" and source.gguf_file == "m.Q4.gguf"
    assert base_model.folder_files("models/m.Q4.gguf", tmp_path) == [tmp_path / "models" / "m.Q4.gguf"]
    package = tmp_path / "site" / "shipped_model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing this package is never needed')\n")
    write_gguf(package / "tiny.gguf", "llama")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert (
        base_model.locate("shipped_model/tiny.gguf", tmp_path / "elsewhere", tmp_path / "out").file
        == package / "tiny.gguf"
    )
    with pytest.raises(
        base_model.BaseModelNotFound, match=r"no such GGUF file .* nor in an installed Python package 'nowhere'"
    ):
        base_model.locate("nowhere/x.gguf", tmp_path, tmp_path / "out")


def test_a_file_that_is_not_gguf_is_one_line_and_trains_nothing(tmp_path: Path) -> None:
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(TrainingError, match=r"base_model 'fake.gguf' is not a GGUF file"):
        base_model.locate("fake.gguf", tmp_path, tmp_path / "out")
    config = write_config(tmp_path, "demo", '[finetune.local]\nbase_model = "fake.gguf"\n')
    result = run_doit(config, "train")
    assert result["train"] == "fail" and result["dataset"] == "success"
    assert "[finetune.local] base_model 'fake.gguf' is not a GGUF file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / artifacts.MODEL.filename).exists()


def test_an_architecture_transformers_cannot_dequantize_is_named(tmp_path: Path) -> None:
    write_gguf(tmp_path / "odd.gguf", "imaginary")
    source = base_model.locate("odd.gguf", tmp_path, tmp_path / "out")
    with pytest.raises(
        TrainingError,
        match=r"a GGUF file of architecture 'imaginary', which transformers .* cannot dequantize; .*llama",
    ):
        base_model.load(source, "cpu")
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00")
    with pytest.raises(TrainingError, match=r"cut.gguf is a damaged GGUF file"):
        base_model.load(base_model.locate("cut.gguf", tmp_path, tmp_path / "out"), "cpu")
