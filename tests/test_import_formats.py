"""Each annotation format imports a small dataset; the boxes come back in original-image pixels."""
from __future__ import annotations

import json

import pytest

from backend.data.catalog import get_dataset
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from tests import builders
from tests.conftest import run_cli


def _boxes_by_file(info: dict) -> dict:
    return {s["file"].rsplit("/", 1)[-1]: s["boxes"] for s in info["samples"]}


@pytest.mark.parametrize("writer,fmt", [
    (builders.write_coco, "coco"),
    (builders.write_voc, "voc"),
    (builders.write_labelstudio, "labelstudio"),
    (builders.write_yolo, "yolo"),
])
def test_detection_formats_import_with_exact_boxes(ws, tmp_path, writer, fmt):
    samples = builders.detection_samples(10)
    root = tmp_path / "export"
    writer(root, samples)
    archive = builders.zip_dir(root, tmp_path / f"{fmt}.zip")

    import_dataset(ws.store, ws.data_dir, [archive], f"{fmt}-set")
    info = get_dataset(ws.store, f"{fmt}-set")

    assert info["format"] == fmt and info["task"] == "detection"
    assert sorted(info["classes"]) == ["bird", "cat", "dog"]
    got = _boxes_by_file(info)
    for s in samples:  # Label Studio percent and YOLO normalised values convert back exactly
        assert got[s["file"]] == [[float(x1), float(y1), float(x2), float(y2), l] for x1, y1, x2, y2, l in s["boxes"]]
    assert info["counts"] == {"train": 8, "val": 2, "test": 0, "total": 10}


def test_yolo_with_data_yaml(ws, tmp_path):
    samples = builders.detection_samples(4)
    builders.write_yolo(tmp_path / "y", samples, names_file="data.yaml")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / "y", tmp_path / "y.zip")], "yaml-set")
    info = get_dataset(ws.store, "yaml-set")
    assert info["classes"] == ["cat", "dog", "bird"]
    assert _boxes_by_file(info)["img001.jpg"] == [[float(v) for v in b[:4]] + [b[4]] for b in samples[1]["boxes"]]


@pytest.mark.parametrize("writer,fmt", [(builders.write_folders, "folders"), (builders.write_csv, "csv")])
def test_classification_formats(ws, tmp_path, writer, fmt):
    samples = builders.classification_samples(5)
    writer(tmp_path / "c", samples)
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / "c", tmp_path / "c.zip")], "cls")
    info = get_dataset(ws.store, "cls")
    assert (info["format"], info["task"]) == (fmt, "classification")
    assert sorted(s["label"] for s in info["samples"]) == sorted(s["label"] for s in samples)
    # stratified: each class gives one of its five images to the held-out split
    assert info["per_class"] == {"cat": {"train": 4, "val": 1, "test": 0}, "dog": {"train": 4, "val": 1, "test": 0}}


def test_grounding_jsonl(ws, tmp_path):
    samples = builders.grounding_samples(6)
    builders.write_jsonl(tmp_path / "g", samples)
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / "g", tmp_path / "g.zip")], "refs")
    info = get_dataset(ws.store, "refs")
    assert info["task"] == "grounding"
    got = {s["file"]: (s["expression"], s["box"]) for s in info["samples"]}
    for s in samples:
        assert got[f"images/{s['file']}"] == (s["expression"], [float(v) for v in s["box"]])


def test_loose_files_upload(ws, tmp_path):
    """Several files at once (no zip): a COCO JSON beside its images."""
    samples = builders.detection_samples(3)
    ann = builders.write_coco(tmp_path / "loose", samples)
    files = [ann] + [tmp_path / "loose" / "images" / s["file"] for s in samples]
    import_dataset(ws.store, ws.data_dir, files, "loose", val_fraction=0.0)
    assert get_dataset(ws.store, "loose")["counts"] == {"train": 3, "val": 0, "test": 0, "total": 3}


def test_split_is_fixed_for_the_same_upload(ws, tmp_path):
    builders.write_coco(tmp_path / "s", builders.detection_samples(20))
    archive = builders.zip_dir(tmp_path / "s", tmp_path / "s.zip")
    import_dataset(ws.store, ws.data_dir, [archive], "a")
    import_dataset(ws.store, ws.data_dir, [archive], "b")
    split = lambda name: {s["file"]: s["split"] for s in get_dataset(ws.store, name)["samples"]}  # noqa: E731
    assert split("a") == split("b")
    assert list(split("a").values()).count("val") == 4


