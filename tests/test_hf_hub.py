"""A Hub id the Hub cannot give: one line at once, naming HF_HUB_OFFLINE=1 and a local folder, exit 1
(the request was sound; the network failed), never transformers' silent retries. No network is used:
the Hub's answers are stood in for."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tests.harness import invoke, one_error

transformers = pytest.importorskip("transformers")
hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402

HUB_ID = "blocktrace-tests/no-such-model"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What reached transformers' loading: nothing, where blocktrace answered first."""
    calls: list[str] = []

    def from_pretrained(source: str, **kwargs: object) -> None:
        calls.append(source)
        raise OSError(f"{source} is not a local folder and is not a valid model identifier")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    return calls


def _hub_answers(monkeypatch: pytest.MonkeyPatch, answer: Exception) -> list[float]:
    timeouts: list[float] = []

    def get_hf_file_metadata(url: str, timeout: float, **kwargs: object) -> None:
        timeouts.append(timeout)
        raise answer

    monkeypatch.setattr(hub, "get_hf_file_metadata", get_hf_file_metadata)
    return timeouts


def _http_error(status: int) -> HfHubHTTPError:
    return HfHubHTTPError(f"{status}", response=SimpleNamespace(status_code=status, headers={}, request=None))  # type: ignore[arg-type]


def test_an_unreachable_hub_is_one_line_at_once_with_the_offline_hint(
    monkeypatch: pytest.MonkeyPatch, asked: list[str]
) -> None:
    timeouts = _hub_answers(monkeypatch, OSError("[Errno -2] Name or service not known"))
    started = time.monotonic()
    result = invoke(["diagram", "--hf", HUB_ID])
    one_error(
        result, 1, f"--hf {HUB_ID}: cannot reach the Hugging Face Hub", "HF_HUB_OFFLINE=1", "config.json"
    )
    assert time.monotonic() - started < 5
    assert timeouts == [5.0] and asked == []  # a short wait, and no retries of transformers'


def test_the_users_own_timeout_is_kept(monkeypatch: pytest.MonkeyPatch, asked: list[str]) -> None:
    timeouts = _hub_answers(monkeypatch, TimeoutError("timed out"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "30")
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 30)
    one_error(invoke(["diagram", "--hf", HUB_ID]), 1, "30 s timeout")
    assert timeouts == [30]


def test_offline_and_not_cached_says_so_without_asking(
    monkeypatch: pytest.MonkeyPatch, asked: list[str]
) -> None:
    timeouts = _hub_answers(monkeypatch, AssertionError("the Hub was asked in offline mode"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    one_error(
        invoke(["diagram", "--hf", HUB_ID]), 1, "HF_HUB_OFFLINE=1 is set", "not in the Hugging Face cache"
    )
    assert timeouts == [] and asked == []


def test_a_hub_that_answers_leaves_the_words_to_transformers(
    monkeypatch: pytest.MonkeyPatch, asked: list[str]
) -> None:
    _hub_answers(monkeypatch, _http_error(404))
    one_error(invoke(["diagram", "--hf", HUB_ID]), 2, "not a valid model identifier")
    assert asked == [HUB_ID]


def test_a_failing_hub_server_is_unreachable_too(monkeypatch: pytest.MonkeyPatch, asked: list[str]) -> None:
    _hub_answers(monkeypatch, _http_error(503))
    one_error(invoke(["diagram", "--hf", HUB_ID]), 1, "the Hugging Face Hub answered 503", "HF_HUB_OFFLINE=1")
    assert asked == []
