"""What every annotation format produces (reading) and takes (writing), and helpers they share."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from backend.data.safety import IMAGE_SUFFIXES, REFUSED_IMAGE_SUFFIXES, ImportProblem

MAX_LISTED_PROBLEMS = 5


@dataclass
class RawSample:
    """One image as an annotation file describes it, before checks; boxes in pixels of the image as the
    annotation tool showed it: upright, with any EXIF orientation applied."""
    image: Path                     # resolved file under the upload root
    boxes: list[list[Any]] = field(default_factory=list)  # [x1, y1, x2, y2, label]
    label: str | None = None
    expression: str | None = None
    box: list[float] | None = None
    where: str = ""                 # annotation file, for messages
    normalised: bool = False        # boxes are fractions of the image size (YOLO)
    frame: tuple[float, float] | None = None  # (width, height) the pixel boxes were drawn on, when the
    # annotation file says (Label Studio's original_width/height); scaled to the real upright image if it differs
    split: str | None = None        # the export's split ('train', 'val', 'test') when its annotation file or list
    # says; otherwise the importer reads it from the image's folders (train/, valid/, images/val/ ...)


@dataclass
class Parsed:
    task: str
    classes: list[str]
    samples: list[RawSample]
    warnings: list[str] = field(default_factory=list)
    read: list[Path] | None = None  # the annotation files the reader consumed; the summary lists every other file
    # that is not an image as ignored (README, licences). None: the reader does not say (no list is made)


class Problems:
    """Collects every problem in an upload so the person sees the first few at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        # a name or value quoted from a file may hold a line break: shown as \n, the sentence stays one line
        self.items.append("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "; ".join(self.items[:MAX_LISTED_PROBLEMS])
        more = f" (and {len(self.items) - MAX_LISTED_PROBLEMS} more)" if len(self.items) > MAX_LISTED_PROBLEMS else ""
        raise ImportProblem(f"{len(self.items)} problem{'s' if len(self.items) > 1 else ''} found: {shown}{more}")


class Upload:
    """The unpacked upload: its files, and image lookup by the names annotations use."""

    def __init__(self, root: Path):
        self.root = root
        self.files = sorted(p for p in root.rglob("*") if p.is_file())
        # Refused formats count as images so the checks name them instead of skipping them.
        self.images = [p for p in self.files if p.suffix.lower() in IMAGE_SUFFIXES | REFUSED_IMAGE_SUFFIXES]
        self._by_rel = {self.rel(p): p for p in self.images}
        self._by_name: dict[str, list[Path]] = {}
        self._by_lower: dict[str, list[Path]] = {}  # 'IMG_1.jpg' named, 'IMG_1.JPG' on disk (Windows tools)
        for p in self.images:
            self._by_name.setdefault(p.name, []).append(p)
            self._by_lower.setdefault(self.rel(p).lower(), []).append(p)
            self._by_lower.setdefault(p.name.lower(), []).append(p)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def with_suffix(self, *suffixes: str) -> list[Path]:
        return [p for p in self.files if p.suffix.lower() in suffixes]

    def find_image(self, ref: str, base: Path | None = None) -> Path | None:
        """The image an annotation names: relative to `base` or the root, else a unique file name."""
        ref = ref.replace("\\", "/").strip()
        for start in ([base] if base else []) + [self.root]:
            try:
                cand = (start / ref).resolve()
                key = cand.relative_to(self.root.resolve()).as_posix()
            except (ValueError, OSError):
                continue
            if key in self._by_rel:
                return self._by_rel[key]
        name = PurePosixPath(ref).name
        matches = self._by_name.get(name, [])
        if len(matches) == 1:
            return matches[0]
        if not matches:
            for start in ([base] if base else []) + [self.root]:
                try:
                    key = (start / ref).resolve().relative_to(self.root.resolve()).as_posix().lower()
                except (ValueError, OSError):
                    continue
                if len(self._by_lower.get(key, [])) == 1:
                    return self._by_lower[key][0]
            matches = self._by_lower.get(name.lower(), [])
        return matches[0] if len(matches) == 1 else None

    def text_lines(self, path: Path) -> list[str]:
        """The non-empty, stripped lines of a text file."""
        return [line.strip() for line in read_text(path, self).splitlines() if line.strip()]


def read_text(path: Path, upload: Upload) -> str:
    """An annotation file's text (UTF-8, a BOM allowed), or ImportProblem naming the file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImportProblem(f"{upload.rel(path)} is not UTF-8 text (save it as UTF-8)") from None
    except OSError as e:
        raise ImportProblem(f"{upload.rel(path)} cannot be read ({e.strerror or e})") from None


def load_json(path: Path, upload: Upload) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportProblem(f"{upload.rel(path)} is not valid JSON ({e})") from None


@dataclass(frozen=True)
class Format:
    """An annotation format: which task it holds (None: the data says, as a Hugging Face dataset's columns do), how
    to recognise it, how to read it."""
    name: str
    task: str | None
    detect: Callable[[Upload], bool]
    parse: Callable[[Upload, Problems], Parsed]


@dataclass
class ExportImage:
    """One image as an export writes it: its file (copied byte for byte), the unique name it gets in the export, its
    split, and boxes in pixels of the upright image `[x1, y1, x2, y2, label]` (a sixth item: the model's confidence,
    for labels a model gave)."""
    source: Path
    name: str
    split: str
    width: int
    height: int
    boxes: list[list[Any]] = field(default_factory=list)


@dataclass
class ExportSet:
    """What an export holds: a name (for the files that carry one), the classes in order, the images."""
    name: str
    classes: list[str]
    images: list[ExportImage]


@dataclass(frozen=True)
class Writer:
    """An annotation format written out: `write(export_set, folder)` lays the export out in an empty folder, the
    files as that format's tools document them; `describe` says in a phrase what comes out."""
    name: str
    describe: str
    write: Callable[[ExportSet, Path], None]
