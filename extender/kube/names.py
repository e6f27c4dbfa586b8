"""Every label, annotation, taint and scheduler name the extender reads or writes, in one place.

Pure data. Resource names (``nvidia.com/gpu``, ``nvidia.com/mig-*``) are not here: they belong to the pure
model (``extender.model.demand``), which sits below this package and must not import it.
"""

from __future__ import annotations

PREFIX = "mig-extender.io/"
"""Ours: every label, annotation and taint key the extender owns starts with it."""
NVIDIA_PREFIX = "nvidia.com/"
"""GPU Feature Discovery's and MIG Manager's labels (https://github.com/NVIDIA/gpu-feature-discovery)."""

# --- NVIDIA GPU Operator labels on nodes: read, and MIG_CONFIG_LABEL written by the re-layout ----------------
GPU_PRODUCT_LABEL = NVIDIA_PREFIX + "gpu.product"
GPU_COUNT_LABEL = NVIDIA_PREFIX + "gpu.count"
MIG_STRATEGY_LABEL = NVIDIA_PREFIX + "mig.strategy"
MIG_CONFIG_LABEL = NVIDIA_PREFIX + "mig.config"
"""The mig-parted config MIG Manager applies to the node."""
MIG_CONFIG_STATE_LABEL = NVIDIA_PREFIX + "mig.config.state"
"""MIG Manager's progress: ``pending``, ``rebooting``, ``success`` or ``failed``."""

# --- Karpenter (https://karpenter.sh/docs/concepts/disruption/) -----------------------------------------------
NODEPOOL_LABEL = "karpenter.sh/nodepool"
DO_NOT_DISRUPT_ANNOTATION = "karpenter.sh/do-not-disrupt"

# --- Kubernetes' recommended labels, on what the extender creates ---------------------------------------------
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_NAME_LABEL = "app.kubernetes.io/name"
APP_COMPONENT_LABEL = "app.kubernetes.io/component"

# --- nodes, read ----------------------------------------------------------------------------------------------
NODE_GPUS_ANNOTATION = PREFIX + "gpus"
"""The exact per-GPU layout a node agent publishes (schema ``extender/schemas/node-gpus-v1.json``)."""
NODE_MODE_LABEL = PREFIX + "mode"
"""``dynamic``: NVIDIA's DynamicMIG creates instances on demand."""

# --- pending pods: the verdict annotations ----------------------------------------------------------------------
VERDICT_ANNOTATION = PREFIX + "verdict"
DEMAND_ANNOTATION = PREFIX + "demand"
REASON_ANNOTATION = PREFIX + "reason"
SUGGESTED_LAYOUT_ANNOTATION = PREFIX + "suggested-layout"
SINCE_ANNOTATION = PREFIX + "since"
"""When the pod got its current verdict (RFC 3339, seconds)."""
RELAYOUT_NODE_ANNOTATION = PREFIX + "relayout-node"

# --- re-layout: a node being re-partitioned, and its record -------------------------------------------------------
RELAYOUT_TAINT = PREFIX + "relayout"
"""Taint key (effect NoSchedule) while a re-layout runs."""
RELAYOUT_PHASE_LABEL = PREFIX + "relayout"
"""``tainted`` or ``applying``."""
RELAYOUT_FINISHED_LABEL = PREFIX + "relayout-finished"
"""When the last re-layout ended (a label value: ``20260101T120000Z``), for the cool-down across restarts."""
RELAYOUT_CONFIG_ANNOTATION = PREFIX + "relayout-config"
RELAYOUT_PREVIOUS_ANNOTATION = PREFIX + "relayout-previous-config"
RELAYOUT_STARTED_ANNOTATION = PREFIX + "relayout-started"
RELAYOUT_GPUS_ANNOTATION = PREFIX + "relayout-gpus"
RELAYOUT_FOR_ANNOTATION = PREFIX + "relayout-for"
RELAYOUT_OUTCOME_ANNOTATION = PREFIX + "relayout-outcome"

# --- provisioning: capacity-request pods and the new nodes they bring -----------------------------------------------
CAPACITY_REQUEST_SCHEDULER = PREFIX + "capacity-request"
"""The schedulerName of capacity-request pods: no scheduler serves it, so none binds them."""
CAPACITY_REQUEST_LABEL = PREFIX + "capacity-request"
"""On capacity-request pods: the NodePool they ask a node of."""
CAPACITY_ANNOTATION = PREFIX + "capacity"
"""On new nodes of a pool: ``arriving`` while guarded, ``released`` after."""
CAPACITY_SINCE_ANNOTATION = PREFIX + "capacity-since"
CAPACITY_GUARDED_ANNOTATION = PREFIX + "capacity-guarded"
"""Present when the loop set ``karpenter.sh/do-not-disrupt`` (so it never lifts a guard someone else set)."""
