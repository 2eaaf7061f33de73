"""The three MVNet networks, read top to bottom like the report's architecture table.

    AudioEncoder   log-mel (B, 3, 128, 256) -> 6 x [conv 4x4 s2 -> BatchNorm -> ReLU] -> Linear -> (B, 10)
    Generator      [embedding (10) ++ noise (100)] -> Linear -> C0 x 4 x 4
                   -> 4 x [upsample x2 -> conv 3x3 -> norm -> LeakyReLU (-> self-attention)]
                   -> conv 3x3 -> tanh -> (B, 3, 64, 64)
    Discriminator  (B, 3, 64, 64) -> 4 x [conv 4x4 s2 (-> BatchNorm) -> LeakyReLU]
                   -> conv 3x3 (-> BatchNorm) -> LeakyReLU -> flatten -> Linear -> logit
                   (+ projection term <h, W e> when conditional)

Our changes to the report, each an option so its recipe stays reproducible:
- ``GeneratorConfig.film``: FiLM (conditional norm) in every block. The report conditions only at the
  input and then InstanceNorm normalises every channel of every image, which washes the condition out.
- ``DiscriminatorConfig.conditional``: a projection discriminator (Miyato & Koyama 2018) that sees the
  embedding. The report's discriminator never saw the condition, so nothing asked images to match the era.
- ``DiscriminatorConfig.spectral_norm`` instead of BatchNorm for a stable, batch-independent critic.
- ``CPU`` preset: narrower widths so both stages train on a 2-core CPU (see README for FLOPs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _spectral_norm


@dataclass
class EncoderConfig:
    in_channels: int = 3
    base_channels: int = 32
    n_blocks: int = 6
    embedding_dim: int = 10
    input_hw: tuple[int, int] = (128, 256)


@dataclass
class GeneratorConfig:
    embedding_dim: int = 10
    noise_dim: int = 100
    base_channels: int = 1024
    n_up: int = 4
    attention_at: tuple[int, ...] = (32, 64)  # resolutions after which a self-attention layer sits
    norm: str = "instance"  # "instance" (report) or "batch"
    film: bool = False  # condition every block's normalisation on the embedding
    image_size: int = 64


@dataclass
class DiscriminatorConfig:
    base_channels: int = 64
    embedding_dim: int = 10
    conditional: bool = True
    spectral_norm: bool = True
    batch_norm: bool = False  # the report's D uses BatchNorm (not with spectral norm)
    era_classes: int = 0  # > 0: an auxiliary era classifier on D's features (AC-GAN); training only
    era_projection: bool = False  # also project D's features on a learned vector per era (needs era_classes)
    image_size: int = 64


@dataclass
class ModelConfigs:
    """One named set of the three architectures."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfigs:
        def build(kind, values):
            values = dict(values)
            for key in ("input_hw", "attention_at"):
                if key in values:
                    values[key] = tuple(values[key])
            return kind(**values)

        return cls(
            encoder=build(EncoderConfig, d.get("encoder", {})),
            generator=build(GeneratorConfig, d.get("generator", {})),
            discriminator=build(DiscriminatorConfig, d.get("discriminator", {})),
        )


# The report's networks exactly (parameter counts asserted in tests/test_models.py).
REPORT = ModelConfigs(
    encoder=EncoderConfig(base_channels=32),
    generator=GeneratorConfig(base_channels=1024, attention_at=(32, 64), norm="instance", film=False),
    discriminator=DiscriminatorConfig(base_channels=64, conditional=False, spectral_norm=False, batch_norm=True),
)

# Sized for 2 CPU cores: ~31x fewer generator FLOPs than REPORT. Self-attention sits at 16x16: at 32x32 its
# 1024x1024 attention maps took ~70% of a CPU training step (measured: G forward+backward, batch 32, one
# thread: 1.29 s with attention at 32, 0.47 s at 16).
CPU = ModelConfigs(
    encoder=EncoderConfig(base_channels=16),
    generator=GeneratorConfig(base_channels=256, attention_at=(16,), norm="batch", film=True),
    discriminator=DiscriminatorConfig(base_channels=32, conditional=True, spectral_norm=True, batch_norm=False),
)

PRESETS = {"report": REPORT, "cpu": CPU}


