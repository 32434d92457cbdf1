"""A dataset exports as COCO, YOLO, Pascal VOC and Label Studio pre-annotations, into a folder or a zip, the
original images byte for byte; each export imports back with every box on its side of the split."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from backend.data.catalog import get_dataset
from backend.data.common import Writer
from backend.data.exporter import export_dataset, export_names
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from backend.data.writers import WRITERS
from tests import builders, exports
from tests.builders import make_image
from tests.conftest import run_cli


def _by_name(info: dict) -> dict:
    return {s["file"].rsplit("/", 1)[-1]: s for s in info["samples"]}


def _same(a: dict, b: dict, exported=lambda file: file.rsplit("/", 1)[-1]) -> None:
    """Every image of `a` is in `b` (under the name `exported` gives its file) with the same split, size and boxes
    (to 0.01 px)."""
    got, want = _by_name(b), {exported(s["file"]): s for s in a["samples"]}
    assert sorted(got) == sorted(want)
    for name, s in want.items():
        t = got[name]
        assert (t["split"], t["width"], t["height"]) == (s["split"], s["width"], s["height"]), name
        assert [b[4] for b in t["boxes"]] == [b[4] for b in s["boxes"]], name
        assert [b[:4] for b in t["boxes"]] == [pytest.approx(b[:4], abs=0.01) for b in s["boxes"]], name


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def roboflow(ws, tmp_path):
    """A Roboflow YOLOv8 export (train / valid / test, an image without boxes) imported as 'cells'."""
    root = tmp_path / "roboflow"
    exports.roboflow_yolov8(root)
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "rf.zip")], "cells")
    return get_dataset(ws.store, "cells")


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("as_zip", [False, True])
def test_every_format_imports_back_with_every_box_and_the_split(ws, tmp_path, roboflow, fmt, as_zip):
    out = tmp_path / (f"cells-{fmt}.zip" if as_zip else f"cells-{fmt}")
    assert export_dataset(ws.store, ws.data_dir, "cells", fmt, out) == out
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name], "nothing left aside"
    import_dataset(ws.store, ws.data_dir, [out], "back")
    back = get_dataset(ws.store, "back")
    assert back["format"] == fmt and back["split_origin"] == "export"
    assert back["classes"] == roboflow["classes"] if fmt != "labelstudio" else set(back["classes"]) == {*roboflow["classes"]}
    assert back["counts"] == roboflow["counts"]
    _same(roboflow, back)
    original = {n: ws.data_dir / roboflow["folder"] / "images" / s["file"] for n, s in _by_name(roboflow).items()}
    again = {n: ws.data_dir / back["folder"] / "images" / s["file"] for n, s in _by_name(back).items()}
    assert all(_digest(original[n]) == _digest(again[n]) for n in original), "the original pixels, byte for byte"


def test_the_layouts_are_the_tools_own(ws, tmp_path, roboflow):
    for fmt in WRITERS:
        export_dataset(ws.store, ws.data_dir, "cells", fmt, tmp_path / fmt)
    coco = json.loads((tmp_path / "coco/annotations/instances_val.json").read_text())
    assert {c["name"]: c["id"] for c in coco["categories"]} == {"Platelets": 1, "RBC": 2, "WBC": 3}
    assert len(coco["images"]) == 2 and all((tmp_path / "coco/val" / im["file_name"]).is_file() for im in coco["images"])
    ann = coco["annotations"][0]
    image = next(im for im in coco["images"] if im["id"] == ann["image_id"])
    sample = _by_name(roboflow)[image["file_name"]]
    x1, y1, x2, y2, label = sample["boxes"][0]
    assert ann["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01) and ann["iscrowd"] == 0
    assert "score" not in ann, "a box a person drew has no score"

    data = yaml.safe_load((tmp_path / "yolo/data.yaml").read_text())
    assert data == {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test", "nc": 3,
                    "names": {0: "Platelets", 1: "RBC", 2: "WBC"}}
    labels = sorted((tmp_path / "yolo/labels/train").glob("*.txt"))
    assert len(labels) == 6 and any(p.read_text() == "" for p in labels), "an image without boxes: an empty file"
    cls, cx, cy, w, h = next(p for p in labels if p.read_text()).read_text().splitlines()[0].split()
    assert int(cls) in (0, 1, 2) and all(0 < float(v) <= 1 for v in (cx, cy, w, h))

    main = tmp_path / "voc/ImageSets/Main"
    assert {p.name for p in main.iterdir()} == {"train.txt", "val.txt", "test.txt", "trainval.txt"}
    assert (tmp_path / "voc/labelmap.txt").read_text().splitlines()[1:] == ["Platelets:::", "RBC:::", "WBC:::"]
    assert len(main.joinpath("trainval.txt").read_text().split()) == 8
    assert len(list((tmp_path / "voc/Annotations").glob("*.xml"))) == 10
    assert len(list((tmp_path / "voc/JPEGImages").iterdir())) == 10

    tasks = json.loads((tmp_path / "labelstudio/tasks.json").read_text())
    assert len(tasks) == 10 and all("annotations" not in t for t in tasks)
    region = next(t for t in tasks if t["predictions"][0]["result"])["predictions"][0]["result"][0]
    assert region["type"] == "rectanglelabels" and region["score"] == 1.0
    assert 0 <= region["value"]["x"] <= 100 and region["original_width"] == exports.SIZE[0]
    assert tasks[0]["data"]["image"].startswith("/data/local-files/?d=images/train/")
    assert '<RectangleLabels name="label" toName="image">' in (tmp_path / "labelstudio/label_config.xml").read_text()


def test_images_sharing_a_name_across_folders_get_names_of_their_own(ws, tmp_path):
    """LabelImg folders train/ and valid/ each with 'img0.jpg' and fractional boxes."""
    root = tmp_path / "labelimg"
    for split, box in (("train", [10.5, 4.25, 40, 30]), ("valid", [2, 3, 20.75, 44])):
        make_image(root / split / "img0.jpg", 64, 48, [[*box, "cat"]])
        make_image(root / split / "img0.png", 64, 48, [[*box, "dog"]], fmt="PNG")
        for name, label in (("img0.jpg", "cat"), ("img0.png", "dog")):
            (root / split / f"{name}.xml").write_text(
                f"<annotation><filename>{name}</filename><size><width>64</width><height>48</height></size><object>"
                f"<name>{label}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
                f"<ymax>{box[3]}</ymax></bndbox></object></annotation>")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "li.zip")], "li")
    info = get_dataset(ws.store, "li")
    files = sorted(s["file"] for s in info["samples"])
    assert files == ["train/img0.jpg", "train/img0.png", "valid/img0.jpg", "valid/img0.png"]
    exported = {f: f.replace("/", "_").replace(".", "_") + f[-4:] for f in files}
    assert export_names(files) == ["train_img0_jpg.jpg", "train_img0_png.png", "valid_img0_jpg.jpg",
                                   "valid_img0_png.png"] == [exported[f] for f in files]
    assert export_names(["a/x.jpg", "a_x_jpg.jpg", "x.png", "b/y.jpg"]) == [
        "a_x_jpg.jpg", "a_x_jpg_2.jpg", "x_png.png", "y.jpg"]
    for fmt in WRITERS:
        export_dataset(ws.store, ws.data_dir, "li", fmt, tmp_path / f"li-{fmt}.zip")
        import_dataset(ws.store, ws.data_dir, [tmp_path / f"li-{fmt}.zip"], f"li-{fmt}")
        _same(info, get_dataset(ws.store, f"li-{fmt}"), exported=exported.get)


def test_bad_requests_are_one_sentence_and_leave_nothing(ws, tmp_path, roboflow):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    (tmp_path / "there.zip").write_bytes(b"PK")
    cases = [("nope", "coco", tmp_path / "o1", "there is no dataset named 'nope'"),
             ("cells", "tfrecord", tmp_path / "o2", "unknown export format 'tfrecord'"),
             ("cells", "coco", tmp_path / "full", "is not an empty folder"),
             ("cells", "yolo", tmp_path / "there.zip", "already exists")]
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, fmt, out, message in cases:
        with pytest.raises(ImportProblem, match=message):
            export_dataset(ws.store, ws.data_dir, name, fmt, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "full" / "x.txt").read_text() == "mine"
    builders.write_folders(tmp_path / "cls", builders.classification_samples(3))
    import_dataset(ws.store, ws.data_dir, [tmp_path / "cls"], "animals")
    with pytest.raises(ImportProblem, match="holds classification labels; only detection datasets export"):
        export_dataset(ws.store, ws.data_dir, "animals", "coco", tmp_path / "o3" / "deep")
    assert not (tmp_path / "o3").exists()


def test_a_broken_write_leaves_nothing_behind(ws, tmp_path, roboflow, monkeypatch):
    def fail(export_set, folder):
        (folder / "data.yaml").write_text("half")
        raise OSError("disk full")
    monkeypatch.setitem(WRITERS, "yolo", Writer("yolo", "a disk that fills up", fail))
    with pytest.raises(ImportProblem, match=r"^cannot write the export to .*out\.zip: disk full$"):
        export_dataset(ws.store, ws.data_dir, "cells", "yolo", tmp_path / "new" / "out.zip")
    assert not (tmp_path / "new").exists()


def test_the_command_line_exports_a_zip(ws, tmp_path, roboflow):
    out = tmp_path / "cells-yolo.zip"
    proc = run_cli("datasets", "export", "cells", "--format", "yolo", "--out", str(out), data_dir=ws.data_dir)
    assert str(out) in proc.stdout and "10 images" in proc.stdout
    with zipfile.ZipFile(out) as zf:
        assert "data.yaml" in zf.namelist() and "labels/val/" in "".join(zf.namelist())
    bad = run_cli("datasets", "export", "cells", "--format", "yolo", "--out", str(out), data_dir=ws.data_dir,
                  check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == f"error: {out} already exists"
