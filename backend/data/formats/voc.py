"""Pascal VOC XML: one <annotation> file per image with <object><bndbox> pixel boxes."""
from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from backend.data.common import Format, Parsed, Problems, RawSample, Upload


def _voc_files(upload: Upload) -> list[Path]:
    return [p for p in upload.with_suffix(".xml")
            if "<annotation" in p.read_text(encoding="utf-8", errors="replace")[:4096]]


def detect(upload: Upload) -> bool:
    return bool(_voc_files(upload))


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples: list[RawSample] = []
    for path in _voc_files(upload):
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
        ref = (root.findtext("filename") or path.with_suffix(".jpg").name).strip()
        image = upload.find_image(ref, path.parent) or upload.find_image(path.stem + Path(ref).suffix, path.parent)
        if image is None:
            problems.add(f"{where} names image '{ref}', which is not in the upload")
            continue
        sample = RawSample(image, where=where)
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
    return Parsed("detection", classes, samples)


FORMAT = Format("voc", "detection", detect, parse)
