"""Feature cache: computed once, reused by content, recomputed when a file changes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from mvnet.audio import CLIP_SAMPLES, SAMPLE_RATE, AudioError, log_mel_features
from train.feature_cache import FeatureCache, first_clip


def _write(path, seed, seconds=9.5):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = 0.2 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.02 * rng.standard_normal(len(t))
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE)
    return path


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    return [_write(folder / f"a{k}.wav", k) for k in range(3)] + [_write(folder / "short.flac", 7, seconds=3.0)]


def test_features_match_log_mel_and_are_reused(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache", batch_size=2)
    features = cache.features_for(clips)
    assert features.shape == (4, 3, 128, 256) and features.dtype == np.float16
    assert cache.last_stats.computed == 4
    expected = log_mel_features(np.stack([first_clip(p) for p in clips])).numpy()
    assert np.abs(features.astype(np.float32) - expected).max() < 0.1  # float16 rounding of dB values
    assert first_clip(clips[3]).shape == (CLIP_SAMPLES,)  # 3 s file: loop-padded to a clip

    again = FeatureCache(tmp_path / "cache").features_for(clips)  # a new process would see the same
    assert np.array_equal(np.asarray(again), np.asarray(features))
    reused = FeatureCache(tmp_path / "cache")
    reordered = reused.features_for([clips[2], clips[0]])
    assert reused.last_stats.computed == 0 and reused.last_stats.reused == 2
    assert np.array_equal(reordered, np.asarray(features)[[2, 0]])


def test_changed_file_is_recomputed_alone_and_copies_are_found_by_content(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache")
    before = np.array(cache.features_for(clips))
    _write(clips[1], seed=11)  # new content, same name
    after = cache.features_for(clips)
    assert cache.last_stats.computed == 1
    assert np.array_equal(after[[0, 2, 3]], before[[0, 2, 3]])
    assert not np.array_equal(after[1], before[1])
    copy = tmp_path / "elsewhere.wav"
    shutil.copyfile(clips[0], copy)
    assert np.array_equal(cache.features_for([copy])[0], before[0])
    assert cache.last_stats.computed == 0


def test_interrupted_run_leftovers_are_overwritten(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache")
    cache.features_for(clips[:2])
    with open(cache.folder / "features.f16", "ab") as f:  # half a row written before a crash
        f.write(b"\x00" * 1000)
    fresh = FeatureCache(tmp_path / "cache")
    features = fresh.features_for(clips)
    assert fresh.last_stats.computed == 2
    expected = log_mel_features(np.stack([first_clip(p) for p in clips[2:]])).numpy()
    assert np.abs(features[2:].astype(np.float32) - expected).max() < 0.1


def test_undecodable_file_is_named(tmp_path, clips):
    bad = tmp_path / "broken.ogg"
    bad.write_bytes(b"OggS but not really" * 50)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(AudioError, match="broken.ogg"):
        cache.features_for([clips[0], bad])
    assert cache.features_for([clips[0]]) is not None and cache.last_stats.computed == 0  # good rows were kept
