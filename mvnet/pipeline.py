"""`MVNet`: the one object that owns loaded weights and turns audio into era embeddings and paintings.

The app and the CLI call it and hold no tensor code of their own. A weights folder is

    config.json            architecture, audio constants, feature statistics, eras, era centroids
    encoder.safetensors    AudioEncoder state
    generator.safetensors  Generator state (the EMA generator for our recipe)
    atlas.safetensors      optional: the UMAP era map (see mvnet.atlas)
    README.md              the model card

Weights are read with safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvnet import ERAS, audio
from mvnet.files import atomic_folder, atomic_write_bytes, recover_folder
from mvnet.models import AudioEncoder, Generator, ModelConfigs

FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TRAINING_HINT = "Train them with `python -m train all` or the app's Train tab (README: 'Training')."
CONFIG_FILE, ENCODER_FILE, GENERATOR_FILE, ATLAS_FILE = (
    "config.json",
    "encoder.safetensors",
    "generator.safetensors",
    "atlas.safetensors",
)


class WeightsError(RuntimeError):
    """A weights folder is missing, incomplete or does not match its config; the message names the file."""


@dataclass
class Embedding:
    """Where a piece of music sits in era space.

    vector: (10,) mean over windows; windows: (W, 10) one per 8.91 s window; starts_seconds: where each
    window starts in the input; features: (W, 3, 128, 256) log-mel dB before standardisation (for plots).
    """

    vector: np.ndarray
    windows: np.ndarray
    starts_seconds: list[float]
    duration_seconds: float
    looped: bool
    features: np.ndarray


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _save_tensors(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, save(state))


def _load_tensors(module: torch.nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path} is missing. {TRAINING_HINT}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from e
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else ""]
        parts += [f"shape mismatch {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in wrong[:3]]}"] if wrong else []
        detail = "; ".join(p for p in parts if p)
        raise WeightsError(f"{path} does not match the architecture in config.json: {detail}")
    module.load_state_dict(state)


class MVNet:
    """Audio -> era embedding -> era scores and paintings, with weights from a folder."""

    def __init__(
        self,
        configs: ModelConfigs,
        encoder: AudioEncoder,
        generator: Generator,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        centroids: np.ndarray,
        eras: tuple[str, ...] = ERAS,
        score_temperature: float = 1.0,
        distance_p: float = 5.0,
        training: dict | None = None,
        atlas=None,
        device: torch.device | str | None = None,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.configs = configs
        self.encoder = encoder.to(self.device).eval()
        self.generator = generator.to(self.device).eval()
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32).reshape(audio.N_MELS)
        self.feature_std = np.asarray(feature_std, dtype=np.float32).reshape(audio.N_MELS)
        self.centroids = np.asarray(centroids, dtype=np.float32).reshape(len(eras), -1)
        self.eras = tuple(eras)
        self.score_temperature = float(score_temperature)
        self.distance_p = float(distance_p)
        self.training = dict(training or {})
        self.atlas = atlas
        self._log_mel = audio.LogMel().to(self.device)

    # ---------------------------------------------------------------- weights folder
    @property
    def config(self) -> dict:
        """Everything config.json holds (JSON-able)."""
        return {
            "format_version": FORMAT_VERSION,
            "eras": list(self.eras),
            **self.configs.to_dict(),
            "audio": {
                "sample_rate": audio.SAMPLE_RATE,
                "n_fft": audio.N_FFT,
                "hop_length": audio.HOP_LENGTH,
                "n_mels": audio.N_MELS,
                "window": audio.WINDOW,
                "clip_samples": audio.CLIP_SAMPLES,
                "segments": audio.N_SEGMENTS,
            },
            "features": {"mean": self.feature_mean.tolist(), "std": self.feature_std.tolist()},
            "centroids": self.centroids.tolist(),
            "score_temperature": self.score_temperature,
            "distance_p": self.distance_p,
            "training": self.training,
        }

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the weights folder in one step: a crash leaves the old complete folder or the new complete one.

        Other files already in the folder (model card, grids) are kept.
        """
        folder = Path(folder)
        with atomic_folder(folder) as staging:
            _save_tensors(self.encoder, staging / ENCODER_FILE)
            _save_tensors(self.generator, staging / GENERATOR_FILE)
            if self.atlas is not None:
                self.atlas.save(staging / ATLAS_FILE)
            atomic_write_bytes(staging / CONFIG_FILE, json.dumps(self.config, indent=1).encode())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike = DEFAULT_WEIGHTS, device=None) -> MVNet:
        folder = Path(folder)
        recover_folder(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise WeightsError(f"No trained weights in {folder}: {config_path} is missing. {TRAINING_HINT}")
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{config_path} is not valid JSON: {e}") from e
        _check_audio_config(config, config_path)
        try:
            configs = ModelConfigs.from_dict(config)
            eras = tuple(config["eras"])
            mean, std = config["features"]["mean"], config["features"]["std"]
            centroids = config["centroids"]
        except (KeyError, TypeError) as e:
            raise WeightsError(f"{config_path} lacks a required entry: {e}") from e
        encoder, generator = AudioEncoder(configs.encoder), Generator(configs.generator)
        _load_tensors(encoder, folder / ENCODER_FILE)
        _load_tensors(generator, folder / GENERATOR_FILE)
        atlas = None
        if (folder / ATLAS_FILE).is_file():
            from mvnet.atlas import Atlas

            atlas = Atlas.load(folder / ATLAS_FILE)
        return cls(
            configs, encoder, generator, mean, std, centroids, eras,
            score_temperature=config.get("score_temperature", 1.0),
            distance_p=config.get("distance_p", 5.0),
            training=config.get("training", {}),
            atlas=atlas,
            device=device,
        )

    # ---------------------------------------------------------------- inference
    @torch.inference_mode()
    def embed_features(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Log-mel dB features (B, 3, 128, 256) -> embeddings (B, 10)."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32)).to(self.device)
        x = audio.standardize(x, torch.as_tensor(self.feature_mean, device=self.device),
                              torch.as_tensor(self.feature_std, device=self.device))
        return self.encoder(x).float().cpu().numpy()

    @torch.inference_mode()
    def embed(self, source, hop_seconds: float | None = None, max_windows: int | None = 8) -> Embedding:
        """Audio (path, bytes or (rate, array)) -> Embedding, averaged over up to `max_windows` windows.

        Raises audio.AudioError with a readable message for input that is not usable music.
        """
        wave = source if isinstance(source, np.ndarray) else audio.load_audio(source)
        windows = audio.clip_windows(wave, hop_seconds=hop_seconds or audio.CLIP_SECONDS, max_windows=max_windows)
        samples = torch.as_tensor(windows.samples, device=self.device)
        features = self._log_mel(samples)
        per_window = self.embed_features(features)
        return Embedding(
            vector=per_window.mean(axis=0),
            windows=per_window,
            starts_seconds=list(windows.starts_seconds),
            duration_seconds=float(windows.duration_seconds),
            looped=bool(windows.looped),
            features=features.float().cpu().numpy(),
        )

    def distances(self, embedding) -> np.ndarray:
        """p-norm distance (the triplet loss's p) from embedding(s) (..., 10) to each era centroid (..., E)."""
        e = np.asarray(embedding, dtype=np.float64)[..., None, :]
        return np.linalg.norm(e - self.centroids.astype(np.float64), ord=self.distance_p, axis=-1)

    def era_probabilities(self, embedding) -> np.ndarray:
        """Softmax over eras of -distance / temperature; (..., E)."""
        logits = -self.distances(embedding) / self.score_temperature
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=-1, keepdims=True)

    def era_scores(self, embedding) -> dict[str, float]:
        """{era: probability} for one embedding (10,) or an Embedding."""
        vector = embedding.vector if isinstance(embedding, Embedding) else embedding
        return {era: float(p) for era, p in zip(self.eras, self.era_probabilities(vector))}

    @torch.inference_mode()
    def paint(self, embedding, n: int = 9, seed: int = 0) -> torch.Tensor:
        """n paintings (n, 3, 64, 64) in [0, 1] on CPU for one embedding (10,), in one forward pass.

        The noise comes from a CPU generator seeded with `seed`, so a seed gives the same images on any device.
        """
        if not 1 <= int(n) <= 64:
            raise ValueError(f"n must be between 1 and 64 images, got {n}")
        vector = embedding.vector if isinstance(embedding, Embedding) else embedding
        cond = torch.as_tensor(np.asarray(vector, dtype=np.float32)).reshape(1, -1).expand(int(n), -1)
        noise = torch.randn(int(n), self.configs.generator.noise_dim, generator=torch.Generator().manual_seed(int(seed)))
        images = self.generator(cond.to(self.device), noise.to(self.device))
        return ((images.float().cpu() + 1) / 2).clamp_(0, 1)

    @torch.inference_mode()
    def paint_many(self, embeddings, seed: int = 0) -> torch.Tensor:
        """One painting per embedding (N, 10) -> (N, 3, 64, 64) in [0, 1], same noise for all (morph strips)."""
        cond = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).reshape(-1, self.centroids.shape[1])
        noise = torch.randn(1, self.configs.generator.noise_dim, generator=torch.Generator().manual_seed(int(seed)))
        images = self.generator(cond.to(self.device), noise.expand(len(cond), -1).to(self.device))
        return ((images.float().cpu() + 1) / 2).clamp_(0, 1)


