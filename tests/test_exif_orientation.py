"""Phone photos stored sideways with an EXIF Orientation tag are imported upright, boxes as drawn.

Annotation tools (COCO tools, Label Studio, VOC and YOLO labellers) show such a photo upright, so its
boxes, and fractions of its size, refer to the upright image. Where the red square appears upright is
found here by running Pillow's own `ImageOps.exif_transpose` on the file, not by hand.
"""
from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageOps

from backend.data.catalog import get_dataset, image_path
from backend.data.config import ImportLimits
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from tests import builders

ORIENTATION = 0x0112
MAKE = 0x010F
STORED_SIZE = (300, 200)  # landscape pixels as the camera wrote them
SQUARE = (30, 20, 90, 70)  # the red square, in stored pixels: off-centre so every turn moves it
RED = (230, 20, 20)


def tagged_image(path: Path, orientation: int | None, fmt: str = "JPEG") -> None:
    """Stored-frame pixels: grey with a red square and a blue bar (so a mirror image differs), plus EXIF."""
    im = Image.new("RGB", STORED_SIZE, (128, 128, 128))
    im.paste(RED, SQUARE)
    im.paste((20, 20, 230), (200, 150, 290, 190))
    exif = im.getexif()
    exif[MAKE] = "TestCam"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def red_mask(im: Image.Image) -> Image.Image:
    r, g, b = im.convert("RGB").split()
    return ImageChops.multiply(ImageChops.multiply(r.point(lambda v: 255 if v > 170 else 0),
                                                   g.point(lambda v: 255 if v < 90 else 0)),
                               b.point(lambda v: 255 if v < 90 else 0))


def upright_square(path: Path) -> tuple[tuple[int, int], list[float]]:
    """(upright size, box inside the red square as it shows upright), via exif_transpose on the file."""
    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im)
    x1, y1, x2, y2 = red_mask(upright).getbbox()
    return upright.size, [float(x1 + 2), float(y1 + 2), float(x2 - 2), float(y2 - 2)]  # inset past JPEG edges


def all_red(im: Image.Image, box: list[float]) -> bool:
    x1, y1, x2, y2 = (round(v) for v in box[:4])
    crop = im.convert("RGB").crop((x1, y1, x2, y2))
    (rmin, _), (_, gmax), (_, bmax) = crop.getextrema()
    return rmin > 170 and gmax < 90 and bmax < 90


def stored(ws, name: str) -> tuple[dict, dict[str, dict]]:
    info = get_dataset(ws.store, name)
    return info, {s["file"].rsplit("/", 1)[-1]: s for s in info["samples"]}


def coco_export(root: Path, images: list[tuple[str, tuple[int, int], list[list[float]]]]) -> Path:
    """A COCO file: (file name, upright size, boxes [x1, y1, x2, y2]) per image, images under images/."""
    imgs, anns = [], []
    for i, (name, (w, h), boxes) in enumerate(images, 1):
        imgs.append({"id": i, "file_name": name, "width": w, "height": h})
        for x1, y1, x2, y2 in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    path = root / "annotations" / "instances.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": imgs, "annotations": anns,
                                "categories": [{"id": 1, "name": "square", "supercategory": "shape"}]}))
    return path


