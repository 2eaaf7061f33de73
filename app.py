"""MVNet in the browser: listen to music, see where it sits among the art eras, and paint it.

    python app.py                     # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT or PORT)

Layout and wiring only: audio, embeddings and paintings come from `mvnet`, training from `train`.

Environment variables:
    MVNET_WEIGHTS           weights folder to load (default: ./weights)
    MVNET_DATA_ROOT         the only folder the Train tab reads and writes (default: ./data)
    MVNET_CORPUS_SOURCES    folder with midi/ and paintings/ for "Build starter corpus"
                            (default: ../shared/data next to the repository)
    MVNET_ENABLE_TRAINING   1 / 0: show the Train tab (default: on, but off on a Hugging Face Space, SPACE_ID)
    MVNET_CONCURRENCY       requests computed at once (default: 2); more wait in the queue (at most 64)
    MVNET_TORCH_THREADS     torch threads (default: cores // MVNET_CONCURRENCY, at least 1)
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np

from mvnet import ERAS
from mvnet.atlas import AtlasError
from mvnet.audio import CLIP_SAMPLES, CLIP_SECONDS, MAX_SECONDS, SAMPLE_RATE, AudioError
from mvnet.pipeline import MVNet, WeightsError
from mvnet.plots import PixelMapping, era_map_image, mel_image, message_image, painting_images
from train.jobs import Job, JobError, Worker, describe, new_run_plan, resume_plan, run_training, whole_number
from train.paths import PathError, check_run_name, relative_to
from train.paths import confined_path as _confined

ROOT = Path(__file__).resolve().parent
WEIGHTS_DIR = Path(os.environ.get("MVNET_WEIGHTS") or ROOT / "weights")
DATA_ROOT = Path(os.environ.get("MVNET_DATA_ROOT") or ROOT / "data")
CORPUS_SOURCES = Path(os.environ.get("MVNET_CORPUS_SOURCES") or ROOT.parent / "shared" / "data")
EXAMPLES_DIR = ROOT / "assets" / "examples"
ON_SPACES = bool(os.environ.get("SPACE_ID"))
TRAINING_ENABLED = os.environ.get("MVNET_ENABLE_TRAINING", "0" if ON_SPACES else "1").strip() == "1"
MAX_FILE_SIZE = "50mb"
# Requests painted at once, and torch threads in all (measured with bench/load.py on 2 cores: concurrency 2 with
# one thread each served 4 and 16 clients at least as well as 1 x 2 or 2 x 2 threads, and never oversubscribes).
CONCURRENCY = int(os.environ.get("MVNET_CONCURRENCY") or 2)
TORCH_THREADS = int(os.environ.get("MVNET_TORCH_THREADS") or max(1, (os.cpu_count() or 1) // CONCURRENCY))
QUEUE_SIZE = 64
MAX_IMAGES = 16
MORPH_FRAMES = 8
EXPLORE_TITLE = "Era map: click anywhere to paint that point"
CLICK_MODES = ("Interpolated point under the cursor", "Nearest reference clip")


# ------------------------------------------------------------------------------------------ the model


@dataclass
class Loaded:
    """The MVNet the app paints with, where it came from, and its era map's click mapping."""

    model: MVNet | None
    source: str
    problem: str = ""
    mapping: PixelMapping | None = None


class ModelSlot:
    """Holds the current model; "Use these weights" swaps it whole, so a request sees one model."""

    def __init__(self):
        self._loaded = Loaded(None, "", "not loaded yet")
        self._lock = threading.Lock()

    def get(self) -> Loaded:
        return self._loaded

    def set(self, model: MVNet, source: str) -> None:
        mapping = era_map_image(model.atlas)[1] if model.atlas is not None else None
        with self._lock:
            self._loaded = Loaded(model, source, "", mapping)

    def load_folder(self, folder: Path) -> None:
        try:
            self.set(MVNet.from_pretrained(folder), f"`{_shown_path(folder)}`")
        except (WeightsError, AtlasError) as error:
            with self._lock:
                self._loaded = Loaded(None, "", str(error))

    def model(self) -> MVNet:
        model = self._loaded.model
        if model is None:
            raise gr.Error(f"No trained weights are loaded, so nothing can be painted yet. {self._loaded.problem} "
                           "Train a model in the Train tab (or run `python -m train all`), then use its weights.")
        return model


SLOT = ModelSlot()


