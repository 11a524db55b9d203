import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from blocktrace.errors import TraceError
from blocktrace.model import MLP, Block, build_module, example_inputs
from blocktrace.tracing.flops import FlopCounter
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.layout import layout
from blocktrace.views.diagram.render import render, to_text
from blocktrace.views.steps import StepTree
from tests.models import SMALL


def block_trace():
    return trace(build_module(SMALL, "cpu"), example_inputs(SMALL, "cpu"))


def test_every_module_call_is_recorded_with_its_path_and_class() -> None:
    t = block_trace()
    assert [(c.path, c.type) for c in t.calls] == [
        ("", "Block"),
        ("attn", "CausalSelfAttention"),
        ("attn.c_q", "Linear"),
        ("attn.c_k", "Linear"),
        ("attn.c_v", "Linear"),
        ("attn.c_proj", "Linear"),
        ("mlp", "MLP"),
        ("mlp.c_fc", "Linear"),
        ("mlp.c_proj", "Linear"),
    ]
    c_k = t.calls[3]
    assert c_k.inputs[0].shape == (2, 6, 32) and c_k.outputs[0].shape == (2, 6, 16)  # Hkv * D = 2 * 8
    assert c_k.weights[0].shape == (16, 32) and c_k.params == 16 * 32 and c_k.trainable == 16 * 32


def test_ops_modules_cannot_see_are_recorded_where_they_ran() -> None:
    t = block_trace()
    names = [o.name for o in t.ops]
    for expected in ("rms_norm", "scaled_dot_product_attention", "relu", "square", "cat", "transpose"):
        assert expected in names
    sdpa = next(o for o in t.ops if o.name == "scaled_dot_product_attention")
    assert t.calls[sdpa.call].path == "attn"
    assert sdpa.attrs["is_causal"] is True
    norms = [o for o in t.ops if o.name == "rms_norm"]
    assert [(t.calls[o.call].path, o.function) for o in norms] == [
        ("", "norm"),
        ("attn", "norm"),
        ("attn", "norm"),
        ("", "norm"),
    ]


def test_residual_adds_are_found_from_data_flow() -> None:
    t = block_trace()
    assert [[t.calls[c].path for c in r.calls] for r in t.residual_adds] == [["attn"], ["mlp"]]
    assert [[t.ops[o].name for o in r.branches[0].ops] for r in t.residual_adds] == [
        ["rms_norm"],
        ["rms_norm"],
    ]
    first, second = t.residual_adds
    assert first.stream.id == t.inputs[0].id
    assert second.stream.id == first.output.id
    # the adds inside apply_rotary_emb (x1 * cos + x2 * sin) join siblings, not a skip and its branch
    assert len([o for o in t.ops if o.name == "add"]) == 2 + 4


class Reversed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(4, 4)
        self.g = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.f(x) + x  # branch first
        y = x.clone()
        y += self.g(F.relu(y))  # in place
        return y + torch.ones_like(y)  # no module on either side: not residual


def test_operand_order_in_place_adds_and_plain_adds() -> None:
    t = trace(Reversed(), (torch.randn(2, 4),))
    assert [[t.calls[c].path for c in r.calls] for r in t.residual_adds] == [["f"], ["g"]]
    assert [t.ops[o].name for o in t.residual_adds[1].branches[0].ops] == ["relu"]


