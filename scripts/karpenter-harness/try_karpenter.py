#!/usr/bin/env python3
"""Run a real Karpenter (kwok cloud provider) against the local control plane, by hand.

Starts etcd + kube-apiserver (scripts/controlplane.py), installs Karpenter's CRDs, the
KWOKNodeClass (status Ready=True) and NodePool of nodepool.yaml, then the default
kube-scheduler, Karpenter's kwok controller (instance types of instance-types.json) and,
unless --no-kwok, the KWOK controller (fake kubelet for the nodes Karpenter creates).
Creates one pod requesting ``nvidia.com/gpu: 1`` that fits nowhere and prints, once a
second, the pod's PodScheduled condition, the NodeClaims and the Nodes, until the pod is
bound (exit 0) or --timeout (exit 1). Everything listens on 127.0.0.1; everything started
is stopped at the end (process groups of the pids started here).

Binaries: scripts/build-control-plane.sh and scripts/build-karpenter.sh.

    python scripts/karpenter-harness/try_karpenter.py --dir /tmp/kcp [--keep-running]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from controlplane import ControlPlane, _die_with_parent, default_bin_dir, free_port  # noqa: E402

Proc = subprocess.Popen[bytes]

KARPENTER_VERSION = "v1.14.1"
CACHE_DIR = Path(os.environ.get("MIG_EXTENDER_CACHE", Path.home() / ".cache" / "mig-extender"))
KARPENTER_BIN_DIR = CACHE_DIR / "bin" / f"karpenter-{KARPENTER_VERSION}"

PLURALS = {
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "KWOKNodeClass": "/apis/karpenter.kwok.sh/v1alpha1/kwoknodeclasses",
    "NodePool": "/apis/karpenter.sh/v1/nodepools",
}

GPU_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "gpu-pod", "namespace": "default"},
    "spec": {
        "containers": [
            {
                "name": "c",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
                    "limits": {"nvidia.com/gpu": "1"},
                },
            }
        ],
    },
}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def must(cp: ControlPlane, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
    status, out = cp.request(method, path, body, content_type=ctype)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {status}: {json.dumps(out)[:2000]}")
    return out


def install_crds(cp: ControlPlane, crd_dir: Path) -> None:
    names = []
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                must(cp, "POST", PLURALS["CustomResourceDefinition"], doc)
                names.append(doc["metadata"]["name"])
                log(f"CRD {doc['metadata']['name']} created")
    deadline = time.monotonic() + 60
    for name in names:
        while True:
            crd = must(cp, "GET", f"{PLURALS['CustomResourceDefinition']}/{name}")
            conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not Established: {conds}")
            time.sleep(0.2)
    log("all CRDs Established")


def create_nodepool(cp: ControlPlane, path: Path, *, nodeclass_ready: bool = True) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        kind, name = doc["kind"], doc["metadata"]["name"]
        must(cp, "POST", PLURALS[kind], doc)
        log(f"{kind} {name} created")
        if kind == "KWOKNodeClass" and nodeclass_ready:
            # Nothing in the kwok provider reconciles KWOKNodeClass status. With v1.14.1 a
            # KWOKNodeClass without conditions is accepted anyway (tried: --no-nodeclass-status
            # still provisions); Ready=True is set so that an explicit False never blocks.
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            cond = {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "",
                "lastTransitionTime": now,
                "observedGeneration": 1,
            }
            must(
                cp,
                "PATCH",
                f"{PLURALS[kind]}/{name}/status",
                {"status": {"conditions": [cond]}},
                "application/merge-patch+json",
            )
            log(f"{kind} {name} status Ready=True")


def spawn(name: str, args: list[str], env: dict[str, str], workdir: Path) -> Proc:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as fh:
        fh.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
            cwd=workdir,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl(); killed if we die
        )
    log(f"started {name} pid {proc.pid} (log {log_path})")
    return proc


def stop(proc: Proc, name: str) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log(f"stopped {name} (exit {proc.returncode})")


def summary(cp: ControlPlane) -> tuple[str, bool]:
    pod = must(cp, "GET", "/api/v1/namespaces/default/pods/gpu-pod")
    conds = [c for c in pod.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"]
    sched = f"{conds[0]['status']}/{conds[0].get('reason', '')}" if conds else "-"
    node = pod["spec"].get("nodeName", "")
    ncs = must(cp, "GET", "/apis/karpenter.sh/v1/nodeclaims")["items"]
    nc_s = []
    for nc in ncs:
        c = {x["type"]: x["status"] for x in nc.get("status", {}).get("conditions", [])}
        it = nc["metadata"].get("labels", {}).get("node.kubernetes.io/instance-type", "?")
        short = ",".join(f"{k}={v[0]}" for k, v in sorted(c.items()))
        nc_s.append(f"{nc['metadata']['name']}[{it} node={nc.get('status', {}).get('nodeName', '')} {short}]")
    nodes = must(cp, "GET", "/api/v1/nodes")["items"]
    node_s = []
    for n in nodes:
        ready = {x["type"]: x["status"] for x in n.get("status", {}).get("conditions", [])}.get("Ready", "-")
        taints = ",".join(t["key"] for t in n["spec"].get("taints", []))
        alloc = n.get("status", {}).get("allocatable", {})
        gpu = (
            ",".join(
                f"{k.removeprefix('nvidia.com/')}={v}" for k, v in sorted(alloc.items()) if k.startswith("nvidia.com/")
            )
            or "-"
        )
        node_s.append(f"{n['metadata']['name']}[Ready={ready} {gpu} taints={taints or '-'}]")
    line = (
        f"pod PodScheduled={sched} nodeName={node or '-'} phase={pod['status'].get('phase')} | "
        f"nodeclaims={nc_s or '-'} | nodes={node_s or '-'}"
    )
    return line, bool(node)


def teardown(cp: ControlPlane, timeout: float) -> bool:
    """Delete the pod; True once consolidation (WhenEmpty) removed every NodeClaim and Node."""
    must(cp, "DELETE", "/api/v1/namespaces/default/pods/gpu-pod", {"gracePeriodSeconds": 0})
    log("pod deleted; waiting for consolidation (WhenEmpty) to remove the NodeClaim and Node")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ncs = must(cp, "GET", "/apis/karpenter.sh/v1/nodeclaims")["items"]
        nodes = must(cp, "GET", "/api/v1/nodes")["items"]
        nc_s = [(n["metadata"]["name"], "deleting" if n["metadata"].get("deletionTimestamp") else "") for n in ncs]
        node_s = [
            (
                n["metadata"]["name"],
                "deleting" if n["metadata"].get("deletionTimestamp") else "",
                [t["key"] for t in n["spec"].get("taints", [])],
            )
            for n in nodes
        ]
        line = f"nodeclaims={nc_s} nodes={node_s}"
        if line != last:
            log(line)
            last = line
        if not ncs and not nodes:
            log("RESULT: teardown done")
            return True
        time.sleep(1)
    log(f"RESULT: NodeClaim/Node still present after {timeout}s")
    return False


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, type=Path, help="work dir (logs, kubeconfig)")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument(
        "--resource",
        default="nvidia.com/gpu",
        help="extended resource the pod requests (1 of it), e.g. nvidia.com/mig-3g.40gb",
    )
    ap.add_argument(
        "--no-nodeclass-status",
        action="store_true",
        help="don't set the KWOKNodeClass Ready condition (v1.14.1 provisions anyway)",
    )
    ap.add_argument("--no-kwok", action="store_true", help="don't run the KWOK controller")
    ap.add_argument(
        "--teardown",
        action="store_true",
        help="after the pod is bound, delete it and wait for Karpenter to remove the empty node",
    )
    ap.add_argument("--keep-running", action="store_true", help="after the result, wait for Ctrl-C")
    return ap.parse_args()


def karpenter_env(kubeconfig: Path, feature_gates: str = "") -> dict[str, str]:
    """Karpenter's kwok controller: one replica, the GPU instance types, loopback ports, quick batching."""
    env = {
        "KUBECONFIG": str(kubeconfig),
        "DISABLE_LEADER_ELECTION": "true",
        "INSTANCE_TYPES_FILE_PATH": str(HERE / "instance-types.json"),
        "METRICS_PORT": str(free_port()),
        "HEALTH_PROBE_PORT": str(free_port()),
        "LOG_LEVEL": "debug",
        "BATCH_IDLE_DURATION": "1s",
        "BATCH_MAX_DURATION": "3s",
        "CPU_REQUESTS": "2000",  # sizes some worker pools; the default assumes 1 CPU
    }
    if feature_gates:
        env["FEATURE_GATES"] = feature_gates
    return env


