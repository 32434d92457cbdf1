"""Refusals in one sentence, found in a red-team pass (issue 29): a Hugging Face dataset with no boxes at all, a run
on a dataset with no classes, names that end in a newline, run ids past what the database holds, class lists with
commas in a class name, a corrupt zip given to the Label tab, a model path that names a system folder."""
from __future__ import annotations

import datasets
import pytest

from backend.data import hub
from backend.data.catalog import list_datasets
from backend.data.importer import import_dataset
from backend.data.safety import ImportProblem
from tests import builders
from tests.test_hf_datasets import _objects_features, _png


# ------------------------------------------------------------------ a Hugging Face dataset whose objects are all empty

@pytest.mark.parametrize("category", ["classlabel", "string"])
def test_a_hugging_face_dataset_without_a_single_box_is_refused(ws, tmp_path, category):
    """Every row's `objects` empty: refused at import in one sentence (it imported as a detection dataset with 0
    classes whose run 'completed' at step 0 with 0 prompts); nothing is stored."""
    feature = datasets.Value("string") if category == "string" else None
    rows = [{"image_id": n, "image": {"bytes": _png(n), "path": f"{n:04d}.png"}, "width": 64, "height": 48,
             "objects": {"id": [], "area": [], "bbox": [], "category": []}} for n in range(4)]
    datasets.Dataset.from_list(rows, features=_objects_features(feature)).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(ImportProblem) as refused:
        import_dataset(ws.store, ws.data_dir, [tmp_path / "empty"], "empty")
    assert str(refused.value) == ("every row's 'objects' is empty: the Hugging Face dataset has no boxes, so there is "
                                  "no class to train on")
    assert list_datasets(ws.store) == []


def test_a_run_on_a_dataset_with_no_classes_is_refused(ws):
    """A dataset stored with no classes (imported before imports refused it) cannot be trained on: refused when the
    run is created, in one sentence, and no run is written."""
    from backend.engine.settings import preset
    from backend.jobs.runs import create_run, list_runs
    from storage.models import Dataset, Sample
    with ws.store.write() as s:
        ds = Dataset(name="hollow", task="detection", source_format="huggingface", classes=[], folder="datasets/x",
                     val_fraction=0.2)
        ds.samples = [Sample(file=f"{i}.png", split="train", width=64, height=48, annotation={"boxes": []})
                      for i in range(3)]
        s.add(ds)
    with pytest.raises(ValueError) as refused:
        create_run(ws.store, "hollow", "demo", preset("CPU demo", max_steps=1))
    assert str(refused.value) == ("dataset 'hollow' has no classes (no image holds a box or a label): there is nothing "
                                  "to train on")
    assert list_runs(ws.store) == []


# ------------------------------------------------------------------ names ending in a newline

@pytest.mark.parametrize("name", ["pets\n", "pets\r\n", "pe\nts"])
def test_a_dataset_name_with_a_newline_is_refused(ws, tmp_path, name):
    """`$` matches before a final newline: 'pets\\n' passed the name check and was then never found by name."""
    builders.write_coco(tmp_path / "pets", builders.detection_samples(6))
    archive = builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")
    with pytest.raises(ImportProblem, match=r"^'pe.*' is not a valid dataset name") as refused:
        import_dataset(ws.store, ws.data_dir, [archive], name)
    assert "\n" not in str(refused.value), "the sentence shows the newline, it does not break the line"
    assert list_datasets(ws.store) == []


@pytest.mark.parametrize("ref", ["hf:owner/name\n:config", "hf:owner/name:conf\nig", "hf:na\nme"])
def test_a_hub_name_with_a_newline_is_refused(ref):
    with pytest.raises(ImportProblem, match="is not a Hugging Face dataset name"):
        hub.parse_ref(ref)


# ------------------------------------------------------------------ class names that hold a comma

@pytest.mark.parametrize("text, expected", [('["cat, striped", "dog"]', ["cat, striped", "dog"]),
                                            (' [ "a", "a", " b " ] ', ["a", "b"]), ("cat, dog", ["cat", "dog"])])
def test_a_class_list_may_be_a_json_list(text, expected):
    from backend.scoring.subsets import parse_class_list
    assert parse_class_list(text) == expected


@pytest.mark.parametrize("text", ['["cat, striped"', '["a", 3]', "[a, b]"])
def test_a_broken_json_class_list_is_one_sentence(text):
    from backend.scoring.subsets import parse_class_list
    with pytest.raises(ValueError, match=r"^the classes .* (start like a JSON list|must be a JSON list of names)"):
        parse_class_list(text)


def _striped(tmp_path):
    samples = builders.detection_samples(12)
    for s in samples:
        s["boxes"] = [[*b[:4], "cat, striped" if b[4] == "cat" else b[4]] for b in s["boxes"]]
    builders.write_coco(tmp_path / "striped", samples, classes=("cat, striped", "dog", "bird"))
    return builders.zip_dir(tmp_path / "striped", tmp_path / "striped.zip")


