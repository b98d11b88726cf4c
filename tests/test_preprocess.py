"""MNIST-style preprocessing of any picture of a digit (export.preprocess), on pictures made as users make them."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageDraw

from conftest import seven
from lenet_client.preprocess import NoDigitError, to_mnist

ROOT = Path(__file__).resolve().parents[1]
# The contract's test vector: docs/model-contract.md gives the SHA-256 of the 784 bytes this picture must give.
TEST_VECTOR = ROOT / "docs" / "images" / "preprocess-test-vector.png"


def center_of_mass(field: np.ndarray) -> tuple[float, float]:
    mass = field.astype(float)
    return ((mass.sum(1) * np.arange(28)).sum() / mass.sum(), (mass.sum(0) * np.arange(28)).sum() / mass.sum())


def differs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two MNIST-style pictures, 0-1."""
    return float(np.abs(a.astype(float) - b.astype(float)).mean() / 255)


def test_the_ink_fills_20_pixels_and_its_center_of_mass_is_the_fields_center():
    field = to_mnist(seven())
    assert field.shape == (28, 28) and field.dtype == np.uint8 and field.max() == 255
    rows, cols = np.nonzero(field)
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == 20  # the longer side, as MNIST's
    row, col = center_of_mass(field)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5
    assert field[:, :2].max() == 0 and field[:, -2:].max() == 0  # MNIST's margin: nothing at the edges


@pytest.mark.parametrize("where", ["small in a corner", "edge to edge", "off centre on a wide canvas"])
def test_position_and_size_on_the_canvas_do_not_matter(where):
    reference = to_mnist(seven())
    picture = {"small in a corner": seven(box=(8, 10, 38, 50), width=3),
               "edge to edge": seven(size=(130, 200), box=(1, 4, 129, 196), width=14),
               "off centre on a wide canvas": seven(size=(640, 200), box=(420, 40, 500, 160))}[where]
    assert differs(to_mnist(picture), reference) < 0.04


@pytest.mark.parametrize("form", ["light on dark", "RGB", "RGBA on transparent", "white on transparent", "palette",
                                  "16-bit", "bilevel", "CMYK", "tinted paper"])
def test_every_colour_form_gives_the_same_digit(form):
    reference = to_mnist(seven())
    ink_only = seven(ink=255, paper=0)  # 255 where the pen went
    if form == "light on dark":
        picture = seven(ink=230, paper=30)
    elif form in ("RGBA on transparent", "white on transparent"):
        colour = (20, 20, 200) if form == "RGBA on transparent" else (255, 255, 255)
        picture = Image.new("RGBA", ink_only.size, colour + (0,))
        picture.putalpha(ink_only)
    elif form == "16-bit":
        picture = Image.fromarray(np.asarray(seven(), dtype=np.uint16) * 257)
    elif form == "tinted paper":
        picture = Image.merge("RGB", [seven(paper=250), seven(paper=230), seven(paper=190)])
    else:
        picture = seven().convert({"RGB": "RGB", "palette": "P", "bilevel": "1", "CMYK": "CMYK"}[form])
    assert differs(to_mnist(picture), reference) < 0.03


def test_a_float_picture_of_0_to_1_and_a_premultiplied_one_read_as_their_8_bit_form():
    """Pictures that only an app makes in memory: floats of 0-1 large enough to be reduced (the reduction's sums
    end a rounding error over 1, which once made it a 0-255 picture with no contrast) and La (Pillow converts it to
    nothing but LA)."""
    large = seven(size=(600, 600), box=(180, 120, 420, 480), width=27)
    floats = Image.fromarray(np.asarray(large, dtype=np.float32) / 255)
    assert differs(to_mnist(floats), to_mnist(large)) < 0.03
    assert differs(to_mnist(seven().convert("RGB").convert("La")), to_mnist(seven())) < 0.03


def rounded_corners(picture: Image.Image, radius: int) -> Image.Image:
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle([(0, 0), (picture.width - 1, picture.height - 1)], radius, fill=255)
    picture = picture.convert("RGBA")
    picture.putalpha(mask)
    return picture