def kwok_command(kubeconfig: Path) -> list[str]:
    """The KWOK controller as the kubelet of the nodes Karpenter's kwok provider creates."""
    return [
        str(KARPENTER_BIN_DIR / "kwok"),
        f"--kubeconfig={kubeconfig}",
        f"--config={KARPENTER_BIN_DIR / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false",
        # Karpenter's kwok provider annotates (and labels) its Nodes kwok.x-k8s.io/node=fake.
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-ip=127.0.0.1",
        "--cidr=10.244.0.1/16",
    ]


def start_components(cp: ControlPlane, args: argparse.Namespace, procs: list[tuple[str, Proc]]) -> None:
    """kube-scheduler (default profile), Karpenter's kwok controller, the KWOK controller."""
    sched_cfg = cp.workdir / "default-scheduler.yaml"
    sched_cfg.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
        f"clientConnection:\n  kubeconfig: {cp.kubeconfig}\n"
        "leaderElection:\n  leaderElect: false\n"
    )
    cp.start_scheduler(sched_cfg, "default")
    log("kube-scheduler (default-scheduler) up")

    binary = str(KARPENTER_BIN_DIR / "karpenter-kwok")
    procs.append(("karpenter", spawn("karpenter", [binary], karpenter_env(cp.kubeconfig), cp.workdir)))
    if not args.no_kwok:
        kwok_args = kwok_command(cp.kubeconfig)
        procs.append(("kwok", spawn("kwok", kwok_args, {}, cp.workdir)))


