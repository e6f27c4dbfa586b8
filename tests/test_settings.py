"""Typed settings: precedence, validation with the setting's name, and documentation kept in step."""

from __future__ import annotations

import logging
import typing
from pathlib import Path

import pytest

from extender.cli import build_parser
from extender.model.fit import Allocator
from extender.model.scoring import SCORERS
from extender.settings import (
    RETIRED,
    SPECS,
    ScoringStrategy,
    Settings,
    SettingsError,
    describe,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("port: 9000\nscoring: packing\nannotate: false\nstale-after-s: 60\n")
    settings = load_settings(
        {"port": "9100"},
        config_file=str(config),
        environ={"MIG_EXTENDER_PORT": "9050", "MIG_EXTENDER_SCORING": "spread"},
    )
    assert settings.server.port == 9100
    assert settings.scoring.strategy == "spread"
    assert settings.annotator.enabled is False and settings.view.stale_after_s == 60.0


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


def test_a_checked_value_names_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("relayout: sometimes\n")
    with pytest.raises(SettingsError) as raised:
        load_settings({"port": "0"}, config_file=str(config), environ={"MIG_EXTENDER_MAX_CONNECTIONS": "-1"})
    message = str(raised.value)
    assert "port: 0 is outside 1..65535 (from --port)" in message
    assert "max_connections: must be positive, not -1 (from MIG_EXTENDER_MAX_CONNECTIONS)" in message
    assert f"relayout: 'sometimes' is not off, plan-only or on (from config file {config})" in message


def test_a_problem_of_two_settings_names_both_sources(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("annotate: false\n")
    with pytest.raises(SettingsError) as raised:
        load_settings({"relayout": "on"}, config_file=str(config), environ={})
    assert str(raised.value) == (
        "relayout: needs annotate (it acts on pods whose verdict annotation is relayout) "
        f"(relayout from --relayout, annotate from config file {config})"
    )
    with pytest.raises(SettingsError, match=r"'eighty' is not an integer$"):
        load_settings({"port": "eighty"}, environ={})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"defrag": "on", "annotate": "false"}, "defrag: needs annotate"),
        ({"defrag": "sometimes"}, "defrag: 'sometimes' is not off, plan-only or on"),
        ({"defrag_max_evictions": "0"}, "defrag_max_evictions: must be positive, not 0"),
        ({"defrag_eviction_grace_period_s": "-2"}, "defrag_eviction_grace_period_s: must be -1 or more, not -2"),
    ],
)
def test_defrag_settings_are_checked(values: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(values, environ={})


def test_defrag_namespaces_are_a_comma_separated_list() -> None:
    settings = load_settings({"defrag": "plan-only", "defrag_namespaces": " ml, batch ,,"}, environ={})
    assert settings.defrag.movable_namespaces == frozenset({"ml", "batch"})
    assert load_settings(environ={}).defrag.movable_namespaces == frozenset()


def test_unknown_keys_in_the_config_file_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("prot: 9000\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings(config_file=str(config), environ={})


def test_values_are_typed_by_group(tmp_path: Path) -> None:
    config = tmp_path / "settings.json"
    config.write_text(
        '{"relayout": "plan-only", "relayout_gpus": true, "provision": "requests", '
        '"provision_pools_file": "pools.yaml", "dynamic_allocator": "ideal"}'
    )
    settings = load_settings(config_file=str(config), environ={"MIG_EXTENDER_RELAYOUT_NODE_COOLDOWN_S": "60"})
    assert settings.relayout.mode == "plan-only" and settings.relayout.single_gpus is True
    assert settings.relayout.cooldown_s == 60.0
    assert settings.provisioning.mode == "requests" and settings.provisioning.pools_file == "pools.yaml"
    assert settings.scoring.dynamic_allocator is Allocator.IDEAL
    assert settings.mig_parted.name == "default-mig-parted-config"


def test_yaml_on_and_off_mean_the_modes(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("relayout: on\nprovision: off\n")  # YAML 1.1 reads both as booleans
    settings = load_settings(config_file=str(config), environ={})
    assert settings.relayout.mode == "on" and settings.provisioning.mode == "off"


# Every public name before settings were grouped: deployments set them as flags, variables and file keys.
_PUBLIC_NAMES_TEXT = """
host port kubeconfig snapshot mig_parted_namespace mig_parted_configmap mig_parted_key max_body_bytes scoring
dynamic_allocator placement demand_prior demand_prior_weight demand_half_life_s stale_after_s watch_timeout_s
watch_read_timeout_s assume_ttl_s annotate annotate_rate pending_scan_s metrics_per_gpu log_format log_level
access_log shutdown_timeout_s tls_cert_file tls_key_file tls_client_ca_file tls_open_paths tls_reload_interval_s
read_timeout_s keepalive_timeout_s max_connections relayout relayout_gpus relayout_rebalance relayout_min_idle_s
relayout_interval_s relayout_settle_s relayout_timeout_s relayout_max_concurrent relayout_node_cooldown_s
relayout_max_per_hour provision provision_pools_file provision_request_resources provision_namespace
provision_owner_configmap provision_interval_s provision_debounce_s provision_debounce_window_s provision_max_requests
provision_protect_s provision_overlay_wait_s
headroom headroom_namespace headroom_priority_class headroom_lead_time_s headroom_coverage headroom_size
headroom_max_gpus
headroom_max_fleet_share headroom_rate_half_life_s headroom_interval_s headroom_exclude_pools
defrag defrag_namespaces defrag_min_wait_s defrag_interval_s defrag_max_evictions defrag_max_evictions_per_hour
defrag_max_concurrent defrag_pod_cooldown_s defrag_max_lost_s defrag_reservation_s defrag_eviction_grace_period_s
defrag_max_plans_shown
provision_request_timeout_s leader_election leader_election_namespace leader_election_name leader_lease_duration_s
leader_renew_deadline_s leader_retry_period_s metrics_host metrics_port bind_wait_s leader_only_verbs event_loop
"""
PUBLIC_NAMES = _PUBLIC_NAMES_TEXT.split()


def test_every_flag_and_variable_keeps_its_name() -> None:
    assert sorted([*SPECS, *RETIRED]) == sorted(PUBLIC_NAMES)
    flags = {option for action in _serve_parser()._actions for option in action.option_strings}
    assert {"--" + name.replace("_", "-") for name in PUBLIC_NAMES} <= flags
    assert {"--no-annotate", "--no-leader-election"} <= flags
    assert {spec.env for spec in SPECS.values()} == {"MIG_EXTENDER_" + name.upper() for name in SPECS}


def _serve_parser() -> typing.Any:
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    return commands.choices["serve"]  # type: ignore[index]


def test_the_retired_placement_is_accepted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("placement: first-fit\n")
    with caplog.at_level(logging.WARNING, logger="extender.settings"):
        settings = load_settings(
            {"placement": "most-options"}, config_file=str(config), environ={"MIG_EXTENDER_PLACEMENT": "first-fit"}
        )
    assert settings == Settings()
    assert [r.getMessage().split(" is retired")[0] for r in caplog.records] == [
        f"setting placement (from config file {config})",
        "setting placement (from MIG_EXTENDER_PLACEMENT)",
        "setting placement (from --placement)",
    ]


def test_flags_reach_the_settings() -> None:
    args = _serve_parser().parse_args(["--port", "9001", "--no-annotate", "--relayout-max-per-hour", "3"])
    overrides = {name: getattr(args, name) for name in SPECS}
    settings = load_settings(overrides, environ={})
    assert settings.server.port == 9001 and settings.annotator.enabled is False
    assert settings.relayout.max_per_hour == 3


def test_settings_of_takes_public_names() -> None:
    settings = Settings.of(host="127.0.0.1", relayout_min_idle_s=0, tls_open_paths="/healthz")
    assert settings.server.host == "127.0.0.1" and settings.relayout.min_idle_s == 0.0
    assert settings.tls.open_paths == "/healthz"
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        Settings.of(prot=1)


def test_the_scoring_strategies_are_the_scorers() -> None:
    assert set(typing.get_args(ScoringStrategy)) == set(SCORERS)


def test_the_settings_page_is_current() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == describe() + "\n", (
        "run: mig-extender settings > docs/settings.md"
    )
