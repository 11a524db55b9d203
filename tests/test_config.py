import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocktrace.errors import ConfigError
from blocktrace.models.block.config import BlockConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_embd": 770, "n_head": 6}, "n_embd (770) must be divisible by n_head (6)"),
        ({"n_head": 6, "n_kv_head": 4}, "n_head (6) must be divisible by n_kv_head (4)"),
        ({"n_embd": 30, "n_head": 2}, "head dim n_embd/n_head = 30/2 = 15 must be even"),
        ({"seq": 0}, "seq must be a positive integer, got 0"),
        ({"batch": -3}, "batch must be a positive integer, got -3"),
        ({"dtype": "int8"}, "dtype must be one of float32, bfloat16, float16"),
    ],
)
def test_invalid_configs_raise_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BlockConfig(**kwargs)


def test_n_kv_head_defaults_to_n_head() -> None:
    assert BlockConfig(n_embd=64, n_head=4).n_kv_head == 4


@given(
    b=st.integers(1, 64),
    t=st.integers(1, 4096),
    hkv=st.integers(1, 16),
    g=st.integers(1, 8),
    half_d=st.integers(1, 64),
    r=st.integers(1, 8),
)
def test_dims_round_trip(b: int, t: int, hkv: int, g: int, half_d: int, r: int) -> None:
    dims = {"B": b, "T": t, "Hkv": hkv, "G": g, "D": 2 * half_d, "r": r}
    config = BlockConfig().with_dims(dims)
    assert config.dims() == dims
    assert config.n_embd == hkv * g * 2 * half_d
