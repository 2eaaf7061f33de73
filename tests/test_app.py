"""The Gradio app, driven through gradio_client against a real server with small random weights.

The app reads MVNET_WEIGHTS / MVNET_DATA_ROOT when it is imported, so `app_module()` writes random
weights (+ a small atlas and model card) to a temporary folder first. test_browser.py shares it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from mvnet import ERAS
from mvnet.audio import CLIP_SAMPLES, SAMPLE_RATE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"


def make_test_weights(folder: Path) -> Path:
    """A random MVNet (CPU preset) with an atlas of 200 points around its era centroids, and a model card."""
    from mvnet.atlas import Atlas
    from mvnet.pipeline import untrained

    model = untrained(seed=0, device="cpu")
    rng = np.random.default_rng(0)
    eras = np.repeat(np.arange(len(ERAS)), 40)
    embeddings = model.centroids[eras] + rng.normal(0, 0.4, (len(eras), model.centroids.shape[1]))
    centred = embeddings - embeddings.mean(0)
    xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T  # a PCA layout stands in for UMAP
    model.atlas = Atlas(embeddings, xy, eras, ERAS, [f"{ERAS[e]}/a{i}.ogg" for i, e in enumerate(eras)])
    model.save_pretrained(folder)
    (folder / "README.md").write_text("# Test weights\n\n## Metrics\n\n| metric | value |\n|---|---|\n"
                                      "| held-out era accuracy | 0.123 |\n\n## Data\nnone\n")
    return folder


def app_module():
    """Import app.py once per process, pointed at random test weights and a temporary data folder."""
    if "app" not in sys.modules:
        base = Path(tempfile.mkdtemp(prefix="mvnet-app-test-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        # MVNET_TEST_WEIGHTS: drive the app with real weights instead (for README screenshots).
        weights = os.environ.get("MVNET_TEST_WEIGHTS") or str(make_test_weights(base / "weights"))
        (base / "data").mkdir()
        os.environ.update(MVNET_WEIGHTS=weights, MVNET_DATA_ROOT=str(base / "data"), MVNET_ENABLE_TRAINING="1")
        os.environ.pop("SPACE_ID", None)
        sys.path.insert(0, str(ROOT))
    import app

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(app) -> str:
    """Start the demo on a free local port (same options as `python app.py`); returns its URL."""
    port = free_port()
    app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                    **app.LAUNCH_OPTIONS)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app():
    return app_module()


@pytest.fixture(scope="module")
def url(app):
    address = launch(app)
    yield address
    app.demo.close()


@pytest.fixture
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def upload(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_paint_an_example_gives_mel_scores_map_and_nine_images(client):
    mel, scores, era_map, gallery, status = client.predict(upload(EXAMPLES / "baroque.ogg"), 9, 0, api_name="/paint")
    assert Image.open(mel).size == (720, 340)
    assert Image.open(era_map).size == (640, 500)
    assert {c["label"] for c in scores["confidences"]} == set(ERAS)
    assert sum(c["confidence"] for c in scores["confidences"]) == pytest.approx(1.0)
    assert len(gallery) == 9 and Image.open(gallery[0]["image"]).size == (256, 256)
    assert "Embedded 1 window of 8.91 s" in status and "seed 0" in status


def test_a_long_recording_says_how_many_windows_were_used(client):
    status = client.predict(upload(EXAMPLES / "classical_long.ogg"), 4, 3, api_name="/paint")[4]
    assert "Embedded 3 windows" in status and "0:17.8–0:26.7" in status and "mean of the windows" in status


def test_a_long_recording_uses_eight_windows_spread_over_it(client, tmp_path):
    path = tmp_path / "long.flac"
    t = np.arange(100 * SAMPLE_RATE) / SAMPLE_RATE
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * (220 + 20 * np.sin(t)) * t)).astype(np.float32), SAMPLE_RATE)
    status = client.predict(upload(path), 1, 0, api_name="/paint")[4]
    assert "Embedded 8 windows of 8.91 s from a 1:40.0 recording" in status
    assert "8 of the 11 whole windows, spread evenly" in status and ", …" in status


def test_a_short_recording_is_looped(client, tmp_path):
    path = tmp_path / "short.wav"
    t = np.arange(int(2.5 * SAMPLE_RATE)) / SAMPLE_RATE
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), SAMPLE_RATE)
    status = client.predict(upload(path), 2, 0, api_name="/paint")[4]
    assert "2.5 s long" in status and "looped" in status


def test_same_seed_same_paintings_and_variations_reseed(client):
    first = client.predict(upload(EXAMPLES / "modern.ogg"), 3, 5, api_name="/paint")[3]
    again = client.predict(upload(EXAMPLES / "modern.ogg"), 3, 5, api_name="/paint")[3]
    assert [np.asarray(Image.open(a["image"])).tolist() == np.asarray(Image.open(b["image"])).tolist()
            for a, b in zip(first, again, strict=True)] == [True] * 3
    seed, varied = client.predict(3, api_name="/variations")
    assert seed != 5 and len(varied) == 3 and f"seed {seed}" in varied[0]["caption"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.mp3", b"", "is empty"),
    ("notes.mp3", b"these are not the sounds you are looking for\n" * 20, "Could not read 'notes.mp3' as audio"),
    ("silence.wav", None, "silent"),
])
def test_bad_audio_gives_the_audio_message_and_the_app_keeps_serving(client, tmp_path, name, content, message):
    from gradio_client.exceptions import AppError

    path = tmp_path / name
    if content is None:
        soundfile.write(path, np.zeros(CLIP_SAMPLES, np.float32), SAMPLE_RATE)
    else:
        path.write_bytes(content)
    with pytest.raises(AppError, match=message):
        client.predict(upload(path), 9, 0, api_name="/paint")
    assert len(client.predict(upload(EXAMPLES / "romantic.ogg"), 2, 0, api_name="/paint")[3]) == 2


def test_output_images_are_cached_without_rewriting_a_file_being_served(app, tmp_path):
    from gradio import processing_utils

    assert processing_utils.save_pil_to_cache is app._atomic_save_pil_to_cache
    picture = Image.new("RGB", (8, 8), (10, 20, 30))
    first = app._atomic_save_pil_to_cache(picture, str(tmp_path), format="png")
    inode = os.stat(first).st_ino
    with open(first, "rb") as download:  # a client is reading it while another request paints the same image
        assert app._atomic_save_pil_to_cache(picture, str(tmp_path), format="png") == first
        assert download.read() == Path(first).read_bytes() and len(Path(first).read_bytes()) > 0
    assert os.stat(first).st_ino == inode  # reused, not rewritten
    Path(first).write_bytes(b"")  # a torn leftover is replaced by a complete file in one step
    assert Image.open(app._atomic_save_pil_to_cache(picture, str(tmp_path), format="png")).size == (8, 8)


def test_identical_concurrent_requests_all_get_their_images(url):
    """Same clip, same seed, at once: Gradio's content-addressed image cache is shared between them."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    def paint(_):
        client = Client(url, verbose=False)
        gallery = client.predict(upload(EXAMPLES / "baroque.ogg"), 9, 0, api_name="/paint")[3]
        return [Image.open(item["image"]).size for item in gallery]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(paint, range(6)))
    assert results == [[(256, 256)] * 9] * 6


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    big = tmp_path / "big.wav"
    with open(big, "wb") as handle:
        handle.truncate(60_000_000)  # sparse: nothing is written to disk
    with pytest.raises(ValueError, match="exceeds the maximum file size of 52428800 bytes"):
        client.predict(upload(big), 9, 0, api_name="/paint")


