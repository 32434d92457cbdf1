"""Pascal VOC as its devkit lays it out: `Annotations/<stem>.xml` (one <annotation> per image: filename, size and an
<object> with a <bndbox> of pixel corners per box), `JPEGImages/`, and `ImageSets/Main/<split>.txt` listing each
split's image stems (`trainval.txt` their union, as VOC ships it); `labelmap.txt` names the classes in order, as
CVAT's Pascal VOC export does."""
from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element, ElementTree, SubElement, indent

from backend.data.common import ExportImage, ExportSet, Writer
from backend.data.writers.files import by_split, copy_image, number


def _text(parent: Element, tag: str, value) -> Element:
    el = SubElement(parent, tag)
    el.text = str(value)
    return el


def annotation(im: ExportImage, database: str) -> Element:
    root = Element("annotation")
    _text(root, "folder", "JPEGImages")
    _text(root, "filename", im.name)
    _text(SubElement(root, "source"), "database", database)
    size = SubElement(root, "size")
    for tag, value in (("width", im.width), ("height", im.height), ("depth", 3)):
        _text(size, tag, value)
    _text(root, "segmented", 0)
    for box in im.boxes:
        obj = SubElement(root, "object")
        for tag, value in (("name", box[4]), ("pose", "Unspecified"), ("truncated", 0), ("difficult", 0)):
            _text(obj, tag, value)
        bb = SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box[:4]):
            _text(bb, tag, number(value))
    indent(root)
    return root


def write(export_set: ExportSet, folder: Path) -> None:
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    splits = by_split(export_set)
    for split, images in splits.items():
        for im in images:
            copy_image(im, folder / "JPEGImages" / im.name)
            ElementTree(annotation(im, export_set.name)).write(
                folder / "Annotations" / f"{Path(im.name).stem}.xml", encoding="utf-8", xml_declaration=False)
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{Path(im.name).stem}\n" for im in images), encoding="utf-8")
    (folder / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{c}:::\n" for c in export_set.classes), encoding="utf-8")
    if "train" in splits and "val" in splits:
        (folder / "ImageSets" / "Main" / "trainval.txt").write_text(
            "".join(f"{Path(im.name).stem}\n" for s in ("train", "val") for im in splits[s]), encoding="utf-8")


WRITER = Writer("voc", "Pascal VOC: Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt", write)
