"""Safe unpacking and image checks: zip-slip, symlinks, zip bombs, pixel bombs, broken images."""
from __future__ import annotations

import shutil
import stat
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from PIL import Image

from backend.config import ImportLimits

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
REFUSED_IMAGE_SUFFIXES = {".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".ico", ".psd", ".svg"}
"""Images in these formats are reported, not silently skipped."""
ANNOTATION_SUFFIXES = {".json", ".txt", ".yaml", ".yml", ".xml", ".csv", ".jsonl"}
IGNORED_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db"}
_CHUNK = 1 << 16


class ImportProblem(Exception):
    """A problem with an upload that a person can fix; the message is one clear sentence."""


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a zip entry may be written to, or ImportProblem for zip-slip names."""
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":") or ".." in path.parts:
        raise ImportProblem(f"the archive entry '{name}' points outside the archive (absolute or '..' path)")
    return path


def _is_ignored(path: PurePosixPath) -> bool:
    return any(p in IGNORED_PARTS or p.startswith("._") for p in path.parts)


class ByteBudget:
    """Counts bytes written across a whole upload against the cap."""

    def __init__(self, limits: ImportLimits):
        self.limits, self.used = limits, 0

    def take(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.limits.max_total_bytes:
            raise ImportProblem(f"{what}: the upload unpacks to more than {self.limits.max_total_bytes // 1024**2} MiB "
                                "(the limit); it may be a zip bomb")


def extract_zip(archive: Path, dest: Path, limits: ImportLimits, budget: ByteBudget, label: str) -> None:
    """Unpack `archive` under `dest`, refusing anything unsafe. Sizes are counted as bytes stream."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ImportProblem(f"{label} is not a valid zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ImportProblem(f"{label} lists {len(infos)} entries; the limit is {limits.max_entries}")
        for info in infos:
            rel = safe_member_path(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ImportProblem(f"{label} holds a symbolic link '{info.filename}'; links are not accepted")
            if info.is_dir() or _is_ignored(rel) or not rel.parts:
                continue
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        budget.take(len(chunk), label)
                        if written > (1 << 20) and written > limits.max_ratio * max(1, info.compress_size):
                            raise ImportProblem(f"{label}: '{info.filename}' expands more than {limits.max_ratio}:1; "
                                                "it looks like a zip bomb")
                        out.write(chunk)
            except ImportProblem:
                raise
            except RuntimeError as e:  # encrypted entries
                raise ImportProblem(f"{label}: '{info.filename}' cannot be read ({e})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise ImportProblem(f"{label} is damaged: '{info.filename}' cannot be unpacked ({e})") from None


def gather_upload(sources: list[Path], dest: Path, limits: ImportLimits, names: list[str] | None = None) -> None:
    """Put every uploaded file under `dest`: zips unpacked, loose images and annotation files copied."""
    if not sources:
        raise ImportProblem("nothing was uploaded")
    budget = ByteBudget(limits)
    for i, src in enumerate(sources):
        label = names[i] if names else src.name
        if not src.is_file():
            raise ImportProblem(f"{label} does not exist or is not a file")
        suffix = Path(label).suffix.lower()
        if zipfile.is_zipfile(src):
            extract_zip(src, dest, limits, budget, label)
        elif suffix == ".zip":
            raise ImportProblem(f"{label} is not a valid zip archive")
        elif suffix in IMAGE_SUFFIXES | REFUSED_IMAGE_SUFFIXES | ANNOTATION_SUFFIXES:
            budget.take(src.stat().st_size, label)
            shutil.copyfile(src, dest / Path(label).name)
        else:
            raise ImportProblem(f"{label} is neither a zip archive nor an image or annotation file "
                                f"(accepted: .zip, {', '.join(sorted(IMAGE_SUFFIXES | ANNOTATION_SUFFIXES))})")


def probe_image(path: Path, limits: ImportLimits, label: str) -> tuple[int, int]:
    """(width, height) of a fully decodable JPEG/PNG/WebP/BMP within the pixel limit."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImportProblem(f"{label}: '{path.suffix}' images are not accepted (JPEG, PNG, WebP, BMP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > limits.max_pixels:
                    raise ImportProblem(f"{label} is {w}x{h} pixels, over the limit of {limits.max_pixels:,} "
                                        "pixels (a decompression bomb or a very large image)")
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # decode all data, at 1/8 scale
                im.load()
            return w, h
    except ImportProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImportProblem(f"{label} has too many pixels (a decompression bomb)") from None
    except Image.UnidentifiedImageError:
        raise ImportProblem(f"{label} is not a readable JPEG, PNG, WebP or BMP image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImportProblem(f"{label} is corrupt or truncated ({e})") from None
