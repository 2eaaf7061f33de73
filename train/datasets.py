"""Musart-Dataset reader and the torch Datasets the training stages read.

Layout (the report's Musart-Dataset, and what `train.corpus` builds):
`<root>/{training,testing}/<era>/a0 ... a{K-1}` audio (any extension soundfile or librosa reads) and
`i0 ... i{3K-1}` images (any size or mode PIL opens); audio a{k} pairs with images i{k}, i{k+K},
i{k+2K}, each also mirrored left-right: 6 pairs per clip.

    corpus = read_musart("data/starter")          # validates; prints the report (log=None: silent)
    corpus.report.label_counts("training")        # {"renaissance": 360, ...}
    train = corpus.split("training")              # SplitData: .audio, .labels, .pairs, .images
    features = FeatureCache("data/starter/_features").features_for(train.audio)
    ClipFeatureDataset(features, train.labels, mean, std)   # encoder stage: (x (3,128,256), label)
    PaintingPairDataset(train, mirror=True)                  # GAN stage: (clip row, image, label)

The reader never stops at a bad file or folder: a missing era folder, a split without audio, fewer
images than 3K (whatever can be paired is paired) and unreadable files (listed, skipped, counted)
all end up in `corpus.report` (`.warnings`, `.unreadable`, `.text()`). Only a corpus with no usable
training audio at all raises MusartError.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mvnet import ERAS

SPLITS = ("training", "testing")
AUDIO_EXTENSIONS = {".wav", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".aif", ".aiff", ".au", ".m4a", ".webm"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
_NUMBERED = re.compile(r"^([ai])(\d+)$", re.IGNORECASE)


class MusartError(ValueError):
    """The folder cannot be used for training at all; the message says why."""


@dataclass
class AudioItem:
    path: Path
    era: str
    label: int
    index: int  # k of a{k}


@dataclass
class EraCounts:
    audio: int = 0  # readable clips
    images: int = 0  # readable images
    pairs: int = 0  # (clip, image) pairs before mirroring
    unpaired_audio: int = 0  # clips with no readable image at all
    expected_images: int = 0  # 3K


@dataclass
class LayoutReport:
    """What the reader found: counts per split and era, warnings, and unreadable files with reasons."""

    root: str
    counts: dict[str, dict[str, EraCounts]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def label_counts(self, split: str = "training") -> dict[str, int]:
        """Readable audio clips per era (label order)."""
        return {era: self.counts.get(split, {}).get(era, EraCounts()).audio for era in ERAS}

    def text(self) -> str:
        lines = [f"Musart corpus at {self.root}"]
        for split in SPLITS:
            if split not in self.counts:
                continue
            lines.append(f"  {split}: label counts (clips per era, label 0-4): "
                         + ", ".join(f"{era} {n}" for era, n in self.label_counts(split).items()))
            for era, c in self.counts[split].items():
                lines.append(f"    {era:12} {c.audio:5} clips {c.images:6} images {c.pairs:6} pairs "
                             f"(x2 mirrored = {2 * c.pairs})")
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} unreadable file(s) skipped:")
            lines += [f"    {path}: {reason}" for path, reason in self.unreadable[:20]]
            if len(self.unreadable) > 20:
                lines.append(f"    ... and {len(self.unreadable) - 20} more")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class SplitData:
    """One split, ready for the Datasets.

    items: readable clips (row i of the feature array is items[i]); labels: int64 (N,);
    images: uint8 (M, S, S, 3) RGB at the reader's size; image_paths: (M,);
    pairs: int64 (P, 2) of (clip row, image row), i.e. a{k} with i{k}, i{k+K}, i{k+2K}.
    """

    name: str
    items: list[AudioItem]
    labels: np.ndarray
    images: np.ndarray
    image_paths: list[Path]
    pairs: np.ndarray

    @property
    def audio(self) -> list[Path]:
        return [item.path for item in self.items]


@dataclass
class MusartCorpus:
    root: Path
    image_size: int
    report: LayoutReport
    _splits: dict[str, SplitData]

    def split(self, name: str) -> SplitData:
        if name not in self._splits:
            raise MusartError(f"The corpus at {self.root} has no usable '{name}' split.")
        return self._splits[name]

    def items(self, name: str) -> list[AudioItem]:
        return self._splits[name].items if name in self._splits else []


def _audio_readable(path: Path, verify: str) -> str | None:
    """None if the file looks like audio, else the reason. verify: "header" | "decode" | "none"."""
    if verify == "none":
        return None
    import soundfile as sf

    if verify == "header":
        try:
            info = sf.info(str(path))
            return None if info.frames > 0 and info.samplerate > 0 else "no audio frames"
        except Exception:  # formats soundfile cannot open (m4a...): decode to be sure
            pass
    from mvnet.audio import AudioError, load_audio

    try:
        load_audio(path, max_seconds=2.0)
    except (AudioError, OSError) as exc:
        return str(exc).splitlines()[0] or type(exc).__name__
    return None


def _load_image(path: Path, size: int) -> np.ndarray | str:
    """uint8 (size, size, 3) RGB, or the reason it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.LANCZOS)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"not a readable image ({exc})"


