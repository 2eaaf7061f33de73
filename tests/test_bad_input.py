"""One battery of bad (and merely unusual) input, driven through all three surfaces a person uses:

the library (`MVNet.embed`), the command line (`python -m mvnet paint`, a subprocess: a clear message, exit code
1, no traceback) and the app (gradio_client: the message reaches the client and the next request paints).
Every case either paints or fails with mvnet.audio.AudioError and a message a person understands.
tests/test_audio.py holds the decoder's unit tests; this file checks what reaches the person.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mvnet.audio import MAX_SECONDS, SAMPLE_RATE, AudioError
from tests.test_app import EXAMPLES, make_test_weights, upload, write_tiny_corpus

ROOT = Path(__file__).resolve().parent.parent
LONG_MINUTES = 30


def tone(seconds, sr=SAMPLE_RATE, amplitude=0.3, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    wave = amplitude * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    if channels > 1:
        wave = np.stack([wave * (1 + c / channels) / 2 for c in range(channels)], axis=1)
    return wave.astype(np.float32)


def encoded(path: Path, seconds=3.0) -> bytes:
    sf.write(path, tone(seconds), SAMPLE_RATE)
    return path.read_bytes()


def garbled(path: Path) -> Path:
    """The middle third of a valid file replaced by noise bytes (a damaged download)."""
    data = encoded(path)
    third = len(data) // 3
    noise = np.random.default_rng(0).integers(0, 256, third, dtype=np.uint8).tobytes()
    path.write_bytes(data[:third] + noise + data[2 * third:])
    return path


def cut(path: Path, keep) -> Path:
    data = encoded(path)
    path.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    return path


def raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def picture_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def written(path: Path, wave, sr=SAMPLE_RATE, subtype=None) -> Path:
    sf.write(path, wave, sr, subtype=subtype)
    return path


def with_bad_sample(value):
    wave = tone(3.0)
    wave[5000] = value
    return wave


@dataclass
class Case:
    name: str  # file name (its extension picks the format)
    make: object  # Path -> Path
    error: str | None  # part of the message, or None: it paints


CASES = [
    Case("empty.mp3", lambda p: raw(p, b""), "is empty"),
    Case("zero-length.wav", lambda p: written(p, np.zeros(0, np.float32)), "contains no samples"),
    Case("header-only.wav", lambda p: cut(p, 44), "contains no samples"),
    Case("cut-in-header.wav", lambda p: cut(p, 20), "Could not read 'cut-in-header.wav' as audio"),
    Case("cut-in-header.ogg", lambda p: cut(p, 300), "Could not read 'cut-in-header.ogg' as audio"),
    Case("cut-in-header.mp3", lambda p: cut(p, 300), "Could not read 'cut-in-header.mp3' as audio"),
    Case("cut-early.ogg", lambda p: cut(p, 0.5), "cut off or damaged"),  # libsndfile: 0 frames
    Case("cut-half.wav", lambda p: cut(p, 0.5), None),  # 1.5 s survive: looped to a window
    Case("cut-half.mp3", lambda p: cut(p, 0.5), None),
    Case("garbled.mp3", garbled, "Could not read 'garbled.mp3' as audio"),
    Case("garbled.ogg", garbled, "Could not read 'garbled.ogg' as audio"),
    Case("garbled.wav", garbled, None),  # PCM has no structure to break: noise in the middle, clipped
    Case("text.mp3", lambda p: raw(p, b"These are my lyrics, not a song.\n" * 40),
         "Could not read 'text.mp3' as audio"),
    Case("image.mp3", lambda p: raw(p, picture_bytes()),
         "Could not read 'image.mp3' as audio"),
    Case("silence.wav", lambda p: written(p, np.zeros(5 * SAMPLE_RATE, np.float32)), "silent"),
    Case("dc-offset.wav", lambda p: written(p, np.full(5 * SAMPLE_RATE, 0.4, np.float32)), "silent"),
    Case("nan.wav", lambda p: written(p, with_bad_sample(np.nan), subtype="FLOAT"), "NaN or infinity"),
    Case("inf.wav", lambda p: written(p, with_bad_sample(np.inf), subtype="FLOAT"), "NaN or infinity"),
    Case("blip-0.2s.wav", lambda p: written(p, tone(0.2)), "too short (0.20 s)"),
    Case("8-channels.wav", lambda p: written(p, tone(4.0, channels=8)), None),
    Case("8kHz.wav", lambda p: written(p, tone(4.0, sr=8000), sr=8000), None),
    Case("192kHz.wav", lambda p: written(p, tone(4.0, sr=192000), sr=192000), None),
    Case("int16.wav", lambda p: written(p, tone(4.0), subtype="PCM_16"), None),
    Case("int32.wav", lambda p: written(p, tone(4.0), subtype="PCM_32"), None),
    Case("float64.wav", lambda p: written(p, tone(4.0), subtype="DOUBLE"), None),
    Case("clipped-full-scale.wav", lambda p: written(p, np.clip(tone(4.0, amplitude=8.0), -1, 1)), None),
    Case("over-full-scale.wav", lambda p: written(p, tone(4.0, amplitude=8.0), subtype="FLOAT"), None),
]
IDS = [case.name for case in CASES]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input")
    return {case.name: case.make(folder / case.name) for case in CASES}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_test_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def model(weights):
    from mvnet.pipeline import MVNet

    return MVNet.from_pretrained(weights, device="cpu")


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """30 minutes at 8 kHz int16 (28.8 MB: under the app's 50 MB upload limit); only 10 minutes are decoded."""
    path = tmp_path_factory.mktemp("long") / "half-hour.wav"
    with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as handle:
        minute = tone(60.0, sr=8000)
        for _ in range(LONG_MINUTES):
            handle.write(minute)
    return path


def assert_paints(model, embedding):
    assert embedding.vector.shape == (10,) and np.isfinite(embedding.vector).all()
    images = model.paint(embedding, n=2, seed=0)
    assert images.shape == (2, 3, 64, 64) and bool(images.isfinite().all())


# ---------------------------------------------------------------------------------------------- library


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library(model, files, case):
    if case.error is None:
        assert_paints(model, model.embed(files[case.name]))
    else:
        with pytest.raises(AudioError, match=_pattern(case.error)):
            model.embed(files[case.name])


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64, np.float32, np.uint8])
def test_library_microphone_arrays(model, dtype):
    """Gradio's microphone gives (rate, array) in the browser's dtype; all scale to the same wave."""
    wave = tone(3.0, sr=48000, channels=2)
    if np.issubdtype(dtype, np.signedinteger):
        samples = (wave * np.iinfo(dtype).max).astype(dtype)
    elif dtype == np.uint8:
        samples = ((wave + 1) * 127.5).astype(dtype)
    else:
        samples = wave.astype(dtype)
    embedding = model.embed((48000, samples))
    reference = model.embed((48000, wave))
    assert_paints(model, embedding)
    assert np.allclose(embedding.vector, reference.vector, atol=0.05 if dtype == np.uint8 else 1e-3)