def _atomic_save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio.processing_utils.save_pil_to_cache, but never truncating a file that may be being served.

    Gradio stores output images under a hash of their bytes and rewrites the file in place each time, so two
    requests with the same output (same example, same seed: common) race: one client downloads the file while
    the other request truncates it ("peer closed connection ... received 0 bytes", seen in bench/load.py).
    Here an existing complete file is reused and a new one appears atomically (temp file + os.replace).
    """
    from gradio import processing_utils

    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if not (path.is_file() and path.stat().st_size == len(data)):
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    return str(path)


def _use_atomic_image_cache() -> None:
    from gradio import processing_utils

    processing_utils.save_pil_to_cache = _atomic_save_pil_to_cache  # gallery, image and mel outputs use it


def _shown_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def warm_up() -> dict[str, float]:
    """Run every request path once (features, encoder, generator, plots) so the first visitor waits less."""
    timings = {}
    model = SLOT.get().model
    started = time.perf_counter()
    mel_image(np.zeros((3, 128, 256), np.float32))
    message_image("warming up")
    timings["plots"] = time.perf_counter() - started
    if model is None:
        return timings
    started = time.perf_counter()
    seconds = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    embedding = model.embed((SAMPLE_RATE, (0.1 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)))
    model.paint(embedding, n=9, seed=0)
    if model.atlas is not None:
        era_map_image(model.atlas, highlight=model.atlas.place(embedding.vector))
    timings["model"] = time.perf_counter() - started
    return timings


# ------------------------------------------------------------------------------------ shared helpers


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _seed(value) -> int:
    try:
        return whole_number(value, "The seed", 0, 2**31 - 1)
    except JobError as error:
        raise gr.Error(f"{error} The seed must be between 0 and 2147483647.") from None


def _count(value) -> int:
    try:
        return whole_number(value, "The number of images", 1, MAX_IMAGES)
    except JobError as error:
        raise gr.Error(f"{error} Paint between 1 and {MAX_IMAGES} images.") from None


def _gallery(model: MVNet, vector, n: int, seed: int) -> list:
    pictures = painting_images(model.paint(vector, n=n, seed=seed))
    return [(picture, f"seed {seed} · #{index + 1}") for index, picture in enumerate(pictures)]


def _no_atlas_image() -> np.ndarray:
    return message_image("These weights have no era map (atlas.safetensors).\n"
                         "Export a run with its atlas to see the map.")


def _windows_sentence(embedding) -> str:
    duration, starts, count = embedding.duration_seconds, embedding.starts_seconds, len(embedding.starts_seconds)
    if embedding.looped:
        return (f"The recording is {duration:.1f} s long, shorter than one {CLIP_SECONDS:.2f} s window, so it was "
                "looped to fill one window.")
    possible = int((duration - CLIP_SECONDS) // CLIP_SECONDS) + 1
    spans = ", ".join(f"{_clock(s)}–{_clock(s + CLIP_SECONDS)}" for s in starts[:4]) + (", …" if count > 4 else "")
    used = "1 window" if count == 1 else f"{count} windows"
    sentence = f"Embedded {used} of {CLIP_SECONDS:.2f} s from a {_clock(duration)} recording ({spans})"
    if count < possible:
        sentence += f": {count} of the {possible} whole windows, spread evenly over the piece"
    elif duration - (starts[-1] + CLIP_SECONDS) >= 0.5:
        sentence += f"; the last {duration - starts[-1] - CLIP_SECONDS:.1f} s (less than a window) was left out"
    if count > 1:
        sentence += "; the era embedding is the mean of the windows"
    if duration >= MAX_SECONDS - 1:
        sentence += f". Only the first {MAX_SECONDS / 60:.0f} minutes were read"
    return sentence + "."


# -------------------------------------------------------------------------------- Paint from music


def paint_from_music(audio_path, n, seed):
    """Audio file -> (mel image, era scores, era map, gallery, status, embedding state, map state)."""
    model = SLOT.model()
    n, seed = _count(n), _seed(seed)
    if not audio_path:
        raise gr.Error("No audio yet: upload a music file, record with the microphone, or pick an example.")
    started = time.perf_counter()
    try:
        embedding = model.embed(audio_path)
    except AudioError as error:
        raise gr.Error(str(error)) from None
    gallery = _gallery(model, embedding.vector, n, seed)
    scores = model.era_scores(embedding)
    first = embedding.starts_seconds[0]
    title = f"window 1 of {len(embedding.starts_seconds)}: {_clock(first)}–{_clock(first + CLIP_SECONDS)}"
    mel = mel_image(embedding.features[0], start_seconds=first, title=title)
    atlas = model.atlas
    if atlas is not None:
        top = max(scores, key=scores.get)
        trail = atlas.place(embedding.windows) if len(embedding.windows) > 1 else None
        era_map, mapping = era_map_image(atlas, highlight=atlas.place(embedding.vector),
                                         highlight_label=f"your clip ({top})", trail=trail,
                                         title="Where the music sits on the era map"
                                         + (" (circles: its windows)" if trail is not None else ""))
        mapping = mapping.to_dict()
    else:
        era_map, mapping = _no_atlas_image(), None
    seconds = time.perf_counter() - started  # decoding, features, encoder, generator and both figures
    status = (f"{_windows_sentence(embedding)} Painted {n} image{'s' * (n != 1)} with seed {seed}; "
              f"all of it took {seconds:.2f} s.")
    return mel, scores, era_map, gallery, status, embedding.vector.tolist(), mapping


def new_variations(vector, n):
    """Same embedding, a fresh random seed -> (seed, gallery)."""
    model = SLOT.model()
    if vector is None:
        raise gr.Error("Paint from some music first; new variations reuse its embedding with another seed.")
    seed = random.randrange(2**31)
    return seed, _gallery(model, np.asarray(vector, np.float32), _count(n), seed)


# ------------------------------------------------------------------------------ Explore the era map


def _atlas_or_error(model: MVNet):
    if model.atlas is None:
        raise gr.Error("These weights have no era map (atlas.safetensors); export the run with its atlas.")
    return model.atlas


def explore_view():
    """The plain era map for a fresh page: (image, mapping state)."""
    loaded = SLOT.get()
    if loaded.model is None:
        return message_image("No trained weights are loaded yet.\nUse the Train tab to make some."), None
    if loaded.model.atlas is None:
        return _no_atlas_image(), None
    image, mapping = era_map_image(loaded.model.atlas, title=EXPLORE_TITLE)
    return image, mapping.to_dict()


def paint_at_pixel(column, row, mode, n, seed, mapping: PixelMapping | None = None):
    """A click on the era map at pixel (column, row) -> (map, gallery, status).

    `mapping` is the one of the image that was clicked; without it, the current atlas's map is used
    (every map of one atlas shares one mapping), which is what API callers get.
    """
    model = SLOT.model()
    atlas = _atlas_or_error(model)
    mapping = mapping or SLOT.get().mapping
    n, seed = _count(n), _seed(seed)
    try:
        column, row = float(column), float(row)
    except (TypeError, ValueError):
        raise gr.Error("The map click needs pixel coordinates (x, y).") from None
    if not (0 <= column < mapping.width and 0 <= row < mapping.height):
        raise gr.Error(f"({column:.0f}, {row:.0f}) is outside the {mapping.width}x{mapping.height} map.")
    xy = np.array(mapping.data_at_click(column, row), np.float32)
    nearest = atlas.nearest(xy)
    if mode == CLICK_MODES[1]:
        vector, label = atlas.reference_embeddings[nearest], atlas.describe(nearest)
        what = f"the nearest reference clip, {atlas.describe(nearest)}"
    else:
        vector, label = atlas.embedding_at(xy), "here"
        what = f"the point ({xy[0]:.2f}, {xy[1]:.2f}), interpolated from the reference clips around it"
    scores = model.era_scores(vector)
    top = max(scores, key=scores.get)
    image, _ = era_map_image(atlas, highlight=xy, highlight_label=label, ring=nearest, title=EXPLORE_TITLE)
    status = (f"Painted {n} images from {what}. It sounds most like **{top}** ({scores[top]:.0%}); "
              f"nearest clip: {atlas.describe(nearest)}.")
    return image, _gallery(model, vector, n, seed), status


def map_select(mapping_state, mode, n, seed, event: gr.SelectData):
    """gr.Image.select on the era map: event.index == [column, row] in the image's pixels."""
    if not event.index or len(event.index) != 2:
        raise gr.Error("Click a point on the map.")
    mapping = PixelMapping.from_dict(mapping_state) if mapping_state else None
    return paint_at_pixel(event.index[0], event.index[1], mode, n, seed, mapping)