def check_upright(ws, info: dict, sample: dict, size: tuple[int, int], box: list[float]) -> Image.Image:
    """The stored file is upright, untagged, keeps its other EXIF, and the box covers the red square."""
    assert (sample["width"], sample["height"]) == size
    with Image.open(image_path(ws.data_dir, info, sample)) as im:
        im.load()
        assert im.size == size
        exif = im.getexif()
        assert exif.get(ORIENTATION, 1) == 1
        assert exif.get(MAKE) == "TestCam"
        assert all_red(im, box)
        return im.copy()


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_coco_tagged_jpeg_is_stored_upright_with_boxes_unchanged(ws, tmp_path, orientation):
    root = tmp_path / "export"
    photo = root / "images" / "photo.jpg"
    tagged_image(photo, orientation)
    size, box = upright_square(photo)
    assert size == (STORED_SIZE[::-1] if orientation >= 5 else STORED_SIZE)
    with Image.open(photo) as raw:  # the test means something: the box misses the square in stored pixels
        assert not all_red(raw.crop((0, 0, *raw.size)), box)
    coco_export(root, [("photo.jpg", size, [box])])

    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "phone", val_fraction=0.0)
    info, samples = stored(ws, "phone")
    sample = samples["photo.jpg"]
    assert sample["boxes"] == [[*box, "square"]]
    check_upright(ws, info, sample, size, box)
    assert not any("clipped" in w or "scaled" in w for w in info.get("warnings", []))


def test_portrait_photo_acceptance(ws, tmp_path):
    """The issue's case: 300x200 stored pixels tagged 6 (turn 90 degrees clockwise) import as 200x300."""
    root = tmp_path / "export"
    photo = root / "images" / "photo.jpg"
    tagged_image(photo, 6)
    size, box = upright_square(photo)
    assert size == (200, 300)
    coco_export(root, [("photo.jpg", (200, 300), [box])])
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "portrait")
    info, samples = stored(ws, "portrait")
    assert samples["photo.jpg"]["boxes"] == [[*box, "square"]]
    im = check_upright(ws, info, samples["photo.jpg"], (200, 300), box)
    with Image.open(photo) as original:  # the stored pixels are the upright ones, within JPEG loss
        expected = ImageOps.exif_transpose(original).convert("RGB")
    diff = ImageChops.difference(im.convert("RGB"), expected)
    assert max(hi for _, hi in diff.getextrema()) < 40


def test_untagged_and_orientation_1_images_are_copied_byte_for_byte(ws, tmp_path):
    root = tmp_path / "export"
    plain, one, six = root / "images" / "plain.jpg", root / "images" / "one.jpg", root / "images" / "six.jpg"
    tagged_image(plain, None)
    tagged_image(one, 1)
    tagged_image(six, 6)
    size, box = upright_square(six)
    _, plain_box = upright_square(plain)
    coco_export(root, [("plain.jpg", STORED_SIZE, [plain_box]), ("one.jpg", STORED_SIZE, [plain_box]),
                       ("six.jpg", size, [box])])
    originals = {p.name: p.read_bytes() for p in (plain, one, six)}

    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "mixed")
    info, samples = stored(ws, "mixed")
    for name in ("plain.jpg", "one.jpg"):
        assert image_path(ws.data_dir, info, samples[name]).read_bytes() == originals[name]
        assert (samples[name]["width"], samples[name]["height"]) == STORED_SIZE
        assert samples[name]["boxes"] == [[*plain_box, "square"]]
    assert image_path(ws.data_dir, info, samples["six.jpg"]).read_bytes() != originals["six.jpg"]
    check_upright(ws, info, samples["six.jpg"], size, box)


def test_yolo_fractions_scale_against_the_upright_size(ws, tmp_path):
    root = tmp_path / "yolo"
    photo = root / "images" / "train" / "photo.jpg"
    tagged_image(photo, 8)
    (w, h), box = upright_square(photo)
    assert (w, h) == (200, 300)
    (root / "classes.txt").write_text("square\n")
    label = root / "labels" / "train" / "photo.txt"
    label.parent.mkdir(parents=True)
    x1, y1, x2, y2 = box
    label.write_text(f"0 {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} {(y2 - y1) / h:.8f}\n")

    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "y.zip")], "yolo-phone")
    info, samples = stored(ws, "yolo-phone")
    assert info["format"] == "yolo"
    got = samples["photo.jpg"]["boxes"][0]
    assert got[:4] == pytest.approx(box, abs=0.01) and got[4] == "square"
    check_upright(ws, info, samples["photo.jpg"], (200, 300), got)