def _check_audio_config(config: dict, path: Path) -> None:
    """Weights trained on other audio features would embed nonsense: refuse them by name."""
    ours = {
        "sample_rate": audio.SAMPLE_RATE, "n_fft": audio.N_FFT, "hop_length": audio.HOP_LENGTH,
        "n_mels": audio.N_MELS, "clip_samples": audio.CLIP_SAMPLES, "segments": audio.N_SEGMENTS,
    }
    theirs = config.get("audio", {})
    diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
    if diff:
        raise WeightsError(f"{path}: audio settings differ from this version of mvnet (file, code): {diff}")


def untrained(configs: ModelConfigs | None = None, seed: int = 0, device=None) -> MVNet:
    """A randomly initialised MVNet (identity feature statistics, random centroids).

    For tests and smoke checks only: it paints noise. Never ship it as weights.
    """
    from mvnet.models import CPU

    configs = configs or CPU
    torch.manual_seed(seed)
    encoder, generator = AudioEncoder(configs.encoder), Generator(configs.generator)
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(len(ERAS), configs.encoder.embedding_dim)).astype(np.float32)
    return MVNet(
        configs, encoder, generator,
        feature_mean=np.full(audio.N_MELS, -40.0, np.float32), feature_std=np.full(audio.N_MELS, 20.0, np.float32),
        centroids=centroids, training={"note": "untrained: random weights for tests"}, device=device,
    )


def grid_image(images: torch.Tensor, nrow: int | None = None):
    """(n, 3, H, W) in [0, 1] -> one PIL image, a near-square grid with 2-pixel gaps."""
    from PIL import Image
    from torchvision.utils import make_grid

    nrow = nrow or max(1, int(np.ceil(np.sqrt(len(images)))))
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    return Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