def era_paint(era, n, seed):
    """Paint from an era's centroid -> (map, gallery, status)."""
    model = SLOT.model()
    if era not in model.eras:
        raise gr.Error(f"Unknown era {era!r}; the eras are {', '.join(model.eras)}.")
    index = model.eras.index(era)
    vector = model.centroids[index]
    n, seed = _count(n), _seed(seed)
    if model.atlas is not None:
        image, _ = era_map_image(model.atlas, highlight=model.atlas.centroids_xy()[index],
                                 highlight_label=f"{era} centre", title=EXPLORE_TITLE)
    else:
        image = _no_atlas_image()
    status = f"Painted {n} images from the centre of **{era}** (the mean embedding of its training clips)."
    return image, _gallery(model, vector, n, seed), status


def morph(era_from, era_to, position, n, seed):
    """Walk the line between two era centroids -> (strip, map, gallery at `position`, status)."""
    model = SLOT.model()
    for era in (era_from, era_to):
        if era not in model.eras:
            raise gr.Error(f"Unknown era {era!r}; the eras are {', '.join(model.eras)}.")
    try:
        position = float(position)
    except (TypeError, ValueError):
        raise gr.Error("The morph position must be a number between 0 and 1.") from None
    if not 0.0 <= position <= 1.0:
        raise gr.Error("The morph position must be between 0 and 1.")
    n, seed = _count(n), _seed(seed)
    start, end = (model.centroids[model.eras.index(e)] for e in (era_from, era_to))
    steps = np.linspace(0.0, 1.0, MORPH_FRAMES)
    frames = painting_images(model.paint_many(start[None] + steps[:, None] * (end - start)[None], seed=seed))
    captions = [era_from] + [f"{t:.0%}" for t in steps[1:-1]] + [era_to]  # share of the way to era_to
    strip = list(zip(frames, captions, strict=True))
    vector = start + position * (end - start)
    if model.atlas is not None:
        centroids = model.atlas.centroids_xy()
        a, b = centroids[model.eras.index(era_from)], centroids[model.eras.index(era_to)]
        image, _ = era_map_image(model.atlas, highlight=a + position * (b - a), line=(a, b),
                                 highlight_label=f"{position:.0%} of the way", title=EXPLORE_TITLE)
    else:
        image = _no_atlas_image()
    status = (f"Morph from **{era_from}** to **{era_to}**: the strip walks the line between their centres with "
              f"one noise (seed {seed}); the gallery paints {n} images at {position:.0%} of the way.")
    return strip, image, _gallery(model, vector, n, seed), status