def test_bad_numbers_are_refused_with_a_message(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="greater than maximum value 16"):  # Gradio's own slider check
        client.predict(upload(EXAMPLES / "romantic.ogg"), 40, 0, api_name="/paint")
    with pytest.raises(AppError, match="seed must be between 0 and 2147483647"):
        client.predict(upload(EXAMPLES / "romantic.ogg"), 4, 2**40, api_name="/paint")
    with pytest.raises(AppError, match="Paint from some music first"):
        client.predict(9, api_name="/variations")


def isolated_reference(app, min_pixels=6.0):
    """A reference point with no other point within `min_pixels` on the rendered map."""
    loaded = app.SLOT.get()
    atlas, mapping = loaded.model.atlas, loaded.mapping
    pixels = np.array([mapping.to_pixel(x, y) for x, y in atlas.reference_xy])
    gaps = np.linalg.norm(pixels[:, None] - pixels[None], axis=-1) + np.eye(len(pixels)) * 1e9
    index = int(np.argmax(gaps.min(axis=1)))
    assert gaps[index].min() >= min_pixels
    return index, pixels[index]


def test_map_click_on_a_reference_point_paints_that_clip(app, client):
    index, (u, v) = isolated_reference(app)
    name = app.SLOT.get().model.atlas.describe(index)
    era_map, gallery, status = client.predict(int(u), int(v), app.CLICK_MODES[1], 4, 0, api_name="/map_click")
    assert len(gallery) == 4 and Image.open(era_map).size == (640, 500)
    assert f"the nearest reference clip, {name}" in status
    _, gallery, status = client.predict(int(u), int(v), app.CLICK_MODES[0], 9, 0, api_name="/map_click")
    assert len(gallery) == 9 and "interpolated" in status and f"nearest clip: {name}" in status


