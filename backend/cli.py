"""The command line: every power of the page, headless, with --json for scripts."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backend.config import data_dir as resolve_data_dir


class CliError(Exception):
    """A mistake the person can fix: printed as one sentence, exit status 1."""


def _print(obj: Any, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2, default=str) if as_json else text)


def _open(args: argparse.Namespace):
    from backend.workspace import open_workspace
    return open_workspace(resolve_data_dir(args.data_dir))


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from backend.datasets import get_dataset, import_dataset
    ws = _open(args)
    import_dataset(ws.store, ws.data_dir, [Path(p) for p in args.paths], args.name, task=args.task,
                   fmt=args.format, val_fraction=args.val_fraction)
    info = get_dataset(ws.store, args.name, with_samples=False)
    _print(info, args.json, _describe(info))
    return 0


def _describe(info: dict) -> str:
    c = info["counts"]
    lines = [f"{info['name']}: {info['task']} ({info['format']}), {c['total']} images "
             f"({c['train']} train, {c['val']} held out)"]
    for cls, n in info["per_class"].items():
        lines.append(f"  {cls}: {n['train']} train, {n['val']} val")
    lines += [f"  note: {w}" for w in info["warnings"]]
    return "\n".join(lines)


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from backend.datasets import list_datasets
    rows = list_datasets(_open(args).store)
    text = "\n".join(f"{d['name']}\t{d['task']}\t{d['counts']['total']} images\t{len(d['classes'])} classes"
                     for d in rows) or "no datasets yet"
    _print(rows, args.json, text)
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from backend.datasets import get_dataset
    info = get_dataset(_open(args).store, args.name)
    _print(info, args.json, _describe(info))
    return 0


def cmd_datasets_delete(args: argparse.Namespace) -> int:
    from backend.datasets import delete_dataset
    ws = _open(args)
    delete_dataset(ws.store, ws.data_dir, args.name)
    print(f"deleted dataset '{args.name}'")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from backend.playground import parse_size, score
    try:
        truth = json.loads(args.truth)
    except ValueError as e:
        raise CliError(f"--truth is not valid JSON ({e})") from None
    result = score(args.task, truth, args.completion, args.family, parse_size(args.image_size))
    lines = [f"{name}: {value:.4f}" for name, value in result["rewards"].items()]
    lines.append(f"total: {result['total']:.4f}")
    parsed = result["parsed"]
    lines.append(f"format ok: {parsed['format_ok']}")
    if "boxes" in parsed:
        lines.append(f"parsed boxes (pixels): {parsed['boxes']}")
    if "label" in parsed:
        lines.append(f"parsed label: {parsed['label']}")
    _print(result, args.json, "\n".join(lines))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ui.server import serve
    return serve(resolve_data_dir(args.data_dir), host=args.host, port=args.port, auth=args.auth, share=args.share)


def build_parser() -> argparse.ArgumentParser:
    from backend.coords import CONVENTIONS
    from backend.datasets.formats import FORMATS
    from backend.tasks import TASKS

    p = argparse.ArgumentParser(prog="app.py", description="Visual-RFT Studio: reinforcement fine-tuning of "
                                "vision-language models with verifiable rewards.")
    p.add_argument("--data-dir", help="where datasets, runs and the database live (default $VRFT_DATA_DIR or ./data)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help="USER:PASS to require a login (or $VRFT_AUTH)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    p.set_defaults(func=cmd_serve)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("serve", help="serve the web app (the default)").set_defaults(func=cmd_serve)

    ds = sub.add_parser("datasets", help="import, list, show and delete datasets")
    dsub = ds.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    imp = dsub.add_parser("import", help="import a zip or files as a dataset")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="a zip archive, or images and annotation files")
    imp.add_argument("--name", required=True)
    imp.add_argument("--task", choices=list(TASKS), help="default: the format's task")
    imp.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    imp.add_argument("--val-fraction", type=float, default=0.2, help="share held out for evaluation (default 0.2)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_datasets_import)
    lst = dsub.add_parser("list", help="list datasets")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_datasets_list)
    show = dsub.add_parser("show", help="a dataset's summary and samples")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_datasets_show)
    dele = dsub.add_parser("delete", help="delete a dataset and its images")
    dele.add_argument("name")
    dele.set_defaults(func=cmd_datasets_delete)

    sc = sub.add_parser("score", help="score one completion with the task's rewards (the reward playground)")
    sc.add_argument("--task", required=True, choices=list(TASKS))
    sc.add_argument("--truth", required=True, help='JSON: {"boxes": [[x1,y1,x2,y2],...]}, {"label": ...} or {"box": [...]}')
    sc.add_argument("--completion", required=True, help="the model's full text")
    sc.add_argument("--family", choices=list(CONVENTIONS),
                    help="the model family whose coordinates the completion uses (default: pixels of the image)")
    sc.add_argument("--image-size", help="WIDTHxHEIGHT of the original image, needed with --family")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_score)
    return p


def main(argv: list[str] | None = None) -> int:
    from backend.datasets.safety import ImportProblem
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ImportProblem, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
