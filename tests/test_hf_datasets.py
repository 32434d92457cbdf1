"""Hugging Face `datasets` folders (save_to_disk, parquet as on the Hub) and `hf:NAME` import with their splits."""
from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from backend.data import hub
from backend.data.catalog import get_dataset
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from tests import builders
from tests.conftest import run_cli

CATS = ["coverall", "face_shield", "gloves", "goggles", "mask"]  # cppe-5's classes


def _png(seed: int, size=(64, 48), mode="RGB") -> bytes:
    im = Image.new(mode, size, (seed * 40 % 256, 90, 140)[: len(mode)] if mode != "L" else seed * 40 % 256)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _objects_features(category=None) -> datasets.Features:
    return datasets.Features({
        "image_id": datasets.Value("int64"), "image": datasets.Image(),
        "width": datasets.Value("int32"), "height": datasets.Value("int32"),
        "objects": datasets.Sequence({"id": datasets.Value("int64"), "area": datasets.Value("int64"),
                                      "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                                      "category": category or datasets.ClassLabel(names=CATS)})})


def cppe5_like(counts=(4, 2, 2)) -> tuple[datasets.DatasetDict, dict]:
    """cppe-5's layout: objects.bbox in COCO x/y/w/h, objects.category ClassLabel ids; train/validation/test."""
    splits, truth, n = {}, {}, 0
    for split, count in zip(("train", "validation", "test"), counts):
        rows = []
        for _ in range(count):
            boxes = [[4 + n, 6, 20, 10], [30, 8 + n % 3, 12, 20]][: 1 + n % 2]
            cats = [n % 5, (n + 2) % 5][: len(boxes)]
            rows.append({"image_id": n, "image": {"bytes": _png(n), "path": f"{n:04d}.png"}, "width": 64,
                         "height": 48, "objects": {"id": list(range(len(boxes))), "area": [b[2] * b[3] for b in boxes],
                                                   "bbox": boxes, "category": cats}})
            truth[f"{n:04d}.png"] = ({"validation": "val"}.get(split, split),
                                     [[x, y, x + w, y + h, CATS[c]] for (x, y, w, h), c in zip(boxes, cats)])
            n += 1
        splits[split] = datasets.Dataset.from_list(rows, features=_objects_features())
    return datasets.DatasetDict(splits), truth


def _files(info: dict, whole: bool = False) -> dict:
    return {s["file"] if whole else s["file"].rsplit("/", 1)[-1]: s for s in info["samples"]}


def _check(info: dict, truth: dict) -> None:
    got = _files(info, whole="/" in next(iter(truth)))
    assert sorted(got) == sorted(truth)
    for name, (split, boxes) in truth.items():
        assert got[name]["split"] == split
        assert got[name]["boxes"] == [[float(v) for v in b[:4]] + [b[4]] for b in boxes]


def test_save_to_disk_folder_with_objects_and_its_splits(ws, tmp_path):
    dd, truth = cppe5_like()
    dd.save_to_disk(str(tmp_path / "cppe5"))
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / "cppe5", tmp_path / "c.zip")], "cppe")
    info = get_dataset(ws.store, "cppe")
    _check(info, truth)
    assert info["format"] == "huggingface" and info["task"] == "detection"
    assert info["counts"] == {"train": 4, "val": 2, "test": 2, "total": 8}
    assert set(info["classes"]) <= set(CATS)
    assert "the dataset's boxes were read as COCO x, y, width, height in pixels (what fits all of them)" in info["warnings"]


def test_parquet_files_as_on_the_hub_with_corner_boxes_and_category_names(ws, tmp_path):
    root = tmp_path / "hub" / "data"
    root.mkdir(parents=True)
    truth = {}
    for split, ids in (("train", range(0, 5)), ("test", range(5, 7))):
        rows = []
        for n in ids:
            box = [20.0 + n, 5.0, 50.0 + n, 30.0]  # corners: read as x, y, w, h they would leave the 64-px image
            rows.append({"image": {"bytes": _png(n), "path": None}, "objects": [{"bbox": box, "category": "fox"}]})
            truth[f"images/{split}/{n - ids.start:05d}.png"] = (split, [[*box, "fox"]])
        features = datasets.Features({"image": datasets.Image(), "objects": [{"bbox": datasets.Sequence(
            datasets.Value("float32"), length=4), "category": datasets.Value("string")}]})
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(root / f"{split}-00000-of-00001.parquet"))
    (root.parent / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# foxes\n")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root.parent, tmp_path / "p.zip")], "foxes")
    info = get_dataset(ws.store, "foxes")
    _check(info, truth)
    assert info["classes"] == ["fox"] and info["split_note"] == "split from the export: 5 train / 2 test"
    assert any("corners x1, y1, x2, y2" in w for w in info["warnings"])


def test_classification_with_a_label_classlabel_and_grey_images(ws, tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee", "wasp"])})
    rows = [{"image": {"bytes": _png(i, mode="L"), "path": f"img {i}.png"}, "label": i % 2} for i in range(6)]
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "bugs"))
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / "bugs", tmp_path / "b.zip")], "bugs",
                   val_fraction=0.34)
    info = get_dataset(ws.store, "bugs")
    assert info["task"] == "classification" and info["classes"] == ["ant", "bee"]
    assert {s["file"].rsplit("/", 1)[-1]: s["label"] for s in info["samples"]} == {
        f"img {i}.png": ["ant", "bee"][i % 2] for i in range(6)}
    assert info["split_note"] == "no split in the export: 34 % held out, stratified"
    assert "6 images were converted to RGB (grayscale)" in info["warnings"]
    assert any("category 'wasp' is declared" in w for w in info["warnings"])
    with Image.open(ws.data_dir / info["folder"] / "images" / info["samples"][0]["file"]) as im:
        assert im.mode == "RGB"


def test_hub_name_is_loaded_with_datasets_and_imported(ws, tmp_path, monkeypatch):
    dd, truth = cppe5_like()
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: asked.append((name, config)) or dd)
    monkeypatch.setattr(hub, "_reachable", lambda name: None)
    import_dataset(ws.store, ws.data_dir, ["hf:rishitdagli/cppe-5:default"], "hub")
    assert asked == [("rishitdagli/cppe-5", "default")]
    _check(get_dataset(ws.store, "hub"), truth)


def test_hub_failures_are_one_sentence(ws, monkeypatch):
    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(hub, "_reachable", lambda name: None)
    with pytest.raises(ImportProblem, match=r"^the Hugging Face dataset 'nobody/nothing' could not be loaded "
                                            r"\(Couldn't reach 'nobody/nothing' on the Hub"):
        import_dataset(ws.store, ws.data_dir, ["hf:nobody/nothing"], "x")
    with pytest.raises(ImportProblem, match=r"^'hf:\.\./etc' is not a Hugging Face dataset name"):
        import_dataset(ws.store, ws.data_dir, ["hf:../etc"], "x")
    assert not any((ws.data_dir / "datasets").iterdir())


def test_cli_hub_import_without_network_exits_with_a_sentence(tmp_path):
    proc = run_cli("datasets", "import", "hf:nobody-here/nothing", "--name", "x", data_dir=tmp_path / "d", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: the Hugging Face dataset 'nobody-here/nothing' could not be loaded: the Hub "
                                   "cannot be reached (ConnectError)")
