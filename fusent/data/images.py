"""Image loading that reports, rather than raises on, missing, corrupt and truncated files."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .loading import LoadError

#: Refuse images larger than this many pixels (decompression-bomb guard); ~ 8k x 8k.
MAX_IMAGE_PIXELS = 64_000_000


class ImageLoadError(LoadError):
    """An image that cannot be used (kind missing_image / corrupt_image / truncated_image / too_large_image)."""


def load_image(source: Path | bytes | Image.Image, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Return a fully decoded RGB image or raise ImageLoadError(kind in missing/corrupt/truncated/too_large).
    ``max_pixels`` is checked from the header, before any pixel is decoded."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    name = "<bytes>"
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
            if img.width * img.height > max_pixels:
                raise ImageLoadError(
                    "too_large_image", f"image has {img.width}x{img.height} pixels (limit {max_pixels})", name
                )
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
