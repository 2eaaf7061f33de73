"""Export: a finished encoder run + GAN run -> the weights folder `mvnet.pipeline.MVNet.from_pretrained` loads.

The folder is written by `MVNet.save_pretrained` only (one format, one place): config.json, encoder and
generator safetensors, and the era atlas (a UMAP of the training clips' embeddings, mvnet.atlas).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mvnet.models import DiscriminatorConfig, ModelConfigs
from train.encoder_stage import EMBEDDINGS_FILE, load_encoder_run
from train.gan_stage import load_gan_run


def pipeline_from_runs(encoder_run: str | Path, gan_run: str | Path, device=None, atlas=None):
    """A ready MVNet from a finished stage 1 run and stage 2 run (for the app, evaluation and export)."""
    from mvnet.pipeline import MVNet

    encoder, enc_meta = load_encoder_run(encoder_run)
    generator, gan_meta = load_gan_run(gan_run)
    configs = ModelConfigs(
        encoder=encoder.cfg,
        generator=generator.cfg,
        discriminator=DiscriminatorConfig(**gan_meta["discriminator"]),
    )
    training = {
        "encoder": {"run": str(encoder_run), **enc_meta.get("metrics", {}),
                    "sampling": enc_meta["options"].get("sampling"), "epochs": enc_meta["options"].get("epochs")},
        "gan": {"run": str(gan_run), "recipe": gan_meta["recipe"], "ema": gan_meta["ema"], **gan_meta["metrics"]},
        "preset": enc_meta.get("preset"),
    }
    return MVNet(
        configs, encoder, generator,
        feature_mean=np.asarray(enc_meta["features"]["mean"], np.float32),
        feature_std=np.asarray(enc_meta["features"]["std"], np.float32),
        centroids=np.asarray(enc_meta["centroids"], np.float32),
        eras=tuple(enc_meta["eras"]),
        score_temperature=enc_meta["score_temperature"],
        distance_p=enc_meta["distance_p"],
        training=training,
        atlas=atlas,
        device=device,
    )


def fit_atlas(encoder_run: str | Path, seed: int = 0):
    """The era map: UMAP of the training clips' embeddings (written by stage 1), with their eras and names."""
    from safetensors import safe_open

    from mvnet.atlas import Atlas

    path = Path(encoder_run) / EMBEDDINGS_FILE
    with safe_open(str(path), framework="pt") as f:
        embeddings = f.get_tensor("train_embeddings").numpy()
        labels = f.get_tensor("train_labels").numpy()
        names = json.loads((f.metadata() or {}).get("train_names", "null"))
    meta = json.loads((Path(encoder_run) / "encoder.json").read_text())
    return Atlas.fit(embeddings, labels, meta["eras"], seed=seed, reference_names=names)


def export_run(encoder_run: str | Path, gan_run: str | Path, out_dir: str | Path = "weights",
               atlas: bool = True, seed: int = 0) -> Path:
    """Write the MVNet weights folder (config.json, encoder/generator safetensors, atlas) to out_dir.

    The model card (out_dir/README.md) is written separately (it needs the evaluation results).
    """
    pipeline = pipeline_from_runs(encoder_run, gan_run, device="cpu",
                                  atlas=fit_atlas(encoder_run, seed) if atlas else None)
    return pipeline.save_pretrained(out_dir)


@torch.no_grad()
def era_grids(weights_dir: str | Path, out_dir: str | Path, encoder_run: str | Path | None = None, n: int = 16,
              seed: int = 0) -> dict[str, Path]:
    """One small grid PNG per era (<out_dir>/<era>.png): n paintings, one per held-out clip of the era when
    the encoder run is given (what a user's music of that era gets), else from the era centroid with n seeds."""
    from mvnet.pipeline import MVNet, grid_image

    pipeline = MVNet.from_pretrained(weights_dir, device="cpu")
    test_emb = test_labels = None
    if encoder_run is not None:
        from safetensors.torch import load_file

        saved = load_file(str(Path(encoder_run) / EMBEDDINGS_FILE))
        test_emb, test_labels = saved["test_embeddings"].numpy(), saved["test_labels"].numpy()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for e, (era, centroid) in enumerate(zip(pipeline.eras, pipeline.centroids, strict=True)):
        pool = test_emb[test_labels == e] if test_emb is not None else np.zeros((0, len(centroid)))
        if len(pool):
            picks = pool[np.linspace(0, len(pool) - 1, n).round().astype(int)]
            images = torch.cat([pipeline.paint(v, n=1, seed=seed + i) for i, v in enumerate(picks)])
        else:
            images = pipeline.paint(centroid, n=n, seed=seed)
        path = out_dir / f"{era}.png"
        grid_image(images, nrow=int(np.ceil(np.sqrt(n)))).save(path)
        paths[era] = path
    return paths
