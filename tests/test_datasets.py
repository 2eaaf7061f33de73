"""Musart reader and Datasets on small hand-made layouts (no fluidsynth needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mvnet import ERAS
from mvnet.audio import N_MELS, SAMPLE_RATE
from train.datasets import (
    ClipFeatureDataset,
    MusartError,
    PaintingPairDataset,
    read_musart,
)


def _tone(seconds=2.0, freq=440.0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_layout(root: Path, K: int = 2, eras=ERAS, images_per_era=None, splits=("training", "testing")) -> Path:
    """A Musart layout: K clips per era (.wav and .flac mixed) and 3K images of mixed sizes/modes/types."""
    for split in splits:
        for e, era in enumerate(eras):
            folder = root / split / era
            folder.mkdir(parents=True)
            for k in range(K):
                ext = "wav" if k % 2 == 0 else "flac"
                sf.write(folder / f"a{k}.{ext}", _tone(freq=200 + 50 * e + k), SAMPLE_RATE)
            for n in range(3 * K if images_per_era is None else images_per_era):
                mode, ext = [("RGB", "jpg"), ("RGBA", "png"), ("L", "png")][n % 3]
                Image.new(mode, (40 + n, 30), (10 * n) if mode == "L" else (10 * n, 20 * e, 100) + ((255,) if mode == "RGBA" else ())
                          ).save(folder / f"i{n}.{ext}")
    return root


def test_reads_layout_pairs_and_label_counts(tmp_path):
    root = make_layout(tmp_path / "m", K=2)
    printed = []
    corpus = read_musart(root, image_size=32, log=printed.append)
    assert corpus.report.label_counts("training") == dict.fromkeys(ERAS, 2)
    assert "label counts" in printed[0] and "renaissance 2" in printed[0]
    assert corpus.report.warnings == [] and corpus.report.unreadable == []
    train = corpus.split("training")
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8
    for row, item in enumerate(train.items):  # a{k} -> i{k}, i{k+K}, i{k+2K}
        names = [train.image_paths[i].stem for r, i in train.pairs if r == row]
        assert names == [f"i{item.index}", f"i{item.index + 2}", f"i{item.index + 4}"]
        assert all(train.image_paths[i].parent.name == item.era for r, i in train.pairs if r == row)
    pairs = PaintingPairDataset(train, mirror=True)
    assert len(pairs) == 6 * len(train.items)  # 3 images x mirrored
    clip, image, label = pairs[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    flipped_clip, flipped, flipped_label = pairs[len(train.pairs)]
    assert (flipped_clip, flipped_label) == (clip, label)
    assert torch.equal(flipped, image.flip(-1))
    assert len(PaintingPairDataset(train, mirror=False)) == 3 * len(train.items)


def test_missing_era_and_empty_era_are_explained(tmp_path):
    root = make_layout(tmp_path / "m", K=2, eras=ERAS[:4])  # no "modern" folder at all
    for f in (root / "training" / "baroque").glob("a*"):
        f.unlink()  # baroque: images but no audio
    corpus = read_musart(root, log=None)
    text = " ".join(corpus.report.warnings)
    assert "missing era folder" in text and "modern" in text and "label 4" in text
    assert "baroque: no audio files" in text
    assert corpus.report.label_counts("training") == {"renaissance": 2, "baroque": 0, "classical": 2,
                                                      "romantic": 2, "modern": 0}


def test_too_few_images_pairs_what_is_possible(tmp_path):
    root = make_layout(tmp_path / "m", K=2, images_per_era=3, splits=("training",))
    corpus = read_musart(root, log=None)
    counts = corpus.report.counts["training"]["romantic"]
    assert (counts.audio, counts.images, counts.pairs, counts.expected_images) == (2, 3, 3, 6)
    assert any("3 readable images for 3K = 6 slots" in w for w in corpus.report.warnings)
    assert any("testing" in w and "missing folder" in w for w in corpus.report.warnings)
    with pytest.raises(MusartError, match="testing"):
        corpus.split("testing")


def test_unreadable_files_are_listed_skipped_and_counted(tmp_path):
    root = make_layout(tmp_path / "m", K=3, splits=("training",))
    era_dir = root / "training" / "classical"
    (era_dir / "a1.flac").write_bytes(b"this is not audio at all" * 10)
    (era_dir / "i4.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (era_dir / "a7.txt").write_text("stray")
    corpus = read_musart(root, log=None)
    bad = {Path(p).name for p, _ in corpus.report.unreadable}
    assert bad == {"a1.flac", "i4.png", "a7.txt"}
    counts = corpus.report.counts["training"]["classical"]
    assert (counts.audio, counts.images) == (2, 8)
    train = corpus.split("training")
    classical_rows = [r for r, item in enumerate(train.items) if item.era == "classical"]
    assert [train.items[r].index for r in classical_rows] == [0, 2]
    partners = {train.image_paths[i].stem for r, i in train.pairs if r in classical_rows}
    assert partners == {"i0", "i3", "i6", "i2", "i5", "i8"}  # a2's i5 and i8; i4 (broken) was a1's
    assert "3 unreadable file(s)" in corpus.report.text()


def test_no_training_audio_is_an_error(tmp_path):
    with pytest.raises(MusartError, match="does not exist"):
        read_musart(tmp_path / "nowhere", log=None)
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(MusartError, match="No usable training audio"):
        read_musart(tmp_path / "empty", log=None)


def test_clip_feature_dataset_standardizes():
    features = np.random.default_rng(0).normal(-40, 10, size=(4, 3, N_MELS, 256)).astype(np.float16)
    mean, std = np.full(N_MELS, -40.0, np.float32), np.full(N_MELS, 10.0, np.float32)
    ds = ClipFeatureDataset(features, [0, 1, 2, 3], mean, std)
    x, label = ds[2]
    assert x.dtype == torch.float32 and x.shape == (3, N_MELS, 256) and label == 2
    expected = (torch.from_numpy(features[2].astype(np.float32)) + 40.0) / 10.0
    assert torch.allclose(x, expected, atol=1e-5)
    raw, _ = ClipFeatureDataset(features, [0, 1, 2, 3])[2]
    assert torch.equal(raw, torch.from_numpy(features[2].astype(np.float32)))
    with pytest.raises(ValueError, match="labels"):
        ClipFeatureDataset(features, [0, 1])
