"""One background training (or corpus build) at a time, with state a page can re-attach to.

The app's Train tab is a view of `Worker.job`: progress, loss curves and the newest artifacts live here, not in
the browser, so a page that is refreshed (or a second visitor) shows the same run as it goes on.

    worker = Worker()
    plan = new_run_plan(run_dir, data_root, settings)      # numbers range-checked: JobError with a message
    worker.start(Job("train", run_dir=run_dir), partial(run_training, plan=plan))
    describe(worker.job, shown=str)                          # -> JobView(fraction, label, state, lines)
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.runs import atomic_write_json

PLAN_NAME = "app_plan.json"
CURVE_KEYS = {"encoder": ("loss",), "GAN": ("loss_d", "loss_g")}


class JobError(ValueError):
    """A job that cannot start (busy, bad numbers, not a run folder); the message is for a person."""


@dataclass
class Job:
    """What the background worker is doing; the Train tab shows it and re-reads it after a page refresh."""

    kind: str  # "train" | "corpus"
    run_dir: Path | None = None
    stage: str = ""
    fraction: float = 0.0
    message: str = "starting"
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # key -> [(percent, value)]
    artifacts: dict[str, str] = field(default_factory=dict)  # "samples" | "scatter" | "curves" -> png path
    finished: bool = False
    stopped: bool = False
    error: str = ""
    result: str = ""
    started: float = field(default_factory=time.time)
    progress_of: object = None  # optional callable -> (fraction, message), polled (corpus build)
    curve_version: int = 0

    @property
    def state(self) -> str:
        return "failed" if self.error else "stopped" if self.stopped else "finished" if self.finished else "running"


class Worker:
    """Runs one job at a time in a daemon thread; `target(job, stop_event)` does the work and fills `job`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.job: Job | None = None
        self._curve_cache: tuple[int, np.ndarray] | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Job, target) -> None:
        with self._lock:
            if self.busy():
                raise JobError("A job is already running; stop it or wait for it to finish (one at a time).")
            self._stop.clear()
            self.job = job
            self._curve_cache = None
            self._thread = threading.Thread(target=self._run, args=(job, target), name=f"mvnet-{job.kind}",
                                            daemon=True)
            self._thread.start()

    def _run(self, job: Job, target) -> None:
        try:
            target(job, self._stop)
        except Exception as error:  # shown in the tab; the app keeps serving
            job.error = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        finally:
            job.finished = True

    def stop(self) -> bool:
        """Ask the running job to stop at its next step (it keeps its checkpoint); False when idle."""
        if not self.busy():
            return False
        self._stop.set()
        return True

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def curves_picture(self) -> np.ndarray | None:
        """The live loss curves as an RGB array (H, W, 3) uint8, redrawn only when new points came in."""
        job = self.job
        if job is None or not any(job.curves.values()):
            return None
        if self._curve_cache is None or self._curve_cache[0] != job.curve_version:
            from mvnet.plots import curves_image

            series = {name: list(points) for name, points in job.curves.items()}
            picture = curves_image(series, x_label="progress through the stage (%)", y_label="loss",
                                   title=f"stage {1 if job.stage == 'encoder' else 2}: {job.stage} losses")
            self._curve_cache = (job.curve_version, picture)
        return self._curve_cache[1]


# ------------------------------------------------------------------------------------- user numbers