# ------------------------------------------------------------------------------------------ Train


def confined_path(text, root: Path | None = None, must_exist: bool = False) -> Path:
    """A typed folder resolved inside the data folder (train.paths.confined_path with DATA_ROOT by default)."""
    return _confined(text, root or DATA_ROOT, must_exist)


WORKER = Worker()


def _device_sentence() -> str:
    import torch

    if torch.cuda.is_available():
        return f"Training runs on the GPU ({torch.cuda.get_device_name(0)})."
    cores = os.cpu_count() or 1
    return (f"No GPU here: training runs on the CPU ({cores} cores). Expect minutes per encoder epoch and "
            "hours for a GAN worth looking at on the full starter corpus; a few epochs show the idea.")


def start_training(dataset, run_name, enc_epochs, sampling, eras_per_batch, clips_per_era, enc_lr, margin,
                   recipe, gan_epochs, batch_size, lr_g, lr_d, diffaugment):
    """Start both stages in a new run folder <data root>/runs/<run name>."""
    try:
        data_root = confined_path(dataset, must_exist=True)
        name = check_run_name((run_name or "").strip() or time.strftime("run-%Y%m%d-%H%M%S"))
        run_dir = confined_path(f"runs/{name}")
        if WORKER.busy():
            raise JobError("A job is already running; stop it or wait for it to finish (one at a time).")
        plan = new_run_plan(run_dir, data_root, enc_epochs=enc_epochs, sampling=sampling,
                            eras_per_batch=eras_per_batch, clips_per_era=clips_per_era, enc_lr=enc_lr,
                            margin=margin, recipe=recipe, gan_epochs=gan_epochs, batch_size=batch_size,
                            lr_g=lr_g, lr_d=lr_d, diffaugment=diffaugment)
        WORKER.start(Job("train", run_dir=run_dir), partial(run_training, plan=plan))
    except (PathError, JobError) as error:
        raise gr.Error(str(error)) from None
    gr.Info(f"Training started in {_relative_to_data(run_dir)}.")
    return f"runs/{name}", gr.Timer(active=True)


def resume_training(run_text):
    """Continue a run folder made by this tab: finished stages are kept, unfinished ones resume."""
    try:
        run_dir = confined_path(run_text, must_exist=True)
        plan = resume_plan(run_dir)
        WORKER.start(Job("train", run_dir=run_dir), partial(run_training, plan=plan))
    except (PathError, JobError) as error:
        raise gr.Error(str(error)) from None
    gr.Info(f"Resuming {_relative_to_data(run_dir)}.")
    return gr.Timer(active=True)


def stop_job():
    if WORKER.stop():
        gr.Info("Stopping at the next step; the last checkpoint is kept.")
    else:
        gr.Warning("Nothing is running.")


def _relative_to_data(path: Path) -> str:
    return relative_to(path, DATA_ROOT)


def _build_corpus(job: Job, stop: threading.Event, settings) -> None:
    from train.corpus import build_corpus, summary_lines

    manifest = build_corpus(settings)
    job.fraction = 1.0
    job.message = "Starter corpus ready. " + " ".join(summary_lines(manifest)[-1:])
    job.result = "\n".join(summary_lines(manifest))


