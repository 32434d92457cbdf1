"""Labelling unlabelled images with a tuned run: `python app.py label` prints one JSON object whose boxes are what
`predict` gives each image for each class, in original-image pixels, filtered by confidence."""
from __future__ import annotations

import json
import zipfile

import pytest

from backend.data.demo.shapes import make_scene
from backend.jobs.labelling import Source, collect_images, label_paths, resolve
from backend.jobs.predict import predict
from backend.data.safety import ImportProblem
from backend.data.workspace import open_workspace
from tests.conftest import run_cli
from tests.tuned import tuned_demo_run


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A data dir with a demo run tuned for one step: (workspace, run id)."""
    ws = open_workspace(tmp_path_factory.mktemp("tuned") / "data")
    yield ws, tuned_demo_run(ws)
    ws.store.close()


def _scenes(folder, n, start=500):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"scene{i}.png")
        make_scene(start + i).image.save(paths[-1])
    return paths


def test_label_json_is_predicts_boxes_per_class_in_pixels(tuned, tmp_path):
    ws, run_id = tuned
    folder_image, = _scenes(tmp_path / "photos", 1)
    zipped, = _scenes(tmp_path / "zipped", 1, start=600)
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:
        zf.write(zipped, "batch/one.png")
    proc = run_cli("label", "--run", str(run_id), "--classes", "red circle", "--json", str(tmp_path / "photos"),
                   str(tmp_path / "more.zip"), data_dir=ws.data_dir)
    doc = json.loads(proc.stdout)
    assert list(doc) == ["images"] and [im["path"] for im in doc["images"]] == [
        str(folder_image), f"{tmp_path / 'more.zip'}/batch/one.png"]
    for image, file in zip(doc["images"], (folder_image, zipped)):
        assert list(image) == ["path", "boxes"]
        want = predict(ws, file, run_id=run_id, category="red circle")
        assert [b[:4] for b in image["boxes"]] == want["boxes"]
        assert [b[4] for b in image["boxes"]] == ["red circle"] * len(want["boxes"])
        assert [b[5] for b in image["boxes"]] == [1.0 if c is None else c for c in want["confidences"]]
    assert "labelled 2/2" in proc.stderr
    boxes = [b for im in doc["images"] for b in im["boxes"]]
    assert boxes, "the run answers with boxes: the filter below has something to filter"
    above = max(b[5] for b in boxes)
    strict = label_paths(ws, [tmp_path / "photos", tmp_path / "more.zip"],
                         Source(run_id=run_id, classes=["red circle"], min_confidence=min(1.0, above + 1e-6)))
    assert all(im["boxes"] == [] for im in strict["images"]), "every box under the minimum confidence is left out"


def test_what_labelling_refuses_is_one_sentence(tuned, tmp_path):
    ws, run_id = tuned
    with pytest.raises(ValueError, match="name the classes to label"):
        resolve(ws, Source(model="demo"))
    with pytest.raises(ValueError, match="between 0 and 1"):
        resolve(ws, Source(run_id=run_id, min_confidence=1.5))
    from backend.data.catalog import get_dataset
    assert resolve(ws, Source(run_id=run_id)).classes == get_dataset(ws.store, "demo-shapes")["classes"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportProblem, match="no images were found"):
        collect_images([tmp_path / "empty"], tmp_path / "unpack")
    (tmp_path / "empty" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImportProblem, match="broken.jpg"):
        collect_images([tmp_path / "empty"], tmp_path / "unpack")
    bad = run_cli("label", "--model", "demo", str(tmp_path / "nowhere"), "--classes", "x", data_dir=ws.data_dir,
                  check=False)
    assert bad.returncode == 1 and bad.stderr.strip().endswith(f"error: {tmp_path / 'nowhere'} does not exist")
