"""Task templates: prompts, ground truth rows and default rewards per task, in one registry.

A dataset sample becomes one or more examples (prompt text + `solution` for the rewards).
Prompts follow the Visual-RFT reference wording; coordinates are written in the model
family's convention (backend/scoring/coords.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from backend.scoring.coords import model_frame, to_model_int
from backend.scoring.families import convention

Size = tuple[int, int]

FORMAT_INSTRUCTION = ("Output the thinking process in <think> </think> and the final answer in "
                      "<answer> </answer> tags.")


@dataclass
class TaskSettings:
    """Settings that shape the prompts (the same object for UI, CLI and worker)."""
    negative_share: float = 0.25
    """Detection: chance per image of one extra prompt for a category absent from it."""
    classes_in_prompt: bool = True
    """Classification: list the candidate classes in the prompt."""
    object_kind: str = "object"
    """Classification: what the image contains ('plant', 'dog', 'aircraft', ...)."""


@dataclass(frozen=True)
class Example:
    prompt: str
    solution: dict
    category: str | None = None


def _coordinate_phrase(family: str | None, image_size: Size, input_size: Size | None) -> str:
    if family is None:
        return f"integer pixel coordinates of the {image_size[0]}x{image_size[1]} image"
    conv = convention(family)
    if conv.kind == "normalized":
        return f"integers between 0 and {conv.scale}"
    w, h = model_frame(family, image_size, input_size)
    return f"integer pixel coordinates of the {int(w)}x{int(h)} image"


def _ref_box(family: str | None) -> bool:
    return family is not None and convention(family).answer == "ref_box"


def detection_prompt(category: str, family: str | None, image_size: Size, input_size: Size | None = None) -> str:
    """`input_size`: what the model's processor resizes the image to (backend/engine/model_input.py)."""
    if _ref_box(family):
        return (f"Detect all objects belonging to the category '{category}' in the image, and provide their "
                f"bounding boxes ({_coordinate_phrase(family, image_size, input_size)}). If no object belonging to "
                f"the category '{category}' is in the image, return 'No Objects'. {FORMAT_INSTRUCTION} The output "
                f"answer format should be as follows: <think> ... </think> <answer><ref>{category}</ref>"
                "<box>[[x1, y1, x2, y2], ...]</box></answer> Please strictly follow the format.")
    return (f"Detect all objects belonging to the category '{category}' in the image, and provide the "
            f"bounding boxes ({_coordinate_phrase(family, image_size, input_size)}) and confidence (between 0 and 1, "
            f"with two decimal places). If no object belonging to the category '{category}' is in the image, "
            f"return 'No Objects'. {FORMAT_INSTRUCTION} The output answer format should be as follows: "
            "<think> ... </think> <answer>[{'Position': [x1, y1, x2, y2], 'Confidence': number}, ...]</answer> "
            "Please strictly follow the format.")


def classification_prompt(classes: list[str] | None, object_kind: str) -> str:
    choices = f" Answer with one of: {', '.join(classes)}." if classes else ""
    article = "an" if object_kind[:1].lower() in "aeiou" else "a"
    return (f"This is an image containing {article} {object_kind}. Please identify the class of the {object_kind} "
            f"based on the image.{choices} {FORMAT_INSTRUCTION} The output answer format should be as follows: "
            "<think> ... </think> <answer>class name</answer> Please strictly follow the format.")


def grounding_prompt(expression: str, family: str | None, image_size: Size, input_size: Size | None = None) -> str:
    if _ref_box(family):
        return (f"Please provide the bounding box of the region this sentence describes: '{expression}'. "
                f"Give the box ({_coordinate_phrase(family, image_size, input_size)}). {FORMAT_INSTRUCTION} The "
                "output answer format should be as follows: <think> ... </think> "
                "<answer><box>[[x1, y1, x2, y2]]</box></answer> Please strictly follow the format.")
    return (f"Please provide the bounding box of the region this sentence describes: '{expression}'. "
            f"Give the box as [x1, y1, x2, y2] ({_coordinate_phrase(family, image_size, input_size)}). "
            f"{FORMAT_INSTRUCTION} The output answer format should be as follows: "
            "<think> ... </think> <answer>[x1, y1, x2, y2]</answer> Please strictly follow the format.")


