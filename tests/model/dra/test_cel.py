"""DRA device selectors (extender.model.dra.cel): Kubernetes' CEL environment for devices, its quantity and semver
libraries, its errors, and the memo by the values an expression can read.

Expected answers follow k8s.io/dynamic-resource-allocation ``cel/compile.go`` and k8s.io/apiserver
``pkg/cel/library/{quantity,semverlib}.go`` (their doc comments' examples), semver.org 2.0.0 section 11 for
precedence, and apimachinery's ``resource.ParseQuantity`` for quantities.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache

import pytest
from cachetools import LRUCache
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.model.caches import CACHES
from extender.model.catalog import model_named
from extender.model.dra import cel
from extender.model.dra.cel import MAX_EXPRESSION_BYTES, Selector, SelectorError, compile_selector, parse_semver
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.model.dra.quantity import QuantityError, parse_quantity
from extender.model.dra.types import AttributeValue, Device, Version
from extender.view.dra_objects import parse_resource_slice

NV = DRIVER


def nvidia_devices() -> dict[str, Device]:
    """One H100 as the NVIDIA driver publishes it with DynamicMIG: the full GPU and its 25 MIG placements."""
    slices = [parse_resource_slice(s) for s in dynamic_mig_slices("node-1", model_named("H100-80GB"), 1)]
    return {d.name: d for s in slices for d in s.devices}


DEVICES = nvidia_devices()
MIG = DEVICES["gpu-0-mig-1g10gb-19-0"]
GPU = DEVICES["gpu-0"]


def device(
    attributes: dict[str, AttributeValue] | None = None,
    capacity: dict[str, str] | None = None,
    *,
    multi: bool = False,
) -> Device:
    return Device(
        name="d",
        attributes=tuple(sorted((attributes or {}).items())),
        capacity=tuple(sorted((k, parse_quantity(v)) for k, v in (capacity or {}).items())),
        allow_multiple_allocations=multi,
    )


def answer(expression: str, on: Device = MIG, driver: str = NV) -> bool:
    return compile_selector(expression).matches(on, driver)


# --- answers ------------------------------------------------------------------------------------------------------

A = "device.attributes['gpu.nvidia.com']"
C = "device.capacity['gpu.nvidia.com']"

ANSWERS = [
    # the driver's DeviceClasses (deviceclass-*.yaml) and requests (mig.md)
    (f"device.driver == 'gpu.nvidia.com' && {A}.type == 'mig'", MIG, True),
    (f"device.driver == 'gpu.nvidia.com' && {A}.type == 'mig'", GPU, False),
    (f"device.driver == 'gpu.nvidia.com' && {A}.type == 'gpu'", GPU, True),
    (f"{A}.profile == '1g.10gb'", MIG, True),
    (f"{A}.profile == '2g.20gb'", MIG, False),
    (f"{A}.profile in ['1g.10gb', '2g.20gb']", MIG, True),
    (f"{A}.profile in ['3g.40gb']", MIG, False),
    (f"{A}.productName == 'NVIDIA H100 80GB HBM3'", GPU, True),
    (f"{A}.parentUUID == {A}.parentUUID", MIG, True),
    ("device.attributes['resource.kubernetes.io'].pcieRoot.startsWith('pci')", MIG, True),
    # has(): false for a missing name, never an error
    (f"has({A}.profile)", MIG, True),
    (f"has({A}.profile)", GPU, False),
    (f"!has({A}.uuid) || {A}.uuid.startsWith('GPU-')", GPU, True),
    (f"has({A}.profile) && {A}.profile == '1g.10gb'", GPU, False),
    # a domain the device lacks is an empty map
    ("device.attributes['dra.example.com'].size() == 0", MIG, True),
    ("has(device.attributes['dra.example.com'].x)", MIG, False),
    ("device.capacity['dra.example.com'].size() == 0", MIG, True),
    ("device.attributes['dra.example.com'] == {}", MIG, True),
    ("device.attributes['gpu.nvidia.com'].size() > 5", MIG, True),
    # ... the set of domains, looked at as a whole, is the device's own
    ("'gpu.nvidia.com' in device.attributes", MIG, True),
    ("'dra.example.com' in device.attributes", MIG, False),
    ("device.attributes.exists(d, d == 'resource.kubernetes.io')", MIG, True),
    ("'dra.example.com' in device.attributes && device.attributes['dra.example.com'].x == 1", MIG, False),
    # capacities are quantities
    (f"{C}.memory.compareTo(quantity('40Gi')) >= 0", MIG, False),
    (f"{C}.memory.compareTo(quantity('40Gi')) >= 0", GPU, True),
    (f"{C}.memory.compareTo(quantity('9984Mi')) == 0", MIG, True),
    (f"{C}.memory == quantity('9984Mi')", MIG, True),
    (f"{C}.memory.isGreaterThan(quantity('9Gi'))", MIG, True),
    (f"{C}.memory.isLessThan(quantity('10Gi'))", MIG, True),
    (f"{C}.multiprocessors.isLessThan(quantity('30'))", MIG, True),
    (f"{C}.memory.asInteger() == 9984 * 1024 * 1024", MIG, True),
    (f"{C}.memory.isInteger()", MIG, True),
    (f"{C}.memory.add(quantity('16Mi')) == quantity('10000Mi')", MIG, True),
    (f"{C}.multiprocessors.sub(16) == quantity('0')", MIG, True),
    (f"sign({C}.multiprocessors) == 1", MIG, True),
    (f"sign({C}.encoders) == 0", MIG, True),
    # version attributes are semvers
    (f"{A}.driverVersion.isGreaterThan(semver('550.0.0'))", MIG, True),
    (f"{A}.driverVersion.isLessThan(semver('550.0.0'))", MIG, False),
    (f"{A}.driverVersion.compareTo(semver('580.126.20')) == 0", MIG, True),
    (f"{A}.driverVersion == semver('580.126.20')", MIG, True),
    (f"{A}.driverVersion.major() == 580 && {A}.driverVersion.minor() == 126", MIG, True),
    (f"{A}.driverVersion.patch() == 20", MIG, True),
    (f"{A}.cudaComputeCapability.isGreaterThan(semver('8.0.0'))", GPU, True),
    (f"{A}.cudaDriverVersion.compareTo(semver('13.0.0-rc.1')) == 1", GPU, True),
    # cel.bind, optional types, strings v2, sets
    (f"cel.bind(a, {A}, a.type == 'mig' && a.profile.startsWith('1g'))", MIG, True),
    (f"cel.bind(a, {A}, a.type == 'mig' && a.profile.startsWith('1g'))", GPU, False),
    ("cel.bind(d, 'gpu.nvidia.com', device.attributes[d].type == 'gpu')", GPU, True),
    ("cel.bind(d, 'dra.example.com', device.attributes[d].size() == 0)", GPU, True),
    (f"{A}.?profile.orValue('none') == 'none'", GPU, True),
    (f"{A}.?profile.orValue('none') == '1g.10gb'", MIG, True),
    (f"{A}.brand.lowerAscii() == 'nvidia' && {A}.brand.upperAscii() == 'NVIDIA'", MIG, True),
    (f"{A}.profile.split('.') == ['1g', '10gb']", MIG, True),
    (f"['a', {A}.type].join('-') == 'a-mig'", MIG, True),
    (f"{A}.profile.charAt(0) == '1' && {A}.profile.indexOf('g') == 1", MIG, True),
    (f"{A}.profile.lastIndexOf('g') == 5 && {A}.profile.substring(0, 2) == '1g'", MIG, True),
    (f"{A}.profile.replace('.', '') == '1g10gb' && ' x '.trim() == 'x'", MIG, True),
    (f"'%s/%d'.format([{A}.type, 7]) == 'mig/7'", MIG, True),
    ("strings.quote('a\"b') == '\"a\\\\\"b\"'", MIG, True),
    (f"{A}.profile.matches('^[0-9]g\\\\.[0-9]+gb$')", MIG, True),
    (f"sets.contains(['1g.10gb', '2g.20gb'], [{A}.profile])", MIG, True),
    (f"sets.intersects([{A}.profile], ['7g.80gb'])", MIG, False),
    # the other fields, macros, arithmetic on attribute values (dyn)
    ("device.allowMultipleAllocations == false", MIG, True),
    ("device.attributes['resource.kubernetes.io'].pciBusID.size() == 12", MIG, True),
    (f"[{A}.type, {A}.brand].all(s, s.size() > 2)", MIG, True),
    (f"{A}.exists(k, k == 'profile')", MIG, True),
    (f"{A}.exists(k, k == 'profile')", GPU, False),
    (f"{A}.filter(k, k.startsWith('cuda')).size() == 2", MIG, True),
    # the quantity library's own examples (quantity.go)
    ("quantity('200M').compareTo(quantity('0.2G')) == 0", MIG, True),
    ("quantity('50M').compareTo(quantity('50Mi')) == -1", MIG, True),
    ("quantity('50Mi').compareTo(quantity('50M')) == 1", MIG, True),
    ("quantity('150Mi').isGreaterThan(quantity('100Mi'))", MIG, True),
    ("quantity('50M').isLessThan(quantity('100M'))", MIG, True),
    ("quantity('50k').add(20).sub(quantity('100k')).sub(-50000) == quantity('20')", MIG, True),
    ("quantity('50k').sub(20000).asApproximateFloat() == 30000.0", MIG, True),
    ("quantity('50000000G').isInteger() && quantity('50k').asInteger() == 50000", MIG, True),
    ("quantity('9999999999999999999999999999999999999G').isInteger()", MIG, False),
    ("quantity('1.5').isInteger()", MIG, False),
    ("quantity('1Gi') == quantity('1024Mi') && quantity('1k') != quantity('1Ki')", MIG, True),
    ("sign(quantity('-1m')) == -1", MIG, True),
    ("isQuantity('1.3Gi') && isQuantity('10000k') && !isQuantity('200K') && !isQuantity('1,3G')", MIG, True),
    ("!isQuantity('Three') && !isQuantity('Mi')", MIG, True),
    # the semver library's own examples (semverlib.go)
    ("semver('1.2.3').compareTo(semver('2.0.0')) == -1 && semver('1.2.3').compareTo(semver('0.1.2')) == 1", MIG, True),
    ("semver('1.2.3').major() == 1 && semver('0.1.0-alpha.1').minor() == 1", MIG, True),
    ("isSemver('1.0.0') && !isSemver('hello') && !isSemver('v1.0')", MIG, True),
    ("isSemver('v1.0', true) && semver('v1.0.0', true) == semver('1.0.0')", MIG, True),
    ("semver('1.0', true) == semver('1.0.0') && semver('01.01.01', true) == semver('1.1.1')", MIG, True),
    ("semver('1.0.0+build.1') == semver('1.0.0+build.2')", MIG, True),
    ("semver('1.0.0+build.1').compareTo(semver('1.0.0')) == 0", MIG, True),
]


@pytest.mark.parametrize(("expression", "on", "expected"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_a_selector_gives_kubernetes_answer(expression: str, on: Device, expected: bool) -> None:
    selector = compile_selector(expression)
    assert selector.matches(on, NV) is expected
    assert selector.evaluate(on, NV) is expected


# --- errors -------------------------------------------------------------------------------------------------------

COMPILE_ERRORS = [
    ("device.attributes['gpu.nvidia.com'].profile == ", "compile error: <input>:1:48: Syntax error: mismatched input"),
    ("device.attributes['gpu.nvidia.com'].profile = '1g.10gb'", "compile error"),
    ("device.foo == 'x'", "undeclared reference to 'device.foo'"),
    ("nosuchfunction(device.driver)", "undeclared reference to 'nosuchfunction'"),
    ("device.driver", "must evaluate to bool, not string"),
    ("device.capacity['gpu.nvidia.com'].memory", "must evaluate to bool, not kubernetes.quantity"),
    ("1 + 1", "must evaluate to bool, not int"),
    ("quantity('1') < quantity('2')", "found no matching overload for '_<_'"),
    ("device.capacity['gpu.nvidia.com'].memory > 5", "found no matching overload for '_>_'"),
    ("quantity('1').sign() == 1", "undeclared reference to 'sign'"),  # a function in Kubernetes, not a method
    ("semver('1.0.0').isGreaterThan(quantity('1'))", "found no matching overload for 'isGreaterThan'"),
    ("device.driver == 1", "found no matching overload for '_==_'"),
    # not in this environment (see the module docstring)
    ("[1, 2].sum() == 3", "undeclared reference to 'sum'"),
    ("'abc'.find('b') == 'b'", "undeclared reference to 'find'"),
    ("{'a': 1}.all(k, v, v > 0)", "compile error"),
    ("(" * 33 + "true" + ")" * 33, "recursion limit exceeded. limit: 32"),  # cel-go allows 250
]


@pytest.mark.parametrize(("expression", "message"), COMPILE_ERRORS, ids=[e[0] for e in COMPILE_ERRORS])
def test_an_expression_that_does_not_compile_is_refused_naming_it(expression: str, message: str) -> None:
    with pytest.raises(SelectorError) as raised:
        compile_selector(expression)
    text = str(raised.value)
    assert message in text
    assert repr(expression) in text


RUNTIME_ERRORS = [
    # a missing attribute or capacity is an error, not false (Kubernetes aborts the scheduling attempt)
    (f"{A}.profile == '1g.10gb'", GPU, 'no such key "profile"'),
    (f"{A}.nosuch == 'x'", MIG, 'no such key "nosuch"'),
    (f"{C}.nosuch.isGreaterThan(quantity('1'))", MIG, 'no such key "nosuch"'),
    ("device.attributes['dra.example.com'].x == 1", MIG, 'no such key "x"'),
    (f"{A}.profile == '2g.20gb' || {A}.uuid == 'x'", MIG, 'no such key "uuid"'),
    # a result that is no bool
    (f"{A}.profile", MIG, "evaluated to string '1g.10gb', not a bool"),
    ("device.attributes['resource.kubernetes.io'].pciBusID", MIG, "evaluated to string"),
    # bad operands, found at run time on dyn attribute values
    (f"{A}.profile.isGreaterThan(semver('1.0.0'))", MIG, "No matching overloads"),
    (f"{A}.driverVersion.isGreaterThan(quantity('1'))", MIG, "no such overload"),
    (f"{A}.driverVersion == '580.126.20'", MIG, ""),  # false in Kubernetes too: see below
    ("quantity('x').isInteger()", MIG, "'x' is not a quantity"),
    ("quantity('1.5').asInteger() == 1", MIG, "cannot convert value to integer"),
    ("quantity('10E').asInteger() > 0", MIG, "cannot convert value to integer"),  # 1e19: beyond int64
    ("semver('1.0') == semver('1.0.0')", MIG, "'1.0' is not a semantic version"),
    ("semver('v1.0.0').major() == 1", MIG, "'v1.0.0' is not a semantic version"),
    ("semver('1-rc', true).major() == 1", MIG, "a short version cannot carry pre-release"),
    ("semver('1.0-rc.1', true).major() == 1", MIG, "'1.0-rc.1' is not a semantic version"),  # minor '0-rc'
    # the library's step limit: 10,000 comprehension iterations per evaluation
    (
        "[" + ",".join(["0"] * 101) + "].all(x, [" + ",".join(["0"] * 101) + "].all(y, x == y))",
        MIG,
        "Iteration budget exceeded",
    ),
]


@pytest.mark.parametrize(("expression", "on", "message"), RUNTIME_ERRORS, ids=[e[0][:80] for e in RUNTIME_ERRORS])
def test_an_evaluation_that_fails_raises_naming_the_expression_and_the_problem(
    expression: str, on: Device, message: str
) -> None:
    selector = compile_selector(expression)
    if not message:  # a version attribute is a semver, never equal to a string: false, no error
        assert selector.matches(on, NV) is False
        return
    for attempt in (selector.matches, selector.matches, selector.evaluate):  # the second from the memo
        with pytest.raises(SelectorError) as raised:
            attempt(on, NV)
        assert message in str(raised.value)
        assert repr(expression[:120]).rstrip("'") in str(raised.value)


def test_an_expression_longer_than_ten_kibibytes_is_refused() -> None:
    longest = "true" + " && true" * ((MAX_EXPRESSION_BYTES - 4) // 8)
    assert len(longest) <= MAX_EXPRESSION_BYTES
    assert compile_selector(longest).matches(MIG, NV)
    too_long = longest + " " * (MAX_EXPRESSION_BYTES - len(longest) + 1)
    with pytest.raises(SelectorError, match="longer than Kubernetes' limit of 10240"):
        compile_selector(too_long)
    with pytest.raises(SelectorError, match="bytes"):  # bytes, not characters
        compile_selector("'" + "é" * (MAX_EXPRESSION_BYTES // 2) + "' == ''")


def doubling(levels: int) -> str:
    """A string doubled ``levels`` times by nested cel.bind: 2 ** (levels + 1) characters from a few bytes each."""
    binds = "".join(f"cel.bind(a{i + 1}, a{i} + a{i}, " for i in range(levels))
    return f"cel.bind(a0, 'xy', {binds}size(a{levels}) > 0" + ")" * (levels + 1)


@pytest.mark.parametrize(
    ("expression", "refused"),
    [
        (doubling(10), False),
        (doubling(28), True),  # 512 MiB from 1 KiB of text (29 levels exceed the parser's nesting limit)
        ("'ab'" + ".replace('a', 'aaaa')" * 8 + ".size() > 0", False),
        ("'ab'" + ".replace('a', 'aaaa')" * 14 + ".size() > 0", True),
        ("[" + ",".join(["'x'"] * 100) + "].map(x, x + x).size() == 100", False),
        (f"{A}.filter(k, {A}[k] == 'mig').size() == 1", False),
        ("device.attributes.all(d, device.attributes[d].all(n, device.attributes[d][n] != ''))", False),
    ],
    ids=["double 10 times", "double 28 times", "replace 8 times", "replace 14 times", "map", "filter", "nested"],
)
def test_an_expression_that_could_build_a_huge_value_is_refused(expression: str, refused: bool) -> None:
    if refused:
        with pytest.raises(SelectorError, match="could build a value of more than 10,000,000 characters"):
            compile_selector(expression)
    else:
        assert compile_selector(expression).matches(MIG, NV)


def test_a_bad_version_attribute_fails_every_selector_on_the_device() -> None:
    # Kubernetes converts all attributes before it evaluates (compile.go getAttributeValue)
    bad = device({f"{NV}/type": "mig", f"{NV}/driverVersion": Version("580.126")})
    for expression in (f"{A}.type == 'mig'", "true"):
        with pytest.raises(SelectorError, match=r"attribute gpu.nvidia.com/driverVersion: '580.126' is not a semantic"):
            compile_selector(expression).matches(bad, NV)


def test_a_name_without_a_domain_is_in_the_drivers_domain() -> None:
    bare = device({"type": "mig", "dra.example.com/type": "other"})
    assert compile_selector(f"{A}.type == 'mig'").matches(bare, NV)
    assert compile_selector("device.attributes['dra.example.com'].type == 'other'").matches(bare, NV)
    assert not compile_selector(f"has({A}.type)").matches(bare, "dra.example.com")
    both = device({"type": "bare", f"{NV}/type": "qualified"})  # the API refuses this; the qualified one wins
    for s in (compile_selector(f"{A}.type == 'qualified'"), compile_selector(f"{A}.size() == 1")):
        assert s.matches(both, NV) and s.evaluate(both, NV)


def test_an_attribute_keeps_its_type() -> None:
    typed = device({f"{NV}/b": True, f"{NV}/i": 1, f"{NV}/s": "1"})
    assert answer(f"{A}.b == true && {A}.i == 1 && {A}.s == '1'", typed)
    assert answer(f"{A}.i + 1 == 2 && {A}.i < 1.5", typed)  # cross-type numeric comparison on attribute values
    with pytest.raises(SelectorError, match="No matching overloads"):
        answer(f"{A}.s + 1 == 2", typed)
    assert not answer(f"{A}.b == 1", typed)  # heterogeneous equality: a bool is not an int


def test_allow_multiple_allocations_is_read() -> None:
    assert answer("device.allowMultipleAllocations", device(multi=True))
    assert not answer("device.allowMultipleAllocations", device(multi=False))


# --- quantities and versions ----------------------------------------------------------------------------------------

QUANTITIES = [
    ("1.5Gi", Fraction(3 * 2**29)),
    ("100m", Fraction(1, 10)),
    ("1e3", Fraction(1000)),
    ("1E3", Fraction(1000)),
    ("1E", Fraction(10**18)),
    ("-2.5k", Fraction(-2500)),
    ("0.5", Fraction(1, 2)),
    (".5", Fraction(1, 2)),
    ("81152Mi", Fraction(81152 * 2**20)),
    ("1n", Fraction(1, 10**9)),
    ("0.0000000001", Fraction(1, 10**9)),  # rounded up to a nano unit, as ParseQuantity does
    ("-0.0000000001", Fraction(-1, 10**9)),
    ("1.0000000001", Fraction(10**9 + 1, 10**9)),
    ("8Ei", Fraction(2**63 - 1)),  # binary suffixes are capped at int64
    ("-8Ei", Fraction(-(2**63 - 1))),
    ("7Ei", Fraction(7 * 2**60)),
    ("10E", Fraction(10**19)),  # decimal ones are not
]


@pytest.mark.parametrize(("text", "value"), QUANTITIES, ids=[q[0] for q in QUANTITIES])
def test_a_quantity_parses_as_the_api_server_parses_it(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value
    numerator, denominator = value.numerator, value.denominator
    assert answer(f"quantity('{text}') == quantity('{numerator}').sub(0)", MIG) is (denominator == 1)
    assert answer(f"isQuantity('{text}')", MIG)


@pytest.mark.parametrize("text", ["", "200K", "Three", "Mi", "1,3G", "1.5 Gi", "1Gb", "e3", "--1", "0x10", "1.2.3"])
def test_a_string_that_is_no_quantity_is_refused(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)
    assert not answer(f"isQuantity('{text}')", MIG)
    with pytest.raises(SelectorError, match="is not a quantity"):
        answer(f"quantity('{text}').isInteger()", MIG)


PRECEDENCE = [  # semver.org 2.0.0, section 11
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.10.0",
    "2.0.0",
    "10.0.0",
]


@pytest.mark.parametrize("lower", range(len(PRECEDENCE) - 1), ids=PRECEDENCE[:-1])
def test_semantic_versions_follow_semver_precedence(lower: int) -> None:
    for higher in PRECEDENCE[lower + 1 :]:
        a, b = PRECEDENCE[lower], higher
        assert answer(f"semver('{a}').isLessThan(semver('{b}')) && semver('{b}').isGreaterThan(semver('{a}'))")
        assert answer(f"semver('{a}').compareTo(semver('{b}')) == -1 && semver('{b}').compareTo(semver('{a}')) == 1")
        assert answer(f"semver('{a}') != semver('{b}')")
    assert answer(f"semver('{PRECEDENCE[lower]}').compareTo(semver('{PRECEDENCE[lower]}+build.5')) == 0")


@pytest.mark.parametrize(
    "text", ["1.0", "1", "v1.0.0", "01.0.0", "1.00.0", "1.0.0-", "1.0.0-01", "1.0.0+", "1.0.0-a..b", "1.0.0 ", "a.b.c"]
)
def test_a_string_that_is_no_semantic_version_is_refused(text: str) -> None:
    assert not answer(f"isSemver('{text}')")
    with pytest.raises(ValueError, match="not a semantic version"):
        parse_semver(text)


def test_normalisation_fills_and_trims_as_the_library_does() -> None:
    assert parse_semver("v1", normalize=True) == parse_semver("1.0.0")
    assert parse_semver("v01.002.0003-rc.1", normalize=True) == parse_semver("1.2.3-rc.1")
    assert not answer("isSemver('1.0.0-rc.01', true)")  # what follows the patch number is left as it is


# --- compilation cache and reads ----------------------------------------------------------------------------------


def test_a_selector_is_compiled_once_and_a_failure_is_kept() -> None:
    assert compile_selector("true") is compile_selector("true")
    with pytest.raises(SelectorError) as first:
        compile_selector("1 +")
    with pytest.raises(SelectorError) as second:
        compile_selector("1 +")
    assert first.value is second.value


ATT, CAP = "device.attributes", "device.capacity"
READS = [
    (f"{A}.type == 'mig'", {(ATT, NV, "type")}, set(), set()),
    (f"has({A}.type)", {(ATT, NV, "type")}, set(), set()),
    (f"{A}['type'] == 'mig'", {(ATT, NV, "type")}, set(), set()),
    (f"{A}.?type.orValue('') == 'mig'", {(ATT, NV, "type")}, set(), set()),
    ("device.attributes.d.x == 1", {(ATT, "d", "x")}, set(), set()),
    (f"{C}.memory.isGreaterThan(quantity('1'))", {(CAP, NV, "memory")}, set(), set()),
    (f"cel.bind(a, {A}, a.type == 'mig' && has(a.profile))", {(ATT, NV, "type"), (ATT, NV, "profile")}, set(), set()),
    (f"cel.bind(a, {A}, cel.bind(b, a, b.x == 1))", {(ATT, NV, "x")}, set(), set()),
    (f"{A}.size() > 1", set(), {(ATT, NV)}, set()),
    (f"{A} == {{}}", set(), {(ATT, NV)}, set()),
    (f"{A}.exists(k, {A}[k] == 'mig')", set(), {(ATT, NV)}, set()),
    (f"cel.bind(a, {A}, a.exists(k, a[k] == 1))", set(), {(ATT, NV)}, set()),
    (f"[{A}].size() == 1", set(), {(ATT, NV)}, set()),
    ("'d' in device.attributes", set(), set(), {ATT}),
    ("device.capacity.size() > 0", set(), set(), {CAP}),
    ("cel.bind(d, 'x', device.attributes[d].y == 1)", set(), set(), {ATT}),
    ("[1].exists(device, device == 1)", set(), set(), set()),  # a variable named device is not the device
]


@pytest.mark.parametrize(("expression", "keys", "domains", "whole"), READS, ids=[r[0] for r in READS])
def test_the_reads_of_an_expression_are_every_path_to_a_device_value(
    expression: str, keys: set[tuple[str, str, str]], domains: set[tuple[str, str]], whole: set[str]
) -> None:
    reads = compile_selector(expression).reads
    assert (reads.keys - {k for k in reads.keys if (k[0], k[1]) in domains}, reads.domains, reads.whole) == (
        keys,
        domains,
        whole,
    )


def test_devices_equal_in_what_a_selector_reads_share_one_evaluation() -> None:
    cel._MATCHES.clear()
    selector = compile_selector(f"{A}.type == 'mig' && {A}.profile == '1g.20gb'")
    migs = [d for d in DEVICES.values() if d.name != "gpu-0"]
    answers = [selector.matches(d, NV) for d in migs]
    assert answers.count(True) == 4  # 1g.20gb at starts 0, 2, 4, 6
    assert len([k for k in cel._MATCHES if k[0] == selector.expression]) == len(
        {d.attribute(f"{NV}/profile") for d in migs}
    )


# --- the memo is sound: random devices, the same answer with and without it ---------------------------------------

DOMAINS = (NV, "resource.kubernetes.io", "dra.example.com")
NAMES = ("type", "profile", "x", "driverVersion", "memory")
VALUES: st.SearchStrategy[AttributeValue] = st.one_of(
    st.sampled_from(["mig", "gpu", "1g.10gb", "2g.20gb", ""]),
    st.booleans(),
    st.integers(min_value=-2, max_value=2),
    st.sampled_from([Version("550.0.0"), Version("580.126.20"), Version("1.0.0-rc.1"), Version("1.0.0+b")]),
)
QUANTITY_TEXTS = st.sampled_from(["0", "1", "10Gi", "40Gi", "9984Mi", "1500m"])


@st.composite
def random_devices(draw: st.DrawFn) -> Device:
    names = draw(st.lists(st.tuples(st.sampled_from(DOMAINS), st.sampled_from(NAMES)), max_size=6, unique=True))
    bare = draw(st.booleans())  # the driver's domain left out of its own names
    attributes = {(n if bare and d == NV else f"{d}/{n}"): draw(VALUES) for d, n in names}
    capacities = draw(
        st.lists(st.tuples(st.sampled_from(DOMAINS[:2]), st.sampled_from(NAMES)), max_size=3, unique=True)
    )
    capacity = {f"{d}/{n}": draw(QUANTITY_TEXTS) for d, n in capacities}
    return device(attributes, capacity, multi=draw(st.booleans()))


SOUNDNESS = [
    f"{A}.type == 'mig'",
    f"device.driver == 'gpu.nvidia.com' && {A}.type == 'mig' && {A}.profile == '1g.10gb'",
    f"has({A}.profile) && {A}.profile in ['1g.10gb', '2g.20gb']",
    f"{A}.x == 1 || {A}.x == true",
    f"{A}.driverVersion.isGreaterThan(semver('560.0.0'))",
    f"has({C}.memory) && {C}.memory.compareTo(quantity('10Gi')) >= 0",
    f"{C}.x.isInteger()",
    f"cel.bind(a, {A}, has(a.type) ? a.type == 'gpu' : a.size() == 0)",
    "device.attributes['dra.example.com'].size() > 0",
    "device.attributes['resource.kubernetes.io'].exists(k, k == 'x')",
    "'dra.example.com' in device.attributes",
    "device.attributes.all(d, device.attributes[d].size() < 3)",
    "cel.bind(d, 'dra.example.com', has(device.attributes[d].type))",
    "device.capacity.exists(d, device.capacity[d].exists(n, device.capacity[d][n].sign() == 1))".replace(
        "device.capacity[d][n].sign() == 1", "sign(device.capacity[d][n]) == 1"
    ),
    f"device.allowMultipleAllocations || {A}.?profile.orValue('') == '2g.20gb'",
    f"{A}.profile",
    f"{A}",
]


@settings(max_examples=150, deadline=None)
@given(devices=st.lists(random_devices(), min_size=1, max_size=4), driver=st.sampled_from([NV, "dra.example.com"]))
def test_the_memo_gives_the_answer_of_a_full_evaluation(devices: list[Device], driver: str) -> None:
    for expression in SOUNDNESS:
        try:
            selector = compile_selector(expression)
        except SelectorError:
            assert expression == A  # a map is no bool
            continue
        for d in devices:
            assert _outcome(selector.matches, d, driver) == _outcome(selector.evaluate, d, driver), (expression, d)


def _outcome(run: object, d: Device, driver: str) -> bool | str:
    try:
        return run(d, driver)  # type: ignore[operator,no-any-return]
    except SelectorError as e:
        return str(e)


# --- caches ---------------------------------------------------------------------------------------------------------


def test_the_caches_are_registered() -> None:
    names = set(CACHES.names())
    assert {"cel._SELECTORS", "cel._MATCHES", "cel._GOOD_VERSIONS", "cel.parse_semver"} <= names


def matches_kept(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the answer memo more distinct fingerprints than its bound (for tests/model/test_caches.py)."""
    bound = 4
    monkeypatch.setattr(cel, "_MATCHES", {})
    monkeypatch.setattr(cel, "_MATCHES_LIMIT", bound)
    selector = compile_selector(f"{C}.memory.isGreaterThan(quantity('1'))")
    for i in range(3 * bound + 1):
        selector.matches(device(capacity={f"{NV}/memory": f"{i}Mi"}), NV)
    return len(cel._MATCHES), bound


