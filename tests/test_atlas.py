"""mvnet.atlas: placing clips on the era map and reading embeddings back off it."""

import numpy as np
import pytest

from mvnet import ERAS
from mvnet.atlas import Atlas, AtlasError


def small_atlas(count=60, seed=0, names=False):
    """Five eras as separated clusters in 10-d, with a 2-D layout that keeps them apart."""
    rng = np.random.default_rng(seed)
    eras = np.arange(count) % len(ERAS)
    centres = rng.normal(0, 6, size=(len(ERAS), 10))
    embeddings = centres[eras] + rng.normal(0, 1, size=(count, 10))
    xy = np.stack([np.cos(eras * 1.2566), np.sin(eras * 1.2566)], 1) * 5 + rng.normal(0, 0.5, (count, 2))
    reference_names = [f"clip{i}.ogg" for i in range(count)] if names else None
    return Atlas(embeddings, xy, eras, ERAS, reference_names)


def test_save_load_round_trip_keeps_arrays_and_names(tmp_path):
    atlas = small_atlas(names=True)
    path = atlas.save(tmp_path / "atlas.safetensors")
    loaded = Atlas.load(path)
    np.testing.assert_array_equal(loaded.reference_embeddings, atlas.reference_embeddings)
    np.testing.assert_array_equal(loaded.reference_xy, atlas.reference_xy)
    np.testing.assert_array_equal(loaded.reference_eras, atlas.reference_eras)
    assert loaded.era_names == list(ERAS)
    assert loaded.reference_names == atlas.reference_names
    assert [p.name for p in tmp_path.iterdir()] == ["atlas.safetensors"]  # no temp file left behind


def test_place_of_a_reference_point_is_its_own_position():
    atlas = small_atlas()
    for index in (0, 7, 59):
        np.testing.assert_array_equal(atlas.place(atlas.reference_embeddings[index]), atlas.reference_xy[index])
    placed = atlas.place(atlas.reference_embeddings)  # batched, (N, 10) -> (N, 2)
    np.testing.assert_array_equal(placed, atlas.reference_xy)


def test_place_of_a_new_point_lands_among_its_era():
    atlas = small_atlas()
    era = 2
    query = atlas.centroid_embeddings()[era] + 0.1
    placed = atlas.place(query)
    distances = np.linalg.norm(atlas.centroids_xy() - placed, axis=1)
    assert distances.argmin() == era


def test_embedding_at_a_reference_point_returns_its_embedding():
    atlas = small_atlas()
    index = 11
    np.testing.assert_allclose(atlas.embedding_at(atlas.reference_xy[index]), atlas.reference_embeddings[index])
    nudged = atlas.reference_xy[index] + 1e-3
    close = atlas.embedding_at(nudged)
    assert np.linalg.norm(close - atlas.reference_embeddings[index]) < 0.05 * np.linalg.norm(
        atlas.reference_embeddings[index])
    assert atlas.nearest(nudged) == index


def test_embedding_at_interpolates_between_points():
    embeddings = np.array([[0.0] * 10, [1.0] * 10])
    atlas = Atlas(embeddings, [[0.0, 0.0], [2.0, 0.0]], [0, 1], ERAS)
    np.testing.assert_allclose(atlas.embedding_at([1.0, 0.0]), [0.5] * 10, atol=1e-6)


def test_centroids_are_per_era_means_and_nan_for_missing_eras():
    atlas = Atlas(np.eye(10)[:3], [[0, 0], [2, 0], [0, 4]], [0, 0, 4], ERAS)
    centroids = atlas.centroids_xy()
    np.testing.assert_allclose(centroids[0], [1, 0])
    np.testing.assert_allclose(centroids[4], [0, 4])
    assert np.isnan(centroids[1:4]).all()


def test_bad_arrays_and_files_raise_atlas_error(tmp_path):
    with pytest.raises(AtlasError, match="reference_xy"):
        Atlas(np.zeros((3, 10)), np.zeros((2, 2)), [0, 1, 2], ERAS)
    with pytest.raises(AtlasError, match="0..4"):
        Atlas(np.zeros((1, 10)), np.zeros((1, 2)), [5], ERAS)
    with pytest.raises(AtlasError, match="not found"):
        Atlas.load(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(AtlasError, match="broken.safetensors"):
        Atlas.load(broken)
    with pytest.raises(ValueError, match="D = 10"):
        small_atlas().place(np.zeros(3))


@pytest.mark.slow
def test_fit_lays_out_separated_eras_apart():
    rng = np.random.default_rng(1)
    eras = np.repeat(np.arange(5), 40)
    embeddings = rng.normal(0, 8, (5, 10))[eras] + rng.normal(0, 1, (200, 10))
    atlas = Atlas.fit(embeddings, eras, ERAS, seed=0)
    assert atlas.reference_xy.shape == (200, 2)
    # Each point's nearest other point on the map is of its own era (clusters survive the layout).
    xy = atlas.reference_xy
    distances = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(200) * 1e9
    assert (eras[distances.argmin(1)] == eras).mean() > 0.95
