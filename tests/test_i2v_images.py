"""Input images for I2V: formats, orientation, alpha, bit depth, rejections, size rules, fit, last frames."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipelines.tasks.i2v import I2VRequest, validate_i2v
from pipelines.media.images import MAX_PIXELS, fit_image, last_frame, load_image, output_size
from pipelines.studio.jobs import RequestError


def solid(width: int, height: int, color=(200, 30, 40)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


@pytest.mark.parametrize("suffix, options", [(".png", {}), (".jpg", {"quality": 95}), (".webp", {"lossless": True}),
                                             (".bmp", {}), (".tif", {})])
def test_common_formats_open_as_rgb(tmp_path, suffix, options):
    path = tmp_path / f"photo{suffix}"
    solid(64, 48).save(path, **options)
    image = load_image(path)
    assert (image.width, image.height, image.image.mode) == (64, 48, "RGB")
    assert np.abs(np.asarray(image.image, dtype=int)[24, 32] - (200, 30, 40)).max() <= 3


def test_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    first, second = solid(40, 30, (255, 0, 0)), solid(40, 30, (0, 0, 255))
    first.save(path, save_all=True, append_images=[second], duration=100)
    pixel = np.asarray(load_image(path).image)[15, 20]
    assert pixel[0] > 200 and pixel[2] < 50


def test_exif_orientation_is_applied(tmp_path):
    picture = solid(80, 40, (0, 0, 0))
    picture.paste((255, 255, 255), (0, 0, 10, 10))  # white mark top left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    picture.save(path, exif=exif, quality=95)
    image = load_image(path)
    assert (image.width, image.height, image.exif_rotated) == (40, 80, True)
    pixels = np.asarray(image.image)
    assert pixels[5, 35].min() > 200  # the mark is now top right
    assert pixels[5, 5].max() < 60


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[:, :15] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = load_image(path)
    pixels = np.asarray(image.image)
    assert image.alpha_composited and image.mode == "RGBA"
    assert tuple(pixels[10, 5]) == (255, 0, 0)
    assert tuple(pixels[10, 25]) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    grey = np.full((10, 10), 32768, dtype=np.uint16)  # mid grey in 16 bits
    path = tmp_path / "scan16.png"
    Image.fromarray(grey).save(path)
    image = load_image(path)
    assert image.mode.startswith("I")
    assert 120 <= np.asarray(image.image)[5, 5, 0] <= 135  # clipping would give 255


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "palette.png"
    palette = solid(16, 16, (10, 200, 10)).convert("P")
    palette.save(path, transparency=0)
    image = load_image(path)
    assert image.image.mode == "RGB" and image.mode == "P"


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda p: p.write_text("hello, not an image"), "i2v_image_unreadable"),
        (lambda p: p.write_bytes(b""), "i2v_image_empty"),
        (lambda p: p.write_bytes(_png_bytes(p)[: len(_png_bytes(p)) // 2]), "i2v_image_truncated"),
        (lambda p: Image.new("L", (8000, 5001)).save(p, format="PNG"), "i2v_image_too_large"),
    ],
    ids=["not-an-image", "empty-upload", "truncated", "over-40-megapixels"],
)
def test_bad_inputs_are_refused_with_their_message(tmp_path, make, key):
    path = tmp_path / "upload.png"
    make(path)
    with pytest.raises(RequestError) as raised:
        validate_i2v(I2VRequest(image=str(path), prompt="a cat", resolution="128p"), demo=True)
    assert raised.value.key == key
    message = str(raised.value)
    assert "upload.png" in message
    if key == "i2v_image_too_large":
        assert "8000 x 5001" in message and f"{MAX_PIXELS / 1e6:g} megapixels" in message


def test_no_image_at_all_is_refused():
    with pytest.raises(RequestError) as raised:
        validate_i2v(I2VRequest(image=None, prompt="a cat"), demo=True)
    assert raised.value.key == "i2v_image_missing"
    assert "No image was given" in str(raised.value)


def _png_bytes(path) -> bytes:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(path.with_suffix(".full.png"))
    return path.with_suffix(".full.png").read_bytes()


@pytest.mark.parametrize(
    "ratio, area, multiple, expected",
    [
        (9 / 16, 832 * 480, 16, (832, 480)),  # Wan 2.1 at 480p keeps its native size
        (16 / 9, 832 * 480, 16, (480, 832)),
        (9 / 16, 1280 * 720, 32, (1280, 704)),  # Wan 2.2 TI2V 5B: multiples of 32
        (9 / 16, 896 * 512, 32, (896, 512)),  # I2VGen-XL 512p
        (3 / 4, 832 * 480, 16, (720, 544)),
    ],
)
def test_output_size_follows_the_model_rules(ratio, area, multiple, expected):
    width, height = output_size(ratio, area, multiple)
    assert (width, height) == expected
    assert width % multiple == 0 and height % multiple == 0 and width * height <= area


def test_validation_size_keeps_the_image_ratio_and_model_multiple(tmp_path):
    path = tmp_path / "portrait.png"
    solid(300, 400).save(path)
    checked = validate_i2v(I2VRequest(image=str(path), prompt="x", model="wan2.2-ti2v-5b-i2v", resolution="256p"),
                           demo=True)
    assert checked.width % 32 == 0 and checked.height % 32 == 0
    assert checked.height > checked.width
    assert abs(checked.height / checked.width - 4 / 3) < 0.15
    assert checked.frames % 4 == 1


def test_fit_crop_fills_and_pad_shows_bars():
    white = solid(100, 100, (255, 255, 255))
    padded = fit_image(white, (200, 100), "pad")
    cropped = fit_image(white, (200, 100), "crop")
    assert padded.size == cropped.size == (200, 100)
    assert np.asarray(padded)[50, 2].max() == 0  # black bar at the side
    assert np.asarray(cropped)[50, 2].min() == 255


def test_last_frame_is_refused_by_models_that_cannot_end_on_one(tmp_path):
    path = tmp_path / "a.png"
    solid(64, 64).save(path)
    with pytest.raises(RequestError) as raised:
        validate_i2v(I2VRequest(image=str(path), last_image=str(path), prompt="x", model="i2vgen-xl"), demo=True)
    assert raised.value.key == "i2v_last_frame_unsupported"
    checked = validate_i2v(I2VRequest(image=str(path), last_image=str(path), prompt="x", model="wan2.2-i2v-a14b"),
                           demo=True)
    assert checked.last_image == str(path)


def test_last_frame_of_a_clip(tmp_path):
    from pipelines.media.ffmpeg import write_mp4

    frames = np.zeros((12, 64, 96, 3), dtype=np.uint8)
    frames[-1] = (0, 0, 255)  # only the last frame is blue
    clip = tmp_path / "clip.mp4"
    write_mp4(frames, clip, fps=8)
    target = last_frame(clip, tmp_path / "clip_lastframe.png")
    pixel = np.asarray(Image.open(target).convert("RGB"))[32, 48]
    assert pixel[2] > 200 and pixel[0] < 60


def test_ui_texts_match_in_both_languages():
    from ui.strings_i2v import STRINGS

    assert set(STRINGS["en"]) == set(STRINGS["zh"])
    for key, english in STRINGS["en"].items():
        assert key.startswith(("i2v_", "err_i2v_")), key
        assert set(re.findall(r"{(\w+)", english)) == set(re.findall(r"{(\w+)", STRINGS["zh"][key])), key
