"""Datasets: import from the formats people export, safely and all-or-nothing; list, show, delete."""
from backend.datasets.catalog import delete_dataset, get_dataset, image_path, list_datasets  # noqa: F401
from backend.datasets.importer import import_dataset  # noqa: F401
from backend.datasets.safety import ImportProblem  # noqa: F401
