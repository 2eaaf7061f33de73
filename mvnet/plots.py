"""Figures for the app: the mel-spectrogram, the era map (with an exact pixel <-> data mapping) and
small training plots, each rendered off-screen to an RGB array (H, W, 3) uint8.

Matplotlib's object API with the Agg canvas is used directly (no pyplot), so figures share no global
state and can be drawn from several request threads at once. Figures have a fixed size and DPI, so
a click on the rendered image maps back to data coordinates through the transform captured at draw time:

    image, mapping = era_map_image(atlas, highlight=xy)
    x, y = mapping.data_at_click(*evt.index)        # gr.Image.select gives evt.index == [column, row]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mvnet.audio import HOP_LENGTH, N_MELS, N_SEGMENTS, SAMPLE_RATE, SEGMENT_FRAMES, SEGMENT_SAMPLES

DPI = 100
MAP_SIZE_INCHES = (6.4, 5.0)  # 640 x 500 pixels
MEL_SIZE_INCHES = (7.2, 3.4)  # 720 x 340 pixels
CURVE_SIZE_INCHES = (6.4, 3.6)
MAP_MARGIN = 0.08  # fraction of the reference points' extent left free around them

# Okabe-Ito colours (and Tol's indigo for modern), distinguishable with colour-blindness, one per era.
ERA_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#332288", "#D55E00", "#F0E442")
HIGHLIGHT_COLOUR = "#000000"

__all__ = [
    "PixelMapping", "mel_image", "era_map_image", "message_image", "curves_image", "painting_images",
    "ERA_COLOURS", "DPI",
]


@dataclass(frozen=True)
class PixelMapping:
    """Exact affine map between data coordinates of one axes and pixels of the rendered image.

    `matrix` is matplotlib's data -> display affine (3x3, display origin at the bottom-left, y up),
    captured from `ax.transData` after drawing; `height` is the image height in pixels. Continuous
    pixel coordinates (u, v) have their origin at the top-left corner of the image, v down; pixel
    [column, row] covers u in [column, column + 1) and v in [row, row + 1).
    """

    matrix: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
    width: int
    height: int

    @classmethod
    def from_axes(cls, ax, width: int, height: int) -> PixelMapping:
        if not ax.transData.is_affine:
            raise ValueError("only linear axes have an exact affine pixel mapping")
        matrix = ax.transData.get_affine().get_matrix()
        return cls(tuple(tuple(float(v) for v in row) for row in matrix), int(width), int(height))

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Data (x, y) -> continuous pixel coordinates (u, v)."""
        display_x, display_y, _ = np.asarray(self.matrix) @ np.array([x, y, 1.0])
        return float(display_x), float(self.height - display_y)

    def to_data(self, u: float, v: float) -> tuple[float, float]:
        """Continuous pixel coordinates (u, v) -> data (x, y); the exact inverse of to_pixel."""
        x, y, _ = np.linalg.solve(np.asarray(self.matrix), np.array([u, self.height - v, 1.0]))
        return float(x), float(y)

    def data_at_click(self, column: int, row: int) -> tuple[float, float]:
        """Data coordinates at the centre of the clicked pixel (gr.SelectData.index == [column, row])."""
        return self.to_data(column + 0.5, row + 0.5)

    def to_dict(self) -> dict:
        return {"matrix": [list(row) for row in self.matrix], "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: Mapping) -> PixelMapping:
        return cls(tuple(tuple(float(v) for v in row) for row in d["matrix"]), int(d["width"]), int(d["height"]))


def _new_figure(size_inches: tuple[float, float]) -> tuple[Figure, FigureCanvasAgg]:
    figure = Figure(figsize=size_inches, dpi=DPI)
    return figure, FigureCanvasAgg(figure)


def _to_array(canvas: FigureCanvasAgg) -> np.ndarray:
    """Draw the canvas and return its pixels as (H, W, 3) uint8."""
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


# ------------------------------------------------------------------------------------ mel-spectrogram


def mel_image(features, start_seconds: float = 0.0, title: str | None = None) -> np.ndarray:
    """The three 2.97 s segments of one clip side by side, in dB, with time (s) and frequency (Hz) axes.

    features: (N_SEGMENTS, N_MELS, SEGMENT_FRAMES) dB as LogMel gives it; start_seconds: where the clip
    starts in the recording (the time axis counts from there). Returns (300, 960, 3) uint8.
    """
    import librosa  # mel band centre frequencies, to label the y axis in Hz

    features = np.asarray(features, dtype=np.float32)
    if features.shape != (N_SEGMENTS, N_MELS, SEGMENT_FRAMES):
        raise ValueError(f"expected features {(N_SEGMENTS, N_MELS, SEGMENT_FRAMES)}, got {features.shape}")
    segment_seconds = SEGMENT_SAMPLES / SAMPLE_RATE
    frame_seconds = HOP_LENGTH / SAMPLE_RATE
    # Band centres of librosa's Slaney mel filter bank (the same bank LogMel uses).
    centres = librosa.mel_frequencies(n_mels=N_MELS + 2, fmin=0.0, fmax=SAMPLE_RATE / 2)[1:-1]
    tick_hz = [hz for hz in (256, 512, 1024, 2048, 4096, 8192) if hz < centres[-1]]
    tick_bins = np.interp(tick_hz, centres, np.arange(N_MELS))
    low, high = float(features.min()), float(features.max())

    figure, canvas = _new_figure(MEL_SIZE_INCHES)
    axes = figure.subplots(1, N_SEGMENTS, sharey=True)
    for index, ax in enumerate(axes):
        begin = start_seconds + index * segment_seconds
        picture = ax.imshow(
            features[index], origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high,
            extent=(begin - frame_seconds / 2, begin + (SEGMENT_FRAMES - 0.5) * frame_seconds, -0.5, N_MELS - 0.5),
            interpolation="nearest",
        )
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_title(f"segment {index + 1}", fontsize=8)
        ax.set_yticks(tick_bins, [f"{hz:g}" if hz < 1000 else f"{hz / 1000:g}k" for hz in tick_hz])
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("frequency (Hz, mel scale)", fontsize=8)
    figure.subplots_adjust(left=0.1, right=0.88, bottom=0.14, top=0.8 if title else 0.88, wspace=0.08)
    colour_axes = figure.add_axes((0.895, 0.14, 0.018, (0.8 if title else 0.88) - 0.14))
    colourbar = figure.colorbar(picture, cax=colour_axes)
    colourbar.set_label("dB", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    if title:
        figure.text(0.02, 0.95, title, fontsize=10, ha="left", va="center")
    return _to_array(canvas)


# ------------------------------------------------------------------------------------------ era map


def map_limits(atlas) -> tuple[float, float, float, float]:
    """Fixed axis limits for an atlas's map: its reference points' extent plus MAP_MARGIN on each side."""
    x_min, x_max, y_min, y_max = atlas.bounds()
    x_pad = max(x_max - x_min, 1e-3) * MAP_MARGIN
    y_pad = max(y_max - y_min, 1e-3) * MAP_MARGIN
    return x_min - x_pad, x_max + x_pad, y_min - y_pad, y_max + y_pad


def era_map_image(atlas, highlight: Sequence[float] | None = None, highlight_label: str | None = None,
                  trail: np.ndarray | None = None, line: tuple[Sequence[float], Sequence[float]] | None = None,
                  ring: int | None = None, title: str | None = None) -> tuple[np.ndarray, PixelMapping]:
    """The atlas's reference clips coloured by era, era centroids labelled, plus optional marks.

    highlight: (2,) map point drawn as a star (the current clip or click), with `highlight_label`;
    trail: (W, 2) points drawn small (e.g. the windows of a long recording); line: two map points
    joined by a dashed line (a morph path); ring: index of a reference point to circle (nearest clip).
    The axis limits depend only on the atlas, so every map of one atlas shares one PixelMapping.
    Returns ((500, 640, 3) uint8 image, PixelMapping).
    """
    figure, canvas = _new_figure(MAP_SIZE_INCHES)
    ax = figure.add_axes((0.08, 0.09, 0.9, 0.78))
    x_min, x_max, y_min, y_max = map_limits(atlas)
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_autoscale_on(False)  # marks must never move the limits: the click mapping depends on them
    ax.set_xlabel("UMAP 1", fontsize=8)
    ax.set_ylabel("UMAP 2", fontsize=8)
    ax.tick_params(labelsize=7)

    xy, eras = atlas.reference_xy, atlas.reference_eras
    size = 10 if len(xy) < 1500 else 5
    for era, name in enumerate(atlas.era_names):
        members = xy[eras == era]
        ax.scatter(members[:, 0], members[:, 1], s=size, color=ERA_COLOURS[era % len(ERA_COLOURS)],
                   alpha=0.55, linewidths=0, label=f"{name} ({len(members)})")
    _label_centroids(ax, canvas, atlas)
    if line is not None:
        (x0, y0), (x1, y1) = line
        ax.plot([x0, x1], [y0, y1], linestyle="--", color=HIGHLIGHT_COLOUR, linewidth=1.2)
    if trail is not None and len(trail):
        trail = np.asarray(trail, dtype=np.float32).reshape(-1, 2)
        ax.scatter(trail[:, 0], trail[:, 1], s=22, marker="o", facecolors="white",
                   edgecolors=HIGHLIGHT_COLOUR, linewidths=1.0, zorder=4)
    if ring is not None:
        rx, ry = xy[ring]
        ax.scatter([rx], [ry], s=120, marker="o", facecolors="none", edgecolors=HIGHLIGHT_COLOUR,
                   linewidths=1.5, zorder=5)
    if highlight is not None:
        hx, hy = float(highlight[0]), float(highlight[1])
        ax.scatter([hx], [hy], s=260, marker="*", color="white", edgecolors=HIGHLIGHT_COLOUR,
                   linewidths=1.4, zorder=6)
        if highlight_label:  # on the side of the star that faces the middle, so it stays inside the map
            right = hx > (x_min + x_max) / 2
            high = hy > (y_min + y_max) / 2
            ax.annotate(highlight_label, (hx, hy), xytext=(-10 if right else 10, -10 if high else 10),
                        textcoords="offset points", fontsize=9, ha="right" if right else "left",
                        va="top" if high else "bottom", zorder=7,
                        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.9, "linewidth": 0.5})
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(atlas.era_names), fontsize=7.5,
              frameon=False, markerscale=2.0, handletextpad=0.2, columnspacing=0.9)
    if title:  # top left: the app overlays its buttons on the top right corner
        figure.text(0.02, 0.96, title, fontsize=10, ha="left", va="center")
    image = _to_array(canvas)
    return image, PixelMapping.from_axes(ax, image.shape[1], image.shape[0])


