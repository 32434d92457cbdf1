"""Uploads are data, never server paths. Gradio takes any path inside its upload cache as an input file, and that
cache is shared by every visitor (and by any other Gradio app on the machine that uses the same folder): a client
can name the cache folder itself, another session's upload folder, or a file in it that no request uploaded here.

Every upload input of the page is an `UploadFiles` (or `UploadImage`), and every handler that reads uploaded paths
passes them through `accept_uploads` first. Together they take only regular files (no folder, no link, no URL)
that this app's /upload received, of a kind the tab takes, and refuse anything else in one sentence naming the file
as its sender called it (never the server's cache path). A refused path is never moved, copied or registered with
Gradio as a file the app made (which Gradio would later try to delete)."""
from __future__ import annotations

import os
import stat
from abc import ABCMeta
from pathlib import Path, PurePosixPath, PureWindowsPath

import gradio as gr
from gradio.component_meta import ComponentMeta
from gradio.data_classes import ListFiles
from gradio_client import utils as client_utils

from backend.data.safety import (ANNOTATION_SUFFIXES, IMAGE_SUFFIXES, REFUSED_IMAGE_SUFFIXES, ImportProblem)

IMAGES = frozenset(IMAGE_SUFFIXES)
"""The Test tab and the playground: images."""
IMAGES_OR_ZIP = IMAGES | {".zip"}
"""The Label tab: images, or a zip of them."""
DATASET_FILES = IMAGES_OR_ZIP | ANNOTATION_SUFFIXES | REFUSED_IMAGE_SUFFIXES
"""The Data tab: a zip, or images with their annotation files (images of a refused format reach the importer,
which says which formats it takes)."""
_KIND = {IMAGES: "an image", IMAGES_OR_ZIP: "an image or a zip of images",
         DATASET_FILES: "a zip, an image or an annotation file"}
_NAME_CHARS = 120
"""A sender's file name is shown up to this many characters."""


class Upload(str):
    """An uploaded file's server path (a str, as Gradio's filepath inputs give) with the name its sender gave it."""
    orig_name: str | None
    shown: str

    def __new__(cls, path: str, orig_name: str | None = None) -> Upload:
        up = super().__new__(cls, path)
        up.orig_name = orig_name
        up.shown = shown_name(orig_name, path)
        return up


def shown_name(orig_name: str | None, path: str) -> str:
    """The name a sentence calls an upload: the base name its sender gave it, else the base name of the file."""
    name = orig_name or ""
    name = PureWindowsPath(PurePosixPath(name).name).name.strip() if name else ""
    if not name:
        name = Path(str(path)).name or "the upload"
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "…"


def received_here(path: str) -> bool | None:
    """Whether this app's /upload stored `path` (Gradio's record of the files it received); None outside a request
    (a direct call from Python: tests, scripts)."""
    from gradio.context import LocalContext
    blocks = LocalContext.blocks.get(None)
    if blocks is None or not getattr(blocks, "is_running", False):
        return None
    return str(path) in blocks.upload_file_set


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def accept_uploads(files, kinds: frozenset[str]) -> list[Upload]:
    """The uploaded files, each checked: a regular file (not a folder, not a link), received by this app's /upload
    when called from a request, of one of `kinds` (suffixes). ImportProblem (a ValueError) with one sentence naming
    the first file that is not, by its sender's name."""
    out = []
    for f in files or []:
        up = f if isinstance(f, Upload) else Upload(str(f), getattr(f, "orig_name", None))
        received = received_here(up)
        if client_utils.is_http_url_like(up) or received is False or not _regular(up):
            name = up.shown if up.orig_name or received is None else "the file sent"  # never a server path's name
            raise ImportProblem(f"{name} is not a file uploaded to this page: only the files you upload are read "
                                "(choose them again)")
        if Path(up).suffix.lower() not in kinds:
            raise ImportProblem(f"{up.shown} is not {_KIND.get(kinds, 'a file this tab takes')} (accepted: "
                                f"{', '.join(sorted(kinds))})")
        out.append(up)
    return out


class _NoStub(ComponentMeta):
    """Gradio's ComponentMeta writes a .pyi stub next to the module of every component class it makes (into the
    source tree); these subclasses add no events and no __init__, which is all else it handles, so they skip it."""

    def __new__(mcs, name, bases, attrs):
        return ABCMeta.__new__(mcs, name, bases, attrs)


class _ReceivedOnly:
    """Gradio moves an input's file into the component's cache and records it as a file the app made (to delete
    on shutdown). A path in the upload cache that no request uploaded here, a folder, a link or a URL is left where
    it is and recorded nowhere; `accept_uploads` refuses it."""

    @staticmethod
    def _foreign(path) -> bool:
        path = str(path)
        if client_utils.is_http_url_like(path):
            return True
        received = received_here(path)
        return received is not None and (not received or not _regular(path))

    def move_resource_to_block_cache(self, url_or_file_path):
        if url_or_file_path is not None and self._foreign(url_or_file_path):
            return str(url_or_file_path)
        return super().move_resource_to_block_cache(url_or_file_path)

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        if url_or_file_path is not None and self._foreign(url_or_file_path):
            return str(url_or_file_path)
        return await super().async_move_resource_to_block_cache(url_or_file_path)


class UploadFiles(_ReceivedOnly, gr.File, metaclass=_NoStub):
    """gr.File whose handler gets `Upload`s (paths with their sender's names) to pass through `accept_uploads`."""
    def get_block_name(self) -> str:  # drawn by the frontend's File component
        return "file"

    def get_block_class(self) -> str:
        return "file"

    def preprocess(self, payload):
        if payload is None:
            return None
        files = payload.root if isinstance(payload, ListFiles) else [payload]
        got = [Upload(f.path, f.orig_name) for f in files]
        return got[0] if self.file_count == "single" else got


class UploadImage(_ReceivedOnly, gr.Image, metaclass=_NoStub):
    """gr.Image that opens only an image this app's /upload received (refused: gr.Error with the sentence)."""
    def get_block_name(self) -> str:  # drawn by the frontend's Image component
        return "image"

    def get_block_class(self) -> str:
        return "image"

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload)
        try:
            accept_uploads([Upload(payload.path, payload.orig_name)], IMAGES)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return super().preprocess(payload)