def test_the_select_event_maps_the_clicked_pixel_through_the_shown_maps_mapping(app):
    """The browser's path: gr.SelectData.index == [column, row] and the mapping kept in gr.State."""
    import gradio as gr

    index, (u, v) = isolated_reference(app)
    _, mapping = app.explore_view()
    event = gr.SelectData(None, {"index": [int(u), int(v)], "value": None})
    _, gallery, status = app.map_select(mapping, app.CLICK_MODES[1], 2, 0, event)
    assert len(gallery) == 2 and app.SLOT.get().model.atlas.describe(index) in status


def test_map_click_outside_the_image_is_refused(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="outside the 640x500 map"):
        client.predict(700, 10, "Nearest reference clip", 4, 0, api_name="/map_click")


def test_era_button_and_morph(client):
    from gradio_client.exceptions import AppError

    era_map, gallery, status = client.predict("baroque", 4, 0, api_name="/era_paint")
    assert len(gallery) == 4 and "**baroque**" in status
    strip, era_map, gallery, status = client.predict("renaissance", "modern", 0.25, 3, 1, api_name="/morph")
    assert len(strip) == 8 and len(gallery) == 3 and "25% of the way" in status
    assert [frame["caption"] for frame in strip] == ["renaissance", "14%", "29%", "43%", "57%", "71%", "86%", "modern"]
    with pytest.raises(AppError, match="Unknown era"):
        client.predict("gothic", 4, 0, api_name="/era_paint")


def test_about_tab_shows_the_model_card_metrics(app):
    assert "| held-out era accuracy | 0.123 |" in app._model_card_metrics()


# ------------------------------------------------------------------------------------ path confinement


def test_typed_paths_stay_inside_the_data_root(app, tmp_path):
    root = tmp_path / "data"
    (root / "corpus").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    assert app.confined_path("corpus", root, must_exist=True) == (root / "corpus").resolve()
    assert app.confined_path(str(root / "corpus"), root) == (root / "corpus").resolve()
    assert app.confined_path("new/run", root) == (root / "new" / "run").resolve()
    for typed, message in [("../elsewhere", "'..' is not allowed"), ("corpus/../../x", "'..' is not allowed"),
                           (str(outside), "outside the data folder"), ("/etc", "outside the data folder"),
                           ("escape", "symbolic link"), ("escape/inner", "symbolic link"),
                           ("", "Type a folder"), ("missing", "does not exist")]:
        with pytest.raises(app.PathError, match=message):
            app.confined_path(typed, root, must_exist=typed == "missing")


def test_train_tab_refuses_paths_outside_the_data_root(client):
    from gradio_client.exceptions import AppError

    for dataset, message in [("../", "'..' is not allowed"), ("/etc", "outside the data folder"),
                             ("nothing-here", "does not exist")]:
        with pytest.raises(AppError, match=message):
            client.predict(dataset, "x", 1, "batch-hard", 5, 2, 1e-3, 3.0, "ours", 1, 8, 2e-4, 2e-4, [],
                           api_name="/train_start")
    with pytest.raises(AppError, match="outside the data folder"):
        client.predict("/tmp", api_name="/train_resume")


@pytest.mark.slow  # imports the app in fresh processes (~12 s each)
def test_training_is_off_on_a_public_space_unless_enabled(tmp_path):
    code = ("import app, json; print(json.dumps([app.TRAINING_ENABLED, "
            "sorted(d['api_name'] for d in app.demo.config['dependencies'] if d.get('api_name'))]))")
    for enable, expected in [(None, False), ("1", True)]:
        env = {**os.environ, "SPACE_ID": "someone/mvnet", "MVNET_WEIGHTS": str(tmp_path / "no-weights"),
               "MVNET_DATA_ROOT": str(tmp_path)}
        env.pop("MVNET_ENABLE_TRAINING", None)
        if enable:
            env["MVNET_ENABLE_TRAINING"] = enable
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        enabled, endpoints = json.loads(done.stdout.strip().splitlines()[-1])
        assert enabled is expected and ("train_start" in endpoints) is expected
        assert "paint" in endpoints