def frame_solution(image_size: Size, family: str | None, input_size: Size | None) -> dict:
    """The frame part of a `solution`: how the rewards read the model's coordinates back to pixels."""
    sol: dict = {"image_size": list(image_size)}
    if family is not None:
        sol["family"] = family
    if input_size is not None:
        sol["input_size"] = list(input_size)
    return sol


def detection_examples(sample: dict, classes: list[str], family: str | None, settings: TaskSettings,
                       rng: random.Random, synonyms: dict[str, list[str]] | None = None,
                       input_size: Size | None = None) -> list[Example]:
    size = (sample["width"], sample["height"])
    frame = frame_solution(size, family, input_size)
    by_class: dict[str, list] = {}
    for x1, y1, x2, y2, label in sample.get("boxes", []):
        by_class.setdefault(label, []).append([x1, y1, x2, y2])
    out = [Example(detection_prompt(c, family, size, input_size), {**frame, "boxes": boxes}, c)
           for c, boxes in sorted(by_class.items())]
    absent = [c for c in classes if c not in by_class]
    if absent and (not out or rng.random() < settings.negative_share):
        c = rng.choice(absent)
        out.append(Example(detection_prompt(c, family, size, input_size), {**frame, "boxes": []}, c))
    return out


def classification_examples(sample: dict, classes: list[str], family: str | None, settings: TaskSettings,
                            rng: random.Random, synonyms: dict[str, list[str]] | None = None,
                            input_size: Size | None = None) -> list[Example]:
    label = sample["label"]
    prompt = classification_prompt(classes if settings.classes_in_prompt else None, settings.object_kind)
    return [Example(prompt, {"label": label, "synonyms": list((synonyms or {}).get(label, []))}, label)]


def grounding_examples(sample: dict, classes: list[str], family: str | None, settings: TaskSettings,
                       rng: random.Random, synonyms: dict[str, list[str]] | None = None,
                       input_size: Size | None = None) -> list[Example]:
    size = (sample["width"], sample["height"])
    return [Example(grounding_prompt(sample["expression"], family, size, input_size),
                    {**frame_solution(size, family, input_size), "box": sample["box"]})]


def target_completion(task: str, solution: dict, category: str | None = None) -> str:
    """The answer an SFT run is taught for an example: the truth in the <think>/<answer> format the prompt
    asks for, boxes in the model family's frame (the `solution`'s family and input size), as the rewards
    read them back. The reasoning only states what is there: SFT has no reasoning to imitate."""
    if task == "classification":
        return f"<think>The image shows a {solution['label']}.</think><answer>{solution['label']}</answer>"
    size, family, input_size = solution["image_size"], solution.get("family"), solution.get("input_size")
    if task == "grounding":
        box = to_model_int(solution["box"], family, size, input_size)
        answer = f"<box>[{box}]</box>" if _ref_box(family) else str(box)
        return f"<think>The described region is at {box}.</think><answer>{answer}</answer>"
    boxes = [to_model_int(b, family, size, input_size) for b in solution["boxes"]]
    if not boxes:
        return f"<think>There is no {category} in the image.</think><answer>No Objects</answer>"
    if _ref_box(family):
        noun = f"one {category}" if len(boxes) == 1 else f"{len(boxes)} objects of the category '{category}'"
        return f"<think>The image shows {noun}.</think><answer><ref>{category}</ref><box>{boxes}</box></answer>"
    items = ", ".join(f"{{'Position': {b}, 'Confidence': 1.0}}" for b in boxes)
    noun = f"one {category}" if len(boxes) == 1 else f"{len(boxes)} objects of the category '{category}'"
    return f"<think>The image shows {noun}.</think><answer>[{items}]</answer>"


@dataclass(frozen=True)
class Task:
    name: str
    build_examples: Callable[..., list[Example]]
    default_rewards: dict[str, float] = field(default_factory=dict)
    """Reward name -> weight, the defaults a new run starts from."""


TASKS: dict[str, Task] = {
    "detection": Task("detection", detection_examples,
                      {"detection_iou": 1.0, "detection_confidence": 1.0, "format": 1.0}),
    "classification": Task("classification", classification_examples,
                           {"classification_accuracy": 1.0, "format": 1.0}),
    "grounding": Task("grounding", grounding_examples, {"grounding_giou": 1.0, "format": 1.0}),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(TASKS)})") from None
