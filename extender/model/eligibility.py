"""Which nodes a pod may use at all: taints and tolerations, cordons, node selectors and required node affinity.

kube-scheduler's own filters (TaintToleration, NodeUnschedulable, NodeAffinity) run before the extender's
``/filter``, so the filter never sees a node they exclude. The verdict scan and the controllers read the whole
view instead: without these rules they could name a node the pod cannot go to. Pure functions that follow the
upstream semantics:

- tolerations: ``ToleratesTaint`` in k8s.io/api ``core/v1/toleration.go`` (operator ``Exists`` or ``Equal``,
  the default; an empty key with ``Exists`` tolerates every taint; an empty effect matches every effect);
- only ``NoSchedule`` and ``NoExecute`` taints filter (``PreferNoSchedule`` only scores), as in the
  TaintToleration plugin; a cordoned node (``spec.unschedulable``) admits only pods tolerating
  ``node.kubernetes.io/unschedulable:NoSchedule``, as in the NodeUnschedulable plugin;
- ``spec.nodeSelector`` (every pair must match) and ``requiredDuringSchedulingIgnoredDuringExecution``
  (terms ORed, a term's ``matchExpressions`` and ``matchFields`` ANDed; operators ``In``, ``NotIn``,
  ``Exists``, ``DoesNotExist``, ``Gt``, ``Lt``; ``matchFields`` on ``metadata.name`` only), as in
  k8s.io/component-helpers ``scheduling/corev1/nodeaffinity``. A term that cannot be read matches no node,
  and an empty term list matches none, as upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

FILTERING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


_CORDON = Taint(UNSCHEDULABLE_TAINT_KEY, "", "NoSchedule")


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """``ToleratesTaint``: effect, key and (for ``Equal``) value match; an unknown operator matches nothing."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator in ("Equal", ""):
            return self.value == taint.value
        return False


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` (or, with ``field``, ``matchFields``) entry of a node selector term."""

    key: str
    operator: str
    values: tuple[str, ...] = ()
    field: bool = False

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        if self.field:  # matchFields: only metadata.name exists, with In and NotIn
            if self.key != "metadata.name" or self.operator not in ("In", "NotIn"):
                return False
            return (name in self.values) == (self.operator == "In")
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator == "In":
            return present and value in self.values
        if self.operator == "NotIn":
            return not present or value not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator in ("Gt", "Lt"):
            if not present or len(self.values) != 1:
                return False
            # Go's strconv.ParseInt(v, 10, 64): decimal digits with an optional sign (Python's int() also takes
            # "5_000" and spaces, which are legal in label values).
            if not (_INTEGER.fullmatch(value) and _INTEGER.fullmatch(self.values[0])):
                return False
            mine, bound = int(value), int(self.values[0])
            return mine > bound if self.operator == "Gt" else mine < bound
        return False


@dataclass(frozen=True, slots=True)
class Term:
    """A node selector term: every requirement must match. An empty or unreadable term matches no node."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        return bool(self.requirements) and all(r.matches(labels, name) for r in self.requirements)


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """What of a pod's spec restricts the nodes it may use. Hashable: pods of one workload share one object."""

    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[Term, ...] | None = None
    """The required node affinity's terms (ORed); None when the pod has none (every node matches)."""

    def tolerates(self, taint: Taint) -> bool:
        return any(t.tolerates(taint) for t in self.tolerations)

    def admits(self, labels: Mapping[str, str], name: str, taints: tuple[Taint, ...], unschedulable: bool) -> bool:
        """Whether kube-scheduler's TaintToleration, NodeUnschedulable and NodeAffinity filters let the pod on."""
        if unschedulable and not self.tolerates(_CORDON):
            return False
        if any(t.effect in FILTERING_EFFECTS and not self.tolerates(t) for t in taints):
            return False
        if any(labels.get(key) != value for key, value in self.node_selector):
            return False
        return self.required_terms is None or any(term.matches(labels, name) for term in self.required_terms)


ANYWHERE = PodPlacement()
"""A pod with no tolerations, selector or required affinity."""
