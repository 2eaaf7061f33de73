"""The command line, run as a user runs it: a subprocess on a generated audio file."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mvnet.models import CPU
from mvnet.pipeline import untrained

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "mvnet", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return untrained(CPU, seed=1, device="cpu").save_pretrained(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    sr = 44100
    t = np.arange(sr * 12) / sr
    stereo = np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.3
    path = tmp_path_factory.mktemp("audio") / "song.ogg"
    sf.write(path, stereo, sr)
    return path


def test_paint_writes_a_grid_and_prints_era_scores(weights, song, tmp_path):
    out = tmp_path / "grid.png"
    result = run("paint", song, "--out", out, "--n", 4, "--seed", 0, "--weights", weights)
    assert result.returncode == 0, result.stderr
    assert "renaissance" in result.stdout and "%" in result.stdout
    assert "wrote 4 images" in result.stdout
    assert Image.open(out).size == (2 * 66 + 2, 2 * 66 + 2)
    again = tmp_path / "again.png"
    run("paint", song, "--out", again, "--n", 4, "--seed", 0, "--weights", weights)
    assert out.read_bytes() == again.read_bytes()


def test_paint_without_weights_says_how_to_get_them(song, tmp_path):
    result = run("paint", song, "--weights", tmp_path / "empty")
    assert result.returncode == 1
    assert "No trained weights" in result.stderr and "Train" in result.stderr
    assert "Traceback" not in result.stderr


def test_paint_bad_audio_is_a_clear_error(weights, tmp_path):
    bad = tmp_path / "notes.mp3"
    bad.write_text("this is not music")
    result = run("paint", bad, "--weights", weights)
    assert result.returncode == 1
    assert "notes.mp3" in result.stderr and "Traceback" not in result.stderr


def test_paint_range_checks_n(weights, song):
    result = run("paint", song, "--n", 0, "--weights", weights)
    assert result.returncode == 2 and "between 1 and 64" in result.stderr


def test_info_prints_parameters_and_flops(weights):
    result = run("info", "--weights", weights)
    assert result.returncode == 0, result.stderr
    assert "GFLOP" in result.stdout and "generator" in result.stdout
    report = run("info", "--preset", "report")
    assert "11,263,402" in report.stdout and "8,114,037" in report.stdout and "7,496,385" in report.stdout


def test_help_lists_examples():
    result = run("--help")
    assert result.returncode == 0 and "python -m mvnet paint" in result.stdout