def build_starter_corpus(dataset, clips_per_era):
    """Synthesize the starter corpus (fluidsynth) into <data root>/<dataset> in the background."""
    from train.corpus import BuildSettings, CorpusError, find_fluidsynth, find_soundfonts, read_midi_index

    try:
        out = confined_path(dataset)
        clips = whole_number(clips_per_era, "Training clips per era", 1, 100_000)
    except (PathError, JobError) as error:
        raise gr.Error(str(error)) from None
    midi, paintings = CORPUS_SOURCES / "midi", CORPUS_SOURCES / "paintings"
    if not (midi.is_dir() and paintings.is_dir()):
        raise gr.Error(f"The starter corpus is made from {midi} and {paintings}, which are not here. "
                       "Set MVNET_CORPUS_SOURCES to a folder holding midi/ and paintings/.")
    try:
        find_fluidsynth()
        find_soundfonts()
        total = len(read_midi_index(midi))
    except CorpusError as error:
        raise gr.Error(str(error)) from None
    settings = BuildSettings(midi=str(midi), paintings=str(paintings), out=str(out),
                             train_clips_per_era=clips, jobs=min(2, os.cpu_count() or 1),
                             progress=False)

    def progress_of():
        done = sum(1 for _ in (out / "_build" / "clips").glob("*/*.json")) if out.is_dir() else 0
        return min(done / max(total, 1), 0.99), f"rendering pieces: {done} of {total}"

    try:
        WORKER.start(Job("corpus", run_dir=out, stage="starter corpus", progress_of=progress_of),
                     partial(_build_corpus, settings=settings))
    except JobError as error:
        raise gr.Error(str(error)) from None
    gr.Info(f"Building the starter corpus in {_relative_to_data(out)}.")
    return gr.Timer(active=True)