def whole_number(value, what: str, low: int, high: int) -> int:
    """`value` typed in a form as an int in [low, high], else JobError naming `what` and the range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise JobError(f"{what} must be a whole number from {low} to {high}, not {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise JobError(f"{what} must be a whole number from {low} to {high}, not {value!r}.")
    return int(number)


def real_number(value, what: str, low: float, high: float, zero_means_default: bool = False) -> float | None:
    """`value` as a float in (low, high]; 0 gives None (the recipe's default) when `zero_means_default`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise JobError(f"{what} must be a number, not {value!r}.") from None
    if zero_means_default and number == 0:
        return None
    if not math.isfinite(number) or not low < number <= high:
        raise JobError(f"{what} must be greater than {low:g} and at most {high:g}, not {value!r}.")
    return number


# ------------------------------------------------------------------------------------------ plans


def plan_for(run_dir: Path, data_root: Path, encoder: dict, gan: dict) -> dict:
    """Both stage configs (as dicts) placed in run_dir/{encoder,gan}, each resuming when it has a checkpoint."""
    from train.checkpoint import has_checkpoint

    run_dir = Path(run_dir)
    encoder = {**encoder, "data_root": str(data_root), "run_dir": str(run_dir / "encoder"),
               "resume": has_checkpoint(run_dir / "encoder")}
    gan = {**gan, "data_root": str(data_root), "run_dir": str(run_dir / "gan"),
           "encoder_run": str(run_dir / "encoder"), "resume": has_checkpoint(run_dir / "gan")}
    return {"format_version": 1, "encoder": encoder, "gan": gan}


def new_run_plan(run_dir: Path, data_root: Path, *, enc_epochs, sampling, eras_per_batch, clips_per_era, enc_lr,
                 margin, recipe, gan_epochs, batch_size, lr_g, lr_d, diffaugment) -> dict:
    """Range-check the Train tab's numbers, write run_dir/app_plan.json, return the plan (JobError if bad).

    GAN batch size and learning rates of 0 take the recipe's defaults; an encoder learning rate of 0 the
    sampling's (train.config.SAMPLING_DEFAULTS).
    """
    from train.config import ConfigError, EncoderStageConfig, GanStageConfig

    run_dir = Path(run_dir)
    if (run_dir / PLAN_NAME).exists() or (run_dir / "encoder").exists():
        raise JobError(f"The run folder {run_dir.name} already exists: resume it, or choose another name.")
    batch = whole_number(batch_size, "The GAN batch size", 0, 4096)
    encoder = EncoderStageConfig(epochs=whole_number(enc_epochs, "Encoder epochs", 1, 10_000), sampling=sampling,
                                 eras_per_batch=whole_number(eras_per_batch, "Eras per batch (P)", 2, 5),
                                 clips_per_era=whole_number(clips_per_era, "Clips per era (K)", 2, 1024),
                                 lr=real_number(enc_lr, "The encoder learning rate", 0.0, 1.0,
                                                zero_means_default=True),
                                 margin=real_number(margin, "The margin", 0.0, 1000.0))
    gan = GanStageConfig(recipe=recipe, epochs=whole_number(gan_epochs, "GAN epochs", 1, 100_000),
                         batch_size=batch or None,
                         lr_g=real_number(lr_g, "The generator learning rate", 0.0, 1.0, zero_means_default=True),
                         lr_d=real_number(lr_d, "The discriminator learning rate", 0.0, 1.0,
                                          zero_means_default=True),
                         diffaugment=None if diffaugment is None else ",".join(diffaugment))
    try:
        encoder.validate()
        gan.validate()
    except ConfigError as error:
        raise JobError(str(error)) from None
    plan = plan_for(run_dir, data_root, encoder.to_dict(), gan.to_dict())
    atomic_write_json(run_dir / PLAN_NAME, plan)
    return plan


def resume_plan(run_dir: Path) -> dict:
    """The plan of a run folder made by `new_run_plan`, with each unfinished stage set to resume."""
    plan_file = Path(run_dir) / PLAN_NAME
    if not plan_file.is_file():
        raise JobError(f"{Path(run_dir).name} is not a run folder started from the Train tab (no {PLAN_NAME}).")
    try:
        plan = json.loads(plan_file.read_text())
        data_root = Path(plan["encoder"]["data_root"])
        return plan_for(run_dir, data_root, plan["encoder"], plan["gan"])
    except (ValueError, KeyError, TypeError) as error:
        raise JobError(f"{plan_file.name} in {Path(run_dir).name} is unreadable ({error}).") from None


# ------------------------------------------------------------------------------------------ running


def stage_callbacks(job: Job, stop: threading.Event, stage: str):
    """train.config.Callbacks that write progress, curve points and artifact paths into `job`."""
    from train.config import Callbacks

    job.stage = stage
    job.curves = {key: [] for key in CURVE_KEYS[stage]}

    def progress(fraction, message, metrics):
        job.fraction, job.message = float(fraction), message
        for key in CURVE_KEYS[stage]:
            value = metrics.get(key)
            if value is not None and np.isfinite(value):
                job.curves[key].append((100.0 * fraction, float(value)))
        job.curve_version += 1

    def epoch_end(epoch, artifacts):
        for name, path in (artifacts or {}).items():
            if path:
                job.artifacts[name] = str(path)

    return Callbacks(progress=progress, epoch_end=epoch_end, should_stop=stop.is_set)


def run_training(job: Job, stop: threading.Event, plan: dict) -> None:
    """Stage 1 then stage 2, each resumed from its checkpoint when the plan says so; skipped when finished."""
    from train.config import EncoderStageConfig, GanStageConfig
    from train.encoder_stage import ENCODER_META, train_encoder
    from train.gan_stage import GAN_META, train_gan

    encoder_cfg = EncoderStageConfig.from_dict(plan["encoder"])
    gan_cfg = GanStageConfig.from_dict(plan["gan"])
    if not (Path(encoder_cfg.run_dir) / ENCODER_META).exists():
        result = train_encoder(encoder_cfg, stage_callbacks(job, stop, "encoder"))
        if result.stopped:
            job.stopped, job.message = True, f"Stopped during stage 1; the checkpoint in {result.run_dir} is kept."
            return
    if not (Path(gan_cfg.run_dir) / GAN_META).exists():
        result = train_gan(gan_cfg, stage_callbacks(job, stop, "GAN"))
        if result.stopped:
            job.stopped, job.message = True, f"Stopped during stage 2; the checkpoint in {result.run_dir} is kept."
            return
    job.fraction, job.result = 1.0, str(job.run_dir)
    job.message = "Finished both stages. Press “Use these weights” to paint with them."


def run_folder_artifacts(run_dir: Path | None) -> dict[str, str]:
    """The newest scatter, sample grid and curves already in a run folder (shown when resuming)."""
    found = {}
    if run_dir is None:
        return found
    for name, pattern in (("scatter", "encoder/samples/scatter_epoch*.png"), ("curves", "encoder/curves.png"),
                          ("samples", "gan/samples/grid_*.png"), ("curves", "gan/curves.png")):
        files = sorted(Path(run_dir).glob(pattern))
        if files:
            found[name] = str(files[-1])
    return found


@dataclass
class JobView:
    """A job as a page shows it: bar fraction and label, state word, markdown lines, artifact paths."""

    fraction: float
    label: str
    state: str
    lines: list[str]
    artifacts: dict[str, str]


def describe(job: Job | None, shown=str) -> JobView:
    """The job's state for a page (polled, and on page load, so a refreshed page re-attaches to a running job).

    `shown(path) -> str` turns folders into what the person should see (e.g. relative to the data folder).
    """
    if job is None:
        return JobView(0.0, "idle", "idle", ["No job has run yet."], {})
    if job.progress_of is not None and not job.finished:
        job.fraction, job.message = job.progress_of()
    elapsed = time.time() - job.started
    lines = [f"**{job.kind} {job.state}** after {elapsed:.0f} s — {job.message}"]
    if job.run_dir is not None:
        lines.append(f"Folder: `{shown(job.run_dir)}` (inside the data folder)")
    if job.error:
        lines.append(f"Error: {job.error}")
    if job.result and job.kind == "corpus":
        lines.append(f"```\n{job.result}\n```")
    artifacts = {**run_folder_artifacts(job.run_dir), **job.artifacts} if job.kind == "train" else {}
    return JobView(job.fraction, f"{job.stage or job.kind}: {job.state}", job.state, lines, artifacts)
