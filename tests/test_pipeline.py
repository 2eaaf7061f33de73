"""MVNet pipeline: weights folder round trip, clear errors, reproducible painting, era scores."""

import json

import numpy as np
import pytest
import torch

from mvnet.audio import AudioError
from mvnet.models import CPU
from mvnet.pipeline import MVNet, WeightsError, grid_image, untrained

SR = 22050


def music(seconds=10.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    notes = sum(np.sin(2 * np.pi * f * t) for f in (220, 277, 330))
    return (0.2 * notes * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return untrained(CPU, seed=0, device="cpu")


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("weights"))


def test_save_load_round_trip_is_exact(model, folder):
    loaded = MVNet.from_pretrained(folder, device="cpu")
    for a, b in ((model.encoder, loaded.encoder), (model.generator, loaded.generator)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.eras == model.eras
    np.testing.assert_array_equal(loaded.centroids, model.centroids)
    emb = model.embed((SR, music()))
    np.testing.assert_allclose(loaded.embed((SR, music())).vector, emb.vector, atol=1e-5)
    assert torch.equal(loaded.paint(emb, 4, seed=3), model.paint(emb, 4, seed=3))


def test_weights_are_safetensors_and_config_describes_them(folder):
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "encoder.safetensors", "generator.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["audio"]["n_mels"] == 128 and len(config["features"]["mean"]) == 128
    assert len(config["centroids"]) == 5 and config["generator"]["film"] is True


def test_missing_folder_says_no_weights_and_how_to_train(tmp_path):
    with pytest.raises(WeightsError, match=r"No trained weights.*config.json.*Train"):
        MVNet.from_pretrained(tmp_path / "nowhere")


def test_missing_or_mismatched_files_are_named(folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "generator.safetensors").unlink()
    with pytest.raises(WeightsError, match="generator.safetensors is missing"):
        MVNet.from_pretrained(broken)

    shutil.copy(folder / "generator.safetensors", broken / "generator.safetensors")
    config = json.loads((broken / "config.json").read_text())
    config["generator"]["base_channels"] = 128
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="generator.safetensors does not match"):
        MVNet.from_pretrained(broken)

    (broken / "encoder.safetensors").write_bytes(b"not a safetensors file")
    config["generator"]["base_channels"] = 256
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="encoder.safetensors is not a readable safetensors"):
        MVNet.from_pretrained(broken)

    (broken / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="config.json is not valid JSON"):
        MVNet.from_pretrained(broken)


def test_weights_for_other_audio_settings_are_refused(folder, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    config["audio"]["n_mels"] = 64
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="audio settings differ"):
        MVNet.from_pretrained(other)


def test_paint_is_reproducible_for_a_seed_and_varies_across_seeds(model):
    emb = model.embed((SR, music()))
    a, b, c = model.paint(emb, 9, seed=7), model.paint(emb, 9, seed=7), model.paint(emb, 9, seed=8)
    assert a.shape == (9, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # one batch, different noise per image
    with pytest.raises(ValueError, match="between 1 and 64"):
        model.paint(emb, 0)


def test_embed_averages_windows_of_a_long_piece(model):
    emb = model.embed((SR, music(30.0)), max_windows=8)
    assert emb.windows.shape == (3, 10)
    assert emb.starts_seconds == pytest.approx([0.0, 8.91, 17.82], abs=0.01)
    np.testing.assert_allclose(emb.vector, emb.windows.mean(axis=0), rtol=1e-6)
    assert emb.features.shape == (3, 3, 128, 256)


def test_embed_rejects_bad_audio_with_the_audio_error(model):
    with pytest.raises(AudioError):
        model.embed((SR, np.zeros(SR * 10, np.float32)))


def test_era_scores_are_probabilities_nearest_centroid_highest(model):
    for k, centroid in enumerate(model.centroids):
        scores = model.era_scores(centroid)
        assert sum(scores.values()) == pytest.approx(1.0)
        assert max(scores, key=scores.get) == model.eras[k]


def test_grid_image_is_near_square(model):
    img = grid_image(model.paint(model.centroids[0], 9))
    assert img.size == (3 * 66 + 2, 3 * 66 + 2)


def test_saved_files_get_the_usual_permissions(folder):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "encoder.safetensors"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask
