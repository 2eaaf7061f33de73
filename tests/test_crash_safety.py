"""SIGKILL a real training process at random moments (many of them during a checkpoint write) and a weights
export mid-write: the last checkpoint always loads, --resume finishes the run, and a weights folder is always
the old complete one or the new complete one.

Resume exactness (interrupted + resumed == uninterrupted, same seed, CPU) is tested without kills in
tests/test_train_stages.py (test_encoder_resume_is_exact, test_gan_resume_is_exact); here the killed-and-resumed
encoder run is compared with an uninterrupted one too. Kill times come from a seeded RNG, so a failure repeats.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_train_stages import write_tiny_corpus
from train.checkpoint import CHECKPOINT_NAME, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
KILLS = 10  # per stage; each costs one process start (~3 s) plus the random wait
ENCODER_ARGS = ["--epochs", "5", "--clips-per-era", "2", "--checkpoint-every", "1", "--device", "cpu", "--quiet",
                "--seed", "3"]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train", *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def temp_file_appears(folder: Path, pattern: str, process: subprocess.Popen, timeout: float) -> bool:
    """Poll (1 ms) until a temporary file matching `pattern` exists in `folder`: a write is under way."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if folder.is_dir() and any(folder.glob(pattern)):
            return True
        time.sleep(0.001)
    return False


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def assert_checkpoint_loads(run: Path, last_step: int) -> int:
    """The checkpoint (if one was written yet) loads with weights_only=True and never goes backwards."""
    if not (run / CHECKPOINT_NAME).exists():
        return last_step
    state = load_checkpoint(run)
    assert state["step"] >= last_step and {"rng", "step", "epoch"} <= set(state)
    return state["step"]


def kill_repeatedly(args: list, run: Path, rng: random.Random) -> dict:
    """Start with --resume and SIGKILL, KILLS times: odd rounds at a random moment, even rounds as soon as a
    checkpoint's temporary file appears (inside the write). Returns counts of what happened."""
    seen = {"during_write": 0, "random": 0, "finished_before_kill": 0}
    step = 0
    for round_ in range(KILLS):
        process = start(*args, "--resume")
        if round_ % 2 == 0:
            hit = temp_file_appears(run, f".{CHECKPOINT_NAME}.*.tmp", process, timeout=30)
            time.sleep(rng.uniform(0, 0.004))  # somewhere inside the write, not only at its first byte
            seen["during_write" if hit and process.poll() is None else "finished_before_kill"] += 1
        else:
            time.sleep(rng.uniform(1.0, 5.0))
            seen["random" if process.poll() is None else "finished_before_kill"] += 1
        kill(process)
        step = assert_checkpoint_loads(run, step)
    return seen


def model_state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_killed_encoder_training_always_resumes_to_the_uninterrupted_result(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "corpus")
    reference, run = tmp_path / "reference", tmp_path / "killed"
    done = subprocess.run([sys.executable, "-m", "train", "encoder", "--data-root", corpus, "--run-dir", reference,
                           *ENCODER_ARGS], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    args = ["encoder", "--data-root", corpus, "--run-dir", run, *ENCODER_ARGS]
    seen = kill_repeatedly(args, run, random.Random(0))
    print("kills:", seen)
    assert seen["during_write"] >= 3, seen  # the kills really landed inside checkpoint writes

    done = subprocess.run([sys.executable, "-m", "train", *map(str, args), "--resume"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(run.glob(f".{CHECKPOINT_NAME}.*.tmp"))  # stale temporaries are cleaned up
    killed, uninterrupted = model_state(run / "encoder.safetensors"), model_state(reference / "encoder.safetensors")
    assert killed.keys() == uninterrupted.keys()
    for key in killed:
        assert torch.equal(killed[key], uninterrupted[key]), key


@pytest.mark.slow
def test_killed_gan_training_always_resumes(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "corpus")
    encoder = tmp_path / "encoder"
    done = subprocess.run([sys.executable, "-m", "train", "encoder", "--data-root", corpus, "--run-dir", encoder,
                           "--epochs", "1", "--clips-per-era", "2", "--device", "cpu", "--quiet"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "gan"
    args = ["gan", "--data-root", corpus, "--run-dir", run, "--encoder-run", encoder, "--batch-size", "8",
            "--max-steps", "40", "--checkpoint-every", "1", "--samples-per-era", "1", "--device", "cpu", "--quiet"]
    seen = kill_repeatedly(args, run, random.Random(1))
    print("kills:", seen)
    assert seen["during_write"] >= 1, seen
    done = subprocess.run([sys.executable, "-m", "train", *map(str, args), "--resume"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(run)["step"] == 40 and (run / "generator.safetensors").exists()


# ------------------------------------------------------------------------------------------------ export

EXPORT_LOOP = """
import sys
from mvnet.pipeline import untrained
models = [untrained(seed=s, device="cpu") for s in (1, 2)]
for model, tag in zip(models, ("one", "two")):
    model.training = {"tag": tag}
print("ready", flush=True)
i = 0
while True:
    models[i % 2].save_pretrained(sys.argv[1])
    i += 1
"""


@pytest.mark.slow
def test_a_weights_export_killed_mid_write_leaves_the_old_or_the_new_folder(tmp_path):
    from mvnet.pipeline import MVNet, untrained

    expected = {}
    for seed, tag in ((1, "one"), (2, "two")):
        model = untrained(seed=seed, device="cpu")
        expected[tag] = ({k: v.clone() for k, v in model.encoder.state_dict().items()},
                         {k: v.clone() for k, v in model.generator.state_dict().items()})
    folder = tmp_path / "weights"
    first = untrained(seed=1, device="cpu")
    first.training = {"tag": "one"}
    first.save_pretrained(folder)
    (folder / "README.md").write_text("model card")  # not written by save_pretrained: must survive
    rng = random.Random(2)
    for _ in range(8):
        process = subprocess.Popen([sys.executable, "-c", EXPORT_LOOP, str(folder)], cwd=ROOT, env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
        temp_file_appears(tmp_path, ".weights.saving", process, timeout=30)
        time.sleep(rng.uniform(0, 0.3))
        kill(process)
        loaded = MVNet.from_pretrained(folder, device="cpu")  # never a mix, never missing
        tag = loaded.training["tag"]
        encoder, generator = expected[tag]
        for key, value in loaded.encoder.state_dict().items():
            assert torch.equal(value, encoder[key]), (tag, key)
        for key, value in loaded.generator.state_dict().items():
            assert torch.equal(value, generator[key]), (tag, key)
        assert (folder / "README.md").read_text() == "model card"