def test_the_command_line_names_a_novel_class_that_holds_a_comma(tmp_path):
    """`--novel-classes '["cat, striped"]'` holds out the class 'cat, striped' (the comma form cannot name it); a
    broken list is one line from argparse, no traceback."""
    import json

    from tests.conftest import run_cli
    data = tmp_path / "data"
    run_cli("datasets", "import", str(_striped(tmp_path)), "--name", "striped", data_dir=data)
    created = run_cli("runs", "create", "--dataset", "striped", "--model", "demo", "--max-steps", "1",
                      "--novel-classes", '["cat, striped"]', "--ignore-memory-estimate", "--json", data_dir=data)
    run_id = json.loads(created.stdout)["id"]
    shown = json.loads(run_cli("runs", "show", str(run_id), "--json", data_dir=data).stdout)
    assert shown["settings"]["novel_classes"] == ["cat, striped"]
    broken = run_cli("runs", "create", "--dataset", "striped", "--model", "demo", "--novel-classes", '["cat',
                     data_dir=data, check=False)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "start like a JSON list but are not one" in broken.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------ run ids past what the database holds

HUGE = str(10**30)


def test_a_huge_run_id_is_there_is_no_run_on_the_command_line(tmp_path):
    """An id SQLite cannot hold raised OverflowError (a traceback; `{"error": null}` through the API)."""
    from tests.conftest import run_cli
    data = tmp_path / "data"
    image = tmp_path / "a.png"
    builders.make_image(image, 32, 32)
    for args in (("runs", "show", HUGE), ("runs", "cancel", HUGE), ("runs", "logs", HUGE),
                 ("label", "--run", HUGE, str(image)), ("eval", "--run", HUGE)):
        proc = run_cli(*args, data_dir=data, check=False)
        assert (proc.returncode, proc.stderr) == (1, f"error: there is no run {HUGE}\n"), args


def test_the_api_answers_a_huge_run_id_and_a_model_path_in_sentences(tmp_path):
    """Through the named endpoints: a huge run id is 'there is no run N' (it was {"error": null}); a model path that
    does not exist and a system folder without config.json get the same sentence (it told them apart)."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.browser import running_app
    with running_app(tmp_path / "data") as (url, _):
        client = Client(url, verbose=False)
        for endpoint in ("/run_status", "/cancel_run"):
            with pytest.raises(AppError, match=rf"^there is no run {HUGE}$"):
                client.predict(int(HUGE), api_name=endpoint)
        said = {}
        for model in ("/etc", "/no-such-folder-here"):
            with pytest.raises(AppError) as refused:
                client.predict("demo-shapes", model, "CPU demo", 1, "", api_name="/create_run")
            said[model] = str(refused.value).replace(model, "PATH")
        assert said["/etc"] == said["/no-such-folder-here"], said
        assert said["/etc"].startswith("could not load 'PATH': it is neither a model folder"), said


# ------------------------------------------------------------------ a model path: one answer, whatever exists there

def test_a_model_path_that_is_no_model_folder_gets_one_sentence_whether_it_exists_or_not(tmp_path):
    from backend.engine.models import resolve_model
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    said = {}
    for name in ("empty", "file", "missing", "missing/qwen2-vl"):
        with pytest.raises(ValueError) as refused:
            resolve_model(str(tmp_path / name))
        said[name] = str(refused.value).replace(str(tmp_path / name), "PATH")
    assert len(set(said.values())) == 1, said
    assert said["empty"].startswith("could not load 'PATH': it is neither a model folder (one with a config.json) "
                                    "nor a known model id")


# ------------------------------------------------------------------ a corrupt zip for the Label tab

def test_a_corrupt_zip_to_label_is_not_a_valid_zip_archive(tmp_path):
    """It was "'.zip' images are not accepted"."""
    from backend.jobs.labelling import collect_images
    broken = tmp_path / "photos.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ImportProblem) as refused:
        collect_images([broken], tmp_path / "unpack")
    assert str(refused.value).endswith("photos.zip is not a valid zip archive")


# ------------------------------------------------------------------ errors name the sender's file, not the server's copy

def test_errors_about_an_upload_name_the_file_not_the_servers_path(tmp_path):
    """An upload sits in Gradio's cache (shared by every visitor) or the data dir's staging: an error says the
    sender's file name and the reason, never that path (an OSError's text carries it)."""
    from backend.data.config import ImportLimits
    from backend.data.safety import ByteBudget, extract_zip, probe_image
    cache = tmp_path / "gradio" / "0123456789abcdef"
    cache.mkdir(parents=True)
    limits = ImportLimits.from_env()
    for refuse in (lambda: probe_image(cache / "photo.png", limits, "photo.png"),
                   lambda: extract_zip(cache / "photos.zip", tmp_path / "out", limits, ByteBudget(limits),
                                       "photos.zip")):
        with pytest.raises(ImportProblem) as refused:
            refuse()
        assert str(tmp_path) not in str(refused.value), str(refused.value)
        assert str(refused.value).startswith("photo"), str(refused.value)
