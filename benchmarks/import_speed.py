"""Import speed: builds COCO zips of 100 and 1,000 annotated 640x480 JPEGs and times `import_dataset`.

Run by hand: `.venv/bin/python benchmarks/import_speed.py`. Goal on 2 cores: < 2 s and < 15 s.
Prints one line per size and a final JSON object.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.data.importer import import_dataset  # noqa: E402
from backend.data.workspace import open_workspace  # noqa: E402
from tests import builders  # noqa: E402


def bench(n: int, tmp: Path) -> float:
    samples = builders.detection_samples(n, size=(640, 480))
    root = tmp / f"coco{n}"
    builders.write_coco(root, samples)
    archive = builders.zip_dir(root, tmp / f"coco{n}.zip")
    ws = open_workspace(tmp / f"data{n}")
    start = time.perf_counter()
    import_dataset(ws.store, ws.data_dir, [archive], f"bench-{n}")
    seconds = time.perf_counter() - start
    ws.store.close()
    return seconds


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (100, 1000):
            results[n] = bench(n, Path(tmp))
            print(f"import of {n} annotated images: {results[n]:.2f} s", flush=True)
    print(json.dumps({f"images_{n}_seconds": round(s, 3) for n, s in results.items()}))


if __name__ == "__main__":
    main()
