"""The profiles of the property tests that run the CLI: a bounded, seeded one in the normal suite,
and a longer, randomised one where BLOCKTRACE_FUZZ_EXAMPLES is set (`.ci/run` sets it)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from hypothesis import HealthCheck, settings

LONG = int(os.environ.get("BLOCKTRACE_FUZZ_EXAMPLES", "0"))


def profile(normal: int, share: float = 1.0) -> settings:
    """`normal` examples, the same every run; under the long profile, `share` of its examples, drawn
    afresh each run."""
    return settings(
        max_examples=max(1, round(LONG * share)) if LONG else normal,
        derandomize=not LONG,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


_DEVICES = {"null": (1, 3), "full": (1, 7)}  # Linux's major and minor numbers


def device(name: str, folder: Path) -> str:
    """A character device like /dev/NAME (null, full) for -o: made in `folder` where this process
    may make one (root), so that a broken writer replaces that copy, never the system's /dev/NAME."""
    if os.geteuid() == 0:
        node = folder / f"dev-{name}"
        with contextlib.suppress(FileExistsError):
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(*_DEVICES[name]))
        return str(node)
    return f"/dev/{name}"
