"""Every parser of outside input, under any input: a result or the parser's own error, nothing else.

Parsers and their documented errors: ``pod_demand`` (DemandError), ``parse_gpus_annotation``
(AnnotationError), ``parse_config`` and ``MigPartedConfig.resolve`` (MigPartedError), ``parse_pools``
(PoolsError), ``NodeInfo.from_raw``/``PodInfo.from_raw`` (ObjectError), ``parse_product_label`` and
``model_named`` (CatalogError), snapshot loading (SnapshotError), the wire parser (BadRequest). Inputs are
any JSON-like value, any text or bytes, and valid documents with one part spoiled; where a parser has an
inverse (a document built from a known value), the round trip must give the value back. A per-example
deadline catches inputs that make a parser crawl.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from extender.model.catalog import MODELS, CatalogError, GpuModel, ProductLabel, model_named, parse_product_label
from extender.model.demand import DemandError, PodDemand, pod_demand
from extender.model.fit import fit
from extender.model.migparted import DEFAULT_CONFIG, MigPartedConfig, MigPartedError, parse_config
from extender.model.provisioning import Pool, PoolsError, parse_pools
from extender.model.state import GpuState, Instance, NodeState
from extender.server.wire import BadRequest, ExtenderArgs, filter_result, host_priorities, parse_extender_args
from extender.view.objects import NodeInfo, ObjectError, PodInfo
from extender.view.snapshot import SnapshotError, load_snapshot, load_snapshot_text
from extender.view.sources import AnnotationError, parse_gpus_annotation
from extender.view.store import ClusterView
from tests.conftest import DEMO_SNAPSHOT
from tests.fuzz.strategies import ANSWER_SCHEMAS, JSON, TEXT, spoiled

FUZZ = settings(
    max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow], database=None
)
SHORT = settings(FUZZ, max_examples=60)


def deep(levels: int) -> list[Any]:
    """A list nested ``levels`` deep, deeper than str() can recurse (hypothesis raises the recursion limit)."""
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


DEMO = yaml.safe_load(DEMO_SNAPSHOT.read_text())["items"]
DEMO_NODES = [i for i in DEMO if i["kind"] == "Node"]
DEMO_PODS = [i for i in DEMO if i["kind"] == "Pod"]
MIG_NAMES = sorted({p.name for m in MODELS for p in m.profiles})
MODEL = st.sampled_from(MODELS)


# --- pod demand --------------------------------------------------------------------------------------


@st.composite
def demands(draw: st.DrawFn) -> PodDemand:
    names = draw(st.lists(st.sampled_from(MIG_NAMES), unique=True, max_size=4))
    mig = tuple(sorted((name, draw(st.integers(1, 64))) for name in names))
    return PodDemand(mig=mig, gpus=draw(st.integers(0, 8)))


def _split(draw: st.DrawFn, count: int, parts: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, count), min_size=parts - 1, max_size=parts - 1)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, count])]


@st.composite
def pods_for(draw: st.DrawFn, demand: PodDemand) -> dict[str, Any]:
    """A pod whose containers, together, ask for ``demand``; spelled in every way Kubernetes allows."""
    wanted = {f"nvidia.com/mig-{name}": count for name, count in demand.mig}
    if demand.gpus:
        wanted["nvidia.com/gpu"] = demand.gpus
    containers: list[dict[str, Any]] = [{"name": f"c{i}", "resources": {}} for i in range(draw(st.integers(1, 3)))]
    for resource, count in wanted.items():
        for container, share in zip(containers, _split(draw, count, len(containers))):
            if share == 0 and draw(st.booleans()):
                continue
            spelled = draw(st.sampled_from([str(share), f"+{share}", f"0{share}", share, float(share)]))
            sections = draw(st.sampled_from([("limits",), ("requests",), ("limits", "requests")]))
            for section in sections:
                container["resources"].setdefault(section, {})[resource] = spelled
    for container in containers:
        container["resources"].setdefault("requests", {})["cpu"] = "500m"
    spec: dict[str, Any] = {"containers": containers}
    if wanted and draw(st.booleans()):
        # A plain init container asking for less than the containers runs before them: it changes nothing.
        resource, count = draw(st.sampled_from(sorted(wanted.items())))
        spec["initContainers"] = [{"name": "init", "resources": {"limits": {resource: str(count // 2)}}}]
    return {"metadata": {"name": "p"}, "spec": spec}


@FUZZ
@given(demand=demands(), data=st.data())
def test_a_demand_survives_a_round_trip_through_a_pod(demand: PodDemand, data: st.DataObject) -> None:
    assert pod_demand(data.draw(pods_for(demand))) == demand


def _demand_or_error(raw: Any) -> PodDemand | None:
    try:
        demand = pod_demand(raw)
    except DemandError as exc:
        assert str(exc)
        return None
    assert all(count > 0 and isinstance(count, int) for _, count in demand.mig)
    assert [name for name, _ in demand.mig] == sorted({name for name, _ in demand.mig})
    assert isinstance(demand.gpus, int) and demand.gpus >= 0
    return demand


@FUZZ
@given(raw=st.dictionaries(TEXT, JSON, max_size=3) | spoiled(demands().flatmap(pods_for)))
@example(raw={"spec": {"containers": [{"resources": {"limits": {"nvidia.com/mig-1g.10gb": "9" * 5000}}}]}})
@example(raw={"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "\u0661"}}}]}})
def test_pod_demand_answers_or_names_the_problem(raw: Any) -> None:
    assume(isinstance(raw, dict))  # callers hand over objects: the wire and the snapshot reader check that
    _demand_or_error(raw)


# --- mig-extender.io/gpus annotation -----------------------------------------------------------------


@st.composite
def gpu_states(draw: st.DrawFn, model: GpuModel, index: int) -> GpuState:
    if not draw(st.integers(0, 5)):
        return GpuState(index, model, (), mig_enabled=False)
    spec = DEFAULT_CONFIG.resolve(draw(st.sampled_from(DEFAULT_CONFIG.names())), model, 0)
    placements = spec.layout(model) if spec is not None else ()
    dynamic = draw(st.booleans())
    if dynamic:  # a dynamic GPU lists only the instances pods use
        placements = tuple(p for p in placements if draw(st.booleans()))
    return GpuState(
        index, model, tuple(Instance(p, dynamic or draw(st.booleans())) for p in placements), dynamic=dynamic
    )


@st.composite
def annotated_gpus(draw: st.DrawFn) -> tuple[GpuState, ...]:
    model = draw(MODEL)
    indexes = draw(st.lists(st.integers(0, 63), unique=True, max_size=8))
    return tuple(sorted((draw(gpu_states(model, i)) for i in indexes), key=lambda g: g.index))


def annotation_document(gpus: tuple[GpuState, ...]) -> dict[str, Any]:
    """What a node agent publishes (extender/schemas/node-gpus-v1.json)."""
    return {
        "version": "v1",
        "gpus": [
            {
                "index": g.index,
                "product": g.model.name,
                "mode": "dynamic" if g.dynamic else "static",
                "migEnabled": g.mig_enabled,
                "instances": [
                    {
                        "profile": i.profile.name,
                        "start": i.placement.start,
                        "size": i.profile.memory_slices,
                        "used": i.used,
                    }
                    for i in g.instances
                ],
            }
            for g in gpus
        ],
    }


@FUZZ
@given(gpus=annotated_gpus())
def test_an_annotation_survives_a_round_trip(gpus: tuple[GpuState, ...]) -> None:
    assert parse_gpus_annotation(json.dumps(annotation_document(gpus))) == gpus


def _annotation_or_error(text: str) -> None:
    try:
        gpus = parse_gpus_annotation(text)
    except AnnotationError as exc:
        assert str(exc)
        return
    assert [g.index for g in gpus] == sorted({g.index for g in gpus})


@FUZZ
@given(
    text=TEXT
    | JSON.map(lambda v: json.dumps(v, ensure_ascii=False))
    | spoiled(annotated_gpus().map(annotation_document)).map(json.dumps)
)
@example(text="[" * 100_000)
@example(text='{"version": "v1", "gpus": ' + "[" * 100_000)
@example(
    text='{"version": "v1", "gpus": [{"index": 0, "product": "H100-80GB", '
    '"instances": [{"profile": "1g.10gb", "start": 1e400}]}]}'
)
def test_gpus_annotation_answers_or_names_the_problem(text: str) -> None:
    _annotation_or_error(text)


# --- mig-parted config -------------------------------------------------------------------------------


@st.composite
def mig_parted_documents(draw: st.DrawFn) -> dict[str, Any]:
    configs: dict[str, list[dict[str, Any]]] = {}
    for name in draw(st.lists(st.from_regex(r"[a-z0-9][-a-z0-9.]{0,12}", fullmatch=True), min_size=1, max_size=3)):
        entries = []
        for _ in range(draw(st.integers(1, 3))):
            model = draw(MODEL)
            entry: dict[str, Any] = {
                "devices": draw(st.just("all") | st.lists(st.integers(0, 7), max_size=4)),
                "mig-enabled": draw(st.booleans()),
                "mig-devices": {
                    p.name: draw(st.integers(0, p.max_instances))
                    for p in draw(st.lists(st.sampled_from(model.profiles), unique=True, max_size=3))
                },
            }
            if draw(st.booleans()):
                entry["device-filter"] = draw(
                    st.sampled_from(model.pci_device_ids) | st.just(list(model.pci_device_ids))
                )
            entries.append(entry)
        configs[name] = entries
    return {"version": "v1", "mig-configs": configs}


def _resolve_everywhere(config: MigPartedConfig) -> None:
    for name in config.names():
        for model in MODELS[:4]:
            for index in range(3):
                try:
                    config.resolve(name, model, index)
                except MigPartedError as exc:
                    assert str(exc)


@FUZZ
@given(document=mig_parted_documents())
def test_a_mig_parted_config_reads_the_same_from_yaml(document: dict[str, Any]) -> None:
    config = parse_config(document)
    assert parse_config(yaml.safe_dump(document, sort_keys=False)) == config
    assert config.names() == sorted(document["mig-configs"])
    _resolve_everywhere(config)


@FUZZ
@given(source=TEXT | JSON | spoiled(mig_parted_documents()) | spoiled(mig_parted_documents()).map(yaml.safe_dump))
@example(source="[" * 100_000)
@example(source="a: " + "{b: " * 5000)
@example(source=f"version: v1\nmig-configs:\n  a:\n    - {{mig-enabled: true, mig-devices: {{1g.10gb: {10**400}}}}}")
@example(source="version: v1\nmig-configs:\n  a:\n    - {mig-enabled: true, mig-devices: {1c.3g.40gb: 99999}}")
def test_mig_parted_config_answers_or_names_the_problem(source: Any) -> None:
    try:
        config = parse_config(source)
    except MigPartedError as exc:
        assert str(exc)
        return
    _resolve_everywhere(config)


# --- pools -------------------------------------------------------------------------------------------


@st.composite
def pools_documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True), unique=True, max_size=3)
    )
    return {
        "pools": [
            {
                "nodePool": name,
                "gpu": draw(MODEL).name,
                "gpusPerNode": draw(st.integers(1, 64)),
                "migConfig": draw(st.sampled_from(DEFAULT_CONFIG.names())),
                "cost": draw(st.floats(min_value=0.01, max_value=1e6) | st.integers(1, 100)),
                "maxNodes": draw(st.integers(1, 1000)),
            }
            for name in names
        ]
    }


@FUZZ
@given(document=pools_documents())
def test_pools_read_back_what_was_written(document: dict[str, Any]) -> None:
    pools = parse_pools(yaml.safe_load(yaml.safe_dump(document)))
    assert [
        {
            "nodePool": p.name,
            "gpu": p.model.name,
            "gpusPerNode": p.gpus_per_node,
            "migConfig": p.mig_config,
            "cost": p.cost,
            "maxNodes": p.max_nodes,
        }
        for p in pools
    ] == document["pools"]


@FUZZ
@given(document=JSON | spoiled(pools_documents()))
@example(
    document={"pools": [{"nodePool": "a", "gpu": "H100-80GB", "gpusPerNode": 8, "migConfig": "x", "cost": 10**400}]}
)
@example(document={"pools": [{"nodePool": "a\n", "gpu": "H100-80GB", "gpusPerNode": 8, "migConfig": "x"}]})
def test_pools_answer_or_name_the_problem(document: Any) -> None:
    try:
        pools = parse_pools(document)
    except PoolsError as exc:
        assert str(exc)
        return
    for pool in pools:
        assert isinstance(pool, Pool) and 0 < pool.gpus_per_node <= 64 and pool.cost > 0 and pool.max_nodes >= 1
        assert pool.name.strip() == pool.name and len(pool.name) <= 63


# --- Node and Pod objects ----------------------------------------------------------------------------


@FUZZ
@given(raw=st.dictionaries(TEXT, JSON, max_size=3) | spoiled(st.sampled_from(DEMO_NODES)))
@example(raw={"metadata": {"name": "n", "labels": {"nvidia.com/x": deep(20_000)}}})
def test_node_objects_are_read_or_refused(raw: Any) -> None:
    assume(isinstance(raw, dict))  # list items and watch events are objects; the callers check that
    try:
        node = NodeInfo.from_raw(raw)
    except ObjectError as exc:
        assert str(exc)
        return
    assert node.name == raw["metadata"]["name"] and node.name
    assert all(isinstance(v, int) and v >= 0 for v in node.allocatable.values())
    # Every label is kept (pods select nodes on any of them: issue 25, item 3), as strings.
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in node.labels.items())
    assert all(t.effect in ("NoSchedule", "NoExecute") for t in node.taints)


@FUZZ
@given(raw=st.dictionaries(TEXT, JSON, max_size=3) | spoiled(st.sampled_from(DEMO_PODS)))
@example(raw={"metadata": {"name": "a\ud800", "uid": "\udc00"}})
@example(raw={"metadata": {"name": "p", "uid": deep(20_000)}})
def test_pod_objects_are_read_or_refused(raw: Any) -> None:
    assume(isinstance(raw, dict))
    try:
        pod = PodInfo.from_raw(raw)
    except ObjectError as exc:
        assert str(exc)
        return
    assert pod.name == raw["metadata"]["name"]
    demand = _demand_or_error(raw)
    assert (pod.demand, pod.demand_error is None) == ((demand, True) if demand is not None else (PodDemand(), False))


# --- GPU product labels and model names --------------------------------------------------------------


@FUZZ
@given(
    text=TEXT
    | st.sampled_from(MODELS).map(lambda m: f"NVIDIA-{m.name}")
    | st.from_regex(r"NVIDIA-[A-Z0-9-]{0,12}(-MIG-.{0,10})?")
)
def test_product_labels_and_model_names_are_recognised_or_refused(text: str) -> None:
    for parse in (parse_product_label, model_named):
        try:
            found = parse(text)
        except CatalogError as exc:
            assert str(exc)
            continue
        assert isinstance(found, ProductLabel | GpuModel)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_models_are_found_by_every_name_they_go_by(model: GpuModel) -> None:
    assert model_named(model.name) is model
    assert model_named(f"  {model.name.lower()} ") is model
    for pci in model.pci_device_ids:
        assert model_named(pci) is model
        assert model_named(pci.lower()) is model
    for profile in model.profiles:
        label = parse_product_label(f"NVIDIA-{model.name}-MIG-{profile.name}")
        assert (label.model, label.single_profile) == (model, profile)


# --- snapshots ---------------------------------------------------------------------------------------


@st.composite
def snapshot_texts(draw: st.DrawFn) -> str:
    items = draw(st.lists(spoiled(st.sampled_from(DEMO_NODES + DEMO_PODS)), max_size=4))
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    if draw(st.booleans()):
        return json.dumps(document)
    return yaml.safe_dump(document)


def _load_or_error(text: str) -> None:
    view = ClusterView()
    try:
        counts = load_snapshot_text(view, text)
    except SnapshotError as exc:
        assert str(exc)
        return
    # Records read; objects of the same name (or uid) replace each other in the view.
    assert counts["nodes"] >= len(view.nodes) and counts["pods"] >= len(view.pods)


@FUZZ
@given(text=TEXT | JSON.map(lambda v: json.dumps(v, ensure_ascii=False)) | snapshot_texts())
def test_snapshots_load_or_name_the_problem(text: str) -> None:
    _load_or_error(text)


@SHORT
@given(content=st.binary(max_size=200) | snapshot_texts().map(str.encode))
def test_snapshot_files_load_or_name_the_problem(content: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        try:
            load_snapshot(ClusterView(), path)
        except SnapshotError as exc:
            assert path in str(exc)
    finally:
        os.unlink(path)


def test_a_snapshot_file_that_is_not_utf8_is_named(tmp_path: Any) -> None:
    path = tmp_path / "snapshot.yaml"
    path.write_bytes(b"items:\n- kind: Node\n  metadata: {name: \xff}\n")
    with pytest.raises(SnapshotError):
        load_snapshot(ClusterView(), str(path))


def test_a_snapshot_nested_too_deeply_is_named() -> None:
    with pytest.raises(SnapshotError):
        load_snapshot_text(ClusterView(), "items: " + "[" * 5000)


@pytest.mark.parametrize(
    ("config_map", "listed", "warning"),
    [
        # no name to match the mig-parted ConfigMap by: not read at all, like any other ConfigMap
        ({"kind": "ConfigMap", "metadata": ["default-mig-parted-config"]}, 0, None),
        # the mig-parted ConfigMap by name, its data unreadable: named in a warning, the defaults kept
        (
            {
                "kind": "ConfigMap",
                "metadata": {"name": "default-mig-parted-config", "namespace": "gpu-operator"},
                "data": ["x"],
            },
            1,
            "ConfigMap gpu-operator/default-mig-parted-config is invalid, keeping built-in defaults",
        ),
    ],
    ids=["metadata-list", "data-list"],
)
def test_a_malformed_config_map_in_a_snapshot_is_skipped(
    config_map: dict[str, Any], listed: int, warning: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    others = [item for item in DEMO if item["kind"] != "ConfigMap"]
    view = ClusterView()
    with caplog.at_level("WARNING"):
        counts = load_snapshot_text(view, json.dumps({"kind": "List", "items": [config_map, *others]}))
    # the ConfigMap is skipped: the built-in mig-parted config stays
    assert view.mig_parted is DEFAULT_CONFIG and view.mig_parted_source == "built-in defaults"
    assert view.counters.invalid_configs == (1 if warning else 0)
    # the rest of the snapshot loads
    nodes, pods = sum(1 for i in others if i["kind"] == "Node"), sum(1 for i in others if i["kind"] == "Pod")
    assert counts == {"nodes": nodes, "pods": pods, "configmap": listed}
    assert len(view.nodes) == nodes == len(DEMO_NODES) and len(view.pods) == pods > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if warning is None:
        assert not any("ConfigMap" in w for w in warnings)
    else:
        assert any(w.startswith(warning) for w in warnings), warnings


# --- the wire ----------------------------------------------------------------------------------------


@st.composite
def extender_args(draw: st.DrawFn) -> dict[str, Any]:
    pod = draw(demands().flatmap(pods_for))
    if draw(st.booleans()):
        return {"Pod": pod, "Nodes": None, "NodeNames": draw(st.lists(st.text(max_size=12), max_size=5))}
    nodes = draw(st.lists(st.sampled_from(DEMO_NODES), max_size=3))
    return {"Pod": pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None}


def _check_args(args: ExtenderArgs) -> None:
    try:
        names = args.candidate_names()
    except BadRequest as exc:  # a Node object without a name: found when the names are needed
        assert "metadata.name" in str(exc)
        return
    assert all(isinstance(n, str) for n in names)
    assert args.node_cache_capable == (args.nodes is None)
    passes = [i % 2 == 0 for i in range(len(names))]
    failed = {names[i]: "MIG: reason" for i in range(len(names)) if i % 2}
    try:
        result = orjson.loads(orjson.dumps(filter_result(args, passes, failed, {})))
    except BadRequest as exc:
        assert "nested too deeply" in str(exc)
    else:
        assert not list(ANSWER_SCHEMAS["filter"].iter_errors(result))
    scores = orjson.loads(orjson.dumps(host_priorities(names, [i % 11 for i in range(len(names))])))
    assert not list(ANSWER_SCHEMAS["prioritize"].iter_errors(scores))


@FUZZ
@given(
    body=st.binary(max_size=64)
    | JSON.map(lambda v: json.dumps(v, ensure_ascii=False).encode(errors="surrogatepass"))
    | spoiled(extender_args()).map(lambda v: json.dumps(v, ensure_ascii=False).encode(errors="surrogatepass"))
)
@example(body=b'{"Pod": {"metadata": {"name": "p", "uid": ' + b"[" * 900 + b"]" * 900 + b"}}, " + b'"NodeNames": []}')
@example(body=b'{"pod": {"metadata": {"name": "p"}}, "NODENAMES": ["a"], "nodes": null}')
def test_wire_bodies_are_read_or_refused(body: bytes) -> None:
    try:
        args = parse_extender_args(body)
    except BadRequest as exc:
        assert str(exc) and exc.status == 400
        return
    _check_args(args)


@FUZZ
@given(args=extender_args())
def test_valid_extender_args_are_read_as_sent(args: dict[str, Any]) -> None:
    parsed = parse_extender_args(orjson.dumps(args))
    assert parsed.pod == args["Pod"]
    if args["NodeNames"] is not None:
        assert parsed.node_names == args["NodeNames"] and parsed.nodes is None
    else:
        assert parsed.nodes == args["Nodes"]["items"] and parsed.node_names is None
    _check_args(parsed)


# --- fit: spellings of one profile --------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_states() -> list[NodeState]:
    view = ClusterView()
    load_snapshot(view, str(DEMO_SNAPSHOT))
    return [state for name in sorted(view.nodes) if (state := view.node_state(name)) is not None]


@SHORT
@given(demand=demands(), data=st.data())
def test_spellings_of_one_profile_are_one_demand(
    demo_states: list[NodeState], demand: PodDemand, data: st.DataObject
) -> None:
    """Found by fuzzing: ``1g.10gb`` and ``1G.10GB`` in one pod were planned onto the same instances (a crash)."""
    assume(demand.mig)
    name, count = data.draw(st.sampled_from(demand.mig))
    assume(count > 1)
    respelled = data.draw(st.sampled_from([name.upper(), f"MIG-{name}", f" {name} "]))
    split = PodDemand(mig=tuple(sorted([*(m for m in demand.mig if m[0] != name), (name, 1), (respelled, count - 1)])))
    for state in demo_states:
        assert fit(state, split).verdict is fit(state, demand).verdict
