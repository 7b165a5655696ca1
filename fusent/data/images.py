"""Image loading that reports, rather than raises on, missing, corrupt and truncated files."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .loading import IN_MEMORY, LoadError

#: Refuse images larger than this many pixels (decompression-bomb guard); ~ 8k x 8k.
MAX_IMAGE_PIXELS = 64_000_000
#: Refuse images whose long side is over this many times the short one. Encoders scale the short side up to their
#: input size, so a 1 x 8000 strip (a 114-byte PNG) became a 260 x 2,080,000 image (+2 GB); real panoramas and long
#: screenshots stay well below 50:1, and the centre crop of anything longer shows a sliver of it.
MAX_ASPECT_RATIO = 50
#: JPEGs are decoded at a reduced scale (libjpeg's DCT scaling) while both sides stay at least this long: every
#: encoder's input is far smaller, so a 6000 x 4000 photo costs a quarter of its full decode.
DECODE_SIDE = 1024


class ImageLoadError(LoadError):
    """An image that cannot be used (kind missing_image / corrupt_image / truncated_image / too_large_image /
    elongated_image)."""


def check_image_size(width: int, height: int, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse, from the header's size alone, images too large to decode or too elongated to resize."""
    if width * height > max_pixels:
        raise ImageLoadError("too_large_image", f"image has {width}x{height} pixels (limit {max_pixels})", name)
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        raise ImageLoadError(
            "elongated_image",
            f"image is {width}x{height}: an aspect ratio over {MAX_ASPECT_RATIO}:1 leaves nothing to see in its centre"
            " crop (crop or pad it first)",
            name,
        )


def load_image(source: Path | bytes | Image.Image, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Return a fully decoded RGB image or raise ImageLoadError(kind in missing/corrupt/truncated/too_large/
    elongated). ``max_pixels`` and the aspect ratio are checked from the header, before any pixel is decoded."""
    if isinstance(source, Image.Image):
        check_image_size(source.width, source.height, IN_MEMORY, max_pixels)
        return source.convert("RGB")
    name = IN_MEMORY
    if isinstance(source, Path | str):
        name = str(source)
        try:
            source = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageLoadError("missing_image", "image file not found", name) from None
        except OSError as exc:
            raise ImageLoadError("missing_image", f"image file unreadable ({exc.strerror})", name) from None
    if not source:
        raise ImageLoadError("corrupt_image", "image file is empty", name)
    try:
        with Image.open(io.BytesIO(source)) as img:
            check_image_size(img.width, img.height, name, max_pixels)
            if img.format == "JPEG":
                img.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
            img.load()
            return img.convert("RGB")
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("corrupt_image", "not a readable image", name) from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError("too_large_image", f"image refused ({exc})", name) from None
    except (OSError, SyntaxError, ValueError) as exc:
        kind = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
        raise ImageLoadError(kind, f"cannot decode image ({exc})", name) from None