def _label_centroids(ax, canvas: FigureCanvasAgg, atlas) -> None:
    """Each era's name at its centroid (marked with a cross); a label that would cover another is moved
    down (or up) until it is free, with a thin line back to its centroid."""
    renderer = canvas.get_renderer()
    placed = []
    centroids = atlas.centroids_xy()
    for era in np.argsort(-np.nan_to_num(centroids[:, 1], nan=-np.inf)):  # top to bottom
        cx, cy = centroids[era]
        if not np.isfinite(cx):
            continue
        colour = ERA_COLOURS[era % len(ERA_COLOURS)]
        ax.scatter([cx], [cy], s=36, marker="X", color=colour, edgecolors="black", linewidths=0.6, zorder=3)
        label = ax.annotate(
            atlas.era_names[era], (cx, cy), xytext=(0, 9), textcoords="offset points", ha="center", va="bottom",
            fontsize=9, fontweight="bold", color=colour, zorder=3,
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85, "linewidth": 0},
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.8, "shrinkA": 0, "shrinkB": 3},
        )
        for offset in (9, -22, 24, -37, 39, -52, 54, -67):
            label.set_position((0, offset))
            label.set_va("bottom" if offset > 0 else "top")
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(label.get_window_extent(renderer))


def message_image(text: str, size_inches: tuple[float, float] = MAP_SIZE_INCHES) -> np.ndarray:
    """A plain image carrying a message, shown where a figure cannot be drawn (e.g. no atlas)."""
    figure, canvas = _new_figure(size_inches)
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True, color="#444444")
    return _to_array(canvas)