@pytest.mark.parametrize("form", ["RGBA opaque", "LA opaque", "palette with an unused transparent colour",
                                  "light on dark, RGBA opaque", "rounded corners", "light on dark, rounded corners",
                                  "round photo"])
def test_a_picture_with_an_alpha_channel_it_barely_uses_is_read_like_the_picture(form):
    """A screenshot or an image saved by an editor often has an alpha channel that is opaque everywhere, or
    transparent only in its corners: its transparent parts are paper, not the ink of a drawing on a canvas (read
    as that, the digit came out inverted: 96,915 of 13,173 levels of ink)."""
    reference = to_mnist(seven())
    if form == "RGBA opaque":
        picture = seven().convert("RGBA")
    elif form == "LA opaque":
        picture = seven().convert("LA")
    elif form == "palette with an unused transparent colour":
        picture = seven().convert("P")
        picture.info["transparency"] = 7  # a palette entry no pixel uses
    elif form == "light on dark, RGBA opaque":
        picture = seven(ink=230, paper=30).convert("RGBA")
    elif form == "rounded corners":
        picture = rounded_corners(seven(), 40)
    elif form == "light on dark, rounded corners":
        picture = rounded_corners(seven(ink=230, paper=30), 40)
    else:
        picture = seven().convert("RGBA")
        mask = Image.new("L", picture.size, 0)
        ImageDraw.Draw(mask).ellipse([(0, 0), (picture.width - 1, picture.height - 1)], fill=255)
        picture.putalpha(mask)
    assert differs(to_mnist(picture), reference) < 0.03


def test_a_fine_pen_on_a_large_picture_gets_strokes_as_thick_as_mnists():
    """A 2-pixel pen line on a 600-pixel picture would be a tenth of a pixel wide in the 20x20 box."""
    fine = to_mnist(seven(size=(600, 600), box=(180, 120, 420, 480), width=2))
    thick = to_mnist(seven())
    assert fine.sum() >= 0.55 * thick.sum() and differs(fine, thick) < 0.035  # unthickened: 0.36 and 0.043


def test_exif_orientation_is_applied():
    upright = seven()
    stored = upright.rotate(90, expand=True)  # a phone stores the sensor's pixels and says how to turn them
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    assert differs(to_mnist(Image.open(buffer)), to_mnist(upright)) < 0.02


def photo_of(picture: Image.Image, seed: int = 0, shadow: float = 60, noise: float = 8) -> Image.Image:
    """The picture as a phone's photo of a page: a shadow across it, paper texture, and JPEG compression."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(picture.convert("L"), dtype=float)
    height, width = pixels.shape
    pixels = pixels - shadow * np.linspace(0, 1, width)[None, :] + rng.normal(0, noise, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).convert("RGB").save(buffer, format="JPEG", quality=60)
    return Image.open(buffer)


def test_shadow_paper_texture_and_jpeg_noise_are_not_ink():
    assert differs(to_mnist(photo_of(seven())), to_mnist(seven())) < 0.05


def test_a_thin_frame_around_the_picture_is_not_the_digit():
    framed = seven()
    ImageDraw.Draw(framed).rectangle((1, 1, 198, 198), outline=0, width=2)
    assert differs(to_mnist(framed), to_mnist(seven())) < 0.03


def test_specks_away_from_the_digit_do_not_move_it():
    specked = seven()
    ImageDraw.Draw(specked).ellipse((180, 185, 182, 187), fill=0)
    assert differs(to_mnist(specked), to_mnist(seven())) < 0.02


@pytest.mark.parametrize("picture", [
    Image.new("L", (200, 200), 255),
    Image.new("RGB", (64, 48), (0, 0, 0)),
    Image.new("RGBA", (100, 100), (0, 0, 0, 0)),
    Image.fromarray(np.random.default_rng(0).normal(235, 6, (300, 300)).clip(0, 255).astype(np.uint8)),
    photo_of(Image.new("L", (300, 200), 255)),
], ids=["white", "black", "transparent", "paper texture", "photo of a blank page"])
def test_a_picture_without_ink_is_an_error_not_a_guess(picture):
    with pytest.raises(NoDigitError, match="no ink"):
        to_mnist(picture)


def test_a_picture_too_small_to_hold_a_digit_is_an_error():
    with pytest.raises(NoDigitError, match="too small"):
        to_mnist(Image.new("L", (5, 40), 0))


def test_an_mnist_digit_comes_back_as_itself(real_data_dir):
    """MNIST's own digits are already built this way: preprocessing a scan of one gives it back, nearly."""
    from job.training.data import read_split

    images, _ = read_split(real_data_dir, train=False, limit=50)
    scores = []
    for pixels in images.numpy():
        scan = Image.fromarray(255 - pixels).resize((112, 112), Image.Resampling.BILINEAR)  # dark on light, 4x
        scores.append(differs(to_mnist(scan), pixels))
    assert np.median(scores) < 0.04 and max(scores) < 0.12


