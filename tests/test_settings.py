"""Typed settings: precedence, validation with the setting's name, and documentation kept in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from extender.settings import SettingsError, describe, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("port: 9000\nscoring: packing\nannotate: false\nstale-after-s: 60\n")
    settings = load_settings(
        {"port": "9100"},
        config_file=str(config),
        environ={"MIG_EXTENDER_PORT": "9050", "MIG_EXTENDER_SCORING": "spread"},
    )
    assert settings.port == 9100
    assert settings.scoring == "spread"
    assert settings.annotate is False and settings.stale_after_s == 60.0


@pytest.mark.parametrize(
    ("overrides", "environ", "message"),
    [
        ({"scoring": "best"}, {}, "scoring: unknown strategy 'best'"),
        ({}, {"MIG_EXTENDER_PORT": "eighty"}, "port (from MIG_EXTENDER_PORT)"),
        ({"port": "70000"}, {}, "port: 70000 is outside 1..65535"),
        ({"demand_prior": "7g=-1"}, {}, "demand_prior: demand mix entry '7g=-1'"),
        ({"annotate": "maybe"}, {}, "annotate (from --annotate): 'maybe' is not a boolean"),
        ({"kubeconfig": "a", "snapshot": "b"}, {}, "give one source of the cluster view"),
        ({"dynamic_allocator": "kubelet"}, {}, "dynamic_allocator: 'kubelet' is not first-fit or ideal"),
        ({"relayout_rebalance": "true"}, {}, "relayout_rebalance: needs relayout plan-only or on"),
    ],
)
def test_bad_values_name_the_setting(overrides: dict[str, str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(overrides, environ=environ)


def test_unknown_keys_in_the_config_file_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("prot: 9000\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings(config_file=str(config), environ={})


def test_the_settings_page_is_current() -> None:
    assert describe() in (ROOT / "docs" / "settings.md").read_text(), "run: mig-extender settings"
