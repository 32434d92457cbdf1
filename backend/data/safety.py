"""Safe unpacking and image checks: zip-slip, symlinks, zip bombs, pixel bombs, broken images."""
from __future__ import annotations

import shutil
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps

from backend.data.config import ImportLimits

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
REFUSED_IMAGE_SUFFIXES = {".gif", ".heic", ".heif", ".avif", ".ico", ".psd", ".svg"}
"""Images in these formats are reported, not silently skipped."""
ANNOTATION_SUFFIXES = {".json", ".txt", ".yaml", ".yml", ".xml", ".csv", ".jsonl", ".parquet"}
IGNORED_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db"}
_CHUNK = 1 << 16


class ImportProblem(ValueError):
    """A problem with an upload that a person can fix; the message is one clear sentence.

    A ValueError, like every other sentence a person can act on: whatever catches those (the CLI, the page,
    the API endpoints) shows this one too."""


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


def reason(e: BaseException, *paths: tuple[Path, str]) -> str:
    """An exception's words for a sentence the sender reads: a file-system error without the server's path (its
    `strerror`), and each (path, name) pair's server path replaced by the name the sender knows (an upload sits in
    a cache folder shared by every visitor, or in the data dir's staging)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e) or type(e).__name__
    for path, name in paths:
        for form in {str(path), str(Path(path).resolve())}:
            text = text.replace(form, name)
    return text


def extract_zip(archive: Path, dest: Path, limits: ImportLimits, budget: ByteBudget, label: str) -> None:
    """Unpack `archive` under `dest`, refusing anything unsafe. Sizes are counted as bytes stream."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ImportProblem(f"{label} is not a valid zip archive ({reason(e, (archive, label))})") from None
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
                raise ImportProblem(f"{label}: '{info.filename}' cannot be read "
                                    f"({reason(e, (archive, label))})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise ImportProblem(f"{label} is damaged: '{info.filename}' cannot be unpacked "
                                    f"({reason(e, (archive, label), (target, info.filename))})") from None


def gather_upload(sources: list[Path], dest: Path, limits: ImportLimits, names: list[str] | None = None) -> None:
    """Put every uploaded file under `dest`: zips unpacked, loose images and annotation files copied, a folder (an
    export written to disk, on the command line) copied with its layout."""
    if not sources:
        raise ImportProblem("nothing was uploaded")
    budget = ByteBudget(limits)
    for i, src in enumerate(sources):
        label = names[i] if names else src.name
        if src.is_dir() and not src.is_symlink():
            copy_folder(src, dest / src.name, limits, budget, label)
            continue
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


def copy_folder(folder: Path, dest: Path, limits: ImportLimits, budget: ByteBudget, label: str) -> None:
    """A folder's files under `dest` with their relative paths, as a zip of it would unpack: links refused, the same
    limits on entries and bytes."""
    entries = 0
    for path in sorted(folder.rglob("*")):
        rel = PurePosixPath(path.relative_to(folder).as_posix())
        if path.is_symlink():
            raise ImportProblem(f"{label} holds a symbolic link '{rel}'; links are not accepted")
        if path.is_dir() or _is_ignored(rel):
            continue
        entries += 1
        if entries > limits.max_entries:
            raise ImportProblem(f"{label} holds more than {limits.max_entries} files; the limit is {limits.max_entries}")
        budget.take(path.stat().st_size, label)
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


ORIENTATION_TAG = 0x0112
"""EXIF Orientation: 1 is upright; 2-8 tell viewers to flip and/or rotate the stored pixels for display."""
_SAVE_FORMAT = {"MPO": "JPEG"}  # a phone's multi-picture JPEG is stored as its first (main) picture
_QUALITY = 95


STORED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
"""Kept as they are; other accepted formats (TIFF) are stored as PNG, which every browser and model reader shows."""


