"""Nothing is unpickled: a scan of the source tree, and a booby-trapped checkpoint that must not run.

The other two security rules are tested where they live: the upload size limit in
tests/test_app.py::test_uploads_over_the_size_limit_are_refused, training off on a public Space in
tests/test_app.py::test_training_is_off_on_a_public_space_unless_enabled, and path confinement in
tests/test_paths.py.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


def source_files() -> list[Path]:
    skip = {"venv", ".venv", ".git", "node_modules", "runs", "data", "cache"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts[:-1]))


def keyword(call: ast.Call, name: str):
    for item in call.keywords:
        if item.arg == name:
            return item.value.value if isinstance(item.value, ast.Constant) else "<not a constant>"
    return None


def problems_in(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this_file = path.resolve() == Path(__file__).resolve()
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not this_file:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
            if owner == "torch" and func.attr == "load" and keyword(node, "weights_only") is not True:
                found.append(f"{where}: torch.load without weights_only=True")
            if owner in {"np", "numpy"} and func.attr == "load" and keyword(node, "allow_pickle") not in (None, False):
                found.append(f"{where}: np.load with allow_pickle")
            if owner in {"pd", "pandas"} and func.attr == "read_pickle":
                found.append(f"{where}: pandas.read_pickle")
            if owner == "yaml" and func.attr in {"load", "unsafe_load", "full_load"}:
                found.append(f"{where}: yaml.{func.attr} (use yaml.safe_load)")
        elif isinstance(func, ast.Name) and func.id in {"eval", "exec"}:
            found.append(f"{where}: {func.id}()")
    return found


def test_the_scan_sees_the_whole_tree():
    files = {str(p.relative_to(ROOT)) for p in source_files()}
    assert {"app.py", "mvnet/pipeline.py", "train/checkpoint.py", "train/feature_cache.py"} <= files


def test_nothing_in_the_source_tree_unpickles():
    found = [problem for path in source_files() for problem in problems_in(path)]
    assert found == []


def test_the_scan_catches_what_it_looks_for(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, pickle\nimport numpy as np\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
                   "np.load('y', allow_pickle=True)\neval('1')\nmodel.eval()\ntorch.load('z', weights_only=True)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = problems_in(bad)
    assert [f.split(": ", 1)[1] for f in found] == [
        "imports pickle", "torch.load without weights_only=True", "torch.load without weights_only=True",
        "np.load with allow_pickle", "eval()"]


class _Trap:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_booby_trapped_checkpoint_is_refused_without_running_it(tmp_path):
    from train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint

    marker = tmp_path / "code-ran"
    torch.save({"model": {}, "step": 1, "payload": _Trap(str(marker))}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_weights_are_safetensors_only(tmp_path):
    """A weights folder whose tensor file is a pickle is refused with WeightsError, and nothing runs."""
    from mvnet.pipeline import MVNet, WeightsError, untrained

    folder = untrained(seed=0, device="cpu").save_pretrained(tmp_path / "weights")
    marker = tmp_path / "code-ran"
    torch.save({"payload": _Trap(str(marker))}, folder / "encoder.safetensors")
    with pytest.raises(WeightsError, match="encoder.safetensors"):
        MVNet.from_pretrained(folder, device="cpu")
    assert not marker.exists()
