"""Losses of both stages: triplet mining on a batch of embeddings, and the two GAN objectives.

Distances are Minkowski p-norms as in the report (p = 5), with torch's TripletMarginLoss epsilon so the
gradient is finite when two embeddings coincide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6  # same as nn.TripletMarginLoss / F.pairwise_distance


def pairwise_distances(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) p-norm distances ||x_i - y_j + eps||_p."""
    diff = x[:, None, :] - y[None, :, :] + EPS
    return diff.abs().pow(p).sum(-1).pow(1.0 / p)


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, p: float) -> dict:
    """Hardest positive and hardest negative per anchor (Hermans et al. 2017). embeddings (B, D), labels (B,).

    Returns {"loss", "active" (fraction of anchors with a positive loss), "d_pos", "d_neg"}.
    """
    d = pairwise_distances(embeddings, embeddings, p)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        raise ValueError("a triplet batch needs at least two clips of one era and one clip of another")
    hardest_pos = torch.where(pos_mask, d, torch.full_like(d, -1.0)).amax(1)
    hardest_neg = torch.where(neg_mask, d, torch.full_like(d, float("inf"))).amin(1)
    per_anchor = F.relu(hardest_pos - hardest_neg + margin)[valid]
    return {
        "loss": per_anchor.mean(),
        "active": (per_anchor > 0).float().mean().detach(),
        "d_pos": hardest_pos[valid].mean().detach(),
        "d_neg": hardest_neg[valid].mean().detach(),
    }


def semi_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, p: float) -> dict:
    """FaceNet semi-hard mining: for every (anchor, positive) pair, the closest negative farther than the
    positive (d_ap < d_an < d_ap + margin); when none is, the hardest negative."""
    d = pairwise_distances(embeddings, embeddings, p)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    a_idx, p_idx = pos_mask.nonzero(as_tuple=True)
    keep = neg_mask[a_idx].any(1)
    a_idx, p_idx = a_idx[keep], p_idx[keep]
    if len(a_idx) == 0:
        raise ValueError("a triplet batch needs at least two clips of one era and one clip of another")
    d_ap = d[a_idx, p_idx]  # (T,)
    d_an = d[a_idx]  # (T, B)
    negatives = neg_mask[a_idx]
    semi = negatives & (d_an > d_ap[:, None]) & (d_an < d_ap[:, None] + margin)
    inf = torch.full_like(d_an, float("inf"))
    semi_choice = torch.where(semi, d_an, inf).amin(1)
    hard_choice = torch.where(negatives, d_an, inf).amin(1)
    chosen = torch.where(semi.any(1), semi_choice, hard_choice)
    per_triplet = F.relu(d_ap - chosen + margin)
    return {
        "loss": per_triplet.mean(),
        "active": (per_triplet > 0).float().mean().detach(),
        "d_pos": d_ap.mean().detach(),
        "d_neg": chosen.mean().detach(),
    }


MINERS = {"batch-hard": batch_hard_triplet_loss, "semi-hard": semi_hard_triplet_loss}


# --- GAN objectives --------------------------------------------------------------------------------------

def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(real part, fake part) of the hinge discriminator loss; their sum is the loss."""
    return F.relu(1.0 - real_logits).mean(), F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def bce_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float):
    """The report's D loss: BCE with one-sided label smoothing (real target 1 - smoothing, fake target 0)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1.0 - label_smoothing))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real, fake


def bce_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def mode_seeking_loss(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mao et al. 2019: the first and second halves of the batch share conditions but not noise; reward image
    distance per unit of noise distance. images (2B, 3, H, W), noise (2B, Z) -> scalar (lower = more diverse)."""
    a, b = images.chunk(2)
    za, zb = noise.chunk(2)
    ratio = (a - b).abs().mean(dim=(1, 2, 3)) / (za - zb).abs().mean(dim=1)
    return 1.0 / (ratio.mean() + 1e-5)