def test_the_contracts_test_vector():
    field = to_mnist(Image.open(TEST_VECTOR))
    documented = (ROOT / "docs" / "model-contract.md").read_text()
    assert f"SHA-256 `{hashlib.sha256(field.tobytes()).hexdigest()}`" in documented


EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "150"))


@st.composite
def any_picture(draw) -> Image.Image:
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "I;16", "1", "P", "F", "CMYK"]))
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    if mode == "I;16":
        return Image.fromarray(draw(arrays(np.uint16, shape)))
    if mode == "F":
        return Image.fromarray(draw(arrays(np.float32, shape, elements=st.floats(allow_nan=True, width=32))))
    channels = {"RGB": 3, "RGBA": 4, "LA": 2, "CMYK": 4}.get(mode)
    pixels = draw(arrays(np.uint8, shape + ((channels,) if channels else ())))
    return Image.fromarray(pixels, mode) if channels else Image.fromarray(pixels, "L").convert(mode)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_picture())
def test_any_picture_gives_a_28x28_digit_or_says_there_is_none(picture):
    """Long run: HYPOTHESIS_EXAMPLES=5000 make test."""
    try:
        field = to_mnist(picture)
    except NoDigitError:
        return
    assert field.shape == (28, 28) and field.dtype == np.uint8 and field.max() == 255


@settings(max_examples=EXAMPLES, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 30)),
              elements=st.floats(-2, 2, allow_nan=False) | st.sampled_from([0.0, 0.5, 1.0])),
       st.lists(st.floats(0, 100), min_size=1, max_size=4))
def test_the_inks_quantiles_are_numpys_to_the_last_bit(values, qs):
    """ink.median and ink.percentiles select once per rank where numpy selects twice; the contract (and the
    JavaScript port) is numpy's figures, so they must be the same floats, ties and neighbouring ranks included."""
    from lenet_client.ink import median, percentiles

    assert median(values) == np.median(values)
    assert percentiles(values, qs) == [float(v) for v in np.percentile(values, qs)]


def bold_zero(margin: int = 0, width: int = 22) -> Image.Image:
    """A 0 drawn with a broad marker, dark on white; with no margin it touches all four edges of the picture."""
    image = Image.new("L", (80 + 2 * margin, 112 + 2 * margin), 255)
    ImageDraw.Draw(image).ellipse((margin, margin, margin + 79, margin + 111), outline=0, width=width)
    return image


def low_resolution(picture: Image.Image, height: int, resample) -> Image.Image:
    small = picture.resize((max(1, round(picture.width * height / picture.height)), height), Image.Resampling.BOX)
    return small.resize((picture.width, picture.height), resample)


def test_a_tight_crop_of_a_bold_digit_touching_all_four_edges_is_read_as_with_a_margin():
    """The ink covers about half of the picture and the whole border is touched: neither the border nor the
    picture's median is the paper for sure, and nothing may be refused or inverted."""
    tight, framed = to_mnist(bold_zero()), to_mnist(bold_zero(margin=40))
    assert tight[14, 14] == 0 and tight.max() == 255  # the hole stays a hole: the polarity is right
    assert differs(tight, framed) < 0.03


@pytest.mark.parametrize("resample", [Image.Resampling.NEAREST, Image.Resampling.BILINEAR], ids=["nearest", "bilinear"])
@pytest.mark.parametrize("height", [12, 20])
def test_a_low_resolution_digit_enlarged_blocky_or_blurred_is_read_as_the_sharp_one(resample, height):
    sharp = seven(size=(112, 112), box=(30, 14, 82, 98), width=10)
    assert differs(to_mnist(low_resolution(sharp, height, resample)), to_mnist(sharp)) < 0.06  # a 1 and this 7: 0.105


