"""Catalog of MIG-capable GPU models and their GPU-instance profiles.

Facts come from NVML (NVIDIA/go-nvml ``pkg/nvml/nvml.h``: profile ids, slice counts, legal placements), real
``nvidia-smi mig -lgip``/``-lgipp`` readouts (the A100-40GB example of NVIDIA's MIG User Guide,
https://docs.nvidia.com/datacenter/tesla/mig-user-guide/, a real H200, and the readouts posted in NVIDIA/mig-parted
and NVIDIA/gpu-operator issues and pull requests for other models) and NVIDIA's mig-parted default configs
(``deployments/systemd/config-default.yaml``; the GPU Operator ships the same configs in
``assets/state-mig-manager/0400_configmap.yaml``) for names, PCI ids and profile lists. Profiles are keyed on their
NVML profile id and slice counts; names vary by driver and board, so known alternative names are accepted
as aliases. Placements that no real readout confirms for a model are flagged ``placements_verified=False``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property


class CatalogError(ValueError):
    """A GPU model or profile that the catalog does not know, with the closest known names."""


@dataclass(frozen=True, slots=True, eq=False)
class Profile:
    """One GPU-instance profile of one GPU model, as ``nvidia-smi mig -lgip``/``-lgipp`` print it.

    Each exists once, in the catalog: equal means the same object, and hashing is by identity (placements and
    states hash profiles on every hot path; a field-by-field hash cost a fifth of rebuilding a node's state).
    """

    name: str
    profile_id: int | None
    compute_slices: int
    memory_slices: int
    max_instances: int
    starts: tuple[int, ...]
    aliases: tuple[str, ...] = ()
    memory_mib: int | None = None
    multiprocessors: int | None = None
    placements_verified: bool = True

    @property
    def base_name(self) -> str:
        """The name without attributes (``1g.10gb+me`` -> ``1g.10gb``)."""
        return re.split(r"[+-]", self.name, maxsplit=1)[0]

    @property
    def has_attributes(self) -> bool:
        """True for ``+me``, ``+gfx``, ``+me.all`` and ``-me`` variants."""
        return self.base_name != self.name

    @property
    def resource_name(self) -> str:
        """The extended resource the device plugin advertises in the mixed strategy."""
        return "nvidia.com/mig-" + self.name.replace("+", ".")

    @property
    def resource_names(self) -> tuple[str, ...]:
        """The resource name and those of its aliases (older drivers name ``7g.80gb`` ``7g.79gb``)."""
        return tuple("nvidia.com/mig-" + n.replace("+", ".") for n in (self.name, *self.aliases))

    def occupancy(self, start: int) -> int:
        """Bitmask of the memory slices an instance placed at ``start`` occupies."""
        return ((1 << self.memory_slices) - 1) << start

    def placements_text(self) -> str:
        """Placements in the ``{starts}:size`` form of ``nvidia-smi mig -lgipp``."""
        return "{" + ",".join(str(s) for s in self.starts) + "}:" + str(self.memory_slices)


@dataclass(frozen=True, eq=False)
class GpuModel:
    """A MIG-capable GPU: its memory/compute slice geometry and profiles. One object per model, as ``Profile``."""

    name: str
    memory_slices: int
    compute_slices: int
    profiles: tuple[Profile, ...]
    pci_device_ids: tuple[str, ...]
    description: str = ""
    placements_verified: bool = True
    _by_name: dict[str, Profile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Profile] = {}
        for profile in self.profiles:
            for key in (profile.name, *profile.aliases):
                by_name[key] = profile
                by_name[_profile_key(key)] = profile
        object.__setattr__(self, "_by_name", by_name)

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GpuModel) and other.name == self.name

    @property
    def full_mask(self) -> int:
        return (1 << self.memory_slices) - 1

    def find_profile(self, name: str) -> Profile | None:
        """The profile called ``name`` (canonical name, alias, or resource-name spelling), or None."""
        found = self._by_name.get(name)  # the common case: a canonical name, no normalising needed
        return found if found is not None else self._by_name.get(_profile_key(name))

    def profile(self, name: str) -> Profile:
        """Like :meth:`find_profile`, but raises a :class:`CatalogError` naming close matches."""
        found = self.find_profile(name)
        if found is None:
            hint = _closest(name, (p.name for p in self.profiles))
            raise CatalogError(f"GPU model {self.name} has no MIG profile {name!r}{hint}")
        return found

    def index_of(self, profile: Profile) -> int:
        return self.profiles.index(profile)

    @cached_property
    def base_profiles(self) -> tuple[Profile, ...]:
        """Profiles without attributes (no ``+me``, ``+gfx``...), largest compute first."""
        return tuple(
            sorted(
                (p for p in self.profiles if not p.has_attributes),
                key=lambda p: (-p.compute_slices, -p.memory_slices),
            )
        )

    @cached_property
    def shape_labels(self) -> dict[Profile, str]:
        """Model-independent shape of each profile: ``1g``, ``1g.2slot``, ``2g``, ``3g``, ``4g``, ``7g``.

        Shapes let a demand mix learned on one model apply to another: ``1g.10gb`` on an A100-80GB and
        ``1g.18gb`` on an H200 are both ``1g``; the 2-memory-slice 1g profile is ``1g.2slot``.
        """
        smallest: dict[int, int] = {}
        for p in self.profiles:
            smallest[p.compute_slices] = min(smallest.get(p.compute_slices, 99), p.memory_slices)
        labels: dict[Profile, str] = {}
        for p in self.profiles:
            label = f"{p.compute_slices}g"
            if p.memory_slices != smallest[p.compute_slices]:
                label += f".{p.memory_slices}slot"
            labels[p] = label
        return labels

    def shape_of(self, profile: Profile) -> str:
        return self.shape_labels[profile]

    def profile_for_shape(self, shape: str) -> Profile | None:
        """The base profile of a shape label on this model."""
        for p in self.base_profiles:
            if self.shape_labels[p] == shape:
                return p
        return None


def _profile_key(name: str) -> str:
    """Normalise a profile spelling: ``MIG 1g.10gb+me``, ``mig-1g.10gb.me`` and ``1g.10gb+me`` are one key."""
    key = name.strip().lower()
    key = key.removeprefix("nvidia.com/").removeprefix("mig ").removeprefix("mig-")
    # The device plugin spells "+" as "." in resource names (1g.10gb+me -> mig-1g.10gb.me).
    return re.sub(r"\.(me\.all|me|gfx)$", r"+\1", key)


def _closest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name.strip(), list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# --- 8-memory-slice geometry shared by A100, H100, H200, GH200 and Blackwell datacenter parts ---------
# NVML profile id -> (compute slices, memory slices, max instances, legal starts): the ``-lgipp`` readouts of
# A100-40GB (MIG User Guide), H100 and H200 agree on them.
_EIGHT_SLICE_GEOMETRY: dict[int, tuple[int, int, int, tuple[int, ...]]] = {
    19: (1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    20: (1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    15: (1, 2, 4, (0, 2, 4, 6)),
    14: (2, 2, 3, (0, 2, 4)),
    9: (3, 4, 2, (0, 4)),
    5: (4, 4, 1, (0,)),
    0: (7, 8, 1, (0,)),
}


def _gib(value: float) -> int:
    return round(value * 1024)


def _eight_slice_model(
    name: str,
    *,
    sizes: Mapping[str, int],
    pci: tuple[str, ...],
    description: str,
    memory_mib: Mapping[int, int] | None = None,
    multiprocessors: Mapping[int, int] | None = None,
    aliases: Mapping[int, tuple[str, ...]] | None = None,
    verified: bool = True,
    without: tuple[int, ...] = (),
) -> GpuModel:
    """Build an 8-slice model from its memory suffixes: ``sizes`` maps ``1g``, ``1g.2slot``, ``2g``... to GB."""
    names = {
        19: f"1g.{sizes['1g']}gb",
        20: f"1g.{sizes['1g']}gb+me",
        15: f"1g.{sizes['1g.2slot']}gb",
        14: f"2g.{sizes['2g']}gb",
        9: f"3g.{sizes['3g']}gb",
        5: f"4g.{sizes['4g']}gb",
        0: f"7g.{sizes['7g']}gb",
    }
    profiles = []
    for pid, (g, mem, count, starts) in _EIGHT_SLICE_GEOMETRY.items():
        if pid in without:
            continue
        profiles.append(
            Profile(
                name=names[pid],
                profile_id=pid,
                compute_slices=g,
                memory_slices=mem,
                max_instances=count,
                starts=starts,
                aliases=(aliases or {}).get(pid, ()),
                memory_mib=(memory_mib or {}).get(pid),
                multiprocessors=(multiprocessors or {}).get(pid),
                placements_verified=verified,
            )
        )
    return GpuModel(
        name=name,
        memory_slices=8,
        compute_slices=7,
        profiles=tuple(profiles),
        pci_device_ids=pci,
        description=description,
        placements_verified=verified,
    )


def _sm(one: int, one_2slot: int, two: int, three: int | None, four: int | None, seven: int | None) -> dict[int, int]:
    values = {19: one, 20: one, 15: one_2slot, 14: two, 9: three, 5: four, 0: seven}
    return {pid: v for pid, v in values.items() if v is not None}


_HOPPER_SMS = _sm(16, 26, 32, 60, 64, 132)
_AMPERE_SMS = _sm(14, 14, 28, 42, 56, 98)

_A30 = GpuModel(
    name="A30-24GB",
    memory_slices=4,
    compute_slices=4,
    profiles=(
        Profile("1g.6gb", 14, 1, 1, 4, (0, 1, 2, 3), memory_mib=_gib(5.81), multiprocessors=14),
        Profile("1g.6gb+me", 21, 1, 1, 1, (0, 1, 2, 3), memory_mib=_gib(5.81), multiprocessors=14),
        Profile("2g.12gb", 5, 2, 2, 2, (0, 2), memory_mib=_gib(11.69), multiprocessors=28),
        Profile("2g.12gb+me", 6, 2, 2, 1, (0, 2), memory_mib=_gib(11.69), multiprocessors=28),
        Profile("4g.24gb", 0, 4, 4, 1, (0,), memory_mib=_gib(23.44), multiprocessors=56),
    ),
    pci_device_ids=("0x20B710DE",),
    description="A30 24GB (4 memory slices)",
)

# RTX PRO 6000 Blackwell Server Edition: 4 slices; public ``-lgip`` output (GoogleCloudPlatform/
# container-engine-accelerators PR #564) gives only the 1g profile ids, and no readout gives placements.
_RTX_PRO_6000 = GpuModel(
    name="RTX-PRO-6000",
    memory_slices=4,
    compute_slices=4,
    profiles=(
        Profile(
            "1g.24gb", 14, 1, 1, 4, (0, 1, 2, 3), memory_mib=_gib(23.62), multiprocessors=46, placements_verified=False
        ),
        Profile(
            "1g.24gb+me",
            21,
            1,
            1,
            1,
            (0, 1, 2, 3),
            memory_mib=_gib(23.62),
            multiprocessors=46,
            placements_verified=False,
        ),
        Profile(
            "1g.24gb+gfx",
            47,
            1,
            1,
            4,
            (0, 1, 2, 3),
            memory_mib=_gib(23.62),
            multiprocessors=46,
            placements_verified=False,
        ),
        Profile(
            "1g.24gb+me.all",
            65,
            1,
            1,
            1,
            (0, 1, 2, 3),
            memory_mib=_gib(23.62),
            multiprocessors=46,
            placements_verified=False,
        ),
        Profile("2g.48gb", None, 2, 2, 2, (0, 2), placements_verified=False),
        Profile("2g.48gb+gfx", None, 2, 2, 2, (0, 2), placements_verified=False),
        Profile("4g.96gb", None, 4, 4, 1, (0,), placements_verified=False),
        Profile("4g.96gb+gfx", None, 4, 4, 1, (0,), placements_verified=False),
    ),
    pci_device_ids=("0x2BB510DE",),
    description="RTX PRO 6000 Blackwell Server Edition (4 memory slices; placements by analogy with A30)",
    placements_verified=False,
)

MODELS: tuple[GpuModel, ...] = (
    _A30,
    _eight_slice_model(
        "A100-40GB",
        sizes={"1g": 5, "1g.2slot": 10, "2g": 10, "3g": 20, "4g": 20, "7g": 40},
        pci=("0x20B010DE", "0x20B110DE", "0x20F110DE", "0x20F610DE"),
        description="A100 40GB (SXM4 and PCIe), A800 40GB",
        memory_mib={
            19: _gib(4.75),
            20: _gib(4.75),
            15: 9856,
            14: _gib(9.75),
            9: _gib(19.62),
            5: _gib(19.62),
            0: _gib(39.50),
        },
        multiprocessors=_AMPERE_SMS,
    ),
    _eight_slice_model(
        "A100-80GB",
        sizes={"1g": 10, "1g.2slot": 20, "2g": 20, "3g": 40, "4g": 40, "7g": 80},
        pci=("0x20B210DE", "0x20B510DE", "0x20F310DE", "0x20F510DE"),
        description="A100 80GB (SXM4 and PCIe), A800 80GB",
        memory_mib={19: _gib(9.50), 20: _gib(9.50), 14: _gib(19.50), 9: _gib(39.25)},
        multiprocessors=_AMPERE_SMS,
        aliases={0: ("7g.79gb",), 9: ("3g.39gb",)},
    ),
    _eight_slice_model(
        "H100-80GB",
        sizes={"1g": 10, "1g.2slot": 20, "2g": 20, "3g": 40, "4g": 40, "7g": 80},
        pci=("0x233010DE", "0x233110DE", "0x232210DE", "0x232410DE"),
        description="H100 80GB (SXM and PCIe), H800 80GB",
        memory_mib={
            19: _gib(9.75),
            20: _gib(9.75),
            15: _gib(19.62),
            14: _gib(19.62),
            9: _gib(39.50),
            5: _gib(39.50),
            0: _gib(79.25),
        },
        multiprocessors=_HOPPER_SMS,
    ),
    _eight_slice_model(
        "H100-NVL-94GB",
        sizes={"1g": 12, "1g.2slot": 24, "2g": 24, "3g": 47, "4g": 47, "7g": 94},
        pci=("0x232110DE", "0x233A10DE"),
        description="H100 NVL 94GB, H800 NVL",
        memory_mib={
            19: _gib(10.75),
            20: _gib(10.75),
            15: _gib(21.62),
            14: _gib(21.62),
            9: _gib(46.38),
            5: _gib(46.38),
            0: _gib(93.12),
        },
        multiprocessors=_HOPPER_SMS,
    ),
    _eight_slice_model(
        "H100-96GB",
        sizes={"1g": 12, "1g.2slot": 24, "2g": 24, "3g": 48, "4g": 48, "7g": 96},
        pci=("0x234210DE", "0x233D10DE", "0x20B610DE", "0x232910DE"),
        description="H100 96GB, GH200 96GB, H20, PG506-96GB",
        multiprocessors=_HOPPER_SMS,
    ),
    _eight_slice_model(
        "GH200-144GB",
        sizes={"1g": 18, "1g.2slot": 36, "2g": 36, "3g": 72, "4g": 72, "7g": 144},
        pci=("0x234810DE",),
        description="GH200 144GB HBM3e",
        memory_mib={19: _gib(17.50), 20: _gib(17.50), 15: _gib(35.25), 14: _gib(35.25)},
        multiprocessors=_HOPPER_SMS,
    ),
    _eight_slice_model(
        "H200-141GB",
        sizes={"1g": 18, "1g.2slot": 35, "2g": 35, "3g": 71, "4g": 71, "7g": 141},
        pci=("0x233510DE", "0x233B10DE"),
        description="H200 141GB (SXM and NVL)",
        # NVML memorySizeMB of a real H200 (driver 580.159.04); other drivers report slightly different sizes
        # (NVIDIA/mig-parted issue #120).
        memory_mib={19: 16384, 20: 16384, 15: 33280, 14: 33280, 9: 71424, 5: 71424, 0: 143360},
        multiprocessors=_HOPPER_SMS,
    ),
    _eight_slice_model(
        "B200",
        sizes={"1g": 23, "1g.2slot": 45, "2g": 45, "3g": 90, "4g": 90, "7g": 180},
        pci=("0x290110DE",),
        description="B200 180GB",
        memory_mib={19: _gib(22.00), 20: _gib(22.00), 15: _gib(44.25), 14: _gib(44.25)},
        multiprocessors=_sm(18, 30, 36, None, None, None),
        verified=False,
    ),
    _eight_slice_model(
        "GB200",
        sizes={"1g": 23, "1g.2slot": 47, "2g": 47, "3g": 93, "4g": 93, "7g": 186},
        pci=("0x294110DE",),
        description="GB200 186GB",
        memory_mib={19: _gib(22.00), 20: _gib(22.00), 15: _gib(45.50)},
        multiprocessors=_sm(18, 32, 38, None, None, None),
        aliases={19: ("1g.24gb",), 20: ("1g.24gb+me",)},
        verified=False,
    ),
    _eight_slice_model(
        "B300",
        sizes={"1g": 34, "1g.2slot": 67, "2g": 67, "3g": 135, "4g": 135, "7g": 269},
        pci=("0x318210DE",),
        description="B300 288GB",
        verified=False,
    ),
    _eight_slice_model(
        "GB300",
        sizes={"1g": 35, "1g.2slot": 70, "2g": 70, "3g": 139, "4g": 139, "7g": 278},
        pci=("0x31C210DE",),
        description="GB300 288GB",
        verified=False,
    ),
    _RTX_PRO_6000,
)

_BY_NAME: dict[str, GpuModel] = {m.name.lower(): m for m in MODELS}
_BY_PCI: dict[str, GpuModel] = {pci.lower(): m for m in MODELS for pci in m.pci_device_ids}

# GPU Feature Discovery's ``nvidia.com/gpu.product``: the NVML device name with spaces turned into dashes, then
# ``-MIG-<profile>`` for the single strategy's MIG devices and ``-SHARED`` for a shared (time-sliced or MPS) resource
# that is not renamed, the default ``renameByDefault: false`` (NVIDIA/k8s-device-plugin
# ``internal/lm/resource.go`` productLabel; GPU Operator docs, gpu-sharing.rst). Older drivers name devices
# without the ``NVIDIA`` prefix (``A100-SXM4-40GB-MIG-1g.5gb`` in NVIDIA/gpu-operator's OpenShift MIG docs), so
# it is optional. Only these exact names (and the catalog's own) are taken: a name that merely starts like one
# (``NVIDIA-A100-81GB``) is an unknown product, reported on its node and left to kube-scheduler's counts.
# Each was seen as a ``nvidia.com/gpu.product`` value in public repositories or docs:
_GFD_PRODUCTS: dict[str, str] = {
    "A30": "A30-24GB",  # GFD label dumps in NVIDIA-A30 cluster guides (nvidia.com/gpu.product=NVIDIA-A30)
    "A100-SXM4-40GB": "A100-40GB",  # NVIDIA/gpu-operator docs, OpenShift MIG page (label dump, MIG-1g.5gb form)
    "A100-PCIE-40GB": "A100-40GB",  # NRP (nautilus) GPU type list, with NVIDIA-A100-80GB-PCIe-MIG-1g.10gb
    "A100-SXM4-80GB": "A100-80GB",  # vllm-project/aibrix GPU list (PR #2388); NRP GPU type list
    "A100-80GB-PCIE": "A100-80GB",  # NRP GPU type list: NVIDIA-A100-80GB-PCIe (matched upper-cased)
    "A100-SXM-80GB": "A100-80GB",  # vllm-project/aibrix GPU list (PR #2388): A100-SXM-80GB
    "A800-SXM4-80GB": "A100-80GB",  # GFD label dump in a training-cluster guide: NVIDIA-A800-SXM4-80GB
    "H100-80GB-HBM3": "H100-80GB",  # NVIDIA NeMo Automodel Kubernetes docs (node_selector), Kueue flavors
    "H100-PCIE": "H100-80GB",  # GFD label dump (nvidia.com/gpu.product=NVIDIA-H100-PCIe, mig.capable=true)
    "H800": "H100-80GB",  # GPU node tables of a Chinese cluster simulator (8x NVIDIA-H800)
    "H100-NVL": "H100-NVL-94GB",  # Helm templates and job scripts selecting nvidia.com/gpu.product: NVIDIA-H100-NVL
    "H20": "H100-96GB",  # GFD label dump on OpenStack (nvidia.com/gpu.product: NVIDIA-H20, gpu.memory 97871)
    "GH200-480GB": "H100-96GB",  # NRP GPU type list; GH200 nodeSelectors (96 GB HBM3 GPU of the 480 GB superchip)
    "GH200-144G-HBM3E": "GH200-144GB",  # the NVML name "NVIDIA GH200 144G HBM3e" (NVIDIA NIM support matrix)
    "H200": "H200-141GB",  # RHOAI hardware profiles and vLLM deployments (nvidia.com/gpu.product: NVIDIA-H200)
    "H200-NVL": "H200-141GB",  # NRP GPU type list; MIG deployments asking nvidia.com/mig-7g.141gb on NVIDIA-H200-NVL
    "B200": "B200",  # GKE B200 recipes (nvidia.com/gpu.product: NVIDIA-B200)
    "GB200": "GB200",  # GFD output quoted from a live GB200 cluster (nvidia.com/gpu.product=NVIDIA-GB200)
    "B300-SXM6-AC": "B300",  # EKS B300 manifests (nvidia.com/gpu.product: NVIDIA-B300-SXM6-AC)
    "RTX-PRO-6000-BLACKWELL-SERVER-EDITION": "RTX-PRO-6000",  # node fixtures of GPU provisioners (EC2 G7e)
}
_MIG_SUFFIX = re.compile(r"-MIG-(?P<profile>.+)$", re.IGNORECASE)
_SHARED_SUFFIX = "-SHARED"


@dataclass(frozen=True, slots=True)
class ProductLabel:
    """What a ``nvidia.com/gpu.product`` value says: the model and, in the single strategy, the profile."""

    model: GpuModel
    single_profile: Profile | None
    invalid_layout: bool = False


def parse_product_label(value: str) -> ProductLabel:
    """Recognise a GFD ``nvidia.com/gpu.product`` value such as ``NVIDIA-H100-80GB-HBM3-MIG-1g.10gb``.

    Raises CatalogError for any other value: the node's GPUs are then not modelled, never guessed.
    """
    text = value.strip()
    if text.upper().endswith(_SHARED_SUFFIX):  # after the MIG profile: GFD appends it last
        text = text[: -len(_SHARED_SUFFIX)]
    profile_text = None
    match = _MIG_SUFFIX.search(text)
    if match:
        profile_text = match.group("profile")
        text = text[: match.start()]
    key = re.sub(r"^NVIDIA[- ]", "", text.upper()).replace(" ", "-")
    name = _GFD_PRODUCTS.get(key)
    model = _BY_NAME[name.lower()] if name is not None else _BY_NAME.get(key.lower())
    if model is None:
        raise CatalogError(f"unknown GPU product {value!r}: not a MIG-capable model in the catalog")
    if profile_text is None:
        return ProductLabel(model, None)
    if profile_text.upper() == "INVALID":
        return ProductLabel(model, None, invalid_layout=True)
    return ProductLabel(model, model.profile(profile_text))


def model_named(name: str) -> GpuModel:
    """A model by catalog name (``H200-141GB``), PCI device id (``0x233510DE``) or GFD product label."""
    key = name.strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    if key in _BY_PCI:
        return _BY_PCI[key]
    try:
        return parse_product_label(name).model
    except CatalogError:
        hint = _closest(name, (m.name for m in MODELS))
        raise CatalogError(f"unknown GPU model {name!r}{hint}") from None


def model_for_pci_id(device_id: str) -> GpuModel | None:
    """The model of a mig-parted ``device-filter`` id such as ``0x20B010DE`` (vendor suffix optional)."""
    key = device_id.strip().lower()
    if len(key) == 6:  # "0x20b0": the device part only
        key += "10de"
    return _BY_PCI.get(key)


def mig_resource_names() -> list[str]:
    """Every ``nvidia.com/mig-*`` resource any catalog model is advertised as, aliases included, sorted."""
    return sorted({n for m in MODELS for p in m.profiles for n in p.resource_names})


def closest_profile_names(name: str, models: Iterable[GpuModel] = MODELS) -> str:
    """`` (did you mean ...?)`` with the profiles of ``models`` closest to ``name``, or an empty string."""
    return _closest(name, (n for m in models for p in m.profiles for n in (p.name, *p.aliases)))