def test_a_module_called_twice_gives_two_calls() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    t = trace(model, (torch.randn(3, 4),))
    assert [c.path for c in t.calls] == ["", "0", "1", "0"]


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(SMALL)
        self.bad = nn.Linear(7, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bad(self.mlp(x))


def test_a_failing_forward_names_the_call_and_leaves_the_module_clean() -> None:
    model = Broken().train()
    with pytest.raises(TraceError, match=r"forward failed in bad \(Linear\)"):
        trace(model, (torch.randn(2, 6, 32),))
    assert all(m.training for m in model.modules())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_training_flag_and_hooks_are_restored() -> None:
    model = Block(SMALL).train()
    trace(model, example_inputs(SMALL, "cpu"))
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_tensors_come_back_untagged_and_a_second_trace_starts_afresh() -> None:
    model = Block(SMALL)
    args = example_inputs(SMALL, "cpu")
    first = trace(model, args)
    assert not any(hasattr(t, "_blocktrace_id") for t in (args[0], *args[1]))
    assert trace(model, args) == first


class LongBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.f(x)
        for _ in range(3000):  # deeper than Python's recursion limit
            y = y * 1.0
        return x + y


def test_a_branch_of_thousands_of_ops_is_still_found() -> None:
    t = trace(LongBranch(), (torch.randn(2, 4),))
    (r,) = t.residual_adds
    assert [t.calls[c].path for c in r.calls] == ["f"] and len(r.branches[0].ops) == 3000


class CastsAndDropout(nn.Module):
    """Ops that hand back their input: x.float() on a float, eval-mode dropout, contiguous()."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x + self.drop(self.f(x))
        y = x.contiguous()
        return y + self.f(y)


def test_an_op_that_hands_back_its_input_keeps_its_id() -> None:
    x = torch.randn(2, 4)
    t = trace(CastsAndDropout(), (x,))
    first, second = t.residual_adds
    assert first.stream.id == t.inputs[0].id  # x.float() did not make a new value
    assert second.stream.id == first.output.id  # nor did contiguous()
    assert [t.calls[c].path for c in first.calls] == ["f", "drop"]
    text = to_text(render(layout(StepTree(t))))
    assert text.count("├") == text.count("◄") == 2  # both highways drawn


def test_in_place_ops_make_a_new_value() -> None:
    t = trace(Reversed(), (torch.randn(2, 4),))
    first, in_place, _ = [o for o in t.ops if o.name == "add"]  # y += g(relu(y)): Tensor.add_ underneath
    assert in_place.line == first.line + 2
    assert in_place.outputs[0].id not in {i.id for i in in_place.inputs}


class SwapsData(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y.data = torch.zeros(3, 5)  # a new shape, by no op the tracer records
        return y + 1


def test_a_value_reshaped_by_no_recorded_op_is_read_at_its_shape() -> None:
    """Each tensor's TensorMeta is made once and shared by the ops that take it, unless its shape
    changed since."""
    mul, _, add = trace(SwapsData(), (torch.randn(2, 4),)).ops  # x * 2, torch.zeros, y + 1
    assert mul.outputs[0].shape == (2, 4)
    assert add.inputs[0].shape == (3, 5) and add.inputs[0].id == mul.outputs[0].id


def test_the_op_hook_sees_the_models_calls_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the module hooks read (each tensor's shape and dtype) is not handed to the op hook: it
    would cost every module call several trips through it."""

    class Seen(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.append(func)
            return func(*args, **(kwargs or {}))

    module, args = build_module(SMALL, "cpu"), example_inputs(SMALL, "cpu")
    seen: list = []
    with torch.no_grad(), Seen():
        module(*args)
    counted: list = []
    count = FlopCounter.count

    def counting(self: FlopCounter, func: object, *rest: object) -> object:
        counted.append(func)
        return count(self, func, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(FlopCounter, "count", counting)
    trace(module, args)
    assert counted == seen and len(seen) > 40


def test_ops_of_torch_layers_belong_to_them() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
    t = trace(layer, (torch.randn(2, 5, 8),))
    assert {o.function for o in t.ops} <= {"forward", "_sa_block", "_ff_block"}
    assert [[t.calls[c].path for c in r.calls] for r in t.residual_adds] == [
        ["norm1", "self_attn", "dropout1"],
        ["norm2", "linear1", "dropout", "linear2", "dropout2"],
    ]


class PassThrough(nn.Module):
    """x + mlp(a_scale(b_norm(x))): a pass-through module sorts before its producer by name."""

    def __init__(self) -> None:
        super().__init__()
        self.b_norm = nn.LayerNorm(4)
        self.a_scale = nn.Identity()
        self.mlp = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.a_scale(self.b_norm(x)))


def test_pass_through_calls_keep_the_order_they_ran_in() -> None:
    t = trace(PassThrough(), (torch.randn(2, 4),))
    (r,) = t.residual_adds
    assert [t.calls[c].path for c in r.calls] == ["b_norm", "a_scale", "mlp"]
    assert "x + mlp(a_scale(b_norm(x)))" in to_text(render(layout(StepTree(t))))


class Parallel(nn.Module):
    """The terms of a parallel residual in any order, as GPT-J and NeoX write them."""

    def __init__(self, order: str) -> None:
        super().__init__()
        self.order = order
        self.ln_1, self.ln_2 = nn.LayerNorm(4), nn.LayerNorm(4)
        self.attn, self.mlp = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.ln_1(x))
        m = self.mlp(self.ln_2(x))
        if self.order == "xam":
            return x + a + m
        if self.order == "amx":
            return a + m + x
        if self.order == "max":
            return m + (a + x)
        return m + x + a


@pytest.mark.parametrize("order", ["xam", "amx", "max", "mxa"])
def test_a_parallel_residual_is_one_add_of_two_branches(order: str) -> None:
    t = trace(Parallel(order), (torch.randn(2, 4),))
    (r,) = t.residual_adds
    assert r.stream.id == t.inputs[0].id and len(r.adds) == 2
    assert [[t.calls[c].path for c in b.calls] for b in r.branches] == [["ln_1", "attn"], ["ln_2", "mlp"]]
    assert r.output.id == t.outputs[0].id


class Sum(nn.Module):
    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.f, self.g = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.f(x) + self.g(y)  # g(y) does not come from x
        return s + x if self.skip else s


def test_adds_of_unrelated_terms_are_no_residual() -> None:
    assert trace(Sum(skip=False), (torch.randn(2, 4), torch.randn(2, 4))).residual_adds == ()


def test_a_term_from_a_side_input_is_a_side_term_of_the_residual() -> None:
    """f(x) + g(y) + x: x skips f, and g(y), computed from y alone, is added beside the branch."""
    t = trace(Sum(skip=True), (torch.randn(2, 4), torch.randn(2, 4)))
    (r,) = t.residual_adds
    assert r.stream.id == t.inputs[0].id and len(r.adds) == 2
    assert [[t.calls[c].path for c in b.calls] for b in r.branches] == [["f"]]
    assert [s.id for s in r.sides] == [t.calls[2].outputs[0].id] and t.calls[2].path == "g"


def test_a_term_computed_from_the_stream_by_ops_alone_is_no_side_term() -> None:
    """x + f(x) + x.mean(...): the mean comes from x, with no call between: not a side input's term."""

    class MeanTerm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.f(x) + x.mean(-1, keepdim=True)

    assert all(r.sides == () for r in trace(MeanTerm(), (torch.randn(2, 4),)).residual_adds)


def _helper(x: torch.Tensor) -> torch.Tensor:
    y = x * 2
    return y + 1


class CallsAHelperAroundAModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = _helper(x)
        b = self.lin(a)
        return _helper(b) + a


def test_ops_and_calls_say_where_they_were_made_and_in_which_call_of_their_function() -> None:
    import inspect

    t = trace(CallsAHelperAroundAModule(), (torch.randn(2, 4),))
    forward_line = inspect.getsourcelines(CallsAHelperAroundAModule.forward)[1]
    helper_line = inspect.getsourcelines(_helper)[1]
    lin = t.calls[1]
    assert lin.site is not None and t.calls[0].site is None  # the root is called by the tracer
    assert (lin.site.file, lin.site.function, lin.site.first_line) == (__file__, "forward", forward_line)
    assert lin.site.line == forward_line + 2
    helper_ops = [o for o in t.ops if o.function == "_helper"]
    assert {(o.file, o.first_line) for o in helper_ops} == {(__file__, helper_line)}
    assert [o.line - helper_line for o in helper_ops] == [1, 2, 1, 2]
    # one frame per call of a function: the two calls of _helper differ, forward's ops before and after
    # the module call share one, and so does the module call made from it
    first, second = helper_ops[0].frame, helper_ops[2].frame
    assert helper_ops[1].frame == first != second == helper_ops[3].frame
    final_add = t.ops[-1]
    assert final_add.function == "forward" and final_add.frame == lin.site.frame
    frames = {f.frame: f for f in t.frames}
    # callers are numbered before the helpers they call; a forward has no caller, a helper has its line
    assert frames[first].caller == lin.site.frame < first and frames[first].line == forward_line + 1
    assert frames[second].line == forward_line + 3
    assert frames[lin.site.frame].caller is None and frames[lin.site.frame].function == "forward"
    assert t.ops[0].frame > min(frames)


def test_a_trace_of_version_3_reads_back_equal() -> None:
    from blocktrace.tracing.trace import Trace

    t = trace(CallsAHelperAroundAModule(), (torch.randn(2, 4),))
    assert Trace.from_json(t.to_json()) == t


class _Keywords(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = torch.add(x, other=y, alpha=2.0)  # a tensor and a scalar by keyword
        return F.scaled_dot_product_attention(z, z, z, is_causal=True) * x


def test_an_op_keeps_its_scalar_keywords_and_reads_tensors_given_by_keyword() -> None:
    x, y = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    t = trace(_Keywords(), (x, y))
    add, attention, mul = t.ops
    assert [i.id for i in add.inputs] == [t.inputs[0].id, t.inputs[1].id]
    assert dict(add.attrs) == {"alpha": 2.0} and dict(attention.attrs) == {"is_causal": True}
    assert dict(mul.attrs) == {}
