"""Whether the Hugging Face Hub can give a Hub id's config.json, asked once before transformers asks:
where it cannot be reached, transformers retries for about 25 s in silence (huggingface_hub's backoff
of 1 + 2 + 4 + 8 + 8 s, no setting shortens it) and then names neither HF_HUB_OFFLINE nor a local
folder. One request with a short timeout says so in one line instead. Imports huggingface_hub only
inside its function (transformers brings it).
"""

from __future__ import annotations

import os

from blocktrace.errors import BlocktraceError
from blocktrace.progress import stage

_TIMEOUT_VARIABLE = "HF_HUB_ETAG_TIMEOUT"  # huggingface_hub's own setting of this wait, when the user set it
_TIMEOUT = 5.0  # seconds; huggingface_hub waits 10, then retries
_CONFIG = "config.json"
_HINT = "give a folder holding the model's config.json, or set HF_HUB_OFFLINE=1 to use only the models cached"


def check_hub(source: str) -> None:
    """Refuse a Hub id whose config.json is neither cached nor reachable, in one sentence: a failed run
    (exit 1), not a bad request."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    try:
        cached = try_to_load_from_cache(source, _CONFIG)
    except Exception:  # not a valid Hub id: transformers' words say why
        return
    if isinstance(cached, str):
        return  # transformers reads the cached copy where the Hub does not answer
    if constants.is_offline_mode():
        raise BlocktraceError(
            f"--hf {source}: HF_HUB_OFFLINE=1 is set and its config.json is not in the Hugging Face "
            "cache; give a folder holding the model's config.json, or unset HF_HUB_OFFLINE to download it"
        )
    timeout = constants.HF_HUB_ETAG_TIMEOUT if os.environ.get(_TIMEOUT_VARIABLE) else _TIMEOUT
    stage(f"asking the Hugging Face Hub for {source}")
    try:
        get_hf_file_metadata(hf_hub_url(source, _CONFIG), timeout=timeout)
    except (
        HfHubHTTPError
    ) as error:  # the Hub answered; where it refused (no such model), transformers says why
        status = getattr(error.response, "status_code", 0)
        if status < 500:
            return
        raise BlocktraceError(f"--hf {source}: the Hugging Face Hub answered {status}; {_HINT}") from error
    except Exception as error:  # no name resolution, no route, no answer within the timeout
        raise BlocktraceError(
            f"--hf {source}: cannot reach the Hugging Face Hub ({type(error).__name__}, {timeout:g} s "
            f"timeout, {_TIMEOUT_VARIABLE} sets it); {_HINT}"
        ) from error
