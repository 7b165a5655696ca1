"""Hugging Face model ids checked without waiting on the network: a model that is neither a local folder nor in
the local Hugging Face cache, on a machine that cannot reach the Hub, is refused at once in one line instead of
after a minute of retries. Torch-free."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .options import OptionError

HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 2.0) -> bool:
    """False when offline mode is set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or the Hub's host does not answer."""
    if any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def in_hf_cache(name: str) -> bool:
    """Whether the Hugging Face cache holds ``name``'s config (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False
    return isinstance(found, str)


def cached_models() -> list[str]:
    """The model ids in the local Hugging Face cache (none when there is no cache)."""
    from huggingface_hub import scan_cache_dir

    try:
        return sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # noqa: BLE001 - no cache folder, or an unreadable one: nothing cached
        return []


def check_model_available(name: str, kind: str) -> None:
    """Refuse ``name`` (a ``kind`` = text / image / audio model) now if loading it could only fail: not a local
    folder, not cached, and the Hub out of reach. The message names the option taking a local folder and
    ``fusent models``."""
    option = f"--{kind}-model"
    if Path(name).expanduser().is_dir() or in_hf_cache(name):
        return
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_like_path:
        raise OptionError(
            f"{kind} model folder {name} does not exist: pass an existing folder to {option}, or one of the "
            "built-in encoders `fusent models` lists",
            option,
        )
    if not hub_reachable():
        raise OptionError(
            f"{kind} model {name!r} is not a local folder nor in the Hugging Face cache, and the Hub is out of reach "
            f"(offline): pass a local folder with {option} PATH, or one of the models `fusent models` lists",
            option,
        )
