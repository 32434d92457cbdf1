"""Images as people have them: JPEG, PNG, WebP, BMP, TIFF; grey, alpha, 16-bit; any extension case; names with
spaces and non-Latin letters; byte-identical copies reported and kept on one side of the split."""
from __future__ import annotations

import shutil

from PIL import Image

from backend.data.catalog import get_dataset
from backend.data.importer import import_dataset
from tests import builders

KINDS = [  # (file name, PIL mode, save format)
    ("rgb photo.JPG", "RGB", "JPEG"), ("grey.jpeg", "L", "JPEG"), ("cmyk.jpg", "CMYK", "JPEG"),
    ("alpha.PNG", "RGBA", "PNG"), ("palette.png", "P", "PNG"), ("deep.png", "I;16", "PNG"),
    ("снимок 1.webp", "RGB", "WEBP"), ("画像.bmp", "RGB", "BMP"), ("scan.TIFF", "RGB", "TIFF"),
    ("grey scan.tif", "L", "TIFF"),
]


def _write(path, mode, fmt, seed=0):
    im = Image.new("RGB", (40, 30), (200, 40 + seed, 40))
    im = im.convert(mode) if mode != "I;16" else im.convert("L").convert("I;16")
    if mode == "RGBA":
        im.putalpha(128)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt)


def test_every_kind_imports_as_rgb_with_its_boxes(ws, tmp_path):
    root = tmp_path / "kinds"
    for i, (name, mode, fmt) in enumerate(KINDS):
        _write(root / "images" / name, mode, fmt, seed=i)
    (root / "classes.txt").write_text("thing\n")
    for name, *_ in KINDS:
        label = root / "labels" / (name.rsplit(".", 1)[0] + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("0 0.5 0.5 0.5 0.5\n")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "k.zip")], "kinds", val_fraction=0.0)
    info = get_dataset(ws.store, "kinds")
    files = {s["file"]: s for s in info["samples"]}
    assert sorted(files) == sorted(["images/" + n + (".png" if n.lower().endswith((".tif", ".tiff")) else "")
                                    for n, *_ in KINDS])
    for f, s in files.items():
        assert s["boxes"] == [[10.0, 7.5, 30.0, 22.5, "thing"]]
        with Image.open(ws.data_dir / info["folder"] / "images" / f) as im:
            assert im.mode == "RGB" and im.size == (40, 30), f
    assert "2 TIFF images were stored as PNG ('.png' added to the name)" in info["warnings"]
    assert "6 images were converted to RGB (CMYK, 16-bit grayscale, grayscale, palette, alpha)" in info["warnings"]
    with Image.open(ws.data_dir / info["folder"] / "images" / "images/alpha.PNG") as im:
        assert im.getpixel((0, 0))[1] > 120  # half-transparent red laid over white, not over black


def test_rgb_jpeg_png_webp_bmp_are_kept_byte_for_byte(ws, tmp_path):
    root = tmp_path / "plain"
    for i, fmt in enumerate(("JPEG", "PNG", "WEBP", "BMP")):
        _write(root / "cat" / f"{i}.{fmt.lower()}", "RGB", fmt, seed=i)
        _write(root / "dog" / f"{i}.{fmt.lower()}", "RGB", fmt, seed=10 + i)
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "p.zip")], "plain", val_fraction=0.0)
    info = get_dataset(ws.store, "plain")
    for s in info["samples"]:
        assert (ws.data_dir / info["folder"] / "images" / s["file"]).read_bytes() == (root / s["file"]).read_bytes()
    assert info["warnings"] == []


def test_byte_identical_images_are_reported_and_split_together(ws, tmp_path):
    root = tmp_path / "dups"
    builders.write_folders(root, builders.classification_samples(10))
    for k in range(4):  # four copies of one cat photo under other names
        shutil.copy(root / "cat" / "cat0.png", root / "cat" / f"copy {k}.png")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "d.zip")], "dups", val_fraction=0.3)
    info = get_dataset(ws.store, "dups")
    splits = {s["split"] for s in info["samples"] if s["file"] in
              {"cat/cat0.png", *(f"cat/copy {k}.png" for k in range(4))}}
    assert len(splits) == 1
    assert any(w.startswith("5 images are byte-identical copies in 1 group (first: 'cat/cat0.png' = 'cat/copy 0.png'")
               for w in info["warnings"])


def test_a_copy_across_the_exports_split_is_held_out_with_it(ws, tmp_path):
    from tests import exports
    root = tmp_path / "export"
    truth = exports.roboflow_yolov8(root)
    test_image = next(n for n, (split, _) in truth.items() if split == "test")
    shutil.copy(root / "test" / "images" / test_image, root / "train" / "images" / "copied.jpg")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "leak")
    info = get_dataset(ws.store, "leak")
    assert {s["file"]: s["split"] for s in info["samples"]}["train/images/copied.jpg"] == "test"
    assert ("1 image in the export's split had a byte-identical copy in a held-out split and was held out with it"
            in info["warnings"])