def labelstudio_export(root: Path, photo: Path, box: list[float], declared: tuple[float, float]) -> None:
    """Percentages of the declared `original_width/height`, as Label Studio writes them."""
    dw, dh = declared
    x1, y1, x2, y2 = (v * d for v, d in zip(box, (dw, dh, dw, dh)))  # box given as fractions
    result = [{"id": "r1", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
               "original_width": dw, "original_height": dh, "image_rotation": 0,
               "value": {"x": x1 / dw * 100, "y": y1 / dh * 100, "width": (x2 - x1) / dw * 100,
                         "height": (y2 - y1) / dh * 100, "rotation": 0, "rectanglelabels": ["square"]}}]
    task = {"id": 1, "data": {"image": f"/data/upload/3/1a2b3c4d-{photo.name}"},
            "annotations": [{"id": 1, "result": result, "was_cancelled": False}]}
    (root / "project-3-export.json").write_text(json.dumps([task]))


@pytest.mark.parametrize("declared_scale", [1.0, 0.5])
def test_labelstudio_percentages_use_the_real_upright_image(ws, tmp_path, declared_scale):
    """original_width/height describe the upright image; if they disagree with it, the real image wins."""
    root = tmp_path / "ls"
    photo = root / "images" / "photo.jpg"
    tagged_image(photo, 6)
    (w, h), box = upright_square(photo)
    fractions = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]
    labelstudio_export(root, photo, fractions, (w * declared_scale, h * declared_scale))

    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "ls.zip")], "ls-phone")
    info, samples = stored(ws, "ls-phone")
    assert info["format"] == "labelstudio"
    got = samples["photo.jpg"]["boxes"][0]
    assert got[:4] == pytest.approx(box, abs=0.01) and got[4] == "square"
    check_upright(ws, info, samples["photo.jpg"], (w, h), got)
    scaled = [m for m in info.get("warnings", []) if "scaled to the real image" in m]
    assert bool(scaled) == (declared_scale != 1.0)


def test_labelstudio_declaring_the_sideways_size_is_scaled_to_the_upright_image(ws, tmp_path):
    root = tmp_path / "ls"
    photo = root / "images" / "photo.jpg"
    tagged_image(photo, 6)
    (w, h), box = upright_square(photo)
    labelstudio_export(root, photo, [box[0] / w, box[1] / h, box[2] / w, box[3] / h], STORED_SIZE)
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "ls.zip")], "ls-sideways")
    info, samples = stored(ws, "ls-sideways")
    assert samples["photo.jpg"]["boxes"][0][:4] == pytest.approx(box, abs=0.01)
    assert any("300x200 for the 200x300 image" in m for m in info["warnings"])


def test_voc_tagged_png_is_transposed_losslessly(ws, tmp_path):
    root = tmp_path / "voc"
    photo = root / "JPEGImages" / "photo.png"
    tagged_image(photo, 6, fmt="PNG")
    (w, h), box = upright_square(photo)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "photo.xml").write_text(
        f"<annotation><filename>photo.png</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>"
        f"</size><object><name>square</name><bndbox><xmin>{box[0]:g}</xmin><ymin>{box[1]:g}</ymin>"
        f"<xmax>{box[2]:g}</xmax><ymax>{box[3]:g}</ymax></bndbox></object></annotation>")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "v.zip")], "voc-phone")
    info, samples = stored(ws, "voc-phone")
    assert samples["photo.png"]["boxes"] == [[*box, "square"]]
    im = check_upright(ws, info, samples["photo.png"], (w, h), box)
    with Image.open(photo) as original:
        assert ImageChops.difference(im, ImageOps.exif_transpose(original)).getbbox() is None
    with Image.open(image_path(ws.data_dir, info, samples["photo.png"])) as again:
        assert again.format == "PNG"