@dataclass(frozen=True)
class ImageInfo:
    """What a probe learns: the size as displayed (upright), the EXIF orientation of the stored pixels, and the
    pixel mode and format (anything but 8-bit RGB, or a format not in STORED_FORMATS, is converted on import)."""
    width: int
    height: int
    orientation: int = 1
    mode: str = "RGB"
    format: str = "JPEG"

    @property
    def kept_as_is(self) -> bool:
        """Whether the file is stored byte for byte: upright, 8-bit RGB, in a format every reader shows."""
        return self.orientation == 1 and self.mode == "RGB" and self.format in STORED_FORMATS


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, 1 when absent, out of range or unreadable (viewers ignore a broken tag too)."""
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except (struct.error, KeyError, IndexError, SyntaxError, TypeError, ValueError, ZeroDivisionError, OSError):
        return 1
    return value if isinstance(value, int) and 2 <= value <= 8 else 1


def _checked_open(path: Path, limits: ImportLimits, label: str, fn):
    """Run `fn(im)` on the opened image, turning bombs and broken files into one-sentence ImportProblems."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > limits.max_pixels:
                    raise ImportProblem(f"{label} is {w}x{h} pixels, over the limit of {limits.max_pixels:,} "
                                        "pixels (a decompression bomb or a very large image)")
                return fn(im)
    except ImportProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImportProblem(f"{label} has too many pixels (a decompression bomb)") from None
    except Image.UnidentifiedImageError:
        raise ImportProblem(f"{label} is not a readable JPEG, PNG, WebP, BMP or TIFF image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImportProblem(f"{label} is corrupt or truncated ({reason(e, (path, label))})") from None


def inspect_image(path: Path, limits: ImportLimits, label: str) -> ImageInfo:
    """Size as displayed (width and height swapped for orientations 5-8), orientation, mode and format of a fully
    decodable JPEG/PNG/WebP/BMP/TIFF within the pixel limit."""
    if path.suffix.lower() == ".zip":  # a zip reaches here when zipfile could not read it
        raise ImportProblem(f"{label} is not a valid zip archive")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImportProblem(f"{label}: '{path.suffix}' images are not accepted (JPEG, PNG, WebP, BMP, TIFF)")

    def probe(im: Image.Image) -> ImageInfo:
        w, h = im.size
        mode = "RGB" if im.mode == "RGB" and "transparency" not in im.info else im.mode  # before draft changes it
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # decode all data, at 1/8 scale
        im.load()
        orientation = _orientation(im)  # after load: a PNG may keep its eXIf chunk after the pixels
        if orientation >= 5:  # transposed or rotated a quarter turn
            w, h = h, w
        return ImageInfo(w, h, orientation, mode, _SAVE_FORMAT.get(im.format, im.format))

    return _checked_open(path, limits, label, probe)


def probe_image(path: Path, limits: ImportLimits, label: str) -> tuple[int, int]:
    """(width, height) of the stored pixels of a fully decodable JPEG/PNG/WebP/BMP/TIFF within the pixel limit."""
    info = inspect_image(path, limits, label)
    return (info.height, info.width) if info.orientation >= 5 else (info.width, info.height)


def _webp_is_lossless(path: Path) -> bool:
    """Whether a WebP file's image data is VP8L (lossless) rather than VP8 (lossy): walk its RIFF chunks."""
    with open(path, "rb") as f:
        f.seek(12)
        for _ in range(64):
            head = f.read(8)
            if len(head) < 8:
                return False
            fourcc, size = head[:4], struct.unpack("<I", head[4:])[0]
            if fourcc in (b"VP8L", b"VP8 "):
                return fourcc == b"VP8L"
            f.seek(size + (size & 1), 1)
    return False


def stored_name(rel: str, info: ImageInfo) -> str:
    """The name an image is stored under: its own, with '.png' added for formats stored as PNG (TIFF)."""
    return rel if info.format in STORED_FORMATS else f"{rel}.png"


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB: transparency laid over white (as a page shows it), 16-bit and float grey scaled to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        lo, hi = im.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        im = im.point(lambda v: (v - lo) * scale, "F").convert("L")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def write_normalised(src: Path, dest: Path, limits: ImportLimits, label: str) -> tuple[int, int]:
    """Write `src` to `dest` upright (its EXIF orientation applied, the tag removed) and in 8-bit RGB.

    Saved in the same format (JPEG and lossy WebP at quality 95, lossless WebP lossless; TIFF as PNG), keeping
    the other metadata (EXIF, ICC profile, resolution). Returns the upright (width, height).
    """
    def transpose(im: Image.Image) -> tuple[int, int]:
        fmt = _SAVE_FORMAT.get(im.format, im.format)
        fmt = fmt if fmt in STORED_FORMATS else "PNG"
        icc = im.info.get("icc_profile") if im.mode == "RGB" else None  # a grey or CMYK profile no longer fits
        turned = ImageOps.exif_transpose(im)
        upright = to_rgb(turned)
        params: dict = {}
        for key, value in (("exif", turned.info.get("exif")), ("icc_profile", icc), ("dpi", turned.info.get("dpi"))):
            if value:
                params[key] = value
        if fmt == "JPEG":
            params["quality"] = _QUALITY
            if turned.info.get("xmp"):
                params["xmp"] = turned.info["xmp"]
        elif fmt == "WEBP":
            params.update({"lossless": True} if _webp_is_lossless(src) else {"quality": _QUALITY})
        upright.save(dest, fmt, **params)
        return upright.size

    return _checked_open(src, limits, label, transpose)
