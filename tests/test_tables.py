"""The tables a change is one row of (families, sources, dtypes, devices), and the copies they
replaced: what the CLI derives from them, and the memory guard's count of each tensor's bytes."""

import json

import pytest

from blocktrace.api.request import block_config
from blocktrace.cli.options import PresetOpt
from blocktrace.errors import ConfigError, error_line
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.families import FAMILIES, Activation, Norm, Preset, Qkv, Residual
from blocktrace.models.request import SOURCES
from blocktrace.models.spec import Device, Dtype
from blocktrace.views.stats import human_bytes
from tests.harness import TINY, invoke, one_error


def test_every_preset_has_its_family_and_its_help_line() -> None:
    assert set(FAMILIES) == set(Preset)
    help_text = PresetOpt.__metadata__[0].help
    for family in FAMILIES.values():
        assert family.summary in help_text


@pytest.mark.parametrize("preset", list(Preset))
def test_a_preset_is_its_row_and_the_flags_override_it(preset: Preset) -> None:
    family = FAMILIES[preset]
    config = BlockConfig.from_preset(preset.value, n_embd=64, n_head=4)
    assert {k: getattr(config, k) for k in family.choices()} == family.choices()
    flipped = block_config(preset.value, n_embd=64, n_head=4, bias=not family.bias)
    assert flipped.bias is not family.bias and flipped.norm is family.norm


def test_choices_are_enum_members_and_the_trace_config_plain_strings() -> None:
    config = BlockConfig(norm="layernorm", activation="gelu", residual="post", qkv="fused", dtype="float16")
    assert config.norm is Norm.layernorm and config.activation is Activation.gelu
    assert config.residual is Residual.post and config.qkv is Qkv.fused and config.dtype is Dtype.float16
    data = config.to_dict()
    assert all(type(v) in (int, bool, str, float) for v in data.values())  # rope_theta a float
    assert json.dumps(data).count('"layernorm"') == 1


def test_unset_sizes_are_none_and_the_trace_keeps_writing_them_as_before() -> None:
    config = BlockConfig(n_embd=64, n_head=4)
    assert config.n_kv_head == 4 and config.mlp_hidden is None and config.hidden == 4 * 64
    assert config.to_dict()["mlp_hidden"] == 0 and config.to_dict()["n_kv_head"] == 4
    with pytest.raises(ConfigError, match="mlp_hidden must be a positive integer, got 0"):
        BlockConfig(mlp_hidden=0)


def test_a_bad_choice_names_every_member() -> None:
    with pytest.raises(ConfigError, match="norm must be one of rmsnorm, layernorm, got 'batchnorm'"):
        BlockConfig(norm="batchnorm")


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_source_refuses_the_block_flags_it_does_not_read(name: str) -> None:
    source = SOURCES[name]
    assert "n_embd" not in source.reads
    one_error(
        invoke(["diagram", f"--{name}", "x", "--n-embd", "64"]), 2, f"--n-embd does not apply with --{name}"
    )
    other = next(n for n in SOURCES if n != name)
    for flag in source.flags:  # without its source, a source's own flag is refused
        one_error(invoke(["diagram", f"--{other}", "x", flag.option, "1"]), 2, f"is for --{name}")


def test_every_source_has_its_option_on_every_command() -> None:
    for command in ("diagram", "table", "source"):
        text = invoke([command, "--help"]).stdout
        for source in SOURCES.values():
            for flag in (source.option, *source.flags):
                assert flag.option in text


def test_error_line_names_the_type_only_where_asked() -> None:
    error = ValueError("the first line\nthe second")
    assert error_line(error) == "the first line"
    assert error_line(error, named=True) == "ValueError: the first line"
    assert error_line(ValueError()) == error_line(ValueError(), named=True) == "ValueError"


def test_dtype_bytes_are_torch_s() -> None:
    import torch

    assert {d: d.itemsize for d in Dtype} == {d: getattr(torch, d.value).itemsize for d in Dtype}


def test_the_device_flag_is_the_one_device_type() -> None:
    result = invoke(["diagram", *TINY, "--device", "gpu"])
    assert result.exit_code == 2 and all(d.value in result.stderr for d in Device)


def test_a_size_in_bytes_is_written_one_way_by_the_table_and_the_cache() -> None:
    assert human_bytes(830_996_480) == "792 MiB" and human_bytes(1023) == "1,023 B"
    assert f"(limit {human_bytes(64 * 2**20)};" in invoke(["cache", "info"]).stdout