class AudioEncoder(nn.Module):
    """Log-mel features (B, 3, 128, 256), standardised -> era embedding (B, embedding_dim)."""

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        cfg = cfg or EncoderConfig()
        self.cfg = cfg
        blocks, channels = [], cfg.in_channels
        for i in range(cfg.n_blocks):
            out = cfg.base_channels * 2**i
            blocks += [nn.Conv2d(channels, out, 4, 2, 1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.blocks = nn.Sequential(*blocks)
        h, w = (s // 2**cfg.n_blocks for s in cfg.input_hw)
        self.head = nn.Linear(channels * h * w, cfg.embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(features).flatten(1))


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + gamma * softmax(q k^T) v, with q, k at C/8 channels; gamma starts at 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        # scale=1.0 as in SAGAN and the report (no 1/sqrt(d)).
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return x + self.gamma * out.transpose(1, 2).reshape(b, c, h, w)


class FiLM(nn.Module):
    """Per-channel scale and shift predicted from the embedding, applied after a non-affine norm."""

    def __init__(self, embedding_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(embedding_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)  # starts as the identity: (1 + 0) * x + 0

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(embedding)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class UpBlock(nn.Module):
    """Upsample x2 (bilinear) -> conv 3x3 -> norm (-> FiLM) -> LeakyReLU(0.2) (-> self-attention)."""

    def __init__(self, cin: int, cout: int, cfg: GeneratorConfig, attention: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        if cfg.norm == "instance":
            self.norm = nn.InstanceNorm2d(cout, affine=False)
        elif cfg.norm == "batch":
            self.norm = nn.BatchNorm2d(cout, affine=not cfg.film)
        else:
            raise ValueError(f"unknown generator norm {cfg.norm!r} (use 'instance' or 'batch')")
        self.film = FiLM(cfg.embedding_dim, cout) if cfg.film else None
        self.attention = SelfAttention(cout) if attention else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))
        if self.film is not None:
            x = self.film(x, embedding)
        x = F.leaky_relu(x, 0.2)
        return self.attention(x) if self.attention is not None else x


class Generator(nn.Module):
    """(embedding (B, 10), noise (B, 100)) -> images (B, 3, 64, 64) in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        cfg = cfg or GeneratorConfig()
        self.cfg = cfg
        self.start = cfg.image_size // 2**cfg.n_up
        self.stem = nn.Linear(cfg.embedding_dim + cfg.noise_dim, cfg.base_channels * self.start**2)
        blocks, channels, size = [], cfg.base_channels, self.start
        for _ in range(cfg.n_up):
            size *= 2
            blocks.append(UpBlock(channels, channels // 2, cfg, attention=size in cfg.attention_at))
            channels //= 2
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(channels, 3, 3, 1, 1)

    def forward(self, embedding: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.stem(torch.cat([embedding, noise], dim=1)), 0.2)
        x = x.view(x.shape[0], self.cfg.base_channels, self.start, self.start)
        for block in self.blocks:
            x = block(x, embedding)
        return torch.tanh(self.to_rgb(x))


class Discriminator(nn.Module):
    """Images (B, 3, 64, 64) in [-1, 1] (+ embedding (B, 10) when conditional) -> logits (B,)."""

    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        cfg = cfg or DiscriminatorConfig()
        self.cfg = cfg
        sn = _spectral_norm if cfg.spectral_norm else (lambda m: m)
        c = cfg.base_channels
        # (in, out, kernel, stride): four halvings 64 -> 4, then a 3x3 conv at 4x4 as in the report.
        plan = [(3, c, 4, 2), (c, 2 * c, 4, 2), (2 * c, 4 * c, 4, 2), (4 * c, 8 * c, 4, 2), (8 * c, 16 * c, 3, 1)]
        layers = []
        for i, (cin, cout, k, s) in enumerate(plan):
            layers.append(sn(nn.Conv2d(cin, cout, k, s, 1)))
            if cfg.batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.blocks = nn.Sequential(*layers)
        side = cfg.image_size // 16
        features = 16 * c * side * side
        self.head = sn(nn.Linear(features, 1))
        self.project = sn(nn.Linear(cfg.embedding_dim, features, bias=False)) if cfg.conditional else None
        # No spectral norm on the era head: it would cap the logits near 0 and keep the era loss at ln 5.
        self.era_head = nn.Linear(features, cfg.era_classes) if cfg.era_classes else None
        self.era_embed = (sn(nn.Embedding(cfg.era_classes, features)) if cfg.era_classes and cfg.era_projection
                          else None)

    def forward(self, images: torch.Tensor, embedding: torch.Tensor | None = None,
                with_eras: bool = False, eras: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Real/fake logits (B,); with_eras=True also returns era logits (B, era_classes). `eras` (B,) are the
        eras of the clips the images go with (needed when era_projection is on)."""
        h = self.blocks(images).flatten(1)
        logits = self.head(h).squeeze(1)
        if self.project is not None:
            if embedding is None:
                raise ValueError("this discriminator is conditional: pass the embedding")
            logits = logits + (self.project(embedding) * h).sum(dim=1)
        if self.era_embed is not None:
            if eras is None:
                raise ValueError("this discriminator projects on eras: pass the eras")
            logits = logits + (self.era_embed(eras) * h).sum(dim=1)
        if not with_eras:
            return logits
        if self.era_head is None:
            raise ValueError("this discriminator has no era classifier (era_classes=0)")
        return logits, self.era_head(h)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_item(module: nn.Module, *example_inputs: torch.Tensor) -> int:
    """Forward FLOPs for one item (inputs with batch size 1), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*example_inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def example_inputs(kind: str, configs: ModelConfigs, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Zero inputs of the right shapes, for FLOP counting and smoke tests."""
    if kind == "encoder":
        e = configs.encoder
        return (torch.zeros(batch, e.in_channels, *e.input_hw),)
    if kind == "generator":
        g = configs.generator
        return torch.zeros(batch, g.embedding_dim), torch.zeros(batch, g.noise_dim)
    if kind == "discriminator":
        d = configs.discriminator
        images = torch.zeros(batch, 3, d.image_size, d.image_size)
        return (images, torch.zeros(batch, d.embedding_dim)) if d.conditional else (images,)
    raise ValueError(kind)


def build(configs: ModelConfigs) -> tuple[AudioEncoder, Generator, Discriminator]:
    return AudioEncoder(configs.encoder), Generator(configs.generator), Discriminator(configs.discriminator)
