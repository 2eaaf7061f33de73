"""The era map: reference clip embeddings laid out in 2-D, and the way between map and embedding space.

    atlas = Atlas.fit(embeddings, eras, ERAS)      # UMAP, once, at export time (needs umap-learn)
    atlas.save("weights/atlas.safetensors")
    atlas = Atlas.load("weights/atlas.safetensors")
    xy = atlas.place(embedding)                     # (10,) -> (2,): where a new clip sits on the map
    e = atlas.embedding_at(xy)                      # (2,) -> (10,): what a point on the map sounds like

UMAP is only used to lay the reference points out. New points are placed from their nearest reference
points in embedding space (inverse-distance weights), so the app needs neither umap nor numba's JIT
(umap's first `transform` in a fresh process compiles for ~7 s) and the file holds plain arrays, no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvnet.files import atomic_write_bytes

FORMAT_VERSION = 1
PLACE_NEIGHBOURS = 8  # reference points averaged when placing a new embedding on the map
MAP_NEIGHBOURS = 6  # reference points interpolated when turning a map point back into an embedding
_EXACT = 1e-9  # a distance below this counts as "on" a reference point
_QUERY_CHUNK = 64

__all__ = ["Atlas", "AtlasError", "FORMAT_VERSION"]


class AtlasError(ValueError):
    """A missing, damaged or inconsistent atlas file, or arrays that do not fit together."""


class Atlas:
    """Reference clips with their embeddings, 2-D map positions and eras.

    reference_embeddings: float32 (R, D); reference_xy: float32 (R, 2) map coordinates (UMAP units);
    reference_eras: int64 (R,) indices into era_names; reference_names: optional R strings (e.g. file
    names) that say which clip a point is.
    """

    def __init__(self, reference_embeddings, reference_xy, reference_eras, era_names: Sequence[str],
                 reference_names: Sequence[str] | None = None):
        self.reference_embeddings = np.ascontiguousarray(reference_embeddings, dtype=np.float32)
        self.reference_xy = np.ascontiguousarray(reference_xy, dtype=np.float32)
        self.reference_eras = np.ascontiguousarray(reference_eras, dtype=np.int64)
        self.era_names = [str(name) for name in era_names]
        self.reference_names = None if reference_names is None else [str(n) for n in reference_names]
        self._check()

    def _check(self) -> None:
        embeddings, xy, eras = self.reference_embeddings, self.reference_xy, self.reference_eras
        if embeddings.ndim != 2 or len(embeddings) == 0:
            raise AtlasError(f"reference_embeddings must be (R>0, D), got shape {embeddings.shape}")
        count = len(embeddings)
        if xy.shape != (count, 2):
            raise AtlasError(f"reference_xy must be ({count}, 2), got shape {xy.shape}")
        if eras.shape != (count,):
            raise AtlasError(f"reference_eras must be ({count},), got shape {eras.shape}")
        if not self.era_names:
            raise AtlasError("era_names is empty")
        if eras.min() < 0 or eras.max() >= len(self.era_names):
            raise AtlasError(f"reference_eras must lie in 0..{len(self.era_names) - 1}")
        if not (np.isfinite(embeddings).all() and np.isfinite(xy).all()):
            raise AtlasError("the atlas holds NaN or infinite values")
        if self.reference_names is not None and len(self.reference_names) != count:
            raise AtlasError(f"reference_names has {len(self.reference_names)} entries for {count} points")

    def __len__(self) -> int:
        return len(self.reference_embeddings)

    @property
    def embedding_dim(self) -> int:
        return self.reference_embeddings.shape[1]

    # ------------------------------------------------------------------------------ embedding -> map

    def place(self, embedding) -> np.ndarray:
        """Map position of embeddings: (D,) -> (2,) or (N, D) -> (N, 2), float32.

        Inverse-distance weighted mean of the map positions of the PLACE_NEIGHBOURS nearest reference
        embeddings; an embedding equal to a reference point lands exactly on that point.
        """
        embedding = np.asarray(embedding, dtype=np.float32)
        single = embedding.ndim == 1
        queries = embedding[None] if single else embedding
        if queries.ndim != 2 or queries.shape[1] != self.embedding_dim:
            raise ValueError(f"expected embeddings (D,) or (N, D) with D = {self.embedding_dim}, "
                             f"got shape {embedding.shape}")
        placed = _inverse_distance(queries, self.reference_embeddings, self.reference_xy, PLACE_NEIGHBOURS)
        return placed[0] if single else placed

    # ------------------------------------------------------------------------------ map -> embedding

    def embedding_at(self, xy) -> np.ndarray:
        """Embedding under a map point (2,) -> (D,) float32.

        Inverse-distance weighted mean of the embeddings of the MAP_NEIGHBOURS reference points
        nearest in 2-D; on a reference point it is that point's embedding.
        """
        point = self._map_point(xy)
        return _inverse_distance(point[None], self.reference_xy, self.reference_embeddings, MAP_NEIGHBOURS)[0]

    def nearest(self, xy) -> int:
        """Index of the reference point nearest to map point xy (2,)."""
        point = self._map_point(xy)
        return int(np.argmin(((self.reference_xy - point) ** 2).sum(axis=1)))

    def describe(self, index: int) -> str:
        """A short human name for reference point `index`, e.g. 'baroque #12' or its file name."""
        era = self.era_names[int(self.reference_eras[index])]
        if self.reference_names is not None:
            return f"{self.reference_names[index]} ({era})"
        return f"{era} reference clip #{index}"

    def _map_point(self, xy) -> np.ndarray:
        point = np.asarray(xy, dtype=np.float32).reshape(-1)
        if point.shape != (2,) or not np.isfinite(point).all():
            raise ValueError(f"expected a finite map point (x, y), got {xy!r}")
        return point

    # ------------------------------------------------------------------------------------ per era

    def centroids_xy(self) -> np.ndarray:
        """Mean map position of each era's reference points: float32 (E, 2), NaN for an era without any."""
        return self._per_era_mean(self.reference_xy)

    def centroid_embeddings(self) -> np.ndarray:
        """Mean embedding of each era's reference points: float32 (E, D), NaN for an era without any."""
        return self._per_era_mean(self.reference_embeddings)

    def _per_era_mean(self, values: np.ndarray) -> np.ndarray:
        means = np.full((len(self.era_names), values.shape[1]), np.nan, dtype=np.float32)
        for era in range(len(self.era_names)):
            members = values[self.reference_eras == era]
            if len(members):
                means[era] = members.mean(axis=0)
        return means

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) of the reference points."""
        x, y = self.reference_xy[:, 0], self.reference_xy[:, 1]
        return float(x.min()), float(x.max()), float(y.min()), float(y.max())

    # ------------------------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, embeddings, eras, era_names: Sequence[str], seed: int = 0, n_neighbors: int = 15,
            min_dist: float = 0.1, reference_names: Sequence[str] | None = None) -> Atlas:
        """Lay reference embeddings (R, D) out in 2-D with UMAP (umap-learn; seconds for a few thousand)."""
        import umap  # heavy import (numba); only at export/training time

        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) < 3:
            raise AtlasError(f"need at least 3 reference embeddings (R, D), got shape {embeddings.shape}")
        reducer = umap.UMAP(
            n_components=2, n_neighbors=min(n_neighbors, len(embeddings) - 1), min_dist=min_dist,
            random_state=seed,
        )
        xy = reducer.fit_transform(embeddings)
        return cls(embeddings, xy, eras, era_names, reference_names)

    # --------------------------------------------------------------------------------- save / load

    def save(self, path) -> Path:
        """Write the atlas as safetensors (era names and optional clip names in the metadata), atomically."""
        from safetensors.numpy import save

        path = Path(path)
        metadata = {"format_version": str(FORMAT_VERSION), "era_names": json.dumps(self.era_names)}
        if self.reference_names is not None:
            metadata["reference_names"] = json.dumps(self.reference_names)
        data = save({
            "reference_embeddings": self.reference_embeddings,
            "reference_xy": self.reference_xy,
            "reference_eras": self.reference_eras,
        }, metadata=metadata)
        atomic_write_bytes(path, data)
        return path

    @classmethod
    def load(cls, path) -> Atlas:
        """Read an atlas written by `save`. Raises AtlasError (naming the file) when it is unusable."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise AtlasError(f"atlas file not found: {path}")
        try:
            with safe_open(str(path), framework="numpy") as file:
                metadata = file.metadata() or {}
                arrays = {key: file.get_tensor(key) for key in file.keys()}
        except Exception as error:  # safetensors raises several types for a damaged header
            raise AtlasError(f"could not read the atlas {path}: {error}") from None
        version = int(metadata.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise AtlasError(f"{path} has atlas format version {version}, this code reads {FORMAT_VERSION}")
        missing = {"reference_embeddings", "reference_xy", "reference_eras"} - set(arrays)
        if missing or "era_names" not in metadata:
            raise AtlasError(f"{path} lacks {sorted(missing) or ['era_names']}")
        names = metadata.get("reference_names")
        return cls(arrays["reference_embeddings"], arrays["reference_xy"], arrays["reference_eras"],
                   json.loads(metadata["era_names"]), json.loads(names) if names else None)


def _inverse_distance(queries: np.ndarray, keys: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """For each query (N, Dk): weighted mean of `values` (R, Dv) at its k nearest `keys` (R, Dk).

    Weights are 1 / distance^2; a query on a key (distance < _EXACT) returns that key's value exactly.
    """
    k = min(k, len(keys))
    if len(queries) > _QUERY_CHUNK:  # bound the (N, R, D) difference array's memory
        return np.concatenate([_inverse_distance(queries[start:start + _QUERY_CHUNK], keys, values, k)
                               for start in range(0, len(queries), _QUERY_CHUNK)])
    # Direct differences (not |a|^2 - 2ab + |b|^2) so a query equal to a key has distance exactly 0.
    distances = np.sqrt(((queries[:, None, :].astype(np.float64) - keys[None].astype(np.float64)) ** 2).sum(-1))
    nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]  # (N, k)
    near_distances = np.take_along_axis(distances, nearest, axis=1)
    weights = 1.0 / np.maximum(near_distances, _EXACT) ** 2
    exact = near_distances < _EXACT
    has_exact = exact.any(axis=1)
    weights[has_exact] = exact[has_exact].astype(np.float64)  # all weight on the coinciding key(s)
    weights /= weights.sum(axis=1, keepdims=True)
    result = (weights[:, :, None] * values[nearest].astype(np.float64)).sum(axis=1)
    return result.astype(np.float32)
