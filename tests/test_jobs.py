"""train.jobs: one background job at a time, shared state a refreshed page re-attaches to, range-checked numbers."""

from __future__ import annotations

import json
import threading

import pytest

from train.jobs import (
    PLAN_NAME,
    Job,
    JobError,
    Worker,
    describe,
    new_run_plan,
    real_number,
    resume_plan,
    stage_callbacks,
    whole_number,
)

SETTINGS = dict(enc_epochs=2, sampling="batch-hard", eras_per_batch=5, clips_per_era=2, enc_lr=1e-3, margin=3.0,
                recipe="ours", gan_epochs=1, batch_size=8, lr_g=2e-4, lr_d=0, diffaugment=["color"])


def blocking_target(release: threading.Event):
    def target(job, stop):
        job.stage, job.fraction, job.message = "encoder", 0.5, "half way"
        while not (release.is_set() or stop.is_set()):
            release.wait(0.01)
        job.stopped = stop.is_set()
    return target


def test_one_job_at_a_time_and_stop_keeps_the_state():
    worker, release = Worker(), threading.Event()
    worker.start(Job("train"), blocking_target(release))
    with pytest.raises(JobError, match="already running"):
        worker.start(Job("train"), blocking_target(release))
    assert worker.busy() and worker.stop()
    worker.wait(10)
    assert not worker.busy() and worker.job.stopped and worker.job.finished and worker.job.state == "stopped"
    assert not worker.stop()  # nothing left to stop
    worker.start(Job("corpus"), lambda job, stop: None)  # a new job can start now
    worker.wait(10)
    assert worker.job.kind == "corpus" and worker.job.state == "finished"


def test_a_failing_job_records_its_error_and_the_worker_stays_usable():
    worker = Worker()

    def broken(job, stop):
        raise RuntimeError("the corpus has no audio")

    worker.start(Job("train"), broken)
    worker.wait(10)
    view = describe(worker.job)
    assert view.state == "failed" and "RuntimeError: the corpus has no audio" in "\n".join(view.lines)
    worker.start(Job("train"), lambda job, stop: None)
    worker.wait(10)
    assert worker.job.state == "finished"


def test_a_reloaded_page_sees_the_running_job(tmp_path):
    """The page's view is computed from the worker alone: a fresh page load shows the same run and artifacts."""
    worker, release = Worker(), threading.Event()
    run = tmp_path / "runs" / "a"
    (run / "encoder" / "samples").mkdir(parents=True)
    (run / "encoder" / "samples" / "scatter_epoch001.png").write_bytes(b"png")
    worker.start(Job("train", run_dir=run), blocking_target(release))
    try:
        first = describe(worker.job, shown=lambda p: "runs/a")
        again = describe(worker.job, shown=lambda p: "runs/a")  # another page / after a refresh
        for view in (first, again):
            assert view.state == "running" and view.fraction == 0.5 and view.label == "encoder: running"
            assert "Folder: `runs/a`" in view.lines[1] and "half way" in view.lines[0]
            assert view.artifacts["scatter"].endswith("scatter_epoch001.png")
    finally:
        release.set()
        worker.wait(10)
    assert describe(worker.job).state == "finished"
    assert describe(None).lines == ["No job has run yet."]


def test_stage_callbacks_fill_progress_curves_and_artifacts():
    job, stop = Job("train"), threading.Event()
    callbacks = stage_callbacks(job, stop, "GAN")
    callbacks.report(0.25, "step 5", {"loss_d": 1.5, "loss_g": float("nan")})
    callbacks.report(0.5, "step 10", {"loss_d": 1.0, "loss_g": 2.0})
    callbacks.finished_epoch(1, {"samples": "grid_001.png", "scatter": None})
    assert job.fraction == 0.5 and job.message == "step 10" and job.curve_version == 2
    assert job.curves == {"loss_d": [(25.0, 1.5), (50.0, 1.0)], "loss_g": [(50.0, 2.0)]}  # NaN is left out
    assert job.artifacts == {"samples": "grid_001.png"}
    assert not callbacks.stop_requested()
    stop.set()
    assert callbacks.stop_requested()


