"""The same walk through the named API endpoints with gradio_client: what the page does, scripted."""
from __future__ import annotations

import time

from gradio_client import Client, handle_file

from tests import builders
from tests.browser import running_app


def test_client_walk(tmp_path):
    builders.write_coco(tmp_path / "pets", builders.detection_samples(10, size=(160, 120)))
    archive = builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")
    with running_app(tmp_path / "data") as (url, _):
        client = Client(url, verbose=False)
        endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/import_dataset", "/create_run", "/run_status", "/cancel_run", "/predict", "/score"} <= endpoints

        status, *_ = client.predict([handle_file(str(archive))], "pets", "auto", 0.2, api_name="/import_dataset")
        assert "Imported" in status

        run_id = client.predict("pets", "demo", "CPU demo", 4, "", api_name="/create_run")["id"]
        deadline = time.time() + 400
        while (run := client.predict(run_id, api_name="/run_status"))["status"] not in ("completed", "failed"):
            assert time.time() < deadline, run
            time.sleep(2)
        assert run["status"] == "completed", run["error"]
        assert [p[0] for p in run["metrics"]["reward"]] == [1, 2, 3, 4]
        assert set(run["evaluation"]) == {"before", "after"}

        second = client.predict("demo-shapes", "demo", "CPU demo", 100, "", api_name="/create_run")["id"]
        assert client.predict(second, api_name="/cancel_run") in ("cancelled", "running")

        image = next((tmp_path / "data" / "datasets").glob("demo-shapes-*/images/shapes_002.png"))
        message, gallery, reasoning, pictures = client.predict(str(run_id), "demo", [handle_file(str(image))],
                                                               "blue square", "", True, api_name="/predict")
        assert message == "" and len(gallery) == 2 and "answer" in reasoning
        assert "Tuned: run" in pictures and "Base model" in pictures  # the page's headings

        result, rewards, _, note = client.predict(
            "detection", "pixels (no family)", None, "", "", '{"boxes": [[10, 10, 50, 50]]}',
            "<think>x</think><answer>[{'Position': [10, 10, 50, 50], 'Confidence': 1.0}]</answer>", api_name="/score")
        assert note == "" and result["total"] == 3.0
