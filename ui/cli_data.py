"""Commands on datasets, the demo and the reward playground."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ui.cli_common import CliError, _open, _print


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from backend.data.catalog import get_dataset
    from backend.data.importer import import_dataset
    ws = _open(args)
    sources = [p if p.startswith("hf:") else Path(p) for p in args.paths]
    import_dataset(ws.store, ws.data_dir, sources, args.name, task=args.task, fmt=args.format,
                   val_fraction=args.val_fraction)
    info = get_dataset(ws.store, args.name, with_samples=False)
    _print(info, args.json, _describe(info))
    return 0


def _describe(info: dict) -> str:
    c = info["counts"]
    held = " and ".join(f"{c[k]} {k}" for k in ("val", "test") if c[k]) or "none"
    lines = [f"{info['name']}: {info['task']} ({info['format']}), {c['total']} images "
             f"({c['train']} train, held out: {held})", f"  {info['split_note']}"]
    for cls, n in info["per_class"].items():
        lines.append(f"  {cls}: " + ", ".join(f"{n[k]} {k}" for k in ("train", "val", "test") if n[k] or k != "test"))
    lines += [f"  note: {w}" for w in info["warnings"]]
    return "\n".join(lines)


def cmd_datasets_export(args: argparse.Namespace) -> int:
    from backend.data.exporter import dataset_export_set, write_export
    from backend.data.writers import WRITERS
    ws = _open(args)
    export_set = dataset_export_set(ws.store, ws.data_dir, args.name)
    out = write_export(export_set, args.format, Path(args.out))
    boxes = sum(len(im.boxes) for im in export_set.images)
    info = {"dataset": args.name, "format": args.format, "out": str(out), "images": len(export_set.images),
            "boxes": boxes}
    _print(info, args.json, f"exported {args.name} ({len(export_set.images)} images, {boxes} boxes) to {out}: "
                            f"{WRITERS[args.format].describe}")
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from backend.data.catalog import list_datasets
    rows = list_datasets(_open(args).store)
    text = "\n".join(f"{d['name']}\t{d['task']}\t{d['counts']['total']} images\t{len(d['classes'])} classes"
                     for d in rows) or "no datasets yet"
    _print(rows, args.json, text)
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from backend.data.catalog import get_dataset
    info = get_dataset(_open(args).store, args.name)
    _print(info, args.json, _describe(info))
    return 0


def cmd_datasets_delete(args: argparse.Namespace) -> int:
    from backend.data.catalog import delete_dataset
    ws = _open(args)
    delete_dataset(ws.store, ws.data_dir, args.name)
    print(f"deleted dataset '{args.name}'")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from backend.scoring.playground import parse_size, score
    try:
        truth = json.loads(args.truth)
    except ValueError as e:
        raise CliError(f"--truth is not valid JSON ({e})") from None
    result = score(args.task, truth, args.completion, args.family, parse_size(args.image_size),
                   parse_size(args.input_size))
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


def cmd_demo(args: argparse.Namespace) -> int:
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.models import DEMO_FOLDER, DEMO_MODEL
    ws = _open(args)
    if not (DEMO_FOLDER / "config.json").is_file():
        raise CliError(f"the demo model is missing from {DEMO_FOLDER}; rebuild it with "
                       "`python -m backend.engine.demo.builder`")
    dataset = ensure_demo_dataset(ws.store, ws.data_dir)
    _print({"model": DEMO_MODEL, "dataset": dataset}, args.json, f"model: {DEMO_MODEL}\ndataset: {dataset}")
    return 0
