"""Run folders: options.json, log.txt, metrics.jsonl, curves.png, samples/ (one folder per training run).

Only the writing process (rank 0 under torchrun) creates a `RunFolder` with `writer=True`; the others get a
silent one, so stage code calls the same methods everywhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mvnet.files import atomic_file, atomic_write_bytes, atomic_write_json  # noqa: F401 (re-exported)


def read_finished_run(run_dir, meta_name: str, stage: str, command: str) -> tuple[Path, dict]:
    """(run folder, its metadata JSON) of a finished run; a clear error when the run is not finished."""
    from train.config import ConfigError

    run_dir = Path(run_dir)
    meta_path = run_dir / meta_name
    if not meta_path.exists():
        raise ConfigError(f"{run_dir} is not a finished {stage} run ({meta_name} is missing): "
                          f"train it first ({command})")
    return run_dir, json.loads(meta_path.read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash mid-append; resume rewrites the file
                continue
    return rows


class RunFolder:
    def __init__(self, run_dir: str | Path, writer: bool = True):
        self.path = Path(run_dir)
        self.writer = writer
        if writer:
            (self.path / "samples").mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_options(self, options: dict) -> None:
        if self.writer:
            atomic_write_json(self.path / "options.json", options)

    def log(self, message: str) -> None:
        if self.writer:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path / "log.txt", "a") as f:
                f.write(f"{stamp} {message}\n")

    def metrics(self, row: dict) -> None:
        """Append one JSON line (a step summary or an epoch summary; `kind` says which)."""
        if self.writer:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, keep_step: int) -> None:
        """On resume: drop rows written after the checkpoint's step, so the file reads as one clean run."""
        if not self.writer:
            return
        rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_step]
        atomic_write_bytes(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())

    def plot_curves(self, keys: list[str], title: str) -> Path | None:
        """curves.png: the step-level values of `keys` from metrics.jsonl (smoothed), one panel each."""
        if not self.writer:
            return None
        rows = [r for r in read_metrics(self.path) if r.get("kind") == "step"]
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        present = [k for k in keys if any(k in r for r in rows)]
        fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4 * max(1, len(present)), 3), squeeze=False)
        for ax, key in zip(axes[0], present, strict=False):
            xs = np.array([r["step"] for r in rows if key in r])
            ys = np.array([r[key] for r in rows if key in r], dtype=float)
            ax.plot(xs, ys, alpha=0.3, lw=0.8)
            if len(ys) >= 10:
                w = max(2, len(ys) // 20)
                smooth = np.convolve(ys, np.ones(w) / w, mode="valid")
                ax.plot(xs[w - 1 :], smooth, lw=1.5)
            ax.set_title(key)
            ax.set_xlabel("step")
        fig.suptitle(title)
        fig.tight_layout()
        out = self.path / "curves.png"
        with atomic_file(out) as f:
            fig.savefig(f, dpi=80, format="png")
        plt.close(fig)
        return out
