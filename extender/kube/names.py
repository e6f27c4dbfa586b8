"""Every label, annotation, taint and scheduler name the extender reads or writes, in one place.

Pure data, each name spelled out in full so that searching for a key finds it here. Resource names
(``nvidia.com/gpu``, ``nvidia.com/mig-*``) are not here: they belong to the pure model
(``extender.model.demand``), which sits below this package and must not import it.
"""

from __future__ import annotations

# Ours: every label, annotation and taint key the extender owns starts with it (see docs/annotations.md).
PREFIX = "mig-extender.io/"
# GPU Feature Discovery's and MIG Manager's labels (NVIDIA GPU Operator).
NVIDIA_PREFIX = "nvidia.com/"

# --- NVIDIA GPU Operator labels on nodes: read; MIG_CONFIG_LABEL also written by the re-layout ---------------
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"  # the mig-parted config MIG Manager applies to the node
MIG_CONFIG_STATE_LABEL = "nvidia.com/mig.config.state"  # pending, rebooting, success or failed

# --- Karpenter (https://karpenter.sh/docs/concepts/disruption/) -----------------------------------------------
NODEPOOL_LABEL = "karpenter.sh/nodepool"
DO_NOT_DISRUPT_ANNOTATION = "karpenter.sh/do-not-disrupt"

# --- Kubernetes' recommended labels, on what the extender creates ---------------------------------------------
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_NAME_LABEL = "app.kubernetes.io/name"
APP_COMPONENT_LABEL = "app.kubernetes.io/component"

# --- nodes, read ----------------------------------------------------------------------------------------------
NODE_GPUS_ANNOTATION = "mig-extender.io/gpus"  # a node agent's exact layout (extender/schemas/node-gpus-v1.json)
NODE_MODE_LABEL = "mig-extender.io/mode"  # dynamic: NVIDIA's DynamicMIG creates instances on demand

# --- pending pods: why they wait (written by the annotator) ---------------------------------------------------
VERDICT_ANNOTATION = "mig-extender.io/verdict"
DEMAND_ANNOTATION = "mig-extender.io/demand"
REASON_ANNOTATION = "mig-extender.io/reason"
SUGGESTED_LAYOUT_ANNOTATION = "mig-extender.io/suggested-layout"
SINCE_ANNOTATION = "mig-extender.io/since"  # when the pod got its current verdict (RFC 3339, seconds)
RELAYOUT_NODE_ANNOTATION = "mig-extender.io/relayout-node"

# --- re-layout: a node being re-partitioned, and its record ---------------------------------------------------
RELAYOUT_TAINT = "mig-extender.io/relayout"  # taint key, effect NoSchedule, while a re-layout runs
RELAYOUT_PHASE_LABEL = "mig-extender.io/relayout"  # tainted or applying
# When the last re-layout ended, as a label value (20260101T120000Z): the cool-down survives restarts.
RELAYOUT_FINISHED_LABEL = "mig-extender.io/relayout-finished"
RELAYOUT_CONFIG_ANNOTATION = "mig-extender.io/relayout-config"
RELAYOUT_PREVIOUS_ANNOTATION = "mig-extender.io/relayout-previous-config"
RELAYOUT_STARTED_ANNOTATION = "mig-extender.io/relayout-started"
RELAYOUT_GPUS_ANNOTATION = "mig-extender.io/relayout-gpus"
RELAYOUT_FOR_ANNOTATION = "mig-extender.io/relayout-for"
RELAYOUT_OUTCOME_ANNOTATION = "mig-extender.io/relayout-outcome"

# --- provisioning: capacity-request pods and the new nodes they bring -----------------------------------------
# The schedulerName of capacity-request pods: no scheduler serves it, so none binds them.
CAPACITY_REQUEST_SCHEDULER = "mig-extender.io/capacity-request"
CAPACITY_REQUEST_LABEL = "mig-extender.io/capacity-request"  # on capacity-request pods: the NodePool asked for
CAPACITY_ANNOTATION = "mig-extender.io/capacity"  # on a pool's new node: arriving while guarded, released after
CAPACITY_SINCE_ANNOTATION = "mig-extender.io/capacity-since"
# Present when the loop set karpenter.sh/do-not-disrupt, so it never lifts a guard someone else set.
CAPACITY_GUARDED_ANNOTATION = "mig-extender.io/capacity-guarded"
# On capacity-request pods: the mode that made it (overlay: for pods Karpenter launched no node for).
CAPACITY_MODE_ANNOTATION = "mig-extender.io/capacity-mode"
# On a pending MIG pod (overlay mode): Karpenter launched no node for it, and what the loop does instead.
PROVISIONING_ANNOTATION = "mig-extender.io/provisioning"
KARPENTER_EVENT_SOURCE = "karpenter"  # source.component of the core/v1 Events Karpenter's recorder writes

# --- defragmentation (docs/defrag.md) ----------------------------------------------------------------------
# On a running pod (label or annotation), "true": the defrag controller may evict it so that a waiting pod fits.
DEFRAG_MOVABLE_LABEL = "mig-extender.io/movable"
# On a waiting pod: the plan (JSON, docs/defrag.md), with the evictions done so far; in plan-only mode the plan
# it would carry out, or why there is none.
DEFRAG_PLAN_ANNOTATION = "mig-extender.io/defrag-plan"
# On a waiting pod: the room held for it (JSON: node, GPUs, expiry); the filter keeps other MIG pods out of it.
DEFRAG_RESERVATION_ANNOTATION = "mig-extender.io/defrag-reservation"
# On a waiting pod: how its last plan ended (a line of text a person reads).
DEFRAG_OUTCOME_ANNOTATION = "mig-extender.io/defrag-outcome"

# --- the extender's own pods: which replica answers kube-scheduler (leader_only_verbs) -------------------------
# On the replica that holds the Lease, "true": the Service's selector includes it, so kube-scheduler reaches it
# alone. Written with LEADER_TERM_ANNOTATION (the Lease's acquireTime), by which the replica sees its own label
# come back through its watch before it answers (its view then holds what the previous leader bound).
LEADER_LABEL = "mig-extender.io/leader"
LEADER_TERM_ANNOTATION = "mig-extender.io/leader-term"
