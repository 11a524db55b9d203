"""What a model's own code prints, at import, build and forward, goes to stderr: stdout carries
blocktrace's output alone, and `--format json` still parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import invoke

CHATTY = """
import torch
from torch import nn

print("CHATTY import")


class Chatty(nn.Module):
    def __init__(self):
        super().__init__()
        print("CHATTY init")
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        print("CHATTY forward")
        return x + self.proj(x)
"""


def _chatty(tmp_path: Path) -> list[str]:
    path = tmp_path / "chatty.py"
    path.write_text(CHATTY, encoding="utf-8")
    return ["--module", f"{path}:Chatty", "--input", "2,5,8", "--format", "json"]


def test_a_models_prints_go_to_stderr_and_the_json_still_parses(tmp_path: Path) -> None:
    result = invoke(["diagram", *_chatty(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "CHATTY" not in result.stdout
    assert json.loads(result.stdout)
    for where in ("import", "init", "forward"):
        assert f"CHATTY {where}" in result.stderr


def test_the_installed_command_keeps_a_models_prints_off_stdout(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "blocktrace", "table", *_chatty(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "CHATTY" not in done.stdout
    assert json.loads(done.stdout)
    assert "CHATTY forward" in done.stderr