def create_pod(cp: ControlPlane, resource: str) -> None:
    pod = json.loads(json.dumps(GPU_POD))
    res = pod["spec"]["containers"][0]["resources"]
    if resource != "nvidia.com/gpu":
        for kind in ("requests", "limits"):
            del res[kind]["nvidia.com/gpu"]
            res[kind][resource] = "1"
    must(cp, "POST", "/api/v1/namespaces/default/pods", pod)
    log(f"pod default/gpu-pod ({resource}: 1) created")


def watch(cp: ControlPlane, procs: list[tuple[str, Proc]], timeout: float) -> bool:
    """Print changes until the pod is bound (True) or timeout; then 15 s more of changes."""
    deadline = time.monotonic() + timeout
    last = ""
    bound = False
    while time.monotonic() < deadline:
        for name, p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {cp.workdir}/{name}.log")
        line, bound = summary(cp)
        if line != last:
            log(line)
            last = line
        if bound:
            break
        time.sleep(1)
    log("RESULT: pod bound" if bound else f"RESULT: pod not bound after {timeout}s")
    # Let Karpenter mark the NodeClaim Initialized (needs Node Ready, i.e. kwok) and Consolidatable.
    for _ in range(15):
        line, _b = summary(cp)
        if line != last:
            log(line)
            last = line
        time.sleep(1)
    return bound


def main() -> int:
    args = parse_args()

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT is ignored in background jobs of a non-interactive shell: handle both.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir: Path = args.dir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, Proc]] = []
    with ControlPlane(workdir, default_bin_dir()) as cp:
        try:
            log(f"control plane up: {cp.server} kubeconfig {cp.kubeconfig}")
            install_crds(cp, KARPENTER_BIN_DIR / "crds")
            create_nodepool(cp, HERE / "nodepool.yaml", nodeclass_ready=not args.no_nodeclass_status)
            start_components(cp, args, procs)
            time.sleep(3)
            create_pod(cp, args.resource)
            ok = watch(cp, procs, args.timeout)
            if args.teardown and ok:
                ok = teardown(cp, args.timeout)
            if args.keep_running:
                log("--keep-running: Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
        finally:
            for name, p in reversed(procs):
                stop(p, name)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
