"""Hostile and broken uploads: one clear sentence, and the data dir and database exactly as before."""
from __future__ import annotations

import json
import os
import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from backend.data.config import ImportLimits
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from storage.models import Dataset, Sample
from tests import builders

LIMITS = ImportLimits()


def snapshot(ws) -> tuple:
    files = sorted(p.relative_to(ws.data_dir).as_posix() for p in ws.data_dir.rglob("*")
                   if not p.name.startswith("studio.db"))
    with ws.store.read() as s:
        return files, s.scalar(select(func.count(Dataset.id))), s.scalar(select(func.count(Sample.id)))


def rejects(ws, sources, match: str, limits: ImportLimits = LIMITS, **kw) -> str:
    before = snapshot(ws)
    with pytest.raises(ImportProblem, match=match) as err:
        import_dataset(ws.store, ws.data_dir, sources, "bad", limits=limits, **kw)
    assert snapshot(ws) == before, "a failed import left something behind"
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def coco_zip(tmp_path: Path, samples=None, mutate=None, extra=None) -> Path:
    root = tmp_path / "coco"
    ann = builders.write_coco(root, samples or builders.detection_samples(4))
    if mutate:
        doc = json.loads(ann.read_text())
        mutate(doc)
        ann.write_text(json.dumps(doc))
    if extra:
        extra(root)
    return builders.zip_dir(root, tmp_path / "coco.zip")


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_slip_parent_path(ws, tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"ok.txt": b"x", "../../evil.jpg": b"x"})
    assert "points outside the archive" in rejects(ws, [archive], "outside")
    assert not (tmp_path / "evil.jpg").exists()


