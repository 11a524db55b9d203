"""The Python API: what it traces is what really ran, the live module comes back as it was, the
views print, display, save and export as the CLI writes them, and every failure is a
BlocktraceError. docs/python.md's examples run here too."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

import blocktrace
from blocktrace.output.formats import FORMATS, OFFERS
from tests.harness import TINY, invoke
from tests.hooks import hooked_calls, traced_calls

DOCS = Path(__file__).parent.parent / "docs"
SMALL = {"n_embd": 32, "n_head": 4, "seq": 6, "batch": 2, "n_layer": 1}


class Net(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.up = nn.Linear(width, 3 * width)
        self.drop = nn.Dropout(0.5)
        self.down = nn.Linear(3 * width, width)
        self.register_buffer("scale", torch.ones(width))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        h = self.down(self.drop(torch.relu(self.up(x)))) * self.scale
        return x + (h if gate is None else h * gate)


def test_import_blocktrace_imports_neither_torch_nor_rich() -> None:
    code = (
        "import sys, blocktrace; "
        "blocktrace.BlocktraceError; print('torch' in sys.modules, 'rich' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_a_live_module_is_traced_as_it_runs_and_comes_back_as_it_was() -> None:
    net = Net()
    net.train()
    net.down.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, gate = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    traced = blocktrace.trace(net, x, gate=gate)
    assert traced_calls(traced) == hooked_calls(Net().eval(), (x,), {"gate": gate})
    assert traced.outputs[0].shape == (3, 5, 8) and len(traced.residual_adds) == 1
    assert [m.training for m in (net, net.up, net.drop, net.down)] == [True, True, True, False]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_a_live_module_on_the_meta_device_is_left_where_it_is() -> None:
    net = Net()
    real = blocktrace.trace(net, torch.randn(2, 4, 8))
    meta = blocktrace.trace(net, torch.randn(2, 4, 8), device="meta")
    assert traced_calls(meta) == traced_calls(real) and meta.device == "meta" and real.device == "cpu"
    huge = blocktrace.trace(net, torch.empty(4096, 65536, 8, device="meta"), device="meta")
    assert huge.outputs[0].shape == (4096, 65536, 8)
    assert all(p.device.type == "cpu" for p in (*net.parameters(), *net.buffers()))
    assert net.up.weight.data_ptr() != 0


def test_a_function_of_sizes_names_its_dimensions() -> None:
    def block(B: int = 2, T: int = 6, C: int = 8):
        return Net(C), (torch.randn(B, T, C),)

    traced = blocktrace.trace(block, dims={"T": 4096})
    assert dict(traced.symbols) == {"B": 2, "T": 4096, "C": 8}
    assert traced.outputs[0].shape == (2, 4096, 8) and traced.outputs[0].symbols == ("B", "T", "C")
    assert "(B, T, C)" in str(blocktrace.diagram(traced))


@pytest.mark.parametrize(
    ("command", "view", "keywords", "flags"),
    [
        ("diagram", blocktrace.diagram, {"formulas": True}, ["--formulas"]),
        ("table", blocktrace.table, {"depth": 1, "shapes": "both"}, ["--depth", "1", "--shapes", "both"]),
        ("source", blocktrace.source, {"function": "MLP.*"}, ["--function", "MLP.*"]),
    ],
)
def test_a_view_prints_what_its_command_prints(command, view, keywords, flags) -> None:
    shown = view(**SMALL, preset="llama", **keywords)
    printed = invoke([command, *TINY, "--preset", "llama", *flags])
    assert printed.exit_code == 0, printed.stderr
    assert str(shown) == printed.stdout
    as_json = invoke([command, *TINY, "--preset", "llama", *flags, "--format", "json"]).stdout
    assert shown.to_json() == as_json and shown.to_dict() == json.loads(as_json)


def test_a_view_is_a_rich_renderable_fitted_to_the_console() -> None:
    shown = blocktrace.diagram(**SMALL)
    wide, narrow = io.StringIO(), io.StringIO()
    Console(file=wide, width=200, color_system=None).print(shown)
    Console(file=narrow, width=60, color_system=None).print(shown)
    assert wide.getvalue() == str(shown)
    assert "RMSNorm" in narrow.getvalue() and max(map(len, narrow.getvalue().splitlines())) <= 60 < max(
        map(len, wide.getvalue().splitlines())
    )


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_a_notebook_shows_the_picture() -> None:
    shown = blocktrace.diagram(**SMALL)
    parser = _Text()
    parser.feed(shown._repr_html_())
    parser.close()
    text = "".join(parser.text)
    assert "pre" in parser.tags and "CausalSelfAttention" in text and "(B, T, C)" in text
    assert shown._repr_svg_().lstrip().startswith("<svg") and "CausalSelfAttention" in shown._repr_svg_()


@pytest.mark.parametrize("command", sorted(OFFERS))
def test_save_writes_every_suffix_as_o_does(command: str, tmp_path: Path) -> None:
    shown = getattr(blocktrace, command)(**SMALL)
    for name in OFFERS[command]:
        suffix = FORMATS[name].suffixes[0]
        saved, written = tmp_path / f"saved{suffix}", tmp_path / f"cli{suffix}"
        shown.save(saved)
        assert invoke([command, *TINY, "-o", str(written)]).exit_code == 0
        assert saved.read_bytes() == written.read_bytes(), name
        if name == "json":
            assert json.loads(saved.read_text()) == shown.to_dict()
        elif name == "text":
            assert saved.read_text() == str(shown)
        elif name in ("svg", "html"):
            assert saved.read_text().lstrip().startswith("<svg" if name == "svg" else "<!DOCTYPE html>")
    assert len(list(tmp_path.glob("saved.*"))) == len(OFFERS[command])


def test_save_refuses_a_suffix_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(blocktrace.BlocktraceError, match=r"suffix '\.png'"):
        blocktrace.diagram(**SMALL).save(tmp_path / "x.png")
    with pytest.raises(blocktrace.BlocktraceError, match="does not write"):
        blocktrace.diagram(**SMALL).save(tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: blocktrace.diagram(n_embd=770, n_head=6), "must be divisible"),
        (lambda: blocktrace.trace(n_embed=768), "unknown keyword 'n_embed'"),
        (lambda: blocktrace.trace(hf="docs/examples/gpt2", n_embd=64), "--n-embd does not apply with --hf"),
        (lambda: blocktrace.trace(dim=["T=4"]), "--dim is for --module"),
        (lambda: blocktrace.trace(**SMALL, device="tpu"), "device must be one of"),
        (lambda: blocktrace.trace(Net(), torch.randn(2, 3), device="meta"), "forward failed"),
        (lambda: blocktrace.trace(Net(), torch.randn(2, 8), device="cpu"), "where its tensors are"),
        (lambda: blocktrace.trace("model.py"), "cannot trace a str"),
        (lambda: blocktrace.trace(Net(), torch.randn(2, 8), dims={"T": 2}), "not a live module"),
        (lambda: blocktrace.trace(None, torch.randn(2, 8)), "positional inputs are for"),
        (lambda: blocktrace.trace(blocktrace.trace(**SMALL), n_embd=64), "give it alone"),
        (lambda: blocktrace.trace(lambda C=8: Net(C), n_embd=8), "a function of sizes takes"),
        (lambda: blocktrace.trace(lambda C=8: Net(C), dims={"D": 2}), "not a parameter"),
        (lambda: blocktrace.diagram(**SMALL, shapes="wide"), "shapes must be one of"),
        (lambda: blocktrace.table(**SMALL, depth=-1), "depth must be 0 or more"),
        (lambda: blocktrace.source(**SMALL, function="nothing*"), "nothing*"),
    ],
)
def test_every_failure_is_a_blocktrace_error(call, words: str) -> None:
    with pytest.raises(blocktrace.BlocktraceError) as raised:
        call()
    assert words in str(raised.value) and "\n" not in str(raised.value)
    assert raised.value.exit_code in (1, 2)


def _examples() -> list[str]:
    text = (DOCS / "python.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```\n", text, re.DOTALL)


def test_every_example_in_docs_python_md_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = _examples()
    assert len(examples) >= 6
    monkeypatch.chdir(DOCS.parent)
    names: dict = {"__name__": "docs_python"}  # one page: a later example uses an earlier one's names
    for example in examples:
        example = example.replace('save("', f'save("{tmp_path}/')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(example, "docs/python.md", "exec"), names)
        for printed in re.findall(r"print\(.*\)  # (\(.*\))", example):
            assert printed in out.getvalue(), example
    assert (tmp_path / "llama.svg").read_text().lstrip().startswith("<svg")
    assert (tmp_path / "gpt2.csv").read_text().startswith("depth,")
