"""Pascal VOC XML: one <annotation> file per image with <object><bndbox> pixel boxes, as LabelImg (XML beside the
image, a Windows <path>), CVAT's Pascal VOC 1.1 (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt, labelmap.txt)
and Roboflow (train/ valid/ test/ folders) write it. ImageSets/Main/train.txt, val.txt, test.txt give the split;
labelmap.txt declares the classes (its 'background', used by no box, is dropped like any unused one)."""
from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from backend.data.common import Format, Parsed, Problems, RawSample, Upload
from backend.data.safety import IMAGE_SUFFIXES
from backend.data.split import split_named


def _voc_files(upload: Upload) -> list[Path]:
    return [p for p in upload.with_suffix(".xml")
            if "<annotation" in p.read_text(encoding="utf-8", errors="replace")[:4096]]


def detect(upload: Upload) -> bool:
    return bool(_voc_files(upload))


def _image_sets(upload: Upload) -> dict[str, str]:
    """Image stem -> split, from ImageSets/Main/{train,val,test}.txt (per-class lists 'cat_train.txt' and the union
    'trainval.txt' say nothing more)."""
    out: dict[str, str] = {}
    for p in upload.with_suffix(".txt"):
        if p.parent.name.lower() == "main" and p.parent.parent.name.lower() == "imagesets":
            split = split_named(p.stem)
            for line in upload.text_lines(p) if split else []:
                out.setdefault(_image_id(line.split()[0]), split)
    return out


def _image_id(entry: str) -> str:
    """An ImageSets line's image id: VOC lists ids ('2008_000123', or 'a.rf.1f2e' with dots of its own); some tools
    list file names, whose image extension goes."""
    name = Path(entry.replace("\\", "/")).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name


def _labelmap(upload: Upload) -> list[str]:
    """Class names CVAT's labelmap.txt declares ('name:r,g,b:parts:actions' lines, '#' comments)."""
    path = next((p for p in upload.files if p.name.lower() == "labelmap.txt"), None)
    if path is None:
        return []
    return [line.split(":")[0].strip() for line in upload.text_lines(path) if not line.startswith("#")]


def _find(upload: Upload, ref: str, xml: Path) -> Path | None:
    """The image an annotation names: its <filename> (a Windows <path> tail, an extension in another case, or none
    at all as old LabelImg wrote it), else the image beside the XML with the XML's name."""
    found = upload.find_image(ref, xml.parent) if ref else None
    if found is not None:
        return found
    stems = {Path(ref.replace("\\", "/")).stem.lower() if ref else xml.stem.lower(), xml.stem.lower()}
    beside = [p for p in upload.images if p.stem.lower() in stems]
    near = [p for p in beside if p.parent in (xml.parent, xml.parent.parent / "JPEGImages", xml.parent.parent / "images")]
    return (near or beside)[0] if len(near or beside) == 1 else None


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = _labelmap(upload)
    samples: list[RawSample] = []
    splits = _image_sets(upload)
    files = _voc_files(upload)
    for path in files:
        where = upload.rel(path)
        try:
            # defusedxml refuses entity declarations and external references before expanding anything
            # (billion laughs, a file or URL pulled in by an entity).
            root = fromstring(path.read_text(encoding="utf-8", errors="replace"))
        except DefusedXmlException:
            problems.add(f"{where} declares XML entities or external references, which are not accepted")
            continue
        except ParseError as e:
            problems.add(f"{where} is not valid XML ({e})")
            continue
        ref = (root.findtext("filename") or "").strip()
        image = _find(upload, ref, path)
        if image is None:
            problems.add(f"{where} names image '{ref or path.stem}', which is not in the upload")
            continue
        sample = RawSample(image, where=where, split=splits.get(image.stem) or splits.get(path.stem))
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            try:
                box = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr,arg-type]
            except (AttributeError, TypeError, ValueError):
                problems.add(f"{where}: object '{name}' has no complete <bndbox>")
                continue
            if not name:
                problems.add(f"{where}: an object has no <name>")
                continue
            if name not in classes:
                classes.append(name)
            sample.boxes.append([*box, name])
        samples.append(sample)
    read = files + [p for p in upload.with_suffix(".txt") if p.name.lower() == "labelmap.txt" or (
        p.parent.name.lower() == "main" and p.parent.parent.name.lower() == "imagesets")]
    return Parsed("detection", classes, samples, read=read)


FORMAT = Format("voc", "detection", detect, parse)