def test_zip_slip_absolute_path(ws, tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("placeholder")
        zf.writestr(info, b"x")
        info2 = zipfile.ZipInfo("x" * 10)
        info2.filename = "/tmp/evil-abs.jpg"
        zf.writestr(info2, b"x")
    rejects(ws, [archive], "points outside the archive")
    assert not Path("/tmp/evil-abs.jpg").exists()


def test_symlink_in_zip(ws, tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("ds/passwd.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    rejects(ws, [archive], "symbolic link")


def test_zip_bomb_ratio(ws, tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"ds/zeros.jpg": b"\0" * (64 << 20)})
    assert os.path.getsize(archive) < 200_000
    rejects(ws, [archive], "zip bomb")


def test_total_unpacked_size_cap(ws, tmp_path):
    archive = write_zip(tmp_path / "big.zip", {f"ds/f{i}.txt": os.urandom(300_000) for i in range(4)})
    rejects(ws, [archive], "more than 1 MiB", limits=replace(LIMITS, max_total_bytes=1 << 20))


def test_pixel_bomb(ws, tmp_path):
    def big(root: Path):
        Image.new("L", (7000, 7000)).save(root / "images" / "img000.jpg".replace(".jpg", ".png"))
    samples = builders.detection_samples(2)
    samples[0]["file"] = "img000.png"
    archive = coco_zip(tmp_path, samples, extra=big)
    rejects(ws, [archive], "over the limit of 40,000,000 pixels")


def test_pillow_bomb_error_is_fatal(ws, tmp_path):
    samples = builders.detection_samples(2)
    archive = coco_zip(tmp_path, samples)
    # With our own cap set out of the way, Pillow's decompression-bomb warning must still refuse.
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100  # 200x100 images now exceed it: the warning becomes an error
    try:
        rejects(ws, [archive], "decompression bomb", limits=replace(LIMITS, max_pixels=10**12))
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_corrupt_image(ws, tmp_path):
    archive = coco_zip(tmp_path, extra=lambda root: (root / "images" / "img001.jpg").write_bytes(b"not an image"))
    rejects(ws, [archive], r"img001.jpg is not a readable JPEG")


def test_truncated_image(ws, tmp_path):
    def cut(root: Path):
        p = root / "images" / "img002.jpg"
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    rejects(ws, [coco_zip(tmp_path, extra=cut)], "img002.jpg is corrupt or truncated")


def test_gif_is_not_accepted(ws, tmp_path):
    samples = builders.detection_samples(2)
    samples[1]["file"] = "img001.gif"
    rejects(ws, [coco_zip(tmp_path, samples)], "'.gif' images are not accepted")


def test_annotation_names_missing_image(ws, tmp_path):
    archive = coco_zip(tmp_path, extra=lambda root: (root / "images" / "img003.jpg").unlink())
    rejects(ws, [archive], "names image 'img003.jpg', which is not in the upload")


def test_box_slightly_outside_is_clipped(ws, tmp_path):
    samples = builders.detection_samples(2)
    samples[0]["boxes"] = [[-4, 0, 203, 50, "cat"]]  # 200x100 image: 2% past each side
    import_dataset(ws.store, ws.data_dir, [coco_zip(tmp_path, samples)], "clipped", limits=LIMITS)
    from backend.data.catalog import get_dataset
    info = get_dataset(ws.store, "clipped")
    assert info["samples"][0]["boxes"] == [[0.0, 0.0, 200.0, 50.0, "cat"]]
    assert any("clipped" in w for w in info["warnings"])


def test_box_far_outside_is_rejected(ws, tmp_path):
    samples = builders.detection_samples(2)
    samples[0]["boxes"] = [[100, 20, 400, 50, "cat"]]
    rejects(ws, [coco_zip(tmp_path, samples)], r"box \[100, 20, 400, 50\] lies outside the 200x100 image")


def test_degenerate_box_is_rejected(ws, tmp_path):
    samples = builders.detection_samples(2)
    samples[1]["boxes"] = [[50, 20, 50, 60, "dog"]]
    rejects(ws, [coco_zip(tmp_path, samples)], "degenerate")


def test_unknown_category_id(ws, tmp_path):
    archive = coco_zip(tmp_path, mutate=lambda doc: doc["annotations"][0].update(category_id=99))
    rejects(ws, [archive], "unknown category id 99")


def test_many_problems_listed_first_few(ws, tmp_path):
    archive = coco_zip(tmp_path, builders.detection_samples(9),
                       mutate=lambda doc: [a.update(category_id=42) for a in doc["annotations"]])
    message = rejects(ws, [archive], "problems found")
    assert message.startswith("13 problems found: ")  # 9 images with 1 or 2 boxes each
    assert message.count("unknown category id 42") == 5 and message.endswith("(and 8 more)")


def test_empty_archive(ws, tmp_path):
    rejects(ws, [write_zip(tmp_path / "empty.zip", {})], "the upload is empty")


def test_not_an_archive(ws, tmp_path):
    junk = tmp_path / "notes.bin"
    junk.write_bytes(os.urandom(1000))
    rejects(ws, [junk], "neither a zip archive nor an image or annotation file")
    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    rejects(ws, [fake], "fake.zip is not a valid zip archive")


def test_too_many_images(ws, tmp_path):
    archive = coco_zip(tmp_path, builders.detection_samples(6))
    rejects(ws, [archive], "holds 6 images; the limit is 5", limits=replace(LIMITS, max_images=5))


def test_bad_name_and_duplicate_name(ws, tmp_path):
    archive = coco_zip(tmp_path)
    before = snapshot(ws)
    with pytest.raises(ImportProblem, match="not a valid dataset name"):
        import_dataset(ws.store, ws.data_dir, [archive], "../etc")
    assert snapshot(ws) == before
    import_dataset(ws.store, ws.data_dir, [archive], "bad")
    rejects(ws, [archive], "a dataset named 'bad' already exists")


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
          + ']><annotation><filename>img000.jpg</filename><object><name>&lol9;</name></object></annotation>')


@pytest.mark.parametrize("attack", ["billion laughs", "external entity"])
def test_voc_entities_are_refused(ws, tmp_path, attack):
    """An annotation that declares entities (expanding to gigabytes, or reading a file of this machine) is
    refused before anything is expanded or read, in one sentence; nothing is written."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    root = tmp_path / "voc"
    builders.write_voc(root, builders.detection_samples(3))
    hostile = LAUGHS if attack == "billion laughs" else (
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY leak SYSTEM "file://{secret}">]>'
        '<annotation><filename>img000.jpg</filename><object><name>&leak;</name><bndbox><xmin>1</xmin>'
        '<ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>')
    (root / "Annotations" / "img000.xml").write_text(hostile)
    message = rejects(ws, [builders.zip_dir(root, tmp_path / "voc.zip")],
                      "Annotations/img000.xml declares XML entities or external references, which are not accepted")
    assert message.startswith("1 problem found: ") and "TOP-SECRET" not in message


def test_voc_with_a_plain_doctype_is_imported(ws, tmp_path):
    """A document type without entities expands nothing: such a file is an ordinary annotation."""
    root = tmp_path / "voc"
    builders.write_voc(root, builders.detection_samples(2))
    ann = root / "Annotations" / "img000.xml"
    ann.write_text('<?xml version="1.0"?><!DOCTYPE annotation>' + ann.read_text())
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "voc.zip")], "voc", limits=LIMITS)
    from backend.data.catalog import get_dataset
    assert get_dataset(ws.store, "voc")["counts"]["total"] == 2
