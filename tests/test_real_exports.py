"""Exports as the labelling tools write them import with every image, box and class, and the export's own split."""
from __future__ import annotations

import json
import shutil

import pytest

from backend.data.catalog import get_dataset
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from tests import builders, exports
from tests.conftest import run_cli


def _imported(ws, tmp_path, writer, name="set", **kw):
    root = tmp_path / "export"
    truth = writer(root, **kw)
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / f"{name}.zip")], name)
    return truth, get_dataset(ws.store, name)


def _check(info: dict, truth: dict) -> None:
    """Every image with its boxes (or label) and its split, as the export has them."""
    got = {s["file"].rsplit("/", 1)[-1]: s for s in info["samples"]}
    assert sorted(got) == sorted(truth)
    for name, (split, want) in truth.items():
        s = got[name]
        if split is not None:
            assert s["split"] == split, name
        if isinstance(want, str):
            assert s["label"] == want
        else:
            assert s["boxes"] == [[float(v) for v in b[:4]] + [b[4]] for b in want], name


def test_roboflow_yolov8_keeps_its_split_and_ignores_the_readmes(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.roboflow_yolov8)
    _check(info, truth)
    assert info["format"] == "yolo" and info["classes"] == ["Platelets", "RBC", "WBC"]
    assert info["counts"] == {"train": 6, "val": 2, "test": 2, "total": 10}
    assert info["split_origin"] == "export"
    assert info["split_note"] == "split from the export: 6 train / 2 val / 2 test"
    assert [s["boxes"] for s in info["samples"] if "_00001_" in s["file"]] == [[]]  # the empty label file


@pytest.mark.parametrize("yaml_beside", [False, True])
def test_ultralytics_layout_with_path_names_dict_and_extra_keys(ws, tmp_path, yaml_beside):
    truth, info = _imported(ws, tmp_path, exports.ultralytics, yaml_beside=yaml_beside)
    _check(info, truth)
    assert info["classes"] == ["person", "bicycle", "car"]
    assert info["counts"] == {"train": 4, "val": 4, "test": 0, "total": 8}


def test_data_yaml_names_in_block_style_and_nc_that_disagrees(ws, tmp_path):
    root = tmp_path / "export"
    exports.roboflow_yolov8(root)
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 3\nnames:\n- Platelets\n"
                                    "- RBC\n- WBC\n")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "block")
    assert get_dataset(ws.store, "block")["classes"] == ["Platelets", "RBC", "WBC"]
    (root / "data.yaml").write_text("train: ../train/images\nnc: 4\nnames: ['Platelets', 'RBC', 'WBC']\n")
    with pytest.raises(ImportProblem, match=r"^data.yaml says nc: 4 but names 3 classes$"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "b.zip")], "nc")


def test_data_yaml_naming_one_folder_for_train_and_val_is_no_split(ws, tmp_path):
    """coco128.yaml's `train: images/train2017` and `val: images/train2017`: we hold out, and say why."""
    root = tmp_path / "export"
    exports.ultralytics(root)
    for kind in ("images", "labels"):
        for p in (root / kind / "val").iterdir():
            p.rename(root / kind / "train" / p.name)
        (root / kind / "val").rmdir()
    (root / "coco8.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames: [person, bicycle, car]\n")
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "same", val_fraction=0.25)
    info = get_dataset(ws.store, "same")
    assert info["split_origin"] == "stratified"
    assert info["split_note"] == "no split in the export: 25 % held out, stratified"
    assert "coco8.yaml names the same images for more than one split; its split was not used" in info["warnings"]


def test_roboflow_coco_drops_the_supercategory_and_keeps_the_split(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.roboflow_coco)
    _check(info, truth)
    assert info["classes"] == ["Platelets", "RBC", "WBC"]
    assert info["counts"] == {"train": 6, "val": 3, "test": 2, "total": 11}
    assert ("category 'cells-mk3a' is declared but no annotation uses it: left out of the classes"
            in info["warnings"])


def test_roboflow_one_hot_classes_csv(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.roboflow_classes_csv)
    _check(info, truth)
    assert info["format"] == "csv" and info["classes"] == ["Red Blood Cell", "White Blood Cell"]
    assert info["counts"] == {"train": 6, "val": 2, "test": 2, "total": 10}


def test_one_hot_rows_with_no_class_or_several_are_named_by_row(ws, tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    exports.one_hot_csv(root, ["a.jpg, 1, 0", "b.jpg, 0, 0", "c.jpg, 1, 1"])
    with pytest.raises(ImportProblem) as refused:
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "hot")
    assert str(refused.value) == ("2 problems found: export/_classes.csv row 3 has no class marked 1; one-hot rows "
                                  "need exactly one; export/_classes.csv row 4 has 2 classes (cat, dog) marked 1; "
                                  "one-hot rows need exactly one").replace("export/", "")
    assert not any((ws.data_dir / "datasets").iterdir())


def test_labelimg_voc_keeps_its_test_folder_out_of_training(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.labelimg_voc)
    _check(info, truth)
    assert info["counts"] == {"train": 9, "val": 0, "test": 3, "total": 12}
    assert sorted(info["classes"]) == ["head", "helmet"]


def test_cvat_coco_with_cyrillic_labels_floats_and_attributes(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.cvat_coco)
    _check(info, truth)
    assert info["classes"] == ["легковой автомобиль", "пешеход"]
    assert info["counts"] == {"train": 6, "val": 0, "test": 2, "total": 8}
    assert any("'дорожный знак'" in w for w in info["warnings"])


def test_cvat_voc_with_image_sets_and_labelmap(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.cvat_voc)
    _check(info, truth)
    assert info["classes"] == ["легковой автомобиль", "пешеход"]
    assert info["counts"] == {"train": 6, "val": 2, "test": 0, "total": 8}
    assert ("categories 'background', 'дорожный знак' are declared but no annotation uses them: left out of the "
            "classes") in info["warnings"]


def test_label_studio_yolo_export_without_a_split_is_split_by_us(ws, tmp_path):
    truth, info = _imported(ws, tmp_path, exports.labelstudio_yolo)
    _check(info, truth)
    assert info["split_origin"] == "stratified" and info["counts"]["val"] == 1


def test_an_export_with_only_held_out_images_is_refused(ws, tmp_path):
    root = tmp_path / "export"
    exports.roboflow_yolov8(root)
    shutil.rmtree(root / "train")
    with pytest.raises(ImportProblem, match=r"^the export puts every image in a held-out split \(val and test\)"):
        import_dataset(ws.store, ws.data_dir, [builders.zip_dir(root, tmp_path / "a.zip")], "nothing")


def test_cli_import_says_where_the_split_came_from(tmp_path):
    root = tmp_path / "export"
    exports.roboflow_coco(root)
    archive = builders.zip_dir(root, tmp_path / "rf.zip")
    out = run_cli("datasets", "import", str(archive), "--name", "cells", data_dir=tmp_path / "d").stdout
    assert "split from the export: 6 train / 3 val / 2 test" in out
    info = json.loads(run_cli("datasets", "show", "cells", "--json", data_dir=tmp_path / "d").stdout)
    assert info["split_origin"] == "export"
