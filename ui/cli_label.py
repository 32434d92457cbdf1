"""`python app.py label`: boxes for unlabelled images from a tuned run or a base model, headless; with --json one
object `{"images": [{"path", "boxes": [[x1, y1, x2, y2, label, confidence], ...]}, ...]}` in original-image pixels
(scripts rely on it)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ui.cli_common import _open


def cmd_label(args: argparse.Namespace) -> int:
    from backend.jobs.labelling import Source, classes_from_text, label_paths
    source = Source(args.run, args.model, classes_from_text(args.classes), args.min_confidence, args.checkpoint)

    def progress(done: int, total: int, seconds: float) -> None:
        each = seconds / done
        print(f"labelled {done}/{total} ({each:.1f} s an image, about {each * (total - done):.0f} s left)",
              file=sys.stderr, flush=True)
    result = label_paths(_open(args), [Path(p) for p in args.paths], source, progress)
    if args.json:
        print(json.dumps(result))
        return 0
    for image in result["images"]:
        shown = ", ".join(f"{b[4]} {b[5]:.2f} [{', '.join(f'{v:g}' for v in b[:4])}]" for b in image["boxes"])
        print(f"{image['path']}: {len(image['boxes'])} box{'es' if len(image['boxes']) != 1 else ''}"
              + (f": {shown}" if shown else ""))
    return 0


def add_label_parser(sub) -> None:
    lb = sub.add_parser("label", help="label images with a tuned run (its best checkpoint) or a base model")
    src = lb.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=int)
    src.add_argument("--model", help="'demo', a hub id or a local folder (needs --classes)")
    lb.add_argument("paths", nargs="+", metavar="PATH", help="images, folders of images (all depths) or zips")
    lb.add_argument("--classes", metavar="A,B", help="the classes to find, comma-separated, or a JSON list for names "
                                                     'that hold a comma: \'["a, b", "c"]\' (default: the run\'s dataset\'s)')
    lb.add_argument("--min-confidence", type=float, default=0.0,
                    help="leave out boxes the model is less sure of (0..1, default 0: every box)")
    lb.add_argument("--checkpoint", choices=["best", "last"], default="best",
                    help="a run's adapter: best (the default) or last")
    lb.add_argument("--json", action="store_true",
                    help='one object {"images": [{"path", "boxes": [[x1, y1, x2, y2, label, confidence]]}]}, pixels')
    lb.set_defaults(func=cmd_label)