@pytest.mark.slow
def test_without_weights_the_app_starts_and_says_how_to_get_them(tmp_path):
    code = ("import app; print(app._weights_banner()); "
            "import gradio as gr\ntry:\n    app.SLOT.model()\nexcept gr.Error as e:\n    print('ERROR', e.message)")
    env = {**os.environ, "MVNET_WEIGHTS": str(tmp_path / "none"), "MVNET_DATA_ROOT": str(tmp_path)}
    env.pop("SPACE_ID", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No trained weights are present" in done.stdout and "Train" in done.stdout
    assert "ERROR No trained weights are loaded" in done.stdout


# ------------------------------------------------------------------------------------------- training


def write_tiny_corpus(root: Path, clips=(4, 2), seed=0) -> Path:
    """Musart layout: {training,testing}/<era>/a{k}.wav (era-dependent tones) + i{n}.png (era colours)."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    for split, count in zip(("training", "testing"), clips, strict=True):
        for e, era in enumerate(ERAS):
            folder = root / split / era
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                pitch = 110.0 * 2 ** (e * 0.6 + rng.uniform(0, 0.3))
                wave = 0.2 * np.sin(2 * np.pi * pitch * (1 + (t * 2).astype(int) % 3 / 4) * t)
                soundfile.write(folder / f"a{k}.wav", wave.astype(np.float32), SAMPLE_RATE)
            for n in range(3 * count):
                colour = np.array([50 * e, 200 - 40 * e, 40 + 50 * e], np.float32) + rng.normal(0, 20, (64, 64, 3))
                Image.fromarray(colour.clip(0, 255).astype(np.uint8)).save(folder / f"i{n}.png")
    return root


def wait_for_job(client, timeout=600):
    """Poll the Train tab's status endpoint until the job ends; returns (percent seen, last status)."""
    seen, started = [], time.time()
    while time.time() - started < timeout:
        progress, status = client.predict(api_name="/train_status")[:2]
        seen.append(progress)
        if any(word in status for word in ("finished**", "stopped**", "failed**")):
            return seen, status
        time.sleep(0.5)
    raise AssertionError(f"training did not finish in {timeout} s; last status: {status}")


@pytest.mark.slow
def test_train_tab_trains_stops_resumes_and_uses_the_run(app, client):
    from mvnet.pipeline import MVNet

    data_root = Path(os.environ["MVNET_DATA_ROOT"])
    write_tiny_corpus(data_root / "tiny")
    original = app.SLOT.get()
    settings = ["tiny", "app-run", 1, "batch-hard", 5, 2, 1e-3, 3.0, "ours", 2, 8, 2e-4, 2e-4,
                ["color", "translation"]]
    try:
        run_folder = client.predict(*settings, api_name="/train_start")[0]
        assert run_folder == "runs/app-run"
        # Stop as soon as stage 2 is under way; a checkpoint is kept.
        started = time.time()
        while "GAN" not in client.predict(api_name="/train_status")[0] and time.time() - started < 300:
            time.sleep(0.2)
        client.predict(api_name="/train_stop")
        seen, status = wait_for_job(client)
        run = data_root / "runs" / "app-run"
        assert "stopped**" in status, status
        assert (run / "gan" / "checkpoint.pt").exists() and not (run / "gan" / "gan.json").exists()
        client.predict(run_folder, api_name="/train_resume")
        seen, status = wait_for_job(client)
        assert "train finished**" in status, status
        assert any("100%" in s for s in seen)
        assert (run / "encoder" / "encoder.json").exists() and (run / "gan" / "gan.json").exists()
        progress, status, curves, scatter, samples = client.predict(api_name="/train_status")[:5]
        assert Image.open(scatter).size[0] > 100 and Image.open(samples).size[0] > 100
        assert Image.open(curves).size[0] > 100

        message, banner, era_map = client.predict(run_folder, True, api_name="/use_weights")
        assert "now paints with runs/app-run" in message and "runs/app-run" in banner
        assert "Exported to" in message
        exported = MVNet.from_pretrained(app.WEIGHTS_DIR)
        assert exported.atlas is not None and len(exported.atlas) == 4 * len(ERAS)
        assert "runs/app-run" in app.SLOT.get().source and app.SLOT.get().model.atlas is not None
        assert len(client.predict(upload(EXAMPLES / "baroque.ogg"), 3, 0, api_name="/paint")[3]) == 3
        # A second start with the same run name is refused; one job at a time.
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match="already exists"):
            client.predict(*settings, api_name="/train_start")
    finally:
        app.WORKER.stop()
        app.WORKER.wait(60)
        app.SLOT.set(original.model, original.source)