@pytest.mark.parametrize("source, error", [
    ((SAMPLE_RATE, np.zeros(0, np.int16)), "no samples"),
    ((SAMPLE_RATE, np.zeros(5 * SAMPLE_RATE, np.int16)), "silent"),
    ((SAMPLE_RATE, np.full(5 * SAMPLE_RATE, 9000, np.int16)), "silent"),  # DC offset only
    ((SAMPLE_RATE, with_bad_sample(np.nan).astype(np.float64)), "NaN or infinity"),
    ((SAMPLE_RATE, (tone(0.2) * 32767).astype(np.int16)), "too short"),
    ((0, np.zeros(9000, np.int16)), "sample rate"),
])
def test_library_bad_microphone_arrays(model, source, error):
    with pytest.raises(AudioError, match=error):
        model.embed(source)


def test_library_full_scale_square_wave_is_accepted(model):
    square = np.sign(tone(4.0)).astype(np.float32)  # every sample at +-1 (hard clipping)
    assert_paints(model, model.embed((SAMPLE_RATE, (square * 32767).astype(np.int16))))


def test_library_half_hour_file_reads_only_the_cap(model, long_file):
    embedding = model.embed(long_file)
    assert embedding.duration_seconds == pytest.approx(MAX_SECONDS, abs=0.01)
    assert len(embedding.starts_seconds) == 8 and embedding.starts_seconds[-1] < MAX_SECONDS
    assert_paints(model, embedding)


# ------------------------------------------------------------------------------------------ command line


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mvnet", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.slow  # one process per case (~3 s each)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli(weights, files, tmp_path, case):
    done = run_cli("paint", files[case.name], "--n", 1, "--weights", weights, "--out", tmp_path / "grid.png")
    assert "Traceback" not in done.stderr, done.stderr
    if case.error is None:
        assert done.returncode == 0 and "wrote 1 images" in done.stdout, done.stderr
    else:
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: ") and _contains(done.stderr, case.error), done.stderr
        assert not (tmp_path / "grid.png").exists()


