"""LabelMe, Label Studio JSON / JSON-MIN / CSV, CreateML and VIA exports import with every image, box and class and
their split; annotation files no reader understands refuse the upload instead of being read as class folders."""
from __future__ import annotations

import json
import shutil

import pytest

from backend.data.catalog import get_dataset
from backend.data.formats import FORMATS
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from tests import builders, exports, more_exports
from tests.conftest import run_cli
from tests.test_real_exports import _check, _imported


def test_labelme_rectangles_polygons_windows_paths_and_embedded_images(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, more_exports.labelme)
    _check(info, truth)
    assert (info["format"], info["classes"]) == ("labelme", ["cat", "dog"])
    assert info["counts"] == {"train": 6, "val": 2, "test": 0, "total": 8}
    assert "4 polygons were read as the bounding box of their points" in info["warnings"]
    assert "1 shapes that are neither rectangles nor polygons were left out (point 1)" in info["warnings"]
    embedded = next(s for s in info["samples"] if s["file"].endswith("IMG_0005.jpg"))
    assert (ws.data_dir / info["folder"] / "images" / embedded["file"]).is_file(), "imageData written out"


def test_labelme_without_its_image_or_imagedata_is_named(ws, tmp_path):
    root = tmp_path / "export"
    more_exports.labelme(root)
    (root / "val" / "images" / "IMG_0007.jpg").unlink()
    with pytest.raises(ImportProblem) as refused:
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "gone")
    assert str(refused.value) == ("1 problem found: val/annotations/IMG_0007.json names image "
                                  "'..\\images\\IMG_0007.jpg', which is not in the upload (and holds no imageData)")


def test_label_studio_json_min_is_read_as_boxes_not_as_a_folder_of_one_class(ws, tmp_path):
    """The case that lost every box: flat records, images as upload / local-files / S3 / HTTPS references, grayscale
    JPEGs in an images/ folder."""
    truth, info = _imported(ws, tmp_path, more_exports.labelstudio_min)
    _check(info, truth)
    assert (info["format"], info["task"]) == ("labelstudio-min", "detection")
    assert info["classes"] == ["opacity", "nodule"]
    assert "1 task of the export had several annotations: the latest one not cancelled was read" in info["warnings"]
    assert "1 polygon was read as its enclosing box" in info["warnings"]
    assert "6 images were converted to RGB (grayscale)" in info["warnings"]


def test_label_studio_csv_with_boxes(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, more_exports.labelstudio_csv)
    _check(info, truth)
    assert (info["format"], info["classes"]) == ("labelstudio-csv", ["opacity", "nodule"])
    assert "1 task of the export had several annotations: the latest one not cancelled was read" in info["warnings"]


def test_label_studio_csv_of_choices_is_a_classification_dataset(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, more_exports.labelstudio_csv_choices)
    _check(info, truth)
    assert (info["format"], info["task"]) == ("labelstudio-csv", "classification")
    assert info["classes"] == ["healthy", "rust", "scab"]
    assert "1 task of the export had several annotations: the latest one not cancelled was read" in info["warnings"]


def test_label_studio_json_with_polygons_several_annotators_and_a_cancelled_one(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, more_exports.labelstudio_json)
    _check(info, truth)
    assert (info["format"], info["classes"]) == ("labelstudio", ["opacity", "nodule"])
    assert "1 task of the export had several annotations: the latest one not cancelled was read" in info["warnings"]
    assert ("1 regions that are not a labelled rectangle, polygon or choice were left out (keypointlabels 1)"
            in info["warnings"])


def test_label_studio_json_min_text_fields_name_the_class_or_are_refused(ws, tmp_path):
    """Task data may hold text of its own beside the Choices tag's answer: 'choice' (the tag's name in Label Studio's
    template) is read, and said; two other fields are refused, not guessed between."""
    root = tmp_path / "export"
    root.mkdir()
    builders.make_image(root / "a.jpg", 32, 24)
    record = {"image": "/data/upload/1/a.jpg", "caption": "a leaf", "id": 1, "choice": "rust", "annotator": 1,
              "annotation_id": 3, "created_at": "x", "updated_at": "x", "lead_time": 1.0}
    (root / "result.json").write_text(json.dumps([record]))
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "one")
    info = get_dataset(ws.store, "one")
    assert (info["task"], info["classes"]) == ("classification", ["rust"])
    assert "the class of each task is its field 'choice' (not read: caption)" in info["warnings"]
    record["mood"] = record.pop("choice")
    (root / "result.json").write_text(json.dumps([record]))
    with pytest.raises(ImportProblem, match=r"result.json: cannot tell which field holds the class \(caption, mood\)"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "b.zip")], "two")