def selectors_kept(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    bound = 4
    monkeypatch.setattr(cel, "_SELECTORS", LRUCache(maxsize=bound))
    for i in range(3 * bound + 1):
        compile_selector(f"device.attributes['gpu.nvidia.com'].x == {i}")
    return len(cel._SELECTORS), bound


def versions_kept(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    bound = 4
    monkeypatch.setattr(cel, "_GOOD_VERSIONS", {})
    monkeypatch.setattr(cel, "_GOOD_VERSIONS_LIMIT", bound)
    for i in range(3 * bound + 1):
        compile_selector("true").matches(device({f"{NV}/v": Version(f"1.{i}.0")}), NV)
    return len(cel._GOOD_VERSIONS), bound


def _small(name: str, *args: Callable[[int], tuple[object, ...]]) -> Callable[[pytest.MonkeyPatch], tuple[int, int]]:
    """A feed for one of the module's lru_cache functions: swapped for a small one, called with distinct keys."""

    def feed(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
        bound = 4
        small = lru_cache(maxsize=bound)(getattr(cel, name).__wrapped__)
        monkeypatch.setattr(cel, name, small)
        for i in range(3 * bound + 1):
            small(*args[0](i))
        return small.cache_info().currsize, bound

    return feed


CEL_BOUNDED: dict[str, Callable[[pytest.MonkeyPatch], tuple[int, int]]] = {
    "cel._MATCHES": matches_kept,
    "cel._SELECTORS": selectors_kept,
    "cel._GOOD_VERSIONS": versions_kept,
    "cel._quantity_message": _small("_quantity_message", lambda i: (Fraction(i),)),
    "cel._quantity_value": _small("_quantity_value", lambda i: (f"{i}/1",)),
    "cel._semver_message": _small("_semver_message", lambda i: (f"1.{i}.0",)),
    "cel.parse_semver": _small("parse_semver", lambda i: (f"1.{i}.0",)),
}
"""Every bounded cache of the module with a feed (tests/model/test_caches.py checks that each has one)."""


@pytest.mark.parametrize("feed", CEL_BOUNDED.values(), ids=CEL_BOUNDED.keys())
def test_a_cache_fed_more_than_its_bound_stays_within_it(
    feed: Callable[[pytest.MonkeyPatch], tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    size, bound = feed(monkeypatch)
    assert 0 < size <= bound
    assert {n for n in CACHES.names() if n.startswith("cel.")} == set(CEL_BOUNDED)


def test_answers_do_not_depend_on_what_the_caches_hold() -> None:
    selectors = [compile_selector(e) for e in (f"{A}.type == 'mig'", f"{C}.memory.isGreaterThan(quantity('20Gi'))")]
    before = [[s.matches(d, NV) for d in DEVICES.values()] for s in selectors]
    CACHES.clear()
    assert [[s.matches(d, NV) for d in DEVICES.values()] for s in selectors] == before
    assert isinstance(selectors[0], Selector)