# ----------------------------------------------------------------------------------- training plots


def curves_image(series: Mapping[str, Sequence[tuple[float, float]]], x_label: str = "step",
                 y_label: str = "loss", title: str | None = None) -> np.ndarray:
    """Line plot of named (x, y) series, e.g. {"encoder loss": [(step, value), ...]}."""
    figure, canvas = _new_figure(CURVE_SIZE_INCHES)
    ax = figure.add_subplot()
    drawn = False
    for name, points in series.items():
        points = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
        if len(points):
            ax.plot(points[:, 0], points[:, 1], label=name, linewidth=1.2)
            drawn = True
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no values yet", ha="center", va="center", transform=ax.transAxes, color="#777777")
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return _to_array(canvas)


# -------------------------------------------------------------------------------------------- paintings


def painting_images(images, size: int = 256) -> list:
    """Generated images (n, 3, H, W) in [0, 1] (tensor or array) -> n PIL images of size x size pixels.

    Upscaled with Lanczos so the 64x64 paintings are not shown as blurry thumbnails in the gallery.
    """
    from PIL import Image

    array = np.asarray(images.detach().cpu().numpy() if hasattr(images, "detach") else images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"expected images (n, 3, H, W), got shape {array.shape}")
    pixels = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(p).resize((size, size), Image.LANCZOS) for p in pixels]
