"""Input images for image-to-video: open safely, normalise to 8-bit RGB, and size them by a model's rules.

``load_image`` accepts the common formats (PNG, JPEG, WebP, BMP, GIF's first frame, TIFF), applies the
EXIF orientation, composites transparency over white, converts 16-bit, palette, CMYK and other modes,
and refuses with a ``RequestError`` a user can act on: no file, an empty file, not an image, a damaged
or cut-short file, more pixels than ``MAX_PIXELS``. ``output_size`` picks the frame size a model takes
for an image (its multiples, at most a pixel area, the image's aspect ratio) and ``fit_image`` crops
or pads the image to it. No torch, no gradio.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..studio.jobs import RequestError

logger = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # 40 megapixels: any photo from a phone or camera, not a decompression bomb
# Decoders we let PIL use: the common formats only (no EPS/PDF-style formats that call out to other programs).
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF")  # JPEG also opens MPO (phone photos)
FITS = ("crop", "pad")
# Aspect ratios farther from square than this are clamped (and the image cropped or padded to it).
MAX_ASPECT = 21 / 9
PAD_COLOR = (0, 0, 0)
ALPHA_BACKGROUND = (255, 255, 255)


@dataclass
class InputImage:
    """A decoded, normalised input image and what the sidecar records about the file it came from."""

    image: object  # PIL.Image.Image, RGB, orientation applied
    path: str
    name: str
    format: str
    mode: str  # the file's own mode: "RGBA", "P", "I;16", ...
    width: int  # after the EXIF orientation
    height: int
    sha256: str
    n_bytes: int
    exif_rotated: bool
    alpha_composited: bool

    def record(self) -> dict:
        return {
            "name": self.name,
            "format": self.format,
            "mode": self.mode,
            "width": self.width,
            "height": self.height,
            "bytes": self.n_bytes,
            "sha256": self.sha256,
            "exif_rotated": self.exif_rotated,
            "alpha_composited": self.alpha_composited,
        }


def _file_hash(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _to_rgb(image):
    """8-bit RGB from any PIL mode; returns (image, alpha_composited)."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit and 32-bit greyscale: scale the range to 8 bits (PIL's own convert would clip at 255).
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        else:
            top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
            scaled = values / top
        grey = Image.fromarray((np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255).round().astype(np.uint8), "L")
        return grey.convert("RGB"), False
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("RGB", "RGBA", "LA", "L"):
        pass
    else:  # CMYK, YCbCr, LAB, HSV, La, RGBa, RGBX ...
        image = image.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB"), True
    return image.convert("RGB"), False


WHAT = {"image": "image", "last_frame": "last frame"}


def load_image(path, what: str = "image") -> InputImage:
    """Open ``path`` as an input image or raise ``RequestError`` (``key`` starting ``i2v_image_``).

    ``what`` is ``"image"`` or ``"last_frame"``: messages name it, and ``params['what']`` carries the id so
    the page can say it in the reader's language.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    kind, what = what, WHAT[what]
    if path is None or (isinstance(path, str) and not path.strip()):
        raise RequestError(f"No {what} was given: add one first.", key="i2v_image_missing", what=kind, name="")
    file = Path(str(path))
    name = file.name
    if not file.is_file():
        raise RequestError(f"The {what} file {name!r} does not exist (any more); upload it again.",
                           key="i2v_image_gone", what=kind, name=name)
    sha256, n_bytes = _file_hash(file)
    if n_bytes == 0:
        raise RequestError(f"The {what} file {name!r} is empty (0 bytes).", key="i2v_image_empty", what=kind, name=name)
    try:
        # PIL refuses decompression bombs itself beyond 2 x MAX_IMAGE_PIXELS (and warns beyond it); our own,
        # lower limit is checked from the header below, before any pixel is decoded.
        opened = Image.open(file, formats=FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, Image.DecompressionBombError):
            over = f"more than {Image.MAX_IMAGE_PIXELS / 1e6:.0f}"
            raise RequestError(f"The {what} {name!r} is {over} megapixels; the limit is {MAX_PIXELS / 1e6:g} megapixels.",
                               key="i2v_image_too_large", what=kind, name=name, megapixels=over,
                               limit=MAX_PIXELS / 1e6) from None
        raise RequestError(
            f"The {what} file {name!r} is not an image this app can read (PNG, JPEG, WebP, BMP, GIF or TIFF).",
            key="i2v_image_unreadable", what=kind, name=name,
        ) from None
    with opened:
        width, height = opened.size
        if width * height > MAX_PIXELS:
            megapixels = f"{width * height / 1e6:.1f}"
            raise RequestError(
                f"The {what} {name!r} is {width} x {height} ({megapixels} megapixels); the limit is "
                f"{MAX_PIXELS / 1e6:g} megapixels. Make it smaller and try again.",
                key="i2v_image_too_large", what=kind, name=name, megapixels=megapixels, limit=MAX_PIXELS / 1e6,
            )
        if width < 1 or height < 1:
            raise RequestError(f"The {what} {name!r} has no pixels.", key="i2v_image_empty", what=kind, name=name)
        file_format = opened.format or "?"
        mode = opened.mode
        try:
            opened.seek(0)  # GIF, WebP, TIFF: the first frame
            opened.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise RequestError(
                f"The {what} file {name!r} is damaged or cut short ({error}); save it again or use another file.",
                key="i2v_image_truncated", what=kind, name=name,
            ) from None
        image = opened
        rotated = False
        try:
            orientation = image.getexif().get(0x0112, 1)
            if orientation not in (None, 1):
                image = ImageOps.exif_transpose(image)
                rotated = True
        except Exception as error:  # a broken EXIF block must not cost the user the picture
            logger.warning("Ignoring the unreadable EXIF orientation of %s: %s", name, error)
        rgb, composited = _to_rgb(image)
    return InputImage(
        image=rgb, path=str(file), name=name, format=file_format, mode=mode, width=rgb.width, height=rgb.height,
        sha256=sha256, n_bytes=n_bytes, exif_rotated=rotated, alpha_composited=composited,
    )


def aspect_value(aspect: str, width: int, height: int) -> float:
    """Height / width the clip should have: the image's own (``"image"``) or a ratio such as ``"16:9"``."""
    if aspect in ("", "image", None):
        ratio = height / width
    else:
        try:
            across, down = (float(part) for part in str(aspect).split(":"))
            ratio = down / across
        except ValueError:
            raise RequestError(f"Aspect ratio must be 'image' or like 16:9, not {aspect!r}.", key="aspect",
                               value=str(aspect)) from None
        if not math.isfinite(ratio) or ratio <= 0:
            raise RequestError(f"Aspect ratio must be 'image' or like 16:9, not {aspect!r}.", key="aspect",
                               value=str(aspect))
    return min(max(ratio, 1 / MAX_ASPECT), MAX_ASPECT)