def test_bounds_checks_use_the_upright_size(ws, tmp_path):
    """A box inside the 300-wide stored pixels but past the 200-wide upright image is refused, all or nothing."""
    root = tmp_path / "export"
    photo = root / "images" / "photo.jpg"
    tagged_image(photo, 6)
    size, _ = upright_square(photo)
    coco_export(root, [("photo.jpg", size, [[150.0, 20.0, 280.0, 60.0]])])
    before = sorted(p.relative_to(ws.data_dir).as_posix() for p in ws.data_dir.rglob("*")
                    if not p.name.startswith("studio.db"))
    with pytest.raises(ImportProblem, match="lies outside the 200x300 image"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "bad")
    after = sorted(p.relative_to(ws.data_dir).as_posix() for p in ws.data_dir.rglob("*")
                   if not p.name.startswith("studio.db"))
    assert after == before
    with pytest.raises(ImportProblem, match="no dataset named"):
        get_dataset(ws.store, "bad")


def test_pixel_limit_still_applies_to_tagged_images(ws, tmp_path):
    root = tmp_path / "export"
    photo = root / "images" / "photo.jpg"
    tagged_image(photo, 6)
    size, box = upright_square(photo)
    coco_export(root, [("photo.jpg", size, [box])])
    limits = replace(ImportLimits(), max_pixels=300 * 200 - 1)
    with pytest.raises(ImportProblem, match="over the limit"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "big", limits=limits)


def _exif_with_orientation(value) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return exif.tobytes()


@pytest.mark.parametrize("exif", [
    b"Exif\x00\x00not a tiff header at all",
    _exif_with_orientation(9),  # out of range
    # Orientation written as ASCII text "6" instead of a SHORT number (hand-built: Pillow will not write it)
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHI", ORIENTATION, 2, 2) + b"6\x00\x00\x00"
    + b"\x00\x00\x00\x00",
], ids=["garbage", "out-of-range", "wrong-type"])
def test_unreadable_or_invalid_orientation_counts_as_upright(ws, tmp_path, exif):
    """A damaged EXIF block or a meaningless tag is ignored, as viewers do: the file is kept byte for byte."""
    root = tmp_path / "export"
    photo = root / "images" / "photo.jpg"
    photo.parent.mkdir(parents=True)
    im = Image.new("RGB", STORED_SIZE, (128, 128, 128))
    im.paste(RED, SQUARE)
    im.save(photo, quality=95, exif=exif)
    coco_export(root, [("photo.jpg", STORED_SIZE, [[float(v) for v in SQUARE]])])
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "odd")
    info, samples = stored(ws, "odd")
    assert (samples["photo.jpg"]["width"], samples["photo.jpg"]["height"]) == STORED_SIZE
    assert image_path(ws.data_dir, info, samples["photo.jpg"]).read_bytes() == photo.read_bytes()


@pytest.mark.parametrize("lossless", [True, False], ids=["lossless", "lossy"])
def test_tagged_webp_stays_webp(ws, tmp_path, lossless):
    root = tmp_path / "export"
    photo = root / "images" / "photo.webp"
    photo.parent.mkdir(parents=True)
    im = Image.new("RGB", STORED_SIZE, (128, 128, 128))
    im.paste(RED, SQUARE)
    exif = im.getexif()
    exif[MAKE] = "TestCam"
    exif[ORIENTATION] = 6
    im.save(photo, "WEBP", lossless=lossless, quality=95, exif=exif)
    size, box = upright_square(photo)
    coco_export(root, [("photo.webp", size, [box])])
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "c.zip")], "webp")
    info, samples = stored(ws, "webp")
    im = check_upright(ws, info, samples["photo.webp"], (200, 300), box)
    with Image.open(image_path(ws.data_dir, info, samples["photo.webp"])) as again:
        assert again.format == "WEBP"
    if lossless:
        with Image.open(photo) as original:
            expected = ImageOps.exif_transpose(original).convert("RGB")
        assert ImageChops.difference(im.convert("RGB"), expected).getbbox() is None
