"""Log-mel features of a corpus, computed once and kept on disk.

    cache = FeatureCache("data/starter/_features")
    features = cache.features_for(paths)   # float16 (N, 3, 128, 256) dB, row i is paths[i]
    cache.last_stats                       # CacheStats(requested, computed, reused, seconds)

Each audio file gives one clip: its first CLIP_SAMPLES (8.91 s) at SAMPLE_RATE, loop-padded when
shorter (mvnet.audio.clip_windows), turned into log-mel dB by mvnet.audio.log_mel_features in
batches (CUDA when present, else the CPU's threads; files are decoded on a thread pool).

On disk, under `<cache_dir>/<config key>/` (the key hashes the audio constants, so changing any of
them starts a fresh cache instead of mixing features):
- `features.f16`: raw float16 rows of 3*128*256 values, appended, read back as a numpy memmap;
- `index.json`: the configuration and, per file *content* hash (sha1 of the bytes), its row.
A second call with the same files computes nothing; a file whose bytes changed is computed again
(its old row stays unused); a renamed or copied file is found by content. Rows are appended before
the index that points at them is replaced atomically, and a lock file serializes writers, so an
interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvnet import audio
from mvnet.files import atomic_write_json

FEATURE_FORMAT_VERSION = 1
FEATURE_SHAPE = (audio.N_SEGMENTS, audio.N_MELS, audio.SEGMENT_FRAMES)
_ROW_VALUES = int(np.prod(FEATURE_SHAPE))
_ROW_BYTES = _ROW_VALUES * 2  # float16


def audio_config() -> dict:
    """Everything that changes the features; the cache is keyed by it."""
    return {"format_version": FEATURE_FORMAT_VERSION, "sample_rate": audio.SAMPLE_RATE, "n_fft": audio.N_FFT,
            "hop_length": audio.HOP_LENGTH, "n_mels": audio.N_MELS, "window": audio.WINDOW,
            "n_segments": audio.N_SEGMENTS, "segment_samples": audio.SEGMENT_SAMPLES,
            "segment_frames": audio.SEGMENT_FRAMES, "top_db": audio.TOP_DB, "dtype": "float16",
            "clip": "first CLIP_SAMPLES, loop-padded"}


def content_hash(path: str | os.PathLike) -> str:
    """sha1 of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def first_clip(path: str | os.PathLike) -> np.ndarray:
    """The clip the cache stores for a file: float32 (CLIP_SAMPLES,). Raises mvnet.audio.AudioError."""
    wave = audio.load_audio(path, max_seconds=audio.CLIP_SECONDS + 1.0)
    return audio.clip_windows(wave, max_windows=1).samples[0]


@dataclass
class CacheStats:
    requested: int = 0
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0


class FeatureCache:
    """Log-mel features (float16, dB) keyed by the audio configuration and each file's content."""

    def __init__(self, cache_dir: str | os.PathLike, device=None, batch_size: int = 32, decode_threads: int = 2):
        config = audio_config()
        key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        self.cache_dir = Path(cache_dir)
        self.folder = self.cache_dir / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.device = device
        self.batch_size = batch_size
        self.decode_threads = decode_threads
        self.last_stats = CacheStats()
        self._data_path = self.folder / "features.f16"
        self._index_path = self.folder / "index.json"
        self._index = self._read_index()

    def __len__(self) -> int:
        return len(self._index["entries"])

    # ------------------------------------------------------------------------------------------ index

    def _read_index(self) -> dict:
        if self._index_path.is_file():
            try:
                index = json.loads(self._index_path.read_text(encoding="utf-8"))
                if index.get("config") == self.config:
                    return index
            except (OSError, ValueError):
                pass  # unreadable index: start over (the rows it pointed at are simply unused)
        return {"config": self.config, "rows": 0, "entries": {}}

    def _write_index(self) -> None:
        atomic_write_json(self._index_path, self._index, indent=None)

    def _lock(self):
        handle = open(self.folder / "lock", "a+")  # noqa: SIM115 - closed in features_for
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    # -------------------------------------------------------------------------------------- features

    def features_for(self, paths, progress: bool = False) -> np.ndarray:
        """float16 array (N, 3, 128, 256) of log-mel dB for the files in `paths`, in order.

        Computes only files whose content is not cached yet. Returns a read-only memmap slice when
        the rows lie in order on disk (the usual case right after warming), else an in-memory copy.
        Raises mvnet.audio.AudioError naming the files that cannot be decoded.
        """
        started = time.time()
        paths = [Path(p) for p in paths]
        hashes = [content_hash(p) for p in paths]
        lock = self._lock()
        try:
            self._index = self._read_index()  # another process may have added rows
            entries = self._index["entries"]
            todo: dict[str, Path] = {}
            for path, digest in zip(paths, hashes, strict=True):
                if digest not in entries and digest not in todo:
                    todo[digest] = path
            if todo:
                self._compute(todo, progress)
            rows = [self._index["entries"][h]["row"] for h in hashes]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        self.last_stats = CacheStats(len(paths), len(todo), len(paths) - len(todo), time.time() - started)
        return self._rows(rows)

    def _rows(self, rows: list[int]) -> np.ndarray:
        if not rows:
            return np.zeros((0, *FEATURE_SHAPE), dtype=np.float16)
        data = np.memmap(self._data_path, dtype=np.float16, mode="r", shape=(self._index["rows"], *FEATURE_SHAPE))
        first = rows[0]
        if rows == list(range(first, first + len(rows))):
            return data[first:first + len(rows)]
        return np.asarray(data[np.asarray(rows)])

    def _compute(self, todo: dict[str, Path], progress: bool) -> None:
        from tqdm import tqdm

        # Rows past the index's count are leftovers of an interrupted run: overwrite them.
        with open(self._data_path, "ab"):
            pass
        os.truncate(self._data_path, self._index["rows"] * _ROW_BYTES)
        items = list(todo.items())
        failures: list[str] = []
        bar = tqdm(total=len(items), desc="log-mel features", unit="clip", disable=not progress)
        with ThreadPoolExecutor(self.decode_threads) as pool:
            for start in range(0, len(items), self.batch_size):
                batch = items[start:start + self.batch_size]
                decoded = list(pool.map(_try_first_clip, [path for _, path in batch]))
                good = [(digest, path, clip) for (digest, path), clip in zip(batch, decoded, strict=True)
                        if not isinstance(clip, str)]
                failures += [f"{path}: {clip}" for (_, path), clip in zip(batch, decoded, strict=True)
                             if isinstance(clip, str)]
                if good:
                    features = audio.log_mel_features(np.stack([clip for *_, clip in good]), device=self.device,
                                                      batch_size=self.batch_size)
                    block = features.numpy().astype(np.float16)
                    with open(self._data_path, "ab") as f:
                        f.write(block.tobytes())
                        f.flush()
                        os.fsync(f.fileno())
                    for digest, path, _ in good:
                        self._index["entries"][digest] = {"row": self._index["rows"], "name": path.name}
                        self._index["rows"] += 1
                    self._write_index()
                bar.update(len(batch))
        bar.close()
        if failures:
            shown = "\n  ".join(failures[:10])
            more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
            raise audio.AudioError(f"{len(failures)} audio file(s) could not be decoded:\n  {shown}{more}")


def _try_first_clip(path: Path):
    try:
        return first_clip(path)
    except (audio.AudioError, OSError) as exc:
        return str(exc)