def _progress_html(fraction: float, label: str) -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return (f"<div class='mvnet-progress'><div class='mvnet-progress-bar' style='width:{percent:.1f}%'></div>"
            f"<span>{_escape(label)} — {percent:.0f}%</span>"
            "</div>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def training_status():
    """The shared job state -> (progress html, status, curves, scatter, samples, timer).

    Polled by the timer and run on page load, so a refreshed page re-attaches to a running job.
    """
    view = describe(WORKER.job, shown=_relative_to_data)
    scatter, samples = _picture(view.artifacts.get("scatter")), _picture(view.artifacts.get("samples"))
    curves = WORKER.curves_picture()
    if curves is None:
        curves = _picture(view.artifacts.get("curves"))
    timer = gr.Timer(active=view.state == "running")
    return _progress_html(view.fraction, view.label), "\n\n".join(view.lines), curves, scatter, samples, timer


def _picture(path: str | None):
    """A run folder's PNG as pixels: Gradio serves only files under its allowed paths, the data folder may not be."""
    if not path:
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError:  # being rewritten right now; the next poll shows it
        return None


def use_trained_weights(run_text, export):
    """Load a finished run into the running app (and optionally export it to the weights folder)."""
    from train.config import ConfigError
    from train.export import export_run, fit_atlas, pipeline_from_runs

    job = WORKER.job
    if (run_text or "").strip():
        try:
            run_dir = confined_path(run_text, must_exist=True)
        except PathError as error:
            raise gr.Error(str(error)) from None
    elif job is not None and job.kind == "train" and job.result:
        run_dir = Path(job.result)
    else:
        raise gr.Error("No finished run yet: train one, or type a finished run folder (runs/<name>).")
    if WORKER.busy() and job is not None and job.run_dir == run_dir:
        raise gr.Error("This run is still training; wait for it to finish.")
    encoder_run, gan_run = run_dir / "encoder", run_dir / "gan"
    try:
        model = pipeline_from_runs(encoder_run, gan_run, atlas=fit_atlas(encoder_run))
        if export:
            export_run(encoder_run, gan_run, out_dir=WEIGHTS_DIR)
    except (ConfigError, FileNotFoundError) as error:
        raise gr.Error(f"{_relative_to_data(run_dir)} is not a finished run: {error}") from None
    SLOT.set(model, f"the run `{_relative_to_data(run_dir)}`")
    message = f"The app now paints with {_relative_to_data(run_dir)}."
    if export:
        message += f" Exported to `{_shown_path(WEIGHTS_DIR)}` (loaded at the next start)."
    gr.Info(message)
    image, mapping = explore_view()
    return message, _weights_banner(), image, mapping


# ------------------------------------------------------------------------------------------ About


def _model_card_metrics() -> str:
    """The metrics section of the loaded weights' model card (weights/README.md), or why there is none."""
    card = WEIGHTS_DIR / "README.md"
    if not card.is_file():
        return f"No model card yet (`{_shown_path(card)}` is missing): the bundled weights have not been trained."
    text = card.read_text(encoding="utf-8", errors="replace")
    sections = re.split(r"(?m)^(?=#{1,3} )", text)
    metrics = [s for s in sections if re.match(r"#{1,3} .*(metric|result|evaluation)", s, re.IGNORECASE)]
    if not metrics:
        tables = re.findall(r"(?m)(?:^\|.*\|\s*$\n?)+", text)
        return tables[0] if tables else "The model card has no metrics table."
    return "\n".join(section.split("\n", 1)[-1].strip() for section in metrics)  # without its heading


def _examples_credits() -> str:
    path = EXAMPLES_DIR / "examples.json"
    if not path.is_file():
        return ""
    credits = json.loads(path.read_text())
    rows = ["| example | era | piece | source | instruments |", "|---|---|---|---|---|"]
    for name, c in credits.items():
        rows.append(f"| {name} | {c['era']} | {c['composer'].title()}, `{Path(c['piece']).stem.split('__')[-1]}` "
                    f"| {c['licence']} | {', '.join(c['instruments'])} |")
    return "\n".join(rows)


ABOUT = """
**MVNet** turns music into paintings in the style of the art era it sounds like. It follows the report
*Music Visualization Network: Towards Audio to Image Synthesis using cDCGAN*: an **audio encoder** maps
8.91 s of audio (log-mel spectrogram, three 2.97 s segments as three channels of 128 × 256) to a
10-dimensional era embedding, trained with a triplet margin loss so that music of one era lands close
together; a **conditional GAN** with self-attention paints 64 × 64 images from that embedding plus noise.
The five eras are renaissance, baroque, classical, romantic and modern.

A long recording is cut into 8.91 s windows (up to 8, spread over the piece) whose embeddings are averaged.
The era scores are a softmax over the distances to each era's centre. The era map is a UMAP of the
training clips' embeddings; new music is placed from its nearest training clips.

These are 64 × 64 GAN paintings from a small model trained on a 2-core CPU: expect impressions of colour,
light and composition typical of an era, not masterpieces.
"""

DATA_NOTE = """
**Paintings**: WikiArt images (for non-commercial research use) and Art Institute of Chicago images (CC0);
the works themselves are old enough to be in the public domain.
**Music**: MIDI from the music21 corpus (distributed with the toolkit; some non-commercial), the ASAP dataset
(CC BY-NC-SA 4.0), piano-midi.de (CC BY-SA), DCML corpora (CC BY-NC-SA 4.0) and the Mutopia Project
(public domain or CC BY / CC BY-SA per piece), synthesized with fluidsynth and General-MIDI soundfonts,
with instruments drawn from one pool for every era so timbre does not give the era away.
The mix is fine for a research demo, not for commercial use.
"""


# ------------------------------------------------------------------------------------------ layout


def _weights_banner() -> str:
    loaded = SLOT.get()
    if loaded.model is None:
        hint = "the **Train** tab" if TRAINING_ENABLED else "`python -m train all` on a machine of your own"
        return (f"⚠️ **No trained weights are present** ({loaded.problem.split('. Train')[0]}). "
                f"The app cannot paint until a model is trained: use {hint}, then “Use these weights”.")
    atlas = "with" if loaded.model.atlas is not None else "without"
    return f"Painting with {loaded.source} on {loaded.model.device.type.upper()}, {atlas} an era map."


def _example_files() -> list[list[str]]:
    order = {era: index for index, era in enumerate(ERAS)}
    files = sorted(EXAMPLES_DIR.glob("*.ogg"), key=lambda p: (order.get(p.stem.split("_")[0], 9), p.stem))
    return [[str(path)] for path in files]


CSS = """
.mvnet-progress { position: relative; height: 28px; border-radius: 6px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); overflow: hidden; }
.mvnet-progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); }
.mvnet-progress span { position: relative; padding-left: 10px; line-height: 28px; font-size: 14px; }
#era-map img, #explore-map img { cursor: crosshair; }
"""


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="MVNet: music to paintings") as demo:
        gr.Markdown("# MVNet — music to paintings\nListen to a piece, see which art era it sounds like, "
                    "and paint it. A grid of paintings takes well under a second on a 2-core CPU.")
        banner = gr.Markdown(_weights_banner(), elem_id="weights-banner")

        with gr.Tab("Paint from music", id="paint"):
            vector_state = gr.State(None)
            paint_mapping = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1, min_width=360):
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                     label="Music (upload a file or record)", elem_id="music")
                    with gr.Row():
                        n_images = gr.Slider(1, MAX_IMAGES, value=9, step=1, label="Paintings")
                        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
                    with gr.Row():
                        paint_button = gr.Button("Paint", variant="primary")
                        variations_button = gr.Button("New variations")
                    gr.Examples(_example_files(), inputs=[audio], label="Examples: one per era, 8.9 s each "
                                "(classical_long: three windows)", examples_per_page=6)
                    mel = gr.Image(show_label=False, interactive=False, format="png", elem_id="mel",
                                   buttons=["download", "fullscreen"])
                with gr.Column(scale=1, min_width=360):
                    status = gr.Markdown("Upload or record some music, or pick an example, then press **Paint**.",
                                         elem_id="paint-status")
                    gallery = gr.Gallery(label="Paintings", columns=3, height="fit-content", object_fit="contain",
                                         format="png", interactive=False, elem_id="paint-gallery")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    scores = gr.Label(num_top_classes=len(ERAS), label="Era scores")
                with gr.Column(scale=3, min_width=420):
                    paint_map = gr.Image(show_label=False, interactive=False, elem_id="era-map", format="png",
                                         buttons=["download", "fullscreen"])

            paint_outputs = [mel, scores, paint_map, gallery, status, vector_state, paint_mapping]
            paint_button.click(paint_from_music, [audio, n_images, seed], paint_outputs, api_name="paint")
            variations_button.click(new_variations, [vector_state, n_images], [seed, gallery],
                                    api_name="variations")

        with gr.Tab("Explore the era map", id="explore"):
            explore_mapping = gr.State(None)
            with gr.Row():
                with gr.Column(scale=3, min_width=420):
                    explore_map = gr.Image(show_label=False, interactive=False, elem_id="explore-map", format="png",
                                           buttons=["download", "fullscreen"])
                    click_mode = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0], label="A click paints")
                with gr.Column(scale=2, min_width=320):
                    explore_status = gr.Markdown("Click the map, press an era, or morph between two eras.")
                    explore_gallery = gr.Gallery(label="Paintings", columns=3, height="fit-content", object_fit="contain",
                                                 format="png", interactive=False, elem_id="explore-gallery")
                    with gr.Row():
                        explore_n = gr.Slider(1, MAX_IMAGES, value=9, step=1, label="Paintings")
                        explore_seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
            gr.Markdown("**Paint an era's centre**")
            with gr.Row():
                era_buttons = [gr.Button(era, size="sm") for era in ERAS]
            gr.Markdown("**Morph between two eras**")
            with gr.Row():
                morph_from = gr.Dropdown(list(ERAS), value=ERAS[0], label="From")
                morph_to = gr.Dropdown(list(ERAS), value=ERAS[-1], label="To")
                morph_position = gr.Slider(0, 1, value=0.5, step=0.05, label="Position along the line")
                morph_button = gr.Button("Morph", variant="primary")
            morph_strip = gr.Gallery(label="Morph strip (one noise, from → to)", columns=MORPH_FRAMES,
                                     height="fit-content", object_fit="contain", format="png", interactive=False,
                                     elem_id="morph-strip")
            # API-only: a map click as pixel coordinates of the 640 x 500 map image.
            with gr.Row(visible=False):
                click_x = gr.Number(label="x (pixel column)")
                click_y = gr.Number(label="y (pixel row)")
                click_button = gr.Button("paint at pixel")

            explore_outputs = [explore_map, explore_gallery, explore_status]
            explore_map.select(map_select, [explore_mapping, click_mode, explore_n, explore_seed], explore_outputs,
                               api_name=False)
            click_button.click(paint_at_pixel, [click_x, click_y, click_mode, explore_n, explore_seed],
                               explore_outputs, api_name="map_click")
            for index, button in enumerate(era_buttons):
                button.click(era_paint, [button, explore_n, explore_seed], explore_outputs,
                             api_name="era_paint" if index == 0 else False)
            morph_inputs = [morph_from, morph_to, morph_position, explore_n, explore_seed]
            morph_button.click(morph, morph_inputs, [morph_strip, explore_map, explore_gallery, explore_status],
                               api_name="morph")
            morph_position.release(morph, morph_inputs,
                                   [morph_strip, explore_map, explore_gallery, explore_status], api_name=False)

        with gr.Tab("Train", id="train"):
            if TRAINING_ENABLED:
                train_outputs = _train_tab()
            else:
                gr.Markdown("Training is switched off on this public Space: a free Space has 2 shared vCPUs. "
                            "Run the app on your own machine (training is on there), or set "
                            "`MVNET_ENABLE_TRAINING=1`.")
                train_outputs = None

        with gr.Tab("About", id="about"):
            gr.Markdown(ABOUT)
            gr.Markdown("### Model card metrics\n" + _model_card_metrics())
            gr.Markdown("### Data and licences\n" + DATA_NOTE)
            gr.Markdown("### Bundled examples\n" + _examples_credits())

        demo.load(explore_view, None, [explore_map, explore_mapping], api_name=False)
        if train_outputs is not None:
            demo.load(training_status, None, train_outputs["status"], api_name=False)
            train_outputs["use_button"].click(
                use_trained_weights, [train_outputs["run_folder"], train_outputs["export"]],
                [train_outputs["use_message"], banner, explore_map, explore_mapping], api_name="use_weights")
    return demo


