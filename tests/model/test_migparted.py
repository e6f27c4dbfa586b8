"""mig-parted config parsing and the GPU Operator's default config names."""

from __future__ import annotations

import pytest

from extender.model.catalog import MODELS, model_named
from extender.model.layouts import layout_text
from extender.model.migparted import DEFAULT_CONFIG, MigPartedError, parse_config

CUSTOM = """
version: v1
mig-configs:
  custom-config:
    - devices: [0, 1]
      mig-enabled: false
    - devices: [2]
      mig-enabled: true
      mig-devices:
        "1g.5gb": 7
    - devices: all
      device-filter: ["0x20B010DE", "0x20F110DE"]
      mig-enabled: true
      mig-devices:
        "1g.5gb": 2
        "2g.10gb": 1
        "3g.20gb": 1
"""


def test_entries_apply_by_device_index_and_filter() -> None:
    config = parse_config(CUSTOM)
    a100, h100 = model_named("A100-40GB"), model_named("H100-80GB")
    assert config.resolve("custom-config", a100, 0).mig_enabled is False  # type: ignore[union-attr]
    spec = config.resolve("custom-config", a100, 2)
    assert spec is not None and layout_text(spec.layout(a100)).count("1g.5gb") == 7
    spec = config.resolve("custom-config", a100, 5)
    assert spec is not None and layout_text(spec.layout(a100)) == "2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4"
    assert config.resolve("custom-config", h100, 5) is None  # the filter excludes H100: no entry covers it


@pytest.mark.parametrize("name", ["all-disabled", "all-enabled", "all-balanced"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_default_names_resolve_for_every_model(name: str, model) -> None:  # type: ignore[no-untyped-def]
    spec = DEFAULT_CONFIG.resolve(name, model, 3)
    assert spec is not None
    spec.layout(model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_all_profile_configs_resolve_to_full_gpus(model) -> None:  # type: ignore[no-untyped-def]
    for profile in model.profiles:
        spec = DEFAULT_CONFIG.resolve("all-" + profile.name.replace("+", "."), model, 0)
        assert spec is not None, profile.name
        layout = spec.layout(model)
        assert len(layout) == profile.max_instances


def test_known_default_names() -> None:
    names = set(DEFAULT_CONFIG.names())
    assert {
        "all-1g.5gb",
        "all-1g.5gb.me",
        "all-2g.10gb",
        "all-3g.20gb",
        "all-7g.40gb",
        "all-1g.10gb",
        "all-3g.71gb",
        "all-7g.141gb",
        "all-1g.6gb",
        "all-4g.24gb",
    } <= names
    # all-1g.10gb is 4 instances on A100-40GB (the 2-slot 1g) and 7 on A100-80GB and H100.
    assert (
        len(
            DEFAULT_CONFIG.resolve("all-1g.10gb", model_named("A100-40GB"), 0).layout(  # type: ignore[union-attr]
                model_named("A100-40GB")
            )
        )
        == 4
    )
    assert (
        len(
            DEFAULT_CONFIG.resolve("all-1g.10gb", model_named("H100-80GB"), 0).layout(  # type: ignore[union-attr]
                model_named("H100-80GB")
            )
        )
        == 7
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: v1\nmig-configs: [", "not valid YAML"),
        ("version: v2\nmig-configs: {}", "version must be 'v1'"),
        ("version: v1\n", "no 'mig-configs'"),
        ("version: v1\nmig-configs:\n  x:\n    - devices: all\n", r"mig-configs.x\[0\].mig-enabled must be"),
        (
            "version: v1\nmig-configs:\n  x:\n    - devices: first\n      mig-enabled: true\n",
            r"devices must be 'all' or a list",
        ),
        (
            "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n"
            "      mig-devices: {a: -1}\n",
            "counts >= 0",
        ),
    ],
)
def test_malformed_configs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(MigPartedError, match=message):
        parse_config(text)


def test_unresolvable_entries_name_the_entry() -> None:
    config = parse_config(
        "version: v1\nmig-configs:\n  bad:\n    - devices: all\n      mig-enabled: true\n"
        "      mig-devices: {'3g.20gb': 1, '4g.20gb': 1, '2g.10gb': 1}\n"
        "  typo:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {'3g.21gb': 1}\n"
    )
    a100 = model_named("A100-40GB")
    with pytest.raises(MigPartedError, match=r"mig-configs.bad\[0\]: layout .* does not fit"):
        config.resolve("bad", a100, 0)
    with pytest.raises(MigPartedError, match=r"mig-configs.typo\[0\].mig-devices: .*did you mean 3g.20gb"):
        config.resolve("typo", a100, 0)
    with pytest.raises(MigPartedError, match="no entry named 'missing'"):
        config.resolve("missing", a100, 0)