@pytest.mark.slow
def test_cli_half_hour_file(weights, long_file, tmp_path):
    done = run_cli("paint", long_file, "--n", 1, "--weights", weights, "--out", tmp_path / "grid.png")
    assert done.returncode == 0, done.stderr
    assert "600.0 s, 8 window(s)" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--n", 0], "--n must be between 1 and 64"), (["--n", 65], "--n must be between 1 and 64"),
    (["--seed", -1], "--seed must be between 0 and 2147483647"),
    (["--seed", 2**64], "--seed must be between 0 and 2147483647"),
    (["--windows", 0], "--windows must be at least 1"), (["--n", "many"], "invalid int value"),
])
def test_cli_numbers_are_range_checked(weights, args, message):
    done = run_cli("paint", EXAMPLES / "baroque.ogg", "--weights", weights, *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"), ("no-audio", "No usable training audio"), ("a-file", "is a file, not a corpus folder"),
])
def test_train_cli_bad_corpus_layouts(tmp_path, layout, message):
    root = tmp_path / "corpus"
    if layout == "no-audio":
        (root / "training" / "baroque").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "training" / "baroque" / "i0.png")
    elif layout == "a-file":
        root.write_text("not a corpus")
    done = subprocess.run([sys.executable, "-m", "train", "encoder", "--data-root", root, "--run-dir",
                           tmp_path / "run", "--epochs", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr


# ------------------------------------------------------------------------------------------------- app


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    from tests.test_app import app_module, launch

    app = app_module()
    url = launch(app)
    yield Client(url, verbose=False)
    app.demo.close()


def paints_next(client):
    """The request after a bad one is served normally."""
    assert len(client.predict(upload(EXAMPLES / "romantic.ogg"), 1, 0, api_name="/paint")[3]) == 1


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_app(client, files, case):
    from gradio_client.exceptions import AppError

    if case.error is None:
        gallery, status = client.predict(upload(files[case.name]), 2, 0, api_name="/paint")[3:5]
        assert len(gallery) == 2 and "Painted 2 images" in status
    else:
        with pytest.raises(AppError, match=_pattern(case.error)):
            client.predict(upload(files[case.name]), 2, 0, api_name="/paint")
        paints_next(client)


def test_app_half_hour_file(client, long_file):
    status = client.predict(upload(long_file), 1, 0, api_name="/paint")[4]
    assert "Embedded 8 windows" in status and "Only the first 10 minutes were read" in status


@pytest.mark.parametrize("n, seed, message", [
    (0, 0, "less than minimum value 1"), (17, 0, "greater than maximum value 16"),
    (3, -1, "less than minimum value 0|seed must be between"), (3, 2**31, "seed must be between"),
    (2.5, 0, "The number of images must be a whole number from 1 to 16"),
])
def test_app_paint_numbers_are_range_checked(client, n, seed, message):
    """Gradio's own bounds answer first where the component has them; the seed box (precision 0) rounds."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(upload(EXAMPLES / "baroque.ogg"), n, seed, api_name="/paint")
    paints_next(client)


TRAIN_SETTINGS = ["tiny", "", 1, "batch-hard", 5, 2, 1e-3, 3.0, "ours", 1, 8, 2e-4, 2e-4, []]


@pytest.mark.parametrize("index, value, message", [
    (2, 0, "less than minimum value 1|Encoder epochs must be a whole number from 1"), (2, None, "Encoder epochs must be a whole number"),
    (2, 10**9, "Encoder epochs must be a whole number from 1 to 10000"), (9, -1, "less than minimum value 1|GAN epochs"),
    (5, 1, "Clips per era"), (4, 7, "Eras per batch"), (6, -1e-3, "encoder learning rate"), (10, 3, "even batch_size"),
])
def test_app_training_numbers_are_range_checked(client, index, value, message):
    from gradio_client.exceptions import AppError

    write_tiny_corpus(Path(os.environ["MVNET_DATA_ROOT"]) / "tiny", clips=(2, 1))
    settings = list(TRAIN_SETTINGS)
    settings[index] = value
    with pytest.raises(AppError, match=message):
        client.predict(*settings, api_name="/train_start")
    paints_next(client)


def test_app_corpus_clip_count_is_range_checked(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Training clips per era must be a whole number"):
        client.predict("starter", -5, api_name="/build_corpus")


@pytest.mark.slow
def test_app_bad_corpus_layout_fails_the_job_with_the_readers_message(client):
    """The dataset reader's MusartError reaches the Train tab's status; the app keeps painting."""
    import time

    root = Path(os.environ["MVNET_DATA_ROOT"]) / "no-audio"
    (root / "training" / "baroque").mkdir(parents=True, exist_ok=True)
    settings = ["no-audio", "bad-layout"] + TRAIN_SETTINGS[2:]
    client.predict(*settings, api_name="/train_start")
    started, status = time.time(), ""
    while time.time() - started < 120 and "failed**" not in status:
        status = client.predict(api_name="/train_status")[1]
        time.sleep(0.3)
    assert "train failed**" in status and "No usable training audio" in status, status
    assert "Traceback" not in status
    paints_next(client)


def _pattern(text: str) -> str:
    import re

    return re.escape(text) if "|" not in text else text


def _contains(message: str, text: str) -> bool:
    return text in " ".join(message.split())
