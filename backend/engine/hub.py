"""Whether a model id can be had on this machine, told within seconds: a local folder, the local Hugging Face cache,
or the hub asked once with a short timeout (HF_HUB_OFFLINE respected). Otherwise one sentence, saying how to pass a
local folder instead; never minutes of retries against a hub that cannot be reached."""
from __future__ import annotations

import os
import threading
from pathlib import Path

HUB_TIMEOUT = 8.0
"""Seconds the hub gets to say whether a model id exists (a name lookup that hangs included)."""


def offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in (
        "1", "ON", "YES", "TRUE")


def cached(repo_id: str) -> bool:
    """Whether the model's config is in the local Hugging Face cache (downloaded before)."""
    from huggingface_hub import try_to_load_from_cache
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot even name is not cached
        return False


def _how(repo_id: str) -> str:
    return (f"download it where the hub can be reached (`hf download {repo_id} --local-dir DIR`), copy DIR here and "
            "give that folder instead of the id (`--model DIR`, or in the Model box)")


def _ask_hub(repo_id: str, timeout: float) -> tuple[str, str] | None:
    """None when the hub knows the model; else ("unreachable" | "missing", why). A thread bounds the whole call, the
    name lookup included (a socket timeout does not)."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    answer: list = []

    def ask():
        try:
            model_info(repo_id, timeout=timeout)
            answer.append(None)
        except RepositoryNotFoundError:
            answer.append(("missing", "no such model, or a private one"))
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            answer.append(("missing" if status in (401, 403, 404) else "unreachable", f"the hub answered {status}"))
        except Exception as e:  # noqa: BLE001 - connection refused, name lookup, timeout, TLS: all "cannot reach"
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            answer.append(("unreachable", line[:160]))

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return answer[0] if answer else ("unreachable", f"no answer within {timeout:.0f} s")


def ensure_available(source: str, model: str, timeout: float = HUB_TIMEOUT) -> None:
    """Return when `source` (what from_pretrained is given for the person's `model`) is a local folder, or a hub id the
    hub knows, or one in the local cache when the hub cannot be reached (this process then stays offline: no retries
    file by file). Otherwise ValueError, one sentence within about `timeout` seconds."""
    if Path(source).is_dir():
        return
    if offline():
        if cached(source):
            return
        raise ValueError(f"could not load '{model}': it is not in this machine's Hugging Face cache and HF_HUB_OFFLINE "
                         f"is set; {_how(source)}")
    problem = _ask_hub(source, timeout)
    if problem is None:
        return
    kind, why = problem
    if kind == "unreachable" and cached(source):
        from huggingface_hub import constants
        constants.HF_HUB_OFFLINE = True  # the cached copy, without asking the hub again for each file
        os.environ["HF_HUB_OFFLINE"] = "1"
        return
    from huggingface_hub import constants
    if kind == "unreachable":
        raise ValueError(f"could not load '{model}': the Hugging Face hub ({constants.ENDPOINT}) cannot be reached from "
                         f"this machine ({why}); {_how(source)}")
    raise ValueError(f"could not load '{model}': the Hugging Face hub has no model '{source}' ({why}); check the id "
                     f"(log in with `hf auth login` if it is private or gated), or {_how(source)}")
