"""Datasets named on the Hugging Face Hub (`hf:NAME[:CONFIG]`): loaded with `datasets` and saved as a folder the
Hugging Face reader (formats/hf.py) imports like an uploaded one."""
from __future__ import annotations

import re
from pathlib import Path

from backend.data.safety import ImportProblem

PREFIX = "hf:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def is_hub_ref(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'hf:user/name:config' -> ('user/name', 'config'); ImportProblem for anything else."""
    name, _, config = ref[len(PREFIX):].strip().partition(":")
    if not _NAME.fullmatch(name) or (config and not re.fullmatch(r"[A-Za-z0-9_.-]+", config)):
        raise ImportProblem(f"'{ref}' is not a Hugging Face dataset name: write hf:NAME or hf:OWNER/NAME[:CONFIG]")
    return name, config or None


def hub_folder(ref: str) -> str:
    """The folder (inside the upload) a Hub dataset is saved to."""
    name, config = parse_ref(ref)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name + (f"-{config}" if config else ""))


def download_hub_dataset(ref: str, dest: Path, cache: Path, max_rows: int | None = None) -> Path:
    """Load `ref` from the Hub (every split) and save it to `dest` with `save_to_disk`; ImportProblem with one
    sentence when the network, the name or the config fails."""
    name, config = parse_ref(ref)
    _reachable(name)
    import datasets
    try:
        loaded = datasets.load_dataset(name, config, cache_dir=str(cache))
    except Exception as e:  # noqa: BLE001 - network, unknown name, missing config, gated: one sentence each
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportProblem(f"the Hugging Face dataset '{name}' could not be loaded ({reason[:300]})") from None
    rows = sum(len(split) for split in loaded.values()) if isinstance(loaded, dict) else len(loaded)
    if max_rows is not None and rows > max_rows:
        raise ImportProblem(f"the Hugging Face dataset '{name}' holds {rows} rows; the limit is {max_rows} images")
    loaded.save_to_disk(str(dest))
    return dest


def _reachable(name: str, timeout: float = 10.0) -> None:
    """Ask the Hub about `name` once, without the download retries, so that no network or an unknown name is one
    sentence within seconds (datasets.load_dataset retries for half a minute first)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    try:
        HfApi().dataset_info(name, timeout=timeout)
    except GatedRepoError:
        raise ImportProblem(f"the Hugging Face dataset '{name}' is gated: accept its terms on the Hub and log in "
                            "(huggingface-cli login)") from None
    except RepositoryNotFoundError:
        raise ImportProblem(f"there is no Hugging Face dataset named '{name}' (or it is private)") from None
    except Exception as e:  # noqa: BLE001 - no network, a proxy, a timeout: one sentence
        raise ImportProblem(f"the Hugging Face dataset '{name}' could not be loaded: the Hub cannot be reached "
                            f"({type(e).__name__})") from None
