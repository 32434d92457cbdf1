"""Where the app keeps its data, and the limits on what a person may upload."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("data")


def data_dir(cli_value: str | None = None) -> Path:
    """--data-dir, else $VRFT_DATA_DIR, else ./data."""
    return Path(cli_value or os.environ.get("VRFT_DATA_DIR") or DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class ImportLimits:
    """Caps that keep a hostile or broken upload from hurting the server."""
    max_images: int = 5000
    """Most images one dataset may hold."""
    max_total_bytes: int = 2 * 1024**3
    """Most bytes an upload may unpack to, counted as they stream."""
    max_ratio: int = 200
    """Largest uncompressed/compressed ratio of one zip member (beyond 1 MiB)."""
    max_entries: int = 50_000
    """Most entries a zip may list."""
    max_pixels: int = 40_000_000
    """Largest width x height of one image."""

    @classmethod
    def from_env(cls) -> "ImportLimits":
        def env(name: str, default: int) -> int:
            return int(os.environ.get(name, default))
        d = cls()
        return cls(max_images=env("VRFT_MAX_IMAGES", d.max_images),
                   max_total_bytes=env("VRFT_MAX_UPLOAD_BYTES", d.max_total_bytes),
                   max_ratio=d.max_ratio, max_entries=d.max_entries,
                   max_pixels=env("VRFT_MAX_PIXELS", d.max_pixels))
