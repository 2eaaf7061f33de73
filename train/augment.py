"""Augmentations: DiffAugment for the GAN (Zhao et al. 2020) and a time shift for log-mel features.

DiffAugment applies the same kind of differentiable transform to real and generated images before the
discriminator sees them, so D cannot memorise a small set of paintings and G still gets gradients.
Images are (B, 3, H, W) in [-1, 1]; every op draws its randomness per image from torch's global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


class AugmentError(ValueError):
    pass


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """"color,translation,cutout" -> ("color", "translation", "cutout"); "" or None -> ()."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise AugmentError(f"unknown DiffAugment op(s) {unknown}; use a comma list of {', '.join(POLICIES)}")
    return names


def diff_augment(images: torch.Tensor, policy: tuple[str, ...] | str) -> torch.Tensor:
    if isinstance(policy, str):
        policy = parse_policy(policy)
    for name in policy:
        images = _OPS[name](images)
    return images.contiguous()


def _color(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio * size pixels, zero padding (done with one grid_sample, exact integer shifts)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + ty + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = (gy * (w + 2) + gx).flatten(1)  # (B, H*W) into the padded image
    flat = padded.flatten(2)  # (B, C, (H+2)*(W+2))
    out = flat.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))
    return out.view_as(x)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device)[None, :, None]
    gx = torch.arange(w, device=x.device)[None, None, :]
    inside = (gy >= oy - ch // 2) & (gy < oy - ch // 2 + ch)
    inside = inside & (gx >= ox - cw // 2) & (gx < ox - cw // 2 + cw)
    return x * (~inside)[:, None].to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def time_shift(features: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Circularly roll each clip's log-mel frames by up to +-max_shift (same shift for its 3 segments).

    features (B, 3, n_mels, frames) -> same shape. Cheap, keeps the shape, and the era does not depend on
    where a window starts.
    """
    if max_shift <= 0:
        return features
    b, _, _, frames = features.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b,), device=features.device)
    idx = (torch.arange(frames, device=features.device)[None, :] - shifts[:, None]) % frames  # (B, frames)
    return features.gather(3, idx[:, None, None, :].expand_as(features))


def spec_augment(features: torch.Tensor, freq_mask: int, time_mask: int, max_pitch: int = 0) -> torch.Tensor:
    """SpecAugment-style masks plus a small shift along the mel axis, per clip (same for its 3 segments).

    features (B, 3, n_mels, frames), standardised (0 = the corpus mean) -> same shape. One band of up to
    freq_mask mel bins and one span of up to time_mask frames are set to 0; the mel axis moves by up to
    +-max_pitch bins (edges repeated), a rough transposition. They stop the encoder from keying on one
    instrument's partials or one bar, which is what it memorises on a corpus of a few hundred works.
    """
    b, _, mels, frames = features.shape
    dev = features.device
    out = features
    if max_pitch > 0:
        shifts = torch.randint(-max_pitch, max_pitch + 1, (b,), device=dev)
        idx = (torch.arange(mels, device=dev)[None, :] - shifts[:, None]).clamp(0, mels - 1)  # (B, mels)
        out = out.gather(2, idx[:, None, :, None].expand(-1, out.shape[1], -1, frames))
    keep = torch.ones(b, 1, mels, frames, device=dev, dtype=out.dtype)
    for size, length, axis in ((freq_mask, mels, 2), (time_mask, frames, 3)):
        if size <= 0:
            continue
        width = torch.randint(0, size + 1, (b,), device=dev)
        start = (torch.rand(b, device=dev) * (length - width + 1)).long()
        pos = torch.arange(length, device=dev)[None, :]
        inside = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (B, length)
        shape = (b, 1, length, 1) if axis == 2 else (b, 1, 1, length)
        keep = keep * (~inside).to(out.dtype).view(shape)
    return out * keep