def test_cli_import_show_list_delete(tmp_path):
    data = tmp_path / "data"
    builders.write_voc(tmp_path / "voc", builders.detection_samples(5))
    archive = builders.zip_dir(tmp_path / "voc", tmp_path / "voc.zip")

    out = json.loads(run_cli("datasets", "import", str(archive), "--name", "pets", "--json", data_dir=data).stdout)
    assert out["name"] == "pets" and out["counts"]["total"] == 5

    shown = json.loads(run_cli("datasets", "show", "pets", "--json", data_dir=data).stdout)
    sample = shown["samples"][0]
    assert set(sample) >= {"file", "split", "width", "height", "boxes"}
    assert sample["split"] in ("train", "val") and (sample["width"], sample["height"]) == (200, 100)
    assert isinstance(sample["boxes"][0][4], str)

    listed = json.loads(run_cli("datasets", "list", "--json", data_dir=data).stdout)
    assert [d["name"] for d in listed] == ["pets"]

    run_cli("datasets", "delete", "pets", data_dir=data)
    assert json.loads(run_cli("datasets", "list", "--json", data_dir=data).stdout) == []
    assert list((data / "datasets").iterdir()) == []


def test_cli_errors_are_one_sentence(tmp_path):
    proc = run_cli("datasets", "show", "nope", data_dir=tmp_path / "d", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: there is no dataset named 'nope'"
    assert "Traceback" not in proc.stderr


def _yolo_with_lines(root, lines: list[str], size=(200, 100)):
    builders.make_image(root / "images" / "a.jpg", *size)
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
    return builders.zip_dir(root, root.with_suffix(".zip"))


def test_yolo_segmentation_polygons_are_read_as_their_bounding_boxes(ws, tmp_path):
    archive = _yolo_with_lines(tmp_path / "seg", [
        "0 0.1 0.2 0.5 0.1 0.4 0.6 0.2 0.5",   # a polygon of four points
        "1 0.75 0.5 0.1 0.2",                  # a plain box beside it
    ])
    import_dataset(ws.store, ws.data_dir, [archive], "seg", val_fraction=0.0)
    info = get_dataset(ws.store, "seg")
    assert info["samples"][0]["boxes"] == [[20.0, 10.0, 100.0, 60.0, "cat"], [140.0, 40.0, 160.0, 60.0, "dog"]]
    assert info["warnings"] == ["1 segmentation polygon was read as the bounding box of its points "
                                "(first: labels/a.txt line 1)"]


def test_yolo_lines_of_another_shape_are_refused_with_a_sentence(ws, tmp_path):
    archive = _yolo_with_lines(tmp_path / "odd", ["0 0.5 0.5 0.2 0.2 0.9"])  # a prediction with its confidence
    with pytest.raises(ValueError) as refused:
        import_dataset(ws.store, ws.data_dir, [archive], "odd")
    assert str(refused.value) == ("1 problem found: labels/a.txt line 1 has 5 numbers after the class: neither a "
                                  "box 'class cx cy w h' nor a polygon 'class x1 y1 x2 y2 x3 y3 ...'")


def test_annotation_files_that_are_not_utf8_are_named(ws, tmp_path):
    root = tmp_path / "latin"
    _yolo_with_lines(root, ["0 0.5 0.5 0.2 0.2"])
    (root / "labels" / "a.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 \xe9t\xe9\n")
    with pytest.raises(ImportProblem, match=r"^labels/a.txt is not UTF-8 text \(save it as UTF-8\)$"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "latin.zip")], "latin")


def test_import_problems_are_value_errors_so_every_caller_shows_the_sentence(ws):
    """The page's and the API's handlers catch ValueError: an unknown dataset used to escape them."""
    from backend.engine.settings import PRESETS, TrainSettings, preset
    from backend.jobs.runs import create_run
    from ui.train_tab import ADVANCED, launch
    assert issubclass(ImportProblem, ValueError)
    with pytest.raises(ValueError, match="^there is no dataset named 'gone'$"):
        create_run(ws.store, "gone", "demo", preset("CPU demo"))
    values = [getattr(TrainSettings.from_dict(PRESETS["CPU demo"]), k) for k in ADVANCED]
    with pytest.raises(ValueError, match="^there is no dataset named 'gone'$"):
        launch(ws, "gone", "demo", "CPU demo", "format=1", *values)
