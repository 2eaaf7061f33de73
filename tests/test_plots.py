"""mvnet.plots: figures render at a fixed size and the era map's pixel <-> data mapping is exact."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mvnet import ERAS
from mvnet.atlas import Atlas
from mvnet.audio import N_MELS, N_SEGMENTS, SEGMENT_FRAMES
from mvnet.plots import (
    PixelMapping,
    curves_image,
    era_map_image,
    map_limits,
    mel_image,
    message_image,
    painting_images,
)


def small_atlas():
    rng = np.random.default_rng(0)
    eras = np.arange(50) % 5
    return Atlas(rng.normal(size=(50, 10)), rng.normal(size=(50, 2)) * [3.0, 1.5] + [10.0, -4.0], eras, ERAS)


def test_mel_image_has_fixed_size_and_shows_the_features():
    features = np.random.default_rng(0).uniform(-80, 0, (N_SEGMENTS, N_MELS, SEGMENT_FRAMES))
    image = mel_image(features, start_seconds=12.0, title="test")
    assert image.shape == (340, 720, 3) and image.dtype == np.uint8
    assert image.std() > 20  # not a blank canvas
    with pytest.raises(ValueError, match="expected features"):
        mel_image(features[:2])


def test_map_mapping_round_trips_data_and_pixels_exactly():
    atlas = small_atlas()
    image, mapping = era_map_image(atlas)
    assert image.shape == (mapping.height, mapping.width, 3) == (500, 640, 3)
    x_min, x_max, y_min, y_max = map_limits(atlas)
    for x, y in [(x_min, y_min), (x_max, y_max), (10.0, -4.0), *atlas.reference_xy[:5]]:
        u, v = mapping.to_pixel(x, y)
        assert 0 <= u <= mapping.width and 0 <= v <= mapping.height
        assert mapping.to_data(u, v) == pytest.approx((x, y), abs=1e-9)
    # Axis corners: the lower-left data corner is lower-left on the image (v grows downwards).
    (u0, v0), (u1, v1) = mapping.to_pixel(x_min, y_min), mapping.to_pixel(x_max, y_max)
    assert u0 < u1 and v0 > v1
    # Survives a JSON trip (the app keeps it in gr.State).
    assert PixelMapping.from_dict(mapping.to_dict()) == mapping


def test_marks_do_not_move_the_mapping():
    atlas = small_atlas()
    _, plain = era_map_image(atlas)
    _, marked = era_map_image(atlas, highlight=(10.0, -4.0), highlight_label="here", trail=atlas.reference_xy[:3],
                              line=(atlas.reference_xy[0], atlas.reference_xy[1]), ring=4, title="t")
    assert marked == plain


def test_a_marker_drawn_at_a_data_point_is_found_at_its_mapped_pixel():
    """Independent of matplotlib's transform: find a drawn marker in the pixels, map it back."""
    figure = Figure(figsize=(6.4, 5.0), dpi=100)
    canvas = FigureCanvasAgg(figure)
    ax = figure.add_axes((0.08, 0.09, 0.9, 0.78))
    ax.set_xlim(-3.0, 7.0)
    ax.set_ylim(2.0, 4.0)
    canvas.draw()
    mapping = PixelMapping.from_axes(ax, 640, 500)
    targets = [(-1.7, 2.4), (5.2, 3.9), (0.0, 3.0)]
    for x, y in targets:
        ax.plot([x], [y], marker="s", markersize=5, color="#ff0000", antialiased=False, linestyle="none")
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[:, :, :3]
    red = (pixels[:, :, 0] == 255) & (pixels[:, :, 1] == 0) & (pixels[:, :, 2] == 0)
    rows, columns = np.nonzero(red)
    for x, y in targets:
        u, v = mapping.to_pixel(x, y)
        near = (np.abs(columns + 0.5 - u) < 8) & (np.abs(rows + 0.5 - v) < 8)
        assert near.sum() >= 9, "marker not found where the mapping puts it"
        found = mapping.data_at_click(columns[near].mean(), rows[near].mean())
        one_pixel = (10.0 / (0.9 * 640), 2.0 / (0.78 * 500))  # data units per pixel
        assert abs(found[0] - x) <= one_pixel[0] and abs(found[1] - y) <= one_pixel[1]


def test_era_map_pixels_at_a_reference_point_carry_its_era_colour():
    """The rendered map itself: the pixel the mapping gives for an isolated reference point is coloured."""
    # Centroid labels sit at (0, 5) and (10, 5), away from the corner point checked.
    atlas = Atlas(np.eye(10)[:4], [[0.0, 0.0], [0.0, 10.0], [10.0, 0.0], [10.0, 10.0]], [0, 0, 4, 4], ERAS)
    image, mapping = era_map_image(atlas)
    u, v = mapping.to_pixel(10.0, 0.0)
    rows, columns = np.mgrid[int(v) - 8:int(v) + 9, int(u) - 8:int(u) + 9]
    ink = (255 - image[rows, columns].astype(float)).sum(axis=2)  # darkness of each pixel near (u, v)
    assert ink.max() > 100, "no reference point drawn near its mapped pixel"
    centre = ((ink * (columns + 0.5)).sum() / ink.sum(), (ink * (rows + 0.5)).sum() / ink.sum())
    # Agg snaps markers to whole pixels, so the drawn centre may sit up to one pixel off.
    assert abs(centre[0] - u) <= 1.0 and abs(centre[1] - v) <= 1.0


def test_message_and_curves_images_render():
    assert message_image("No atlas").shape == (500, 640, 3)
    curves = curves_image({"loss": [(0, 3.0), (1, 2.0), (2, 1.5)], "empty": []})
    assert curves.shape == (360, 640, 3) and curves.std() > 5
    assert curves_image({}).shape == (360, 640, 3)


def test_painting_images_keep_colours_and_upscale():
    images = np.zeros((2, 3, 64, 64), np.float32)
    images[0, 0] = 1.0  # red
    images[1, 2] = 1.0  # blue
    pictures = painting_images(images, size=128)
    assert [p.size for p in pictures] == [(128, 128)] * 2
    assert pictures[0].getpixel((60, 60)) == (255, 0, 0) and pictures[1].getpixel((5, 5)) == (0, 0, 255)
    with pytest.raises(ValueError, match="expected images"):
        painting_images(np.zeros((2, 64, 64)))