def _train_tab() -> dict:
    """The Train tab's components; returns those the rest of the page wires to."""
    from train.config import RECIPE_DEFAULTS, RECIPES, SAMPLING_DEFAULTS, SAMPLINGS, EncoderStageConfig

    defaults = EncoderStageConfig().resolved()
    ours = RECIPE_DEFAULTS["ours"]
    gr.Markdown(f"Train both stages here (encoder, then GAN) in a background worker, one job at a time; the "
                f"other tabs keep answering. {_device_sentence()} Folders are inside the data folder "
                f"`{DATA_ROOT}` (MVNET_DATA_ROOT).")
    with gr.Row():
        dataset = gr.Textbox("starter", label="Dataset folder (Musart layout), inside the data folder",
                             scale=3)
        corpus_clips = gr.Number(360, precision=0, label="Starter corpus: training clips per era", scale=1)
        corpus_button = gr.Button("Build starter corpus", scale=1)
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Stage 1: audio encoder** (triplet margin loss)")
            enc_epochs = gr.Number(defaults.epochs, precision=0, label="Epochs", minimum=1, elem_id="encoder-epochs")
            sampling = gr.Radio(list(SAMPLINGS), value=defaults.sampling, label="Triplet sampling", elem_id="sampling")
            with gr.Row():
                eras_per_batch = gr.Number(defaults.eras_per_batch, precision=0, label="Eras per batch (P)")
                clips_per_era = gr.Number(defaults.clips_per_era, precision=0, label="Clips per era (K)")
            with gr.Row():
                enc_lr = gr.Number(defaults.lr, label="Learning rate (0 = the sampling's default)")
                margin = gr.Number(defaults.margin, label="Margin")
        with gr.Column():
            gr.Markdown("**Stage 2: conditional GAN** (encoder frozen)")
            recipe = gr.Radio(list(RECIPES), value="ours", label="Recipe")
            gan_epochs = gr.Number(5, precision=0, label="Epochs", minimum=1)
            with gr.Row():
                batch_size = gr.Number(ours["batch_size"], precision=0, label="Batch size")
                lr_g = gr.Number(ours["lr_g"], label="Generator learning rate")
                lr_d = gr.Number(ours["lr_d"], label="Discriminator learning rate")
            diffaugment = gr.CheckboxGroup(["color", "translation", "cutout"],
                                           value=ours["diffaugment"].split(","), label="DiffAugment")
    with gr.Row():
        run_name = gr.Textbox(label="New run name (runs/<name>; empty: a time stamp)", scale=2)
        start_button = gr.Button("Start training", variant="primary", scale=1)
        stop_button = gr.Button("Stop", variant="stop", scale=1)
    with gr.Row():
        run_folder = gr.Textbox(label="Run folder to resume or use", placeholder="runs/<name>", scale=2)
        resume_button = gr.Button("Resume", scale=1)
        use_button = gr.Button("Use these weights", scale=1)
        export_box = gr.Checkbox(False, label="also export to weights/", scale=1)
    progress = gr.HTML(_progress_html(0, "idle"))
    train_status = gr.Markdown("No job has run yet.")
    with gr.Row():
        pictures = []
        for title in ("Loss curves (live)", "Embedding scatter (per epoch)", "Sample grid (per snapshot)"):
            with gr.Column(min_width=240):
                gr.Markdown(f"**{title}**")
                pictures.append(gr.Image(show_label=False, interactive=False, format="png", buttons=["fullscreen"]))
        curves, scatter, samples = pictures
    use_message = gr.Markdown()
    timer = gr.Timer(2.0, active=False)

    def recipe_defaults(name):
        values = RECIPE_DEFAULTS[name]
        return values["batch_size"], values["lr_g"], values["lr_d"], [p for p in values["diffaugment"].split(",") if p]

    recipe.change(recipe_defaults, recipe, [batch_size, lr_g, lr_d, diffaugment], api_name=False)
    sampling.change(lambda name: (SAMPLING_DEFAULTS[name]["epochs"], SAMPLING_DEFAULTS[name]["lr"]), sampling,
                    [enc_epochs, enc_lr], api_name=False)
    status_outputs = [progress, train_status, curves, scatter, samples, timer]
    timer.tick(training_status, None, status_outputs, api_name="train_status", concurrency_limit=None)
    start_button.click(start_training, [dataset, run_name, enc_epochs, sampling, eras_per_batch, clips_per_era,
                                        enc_lr, margin, recipe, gan_epochs, batch_size, lr_g, lr_d, diffaugment],
                       [run_folder, timer], api_name="train_start")
    resume_button.click(resume_training, run_folder, timer, api_name="train_resume")
    stop_button.click(stop_job, None, None, api_name="train_stop")
    corpus_button.click(build_starter_corpus, [dataset, corpus_clips], timer, api_name="build_corpus")
    return {"status": status_outputs, "use_button": use_button, "run_folder": run_folder, "export": export_box,
            "use_message": use_message}


_use_atomic_image_cache()
if TORCH_THREADS > 0:
    import torch

    torch.set_num_threads(TORCH_THREADS)
SLOT.load_folder(WEIGHTS_DIR)
WARM_UP = warm_up()
demo = build_demo()
demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


# Gradio 6 takes the theme and CSS at launch; tests launch with the same options.
# allowed_paths: the examples are served even when the app is started from another folder.
LAUNCH_OPTIONS = {"max_file_size": MAX_FILE_SIZE, "css": CSS, "theme": gr.themes.Soft(),
                  "allowed_paths": [str(EXAMPLES_DIR)]}


def main() -> None:
    port = int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