def test_curves_picture_is_drawn_once_per_new_point():
    worker = Worker()
    worker.start(Job("train"), lambda job, stop: None)
    worker.wait(10)
    assert worker.curves_picture() is None
    stage_callbacks(worker.job, threading.Event(), "encoder").report(0.1, "", {"loss": 2.0})
    picture = worker.curves_picture()
    assert picture.ndim == 3 and picture.shape[2] == 3 and worker.curves_picture() is picture


@pytest.mark.parametrize("value, expected", [(3, 3), ("7", 7), (2.0, 2), (1, 1), (10, 10)])
def test_whole_numbers_in_range(value, expected):
    assert whole_number(value, "Epochs", 1, 10) == expected


@pytest.mark.parametrize("value", [None, "", "three", 0, 11, -1, 2.5, float("nan"), float("inf"), 1e30])
def test_whole_numbers_out_of_range_say_the_range(value):
    with pytest.raises(JobError, match="Epochs must be a whole number from 1 to 10"):
        whole_number(value, "Epochs", 1, 10)


def test_real_numbers():
    assert real_number("0.001", "The rate", 0.0, 1.0) == 0.001
    assert real_number(0, "The rate", 0.0, 1.0, zero_means_default=True) is None
    for bad in (0, -1e-3, 2.0, float("nan"), None, "fast"):
        with pytest.raises(JobError, match="The rate"):
            real_number(bad, "The rate", 0.0, 1.0)


def test_new_run_plan_checks_numbers_and_writes_a_resumable_plan(tmp_path):
    run, data = tmp_path / "runs" / "a", tmp_path / "corpus"
    plan = new_run_plan(run, data, **SETTINGS)
    saved = json.loads((run / PLAN_NAME).read_text())
    assert saved == plan and plan["encoder"]["run_dir"] == str(run / "encoder")
    assert plan["gan"]["encoder_run"] == str(run / "encoder") and plan["gan"]["lr_d"] is None  # 0: recipe default
    assert plan["encoder"]["resume"] is False and plan["gan"]["data_root"] == str(data)
    with pytest.raises(JobError, match="already exists"):
        new_run_plan(run, data, **SETTINGS)
    assert resume_plan(run)["encoder"]["epochs"] == 2


@pytest.mark.parametrize("sampling, lr", [("semi-hard", 1e-3), ("batch-hard", 1e-3), ("paper", 5e-5)])
def test_encoder_learning_rate_of_zero_takes_the_samplings_default(tmp_path, sampling, lr):
    from train.config import EncoderStageConfig

    plan = new_run_plan(tmp_path / sampling, tmp_path, **{**SETTINGS, "sampling": sampling, "enc_lr": 0})
    assert plan["encoder"]["lr"] is None
    assert EncoderStageConfig.from_dict(plan["encoder"]).resolved().lr == lr


@pytest.mark.parametrize("change, message", [
    (dict(enc_epochs=0), "Encoder epochs must be a whole number from 1"),
    (dict(enc_epochs=None), "Encoder epochs must be a whole number"),
    (dict(gan_epochs=-3), "GAN epochs"),
    (dict(eras_per_batch=9), "Eras per batch"),
    (dict(clips_per_era=1), "Clips per era"),
    (dict(enc_lr=-1e-3), "encoder learning rate"),
    (dict(enc_lr=float("inf")), "encoder learning rate"),
    (dict(batch_size=3), "even batch_size"),  # the stage's own ConfigError, passed on
    (dict(batch_size=1.5), "batch size"),
    (dict(sampling="random"), "sampling must be one of"),
    (dict(recipe="mine"), "recipe must be one of"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, change, message):
    run = tmp_path / "runs" / "b"
    with pytest.raises(JobError, match=message):
        new_run_plan(run, tmp_path, **{**SETTINGS, **change})
    assert not run.exists()


def test_resume_plan_of_a_foreign_or_broken_folder(tmp_path):
    with pytest.raises(JobError, match="not a run folder"):
        resume_plan(tmp_path)
    (tmp_path / PLAN_NAME).write_text("{not json")
    with pytest.raises(JobError, match="unreadable"):
        resume_plan(tmp_path)