def test_createml_keeps_its_split_and_reads_centres(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, more_exports.createml)
    _check(info, truth)
    assert (info["format"], sorted(info["classes"])) == ("createml", ["head", "helmet"])
    assert info["counts"] == {"train": 5, "val": 2, "test": 1, "total": 8}


@pytest.mark.parametrize("writer,attribute", [(more_exports.via_project, "label"),
                                              (more_exports.via_export_json, "name"),
                                              (more_exports.via_csv, "label")])
def test_via_json_and_csv_name_the_attribute_the_class_came_from(ws, tmp_path, writer, attribute):
    truth, info = _imported(ws, tmp_path, writer)
    _check(info, truth)
    assert (info["format"], info["classes"]) == ("via", ["balloon", "kite"])
    assert f"the class of each region is its region attribute '{attribute}'" in info["warnings"]
    assert "1 regions that are neither rect nor polygon were left out (point 1)" in info["warnings"]
    if writer is more_exports.via_export_json:
        assert info["counts"]["val"] == 2 and info["split_origin"] == "export"


def test_via_with_two_attributes_of_no_known_name_is_refused(ws, tmp_path):
    root = tmp_path / "export"
    more_exports.via_csv(root)
    path = root / "via_export_csv.csv"
    path.write_text(path.read_text().replace('""label""', '""kind""').replace('""occluded""', '""colour""'))
    with pytest.raises(ImportProblem, match=r"cannot tell which region attribute holds the class \(kind, colour\)"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "vague")


def test_annotation_files_no_reader_understands_refuse_the_upload(ws, tmp_path):
    """Images in folders beside an unknown JSON are not guessed to be class folders."""
    root = tmp_path / "export"
    builders.write_folders(root, builders.classification_samples(2))
    (root / "export.json").write_text(json.dumps({"items": [{"file": "cat/cat0.png", "tags": ["cat"]}]}))
    with pytest.raises(ImportProblem) as refused:
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "guess")
    tried = ", ".join(n for n in FORMATS if n != "folders")
    assert str(refused.value) == f"export.json is in no annotation format this app reads: tried {tried}"
    assert "labelme" in tried and "via" in tried and "createml" in tried


def test_class_folders_with_a_readme_are_read_and_the_readme_is_named(ws, tmp_path):
    root = tmp_path / "export"
    builders.write_folders(root / "train", builders.classification_samples(3))
    for cls in ("cat", "dog"):
        builders.make_image(root / "valid" / cls / f"{cls}-v.png", 32, 24, seed=50 + ord(cls[0]))
    (root / "README.roboflow.txt").write_text("exported via roboflow.com\n")
    (root / "LICENSE").write_text("CC BY 4.0\n")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "leaves")
    info = get_dataset(ws.store, "leaves")
    assert (info["format"], info["counts"]["val"]) == ("folders", 2)
    assert "not read (no annotations of this format): LICENSE, README.roboflow.txt" in info["warnings"]


def test_files_beside_the_annotations_are_listed_as_not_read(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.roboflow_yolov8)
    assert "not read (no annotations of this format): README.dataset.txt, README.roboflow.txt" in info["warnings"]
    truth, info = _imported(ws, tmp_path / "ls", exports.labelstudio_yolo, name="ls")
    assert "not read (no annotations of this format): notes.json" in info["warnings"]


def test_a_format_named_on_the_command_line(tmp_path):
    root = tmp_path / "export"
    more_exports.createml(root)
    archive = builders.zip_dir(root, tmp_path / "cm.zip")
    out = run_cli("datasets", "import", str(archive), "--name", "helmets", "--format", "createml",
                  data_dir=tmp_path / "d").stdout
    assert "helmets: detection (createml), 8 images" in out
    shutil.rmtree(tmp_path / "d")
    bad = run_cli("datasets", "import", str(archive), "--name", "h", "--format", "labelme", data_dir=tmp_path / "d",
                  check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_the_data_tab_leaves_the_task_of_json_and_csv_exports_to_the_import(tmp_path):
    """A CSV or JSON export holds boxes (VIA, Label Studio) or classes: the Task box stays 'auto' for them."""
    from ui.data_tab import suggest_task
    more_exports.via_csv(tmp_path / "via")
    exports.labelimg_voc(tmp_path / "voc")
    assert suggest_task([str(builders.zip_dir(tmp_path / "via", tmp_path / "via.zip"))]) == "auto"
    assert suggest_task([str(builders.zip_dir(tmp_path / "voc", tmp_path / "voc.zip"))]) == "detection"