def polarity_cases() -> dict[str, tuple[np.ndarray, bool]]:
    """Pictures whose border band is uneven (0-1 gray), with whether their ink is light. Also the JavaScript port's
    test pictures (tests/test_web.py)."""
    rows, cols = np.mgrid[0:32, 0:24] - np.array([15.5, 11.5])[:, None, None]
    outer = (rows / 16) ** 4 + (cols / 12) ** 4  # a squarish ring, as a broad marker draws it
    zero = np.where((outer <= 1.0) & ((rows / 16) ** 2 + (cols / 12) ** 2 >= 0.3), 0.0, 1.0)
    framed = np.full((100, 100), 0.1)
    framed[[0, -1], :] = framed[:, [0, -1]] = 0.9  # a one-pixel light frame along every edge
    framed[20:80, 45:55] = 0.9  # a light "1"
    seven = np.zeros((40, 30))  # a light 7 cropped to its own box: its bar and stroke touch the edges
    seven[:6, :] = 1.0
    for row in range(6, 40):
        column = int(29 - (row - 6) * 0.6)
        seven[row, max(0, column - 5):column + 1] = 1.0
    return {"thick dark 0, tight crop": (zero, False), "light 1 in a light frame": (framed, True),
            "light 7, tight crop": (seven, True)}


@pytest.mark.parametrize("case", ["thick dark 0, tight crop", "light 1 in a light frame", "light 7, tight crop"])
def test_the_ink_of_a_picture_whose_border_is_uneven_is_found_on_the_right_side(case):
    """Polarity when the border band is uneven (docs/model-contract.md, step 4). A thick pen's 0 cropped to its own
    box is most of the band and most of the picture, so both paper estimates are the ink (v3 read it inverted: four
    dots); a light 7 cropped to its box has dark corners (v4's first rule read it inverted); a light digit inside a
    thin light frame has an uneven band too, and the frame says to trust the medians."""
    from lenet_client.ink import oriented

    gray, light = polarity_cases()[case]
    assert np.array_equal(oriented(gray), gray if light else 1 - gray)
    if case.startswith("thick"):
        assert (gray == 0).mean() > 0.6  # dark on white, touching all four edges
        assert to_mnist(Image.fromarray((255 * gray).astype(np.uint8)))[14, 14] == 0  # the hole stays paper


def test_a_low_resolution_scan_of_a_thick_digit_keeps_all_its_ink():
    """A broad marker's 0 scanned at 10x8 pixels and enlarged without smoothing (each scan pixel a 10x10 block),
    cropped to its own box: the 28x28 holds the scan's ink as the scan has it (its 20x16 area average), hole and
    all. v3 kept a third of it: the polarity read it inverted and the bold-stroke step thinned what was left."""
    from lenet_client.preprocess import resize_area

    rows, cols = np.mgrid[0:10, 0:8] - np.array([4.5, 3.5])[:, None, None]
    ring = ((rows / 5) ** 4 + (cols / 4) ** 4 <= 1.0) & ((rows / 5) ** 2 + (cols / 4) ** 2 >= 0.3)
    scan = Image.fromarray(np.where(ring, 0, 255).astype(np.uint8)).resize((80, 100), Image.Resampling.NEAREST)
    seen = to_mnist(scan).astype(float) / 255
    assert seen.sum() == pytest.approx(resize_area(ring.astype(float), 20, 16).sum(), rel=0.05)
    assert seen[14, 14] == 0


def test_a_picture_one_pixel_wide_at_work_is_read_without_a_warning():
    """A long thin stroke is reduced to one pixel wide while its ink is found: the paper's noise, measured across
    neighbouring pixels, has none to measure (numpy warned of an empty slice, and the JavaScript port read NaN)."""
    import warnings

    from PIL import ImageDraw

    stroke = Image.new("L", (10, 5000), 255)
    ImageDraw.Draw(stroke).line([(5, 100), (5, 4900)], fill=0, width=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert to_mnist(stroke).any()
