"""Resumable checkpoints: one file per run (`checkpoint.pt`), written atomically, read with weights_only=True.

A checkpoint holds everything that makes a resumed run continue exactly as if it had never stopped: model and
optimizer state, EMA weights, the step / epoch / position inside the epoch, and the random number generator
states of torch (CPU and CUDA), numpy and Python. Only tensors, numbers, strings, lists and dicts are stored,
so `torch.load(..., weights_only=True)` can read it (no pickled code).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from train.runs import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or was written by a different configuration."""


def rng_state() -> dict:
    """The global RNG states of torch, CUDA, numpy and Python, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def restore_rng_after_resume(state: dict, seed: int, rank: int) -> None:
    """Rank 0 continues its saved random streams exactly; other ranks (whose states are not saved) get a seed
    derived from the step, so a resumed multi-process run stays deterministic."""
    if rank == 0:
        set_rng_state(state["rng"])
    else:
        seed_everything(seed + rank + 7919 * state["step"])


def save_checkpoint(run_dir: str | Path, state: dict) -> Path:
    """Atomically write `state` (plus the RNG states) to <run_dir>/checkpoint.pt."""
    buffer = io.BytesIO()
    torch.save({**state, "rng": rng_state()}, buffer)
    path = Path(run_dir) / CHECKPOINT_NAME
    for stale in Path(run_dir).glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT_NAME} in {run_dir} (start without --resume)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_NAME).exists()