def _numbered_files(folder: Path, report: LayoutReport) -> tuple[dict[int, Path], dict[int, Path]]:
    audio, images = {}, {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        m = _NUMBERED.match(path.stem)
        suffix = path.suffix.lower()
        if m is None:
            continue
        kind, k = m.group(1).lower(), int(m.group(2))
        if kind == "a" and suffix in AUDIO_EXTENSIONS:
            target = audio
        elif kind == "i" and suffix in IMAGE_EXTENSIONS:
            target = images
        else:
            report.unreadable.append((str(path), f"unsupported file type {suffix or '(none)'}"))
            continue
        if k in target:
            report.warnings.append(f"{folder}: both {target[k].name} and {path.name}; using {target[k].name}.")
            continue
        target[k] = path
    return audio, images


def read_musart(root: str | os.PathLike, image_size: int = 64, verify_audio: str = "header",
                log=print) -> MusartCorpus:
    """Read and validate a Musart-layout corpus; see the module docstring. `log(text)` gets the report."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MusartError(f"{root} is a file, not a corpus folder: give the folder that holds training/ and "
                          "testing/ (the Musart layout).")
    if not root.is_dir():
        raise MusartError(f"Corpus folder {root} does not exist. Build the starter corpus with "
                          "`python -m train.corpus build ...` or point to your Musart-Dataset folder.")
    report = LayoutReport(str(root))
    splits = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            report.warnings.append(f"missing folder {split_dir}" + (" (no test evaluation possible)" if split == "testing" else ""))
            continue
        items, labels, images, image_paths, pairs = [], [], [], [], []
        report.counts[split] = {}
        for label, era in enumerate(ERAS):
            counts = report.counts[split].setdefault(era, EraCounts())
            era_dir = split_dir / era
            if not era_dir.is_dir():
                report.warnings.append(f"missing era folder {era_dir}: no {split} examples of label {label} ({era}).")
                continue
            audio_files, image_files = _numbered_files(era_dir, report)
            if not audio_files:
                report.warnings.append(f"{era_dir}: no audio files a0, a1, ... found.")
                continue
            K = max(audio_files) + 1
            if len(audio_files) != K:
                report.warnings.append(f"{era_dir}: audio numbers have gaps ({len(audio_files)} files, highest a{K - 1}); "
                                       f"pairing uses K = {K}.")
            counts.expected_images = 3 * K
            image_rows = {}
            for n, path in sorted(image_files.items()):
                if n >= 3 * K:
                    continue
                img = _load_image(path, image_size)
                if isinstance(img, str):
                    report.unreadable.append((str(path), img))
                    continue
                image_rows[n] = len(images)
                images.append(img)
                image_paths.append(path)
            counts.images = len(image_rows)
            extra = [n for n in image_files if n >= 3 * K]
            if extra:
                report.warnings.append(f"{era_dir}: {len(extra)} image(s) beyond i{3 * K - 1} are not paired "
                                       f"by the rule and were ignored.")
            for k, path in sorted(audio_files.items()):
                reason = _audio_readable(path, verify_audio)
                if reason:
                    report.unreadable.append((str(path), reason))
                    continue
                row = len(items)
                items.append(AudioItem(path, era, label, k))
                labels.append(label)
                counts.audio += 1
                partners = [image_rows[n] for n in (k, k + K, k + 2 * K) if n in image_rows]
                pairs += [(row, image_row) for image_row in partners]
                counts.pairs += len(partners)
                counts.unpaired_audio += not partners
            if counts.images < 3 * K:
                report.warnings.append(
                    f"{era_dir}: {counts.images} readable images for 3K = {3 * K} slots; paired what is "
                    f"possible ({counts.pairs} pairs, {counts.unpaired_audio} clips without any image).")
        if items:
            size = (0, image_size, image_size, 3)
            splits[split] = SplitData(
                split, items, np.asarray(labels, dtype=np.int64),
                np.stack(images) if images else np.zeros(size, dtype=np.uint8), image_paths,
                np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        else:
            report.warnings.append(f"{split_dir}: no readable audio in any era folder.")
    if report.unreadable:
        report.warnings.append(f"{len(report.unreadable)} unreadable file(s) were skipped (listed above).")
    if log is not None:
        log(report.text())
    if "training" not in splits:
        raise MusartError(f"No usable training audio under {root}: expected {root}/training/<era>/a0.<ext> ... "
                          f"for eras {', '.join(ERAS)}.\n{report.text()}")
    return MusartCorpus(root, image_size, report, splits)


# ------------------------------------------------------------------------------------------- Datasets


class ClipFeatureDataset(Dataset):
    """Encoder stage: (features float32 (3, 128, 256), label int) per clip.

    features: (N, 3, 128, 256) dB array (e.g. the float16 memmap from FeatureCache); labels: (N,).
    With mean/std (N_MELS,) each item is standardized (mvnet.audio.standardize).
    """

    def __init__(self, features: np.ndarray, labels, mean=None, std=None):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features = features
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.asarray(self.features[i], dtype=np.float32))
        if self.mean is not None:
            from mvnet.audio import standardize

            x = standardize(x[None], self.mean, self.std)[0]
        return x, int(self.labels[i])


class PaintingPairDataset(Dataset):
    """GAN stage: (clip row int, image float32 (3, S, S) in [-1, 1], label int) per pair.

    The clip row indexes split.items (and the feature rows of split.audio). With mirror=True every
    pair also appears flipped left-right, as in the report (6 pairs per clip).
    """

    def __init__(self, split: SplitData, mirror: bool = True):
        self.pairs = split.pairs
        self.labels = split.labels
        # (M, 3, S, S) uint8; scaled per item, so the whole set stays 4x smaller than float
        self.images = torch.from_numpy(np.ascontiguousarray(split.images.transpose(0, 3, 1, 2)))
        self.mirror = mirror

    def __len__(self) -> int:
        return len(self.pairs) * (2 if self.mirror else 1)

    def __getitem__(self, i: int):
        flip, i = divmod(i, len(self.pairs))
        clip, image_row = (int(v) for v in self.pairs[i])
        image = self.images[image_row].float() / 127.5 - 1.0
        if flip:
            image = image.flip(-1)
        return clip, image, int(self.labels[clip])