ASPECT_TOLERANCE = 0.05  # log of the ratio of ratios: about 5%


def output_size(ratio: float, max_area: int, multiple: int) -> tuple[int, int]:
    """(width, height): multiples of ``multiple``, at most ``max_area`` pixels, shaped like ``ratio`` (h/w).

    Among the sizes near the ideal one, the best has the smallest sum of aspect error (log of the ratio
    of ratios) and unused area (fraction of ``max_area``): a 1% crop weighs as much as 1% fewer pixels.
    For 16:9 images this lands on the models' native sizes (832 x 480, 1280 x 704, 896 x 512). When no size
    is within ``ASPECT_TOLERANCE`` of the shape (tiny areas, large multiples), the closest shape wins.
    """
    ideal_height = math.sqrt(max_area * ratio)
    base = int(ideal_height // multiple)
    best = None
    for rows in range(base - 2, base + 3):
        height = rows * multiple
        if height < multiple:
            continue
        ideal_width = height / ratio / multiple
        widest = int(max_area / height // multiple)
        for cols in {math.floor(ideal_width), math.ceil(ideal_width), widest}:
            width = cols * multiple
            if width < multiple or width * height > max_area:
                continue
            error = abs(math.log((height / width) / ratio))
            # within ASPECT_TOLERANCE: aspect error plus unused area; beyond it only the aspect counts, so a small
            # area never turns a 4:3 photo into 3:2 (a size that keeps the shape closest, even if smaller)
            score = (0, error + 1 - width * height / max_area) if error <= ASPECT_TOLERANCE else (1, error)
            if best is None or score < best[0]:
                best = (score, (width, height))
    return best[1] if best else (multiple, multiple)


def fit_image(image, size: tuple[int, int], fit: str = "crop"):
    """``image`` resized to ``size``: ``crop`` fills the frame and trims the overflow (centred), ``pad`` shows
    the whole image with bars."""
    from PIL import Image, ImageOps

    if image.size == tuple(size):
        return image
    if fit == "pad":
        return ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=PAD_COLOR)
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)


def thumbnail(image, longest: int = 512):
    """A copy no larger than ``longest`` pixels on its long side, for the page."""
    copy = image.copy()
    copy.thumbnail((longest, longest))
    return copy


def last_frame(video: Path, target: Path) -> Path:
    """The last frame of ``video`` as a PNG at ``target`` (written through a temporary file)."""
    import subprocess

    from .ffmpeg import ffmpeg_exe

    video, target = Path(video), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.stem}.partial.png")
    command = [ffmpeg_exe(), "-v", "error", "-y", "-sseof", "-1", "-i", str(video), "-update", "1", "-frames:v", "1000",
               "-f", "image2", "-c:v", "png", str(temp)]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not temp.is_file() or temp.stat().st_size == 0:
        temp.unlink(missing_ok=True)
        message = result.stderr.decode("utf-8", "replace").strip() or "no frame decoded"
        raise RequestError(f"Could not read the last frame of {video.name}: {message}", key="i2v_last_frame_read",
                           name=video.name)
    temp.replace(target)
    return target
