"""DRA device selectors: the CEL expressions of DeviceClasses and requests (``selectors[].cel.expression``),
evaluated against one device as kube-scheduler evaluates them.

**Library.** cel-expr-python (Google's cel-cpp for Python) was chosen over cel-python (pure Python) and
common-expression-language (Rust): it is the only one with a type checker, ``cel.bind`` and the string
extensions, so it rejects at compile time what Kubernetes rejects (unknown functions and fields, wrong operand
types, results that cannot be bool), and it is the fastest (about 74,000 evaluations/s of a three-clause selector
against 21,000 and 2,000). Custom types go in as protobuf messages.

**The environment** follows k8s.io/dynamic-resource-allocation ``cel/compile.go`` on the API server's base
environment (k8s.io/apiserver ``pkg/cel/environment/base.go``, libraries ``pkg/cel/library/quantity.go`` and
``semverlib.go``):

- ``device.driver`` (string), ``device.allowMultipleAllocations`` (bool),
  ``device.attributes[domain].name`` (bool, int, string, or a semver for ``version`` attributes) and
  ``device.capacity[domain].name`` (a quantity). A domain the device lacks is an empty map; a name its domain
  lacks is a runtime error, and ``has(device.attributes['d'].x)`` is false.
- ``quantity(string)``, ``isQuantity(string)``, ``sign(quantity)`` (a function, not a method, as registered
  there), and the methods ``isLessThan``, ``isGreaterThan``, ``compareTo``, ``add`` and ``sub`` (with a quantity
  or an int), ``isInteger``, ``asInteger`` (an error when not whole or beyond int64), ``asApproximateFloat``.
  ``==`` compares values (``quantity('1Gi') == quantity('1024Mi')``); ``<`` on quantities is a compile error.
- ``semver(string)``, ``semver(string, normalize)``, ``isSemver`` (both forms), the methods ``major``, ``minor``,
  ``patch``, ``isLessThan``, ``isGreaterThan``, ``compareTo``, with semver 2.0.0 precedence (build metadata
  ignored, ``1.0.0-alpha < 1.0.0``). ``==`` ignores build metadata too.
- The standard functions and macros, the strings extension version 2 (``lowerAscii``, ``upperAscii``,
  ``charAt``, ``indexOf``, ``lastIndexOf``, ``replace``, ``split``, ``substring``, ``trim``, ``join``,
  ``strings.quote``, ``format``; also ``reverse``), ``cel.bind``, optional types (``.?name``, ``orValue``) and the
  sets extension (``sets.contains``, ``sets.equivalent``, ``sets.intersects``).
- Limits: an expression longer than 10 KiB is refused (``CELSelectorExpressionMaxLength``). Kubernetes' cost
  limit (1e6) is not computed, as the library tracks no cost; instead its step limit, 10,000 comprehension
  iterations per evaluation, stops a long loop (a runtime error), and an expression that could build a value of
  more than 10 million characters or elements (``cel.bind`` doubling a string, nested ``replace``) is refused
  when compiled, from an upper bound of every value's size.

**Not supported** (a compile error here): the Kubernetes lists library (``isSorted``, ``sum``, ``min``, ``max``,
``indexOf`` on lists), the regex library (``find``, ``findAll``), URLs, IP and CIDR, the format library,
two-variable comprehensions, list-typed attributes (DRAListTypeAttributes, alpha) and their ``includes()``.

**Known differences**, none reachable with the NVIDIA driver's selectors: ``isInteger``/``asInteger`` answer from
the value, where Kubernetes answers from the quantity's internal form (there ``quantity('1000m').isInteger()`` is
false; capacities read from the API are canonical and agree); cross-type numeric comparison of two statically
typed operands (``1 < 2.5``) is a compile error, while on attribute values it works as in Kubernetes; an expression
that looks at ``device.attributes`` (or ``capacity``) as a whole (``'d' in device.attributes``, ``size()``,
iteration) sees only the device's domains, so a missing domain it also indexes is an error instead of an empty
map; ``has(device.driver)`` does not compile; nesting deeper than 32 levels does not compile (cel-go allows 250);
quantity and semver values show a field ``_v`` (their text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple

from cachetools import LRUCache
from cel_expr_python import cel as _cel
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

from ..caches import CACHES
from .quantity import QuantityError, parse_quantity
from .types import AttributeValue, Device, Version

MAX_EXPRESSION_BYTES = 10 * 1024
"""``resource.CELSelectorExpressionMaxLength``: the API refuses longer selectors."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SHOWN = 120  # characters of an expression quoted in an error


class SelectorError(Exception):
    """A selector that does not compile, fails at run time or gives no bool; the message quotes it."""


def _quote(expression: str) -> str:
    return repr(expression if len(expression) <= _SHOWN else expression[:_SHOWN] + "...")


_STATUS = re.compile(r"^[A-Z_]+: |\s*\[[A-Z_]+\]$")


def _status_text(text: str) -> str:
    """cel-cpp's ``NOT_FOUND: Key not found in map : "x"`` without the status code (before and after)."""
    return _STATUS.sub("", text.strip())


# --- values: quantities and semantic versions as protobuf messages ------------------------------------------------
# cel-cpp takes Python values of its own types and protobuf messages only. A quantity is a message whose one field
# is its exact value as "numerator/denominator" in lowest terms, so that message equality is value equality; a
# semver's field is its text without build metadata, so that equality ignores build metadata as Compare does.


def _message_types() -> tuple[descriptor_pool.DescriptorPool, type[Any], type[Any]]:
    file = descriptor_pb2.FileDescriptorProto(name="mig_extender/dra_cel.proto", package="kubernetes", syntax="proto3")
    for name in ("Quantity", "Semver"):
        message = file.message_type.add(name=name)
        message.field.add(
            name="_v",
            number=1,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    quantity = message_factory.GetMessageClass(pool.FindMessageTypeByName("kubernetes.Quantity"))
    semver = message_factory.GetMessageClass(pool.FindMessageTypeByName("kubernetes.Semver"))
    return pool, quantity, semver


_POOL, _QuantityMessage, _SemverMessage = _message_types()


@lru_cache(maxsize=4096)
def _quantity_message(value: Fraction) -> Any:
    return _QuantityMessage(_v=f"{value.numerator}/{value.denominator}")


@lru_cache(maxsize=4096)
def _quantity_value(text: str) -> Fraction:
    return Fraction(text)


def _q(message: Any) -> Fraction:
    return _quantity_value(message._v)


_SEMVER = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
"""Semantic versioning 2.0.0 (semver.org's grammar), as github.com/blang/semver/v4 ``Parse`` accepts it."""


@dataclass(frozen=True, slots=True, order=False)
class SemanticVersion:
    major: int
    minor: int
    patch: int
    pre: tuple[int | str, ...]

    def text(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return core + "-" + ".".join(str(p) for p in self.pre) if self.pre else core

    def compare(self, other: SemanticVersion) -> int:
        """Semver 2.0.0 precedence: numbers, then a release above its pre-releases, then pre-release identifiers
        left to right (numeric below alphanumeric, numbers by value, text in ASCII order, fewer below more)."""
        left, right = (self.major, self.minor, self.patch), (other.major, other.minor, other.patch)
        if left != right:
            return -1 if left < right else 1
        if not self.pre or not other.pre:
            return (not self.pre) - (not other.pre)
        for a, b in zip(self.pre, other.pre):
            if a == b:
                continue
            if isinstance(a, int) != isinstance(b, int):
                return -1 if isinstance(a, int) else 1
            return -1 if a < b else 1  # type: ignore[operator]  # same type here
        return (len(self.pre) > len(other.pre)) - (len(self.pre) < len(other.pre))


class SemverError(ValueError):
    """Text that is not a semantic version; the message quotes it."""


@lru_cache(maxsize=4096)
def parse_semver(text: str, normalize: bool = False) -> SemanticVersion:
    """``semver.Parse`` (strict), or with ``normalize`` the Kubernetes library's ``normalizeAndParse``: a leading
    ``v`` dropped, missing minor and patch filled with 0, leading zeros of the parts removed."""
    if normalize:
        text = _normalized(text)
    match = _SEMVER.match(text) if len(text) <= 256 else None
    if match is None:
        raise SemverError(f"{text[:64]!r} is not a semantic version (major.minor.patch, e.g. 1.2.3 or 1.0.0-rc.1)")
    major, minor, patch, pre, _build = match.groups()
    numbers = [int(major), int(minor), int(patch)]
    if max(numbers) >= 2**64:
        raise SemverError(f"{text[:64]!r}: a version number beyond uint64")
    parts = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
    return SemanticVersion(numbers[0], numbers[1], numbers[2], parts)


def _normalized(text: str) -> str:
    text = text.removeprefix("v")
    parts = text.split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            stripped = part.lstrip("0")
            parts[i] = stripped if stripped[:1].isdigit() else "0" + stripped
    if len(parts) < 3:
        if any(c in parts[-1] for c in "+-"):
            raise SemverError(f"{text[:64]!r}: a short version cannot carry pre-release or build metadata")
        parts += ["0"] * (3 - len(parts))
    return ".".join(parts)


@lru_cache(maxsize=4096)
def _semver_message(text: str) -> Any:
    return _SemverMessage(_v=parse_semver(text).text())


def _s(message: Any) -> SemanticVersion:
    return parse_semver(message._v)


def _int64(value: int) -> int:
    """``types.Int(uint64)`` in Go: wraps past int64."""
    return value - 2**64 if value > _INT64_MAX else value


def _sign(value: Fraction) -> int:
    return (value > 0) - (value < 0)


def _quantity(text: str) -> Any:
    try:
        return _quantity_message(parse_quantity(text))
    except QuantityError as e:
        raise ValueError(str(e)) from None


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except QuantityError:
        return False
    return True


def _as_integer(message: Any) -> int:
    value = _q(message)
    if value.denominator != 1 or not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("cannot convert value to integer")
    return int(value)


def _is_integer(message: Any) -> bool:
    value = _q(message)
    return value.denominator == 1 and _INT64_MIN <= value <= _INT64_MAX


def _semver(text: str, normalize: bool = False) -> Any:
    try:
        return _SemverMessage(_v=parse_semver(text, normalize).text())
    except SemverError as e:
        raise ValueError(str(e)) from None


def _is_semver(text: str, normalize: bool = False) -> bool:
    try:
        parse_semver(text, normalize)
    except SemverError:
        return False
    return True


def _functions() -> list[Any]:
    T = _cel.Type
    Q, S = T("kubernetes.Quantity"), T("kubernetes.Semver")

    def cmp(a: Fraction, b: Fraction) -> int:
        return _sign(a - b)

    # name -> (overload id as Kubernetes names it, return type, parameters, is a method, implementation)
    table: list[tuple[str, str, Any, list[Any], bool, Callable[..., Any]]] = [
        ("quantity", "string_to_quantity", Q, [T.STRING], False, _quantity),
        ("isQuantity", "is_quantity_string", T.BOOL, [T.STRING], False, _is_quantity),
        ("sign", "quantity_sign", T.INT, [Q], False, lambda q: _sign(_q(q))),
        ("isGreaterThan", "quantity_is_greater_than", T.BOOL, [Q, Q], True, lambda a, b: _q(a) > _q(b)),
        ("isLessThan", "quantity_is_less_than", T.BOOL, [Q, Q], True, lambda a, b: _q(a) < _q(b)),
        ("compareTo", "quantity_compare_to", T.INT, [Q, Q], True, lambda a, b: cmp(_q(a), _q(b))),
        ("asApproximateFloat", "quantity_get_float", T.DOUBLE, [Q], True, lambda q: float(_q(q))),
        ("asInteger", "quantity_get_int", T.INT, [Q], True, _as_integer),
        ("isInteger", "quantity_is_integer", T.BOOL, [Q], True, _is_integer),
        ("add", "quantity_add", Q, [Q, Q], True, lambda a, b: _quantity_message(_q(a) + _q(b))),
        ("add", "quantity_add_int", Q, [Q, T.INT], True, lambda a, n: _quantity_message(_q(a) + n)),
        ("sub", "quantity_sub", Q, [Q, Q], True, lambda a, b: _quantity_message(_q(a) - _q(b))),
        ("sub", "quantity_sub_int", Q, [Q, T.INT], True, lambda a, n: _quantity_message(_q(a) - n)),
        ("semver", "string_to_semver", S, [T.STRING], False, _semver),
        ("semver", "string_bool_to_semver", S, [T.STRING, T.BOOL], False, _semver),
        ("isSemver", "is_semver_string", T.BOOL, [T.STRING], False, _is_semver),
        ("isSemver", "is_semver_string_bool", T.BOOL, [T.STRING, T.BOOL], False, _is_semver),
        ("isGreaterThan", "semver_is_greater_than", T.BOOL, [S, S], True, lambda a, b: _s(a).compare(_s(b)) > 0),
        ("isLessThan", "semver_is_less_than", T.BOOL, [S, S], True, lambda a, b: _s(a).compare(_s(b)) < 0),
        ("compareTo", "semver_compare_to", T.INT, [S, S], True, lambda a, b: _s(a).compare(_s(b))),
        ("major", "semver_major", T.INT, [S], True, lambda v: _int64(_s(v).major)),
        ("minor", "semver_minor", T.INT, [S], True, lambda v: _int64(_s(v).minor)),
        ("patch", "semver_patch", T.INT, [S], True, lambda v: _int64(_s(v).patch)),
    ]
    # cel-cpp's runtime tells overloads apart by the kinds of their arguments, and both types are messages: of the
    # overloads that differ only in message types (isGreaterThan on quantities and on semvers), the first carries
    # one implementation that chooses by the receiver's message type; the others are declarations for the checker.
    messages = {Q.name(): _QuantityMessage, S.name(): _SemverMessage}
    by_kinds: dict[tuple[str, bool, tuple[str, ...]], dict[type[Any], Callable[..., Any]]] = {}
    for name, _, _, parameters, member, impl in table:
        kinds = tuple("message" if p.name() in messages else p.name() for p in parameters)
        by_kinds.setdefault((name, member, kinds), {})[messages.get(parameters[0].name(), object)] = impl
    overloads: dict[str, list[Any]] = {}
    for name, overload_id, returns, parameters, member, impl in table:
        kinds = tuple("message" if p.name() in messages else p.name() for p in parameters)
        impls = by_kinds.pop((name, member, kinds), None)
        chosen: Callable[..., Any] | None = impl
        if impls is not None and len(impls) > 1:
            chosen = _dispatch(name, impls)
        elif impls is None:
            chosen = None  # declared only: the first overload of its kinds implements it
        declared = (
            _cel.Overload(overload_id, returns, parameters, is_member=member)
            if chosen is None
            else _cel.Overload(overload_id, returns, parameters, is_member=member, impl=chosen)
        )
        overloads.setdefault(name, []).append(declared)
    return [_cel.FunctionDecl(name, group) for name, group in overloads.items()]


def _dispatch(name: str, impls: Mapping[type[Any], Callable[..., Any]]) -> Callable[..., Any]:
    def chosen(receiver: Any, *args: Any) -> Any:
        impl = impls.get(type(receiver))
        if impl is None or any(type(a) is not type(receiver) for a in args):
            raise TypeError(f"no such overload: {name} on {type(receiver).__name__}")
        return impl(receiver, *args)

    return chosen


_EXTENSIONS = """
extensions:
  - name: strings
    version: 2
  - name: bindings
  - name: optional
  - name: sets
"""

_DRIVER, _MULTI, _ATTRIBUTES, _CAPACITY = (
    "device.driver",
    "device.allowMultipleAllocations",
    "device.attributes",
    "device.capacity",
)


@lru_cache(maxsize=1)
def _environment() -> Any:
    """Built once: the declarations are checked when the environment is made."""
    T = _cel.Type
    variables = {  # qualified names: `device` has these fields and no others, as kubernetes.DRADevice
        _DRIVER: T.STRING,
        _MULTI: T.BOOL,
        _ATTRIBUTES: T.Map(T.STRING, T.Map(T.STRING, T.DYN)),
        _CAPACITY: T.Map(T.STRING, T.Map(T.STRING, T("kubernetes.Quantity"))),
    }
    return _cel.NewEnv(
        descriptor_pool=_POOL,
        config=_cel.NewEnvConfigFromYaml(_EXTENSIONS),
        variables=variables,
        functions=_functions(),
    )


# --- the checked expression, read back ------------------------------------------------------------------------------
# cel-expr-python serializes a compiled expression as a cel.expr.CheckedExpr (cel-spec proto/cel/expr/checked.proto
# and syntax.proto) packed in an Any. The messages below declare the fields that are read, with the spec's numbers;
# the rest are skipped as unknown fields.


def _ast_types() -> type[Any]:
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="mig_extender/cel_ast.proto", package="cel.expr", syntax="proto3")

    def message(parent: Any, name: str, fields: Iterable[tuple[str, int, int, str, bool]], oneof: str = "") -> Any:
        m = parent.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for field_name, number, kind, type_name, repeated in fields:
            f = m.field.add(
                name=field_name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            )
            if type_name:
                f.type_name = type_name
            if oneof and field_name.endswith(("_expr", "_value")) and not repeated:
                f.oneof_index = 0
        return m

    S, I64, U64, B, D, BY, M = (
        F.TYPE_STRING,
        F.TYPE_INT64,
        F.TYPE_UINT64,
        F.TYPE_BOOL,
        F.TYPE_DOUBLE,
        F.TYPE_BYTES,
        F.TYPE_MESSAGE,
    )
    E = ".cel.expr.Expr"
    message(
        file.message_type,
        "Constant",
        [
            ("null_value", 1, F.TYPE_INT32, "", False),
            ("bool_value", 2, B, "", False),
            ("int64_value", 3, I64, "", False),
            ("uint64_value", 4, U64, "", False),
            ("double_value", 5, D, "", False),
            ("string_value", 6, S, "", False),
            ("bytes_value", 7, BY, "", False),
        ],
        oneof="constant_kind",
    )
    expr = message(
        file.message_type,
        "Expr",
        [
            ("id", 2, I64, "", False),
            ("const_expr", 3, M, ".cel.expr.Constant", False),
            ("ident_expr", 4, M, ".cel.expr.Expr.Ident", False),
            ("select_expr", 5, M, ".cel.expr.Expr.Select", False),
            ("call_expr", 6, M, ".cel.expr.Expr.Call", False),
            ("list_expr", 7, M, ".cel.expr.Expr.CreateList", False),
            ("struct_expr", 8, M, ".cel.expr.Expr.CreateStruct", False),
            ("comprehension_expr", 9, M, ".cel.expr.Expr.Comprehension", False),
        ],
        oneof="expr_kind",
    )
    message(expr.nested_type, "Ident", [("name", 1, S, "", False)])
    message(
        expr.nested_type,
        "Select",
        [("operand", 1, M, E, False), ("field", 2, S, "", False), ("test_only", 3, B, "", False)],
    )
    message(
        expr.nested_type, "Call", [("target", 1, M, E, False), ("function", 2, S, "", False), ("args", 3, M, E, True)]
    )
    message(expr.nested_type, "CreateList", [("elements", 1, M, E, True)])
    struct = message(
        expr.nested_type,
        "CreateStruct",
        [("message_name", 1, S, "", False), ("entries", 2, M, ".cel.expr.Expr.CreateStruct.Entry", True)],
    )
    message(
        struct.nested_type,
        "Entry",
        [
            ("id", 1, I64, "", False),
            ("field_key", 2, S, "", False),
            ("map_key", 3, M, E, False),
            ("value", 4, M, E, False),
        ],
    )
    message(
        expr.nested_type,
        "Comprehension",
        [
            ("iter_var", 1, S, "", False),
            ("iter_range", 2, M, E, False),
            ("accu_var", 3, S, "", False),
            ("accu_init", 4, M, E, False),
            ("loop_condition", 5, M, E, False),
            ("loop_step", 6, M, E, False),
            ("result", 7, M, E, False),
            ("iter_var2", 8, S, "", False),
        ],
    )
    message(file.message_type, "Reference", [("name", 1, S, "", False), ("overload_id", 3, S, "", True)])
    # Type: only the kinds whose values have a fixed size (the enums as their numbers)
    message(
        file.message_type,
        "Type",
        [
            ("null_value", 2, F.TYPE_INT32, "", False),
            ("primitive_value", 3, F.TYPE_INT32, "", False),
            ("wrapper_value", 4, F.TYPE_INT32, "", False),
            ("well_known_value", 5, F.TYPE_INT32, "", False),
            ("message_type_value", 9, S, "", False),
        ],
        oneof="type_kind",
    )
    checked = message(
        file.message_type,
        "CheckedExpr",
        [
            ("reference_map", 2, M, ".cel.expr.CheckedExpr.ReferenceMapEntry", True),
            ("type_map", 3, M, ".cel.expr.CheckedExpr.TypeMapEntry", True),
            ("expr", 4, M, E, False),
        ],
    )
    for name, value_type in (("ReferenceMapEntry", ".cel.expr.Reference"), ("TypeMapEntry", ".cel.expr.Type")):
        entry = message(checked.nested_type, name, [("key", 1, I64, "", False), ("value", 2, M, value_type, False)])
        entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("cel.expr.CheckedExpr"))


_CheckedExpr = _ast_types()


# --- what an expression can read of a device ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Map:
    """``device.attributes`` or ``device.capacity`` (``kind`` is the variable's name)."""

    kind: str


@dataclass(frozen=True, slots=True)
class _Domain:
    """``device.attributes['domain']`` (or capacity), the domain a constant."""

    kind: str
    domain: str


_Ref = _Map | _Domain | None


@dataclass(slots=True)
class Reads:
    """The parts of a device an expression can read, found from its checked form (a superset of what any one
    evaluation reads: every path from the ``device`` variables to a value is followed)."""

    driver: bool = False
    multi: bool = False
    keys: set[tuple[str, str, str]] = field(default_factory=set)
    """(kind, domain, name) read one by one: ``device.attributes['d'].name``, ``has(...)``, ``['name']``."""
    domains: set[tuple[str, str]] = field(default_factory=set)
    """(kind, domain) read whole: iterated, sized, compared, indexed by a computed name."""
    whole: set[str] = field(default_factory=set)
    """Kinds read whole: the map of domains itself used other than by a constant index."""
    observed: set[str] = field(default_factory=set)
    """Kinds whose set of domains the expression can see (``in``, ``size()``, iteration, passed on)."""
    looked_up: set[tuple[str, str]] = field(default_factory=set)
    """(kind, domain) indexed by a constant."""
    computed_domain: set[str] = field(default_factory=set)
    """Kinds indexed by a computed domain name."""
    strings: set[str] = field(default_factory=set)
    """Every string constant of the expression."""


class _Walker:
    """Follows each use of the device variables through the checked expression (``cel.bind`` included)."""

    def __init__(self, references: Mapping[int, str]) -> None:
        self.references = references
        self.reads = Reads()

    def escape(self, ref: _Ref, *, lookup: bool = False) -> None:
        """``ref`` used in a way not followed: all of it may be read."""
        if isinstance(ref, _Map):
            self.reads.whole.add(ref.kind)
            (self.reads.computed_domain if lookup else self.reads.observed).add(ref.kind)
        elif isinstance(ref, _Domain):
            self.reads.domains.add((ref.kind, ref.domain))

    def visit(self, expr: Any, scope: Mapping[str, _Ref]) -> _Ref:
        kind = expr.WhichOneof("expr_kind")
        if kind == "const_expr":
            if expr.const_expr.WhichOneof("constant_kind") == "string_value":
                self.reads.strings.add(expr.const_expr.string_value)
            return None
        if kind == "ident_expr":
            name = expr.ident_expr.name
            if name in scope:
                return scope[name]
            declared = self.references.get(expr.id)
            if declared == _DRIVER:
                self.reads.driver = True
            elif declared == _MULTI:
                self.reads.multi = True
            elif declared in (_ATTRIBUTES, _CAPACITY):
                return _Map(declared)
            return None
        if kind == "select_expr":
            select = expr.select_expr
            return self.member(self.visit(select.operand, scope), select.field)
        if kind == "call_expr":
            return self.call(expr.call_expr, scope)
        if kind == "list_expr":
            for element in expr.list_expr.elements:
                self.escape(self.visit(element, scope))
            return None
        if kind == "struct_expr":
            for entry in expr.struct_expr.entries:
                if entry.HasField("map_key"):
                    self.escape(self.visit(entry.map_key, scope))
                self.escape(self.visit(entry.value, scope))
            return None
        if kind == "comprehension_expr":
            return self.comprehension(expr.comprehension_expr, scope)
        return None

    def member(self, ref: _Ref, name: str) -> _Ref:
        """``ref.name`` or ``ref['name']``, ``has(ref.name)`` included."""
        if isinstance(ref, _Map):
            self.reads.looked_up.add((ref.kind, name))
            return _Domain(ref.kind, name)
        if isinstance(ref, _Domain):
            self.reads.keys.add((ref.kind, ref.domain, name))
        return None

    def call(self, call: Any, scope: Mapping[str, _Ref]) -> _Ref:
        args = list(call.args)
        if call.function in ("_[_]", "_[?_]") and len(args) == 2:  # index, optional index
            container = self.visit(args[0], scope)
            key = args[1]
            if (
                key.WhichOneof("expr_kind") == "const_expr"
                and key.const_expr.WhichOneof("constant_kind") == "string_value"
            ):
                self.reads.strings.add(key.const_expr.string_value)
                return self.member(container, key.const_expr.string_value)
            self.escape(self.visit(key, scope))
            self.escape(container, lookup=True)
            return None
        if call.function == "_?._" and len(args) == 2:  # optional select: the field is a string constant
            container = self.visit(args[0], scope)
            if args[1].WhichOneof("expr_kind") == "const_expr":
                return self.member(container, args[1].const_expr.string_value)
            self.escape(container)
            return None
        if call.HasField("target"):
            self.escape(self.visit(call.target, scope))
        for arg in args:
            self.escape(self.visit(arg, scope))
        return None

    def comprehension(self, loop: Any, scope: Mapping[str, _Ref]) -> _Ref:
        iterated = self.visit(loop.iter_range, scope)
        self.escape(iterated)  # iterating a map shows its keys
        initial = self.visit(loop.accu_init, scope)
        inner = dict(scope)
        for name in (loop.iter_var, loop.iter_var2):
            if name:
                inner[name] = None  # shadows
        # cel.bind(a, init, body) is a comprehension over an empty list whose accumulator is init throughout
        binds = loop.iter_range.WhichOneof("expr_kind") == "list_expr" and not loop.iter_range.list_expr.elements
        if binds:  # the loop never runs: only the result reads anything
            inner[loop.accu_var] = initial
            return self.visit(loop.result, inner)
        self.escape(initial)
        inner[loop.accu_var] = None
        self.escape(self.visit(loop.loop_condition, inner))
        self.escape(self.visit(loop.loop_step, inner))
        return self.visit(loop.result, inner)


# --- how large a value an expression can build ----------------------------------------------------------------------
# cel-cpp stops a loop after 10,000 iterations but tracks no cost, and cel.bind can double a string at each level:
# 30 levels of `cel.bind(b, a + a, ...)` fit in 10 KiB and would take gigabytes. Kubernetes' cost estimate refuses
# such a selector when the claim is written; here an upper bound of the size of every value (characters of a
# string, elements of a list or map, counted through nesting) is found from the checked expression, and an
# expression that could build a value beyond MAX_VALUE_SIZE is refused.

MAX_VALUE_SIZE = 10_000_000
_DEVICE_SIZE = 32 * (63 + 1 + 63 + 64)  # at most 32 attributes and capacities: domain, name, value of 64 characters
_ITERATIONS = 10_000  # the library's comprehension budget per evaluation


_STRING, _BYTES = 5, 6  # cel.expr.Type.PrimitiveType
_ANY = 1  # cel.expr.Type.WellKnownType


def _fixed_size(kind: Any) -> bool:
    """A type whose values have a size of 1: bool, numbers, null, timestamps and durations, quantities, semvers."""
    which = kind.WhichOneof("type_kind")
    if which in ("primitive_value", "wrapper_value"):
        return getattr(kind, which) not in (_STRING, _BYTES)
    if which == "well_known_value":
        return bool(kind.well_known_value != _ANY)
    return which in ("null_value", "message_type_value")


class _Bound(NamedTuple):
    """Upper bounds of a value: its size, its number of entries (a list's or a map's) and the size of one entry
    (what a loop variable holds: a list's element, a map's key); ``level`` tells device maps from other values."""

    size: int
    entries: int
    entry: int
    level: int = 0
    """3: device.attributes or device.capacity, 2: one of their domains, 1: a device value, 0: anything else."""


_ONE = _Bound(1, 1, 1)
_DEVICE_MAP = _Bound(_DEVICE_SIZE, 32, 63, 3)  # at most 32 domains, each a DNS subdomain of up to 63 characters
_DEVICE_DRIVER = _Bound(63, 1, 1, 1)


class _Sizes:
    def __init__(self, references: Mapping[int, str], fixed: set[int]) -> None:
        self.references = references
        self.fixed = fixed
        """Ids of the expressions whose type has a fixed size."""

    def bound(self, expr: Any, scope: Mapping[str, _Bound]) -> _Bound:
        found = self._bound(expr, scope)  # its parts are bounded (and checked) first
        if found.size > MAX_VALUE_SIZE or found.entries > MAX_VALUE_SIZE:
            raise _TooLarge
        return _ONE if expr.id in self.fixed else found

    def _bound(self, expr: Any, scope: Mapping[str, _Bound]) -> _Bound:
        kind = expr.WhichOneof("expr_kind")
        if kind == "const_expr":
            constant = expr.const_expr
            which = constant.WhichOneof("constant_kind")
            size = max(1, len(getattr(constant, which))) if which in ("string_value", "bytes_value") else 1
            return _Bound(size, 1, 1)
        if kind == "ident_expr":
            if expr.ident_expr.name in scope:
                return scope[expr.ident_expr.name]
            declared = self.references.get(expr.id)
            if declared in (_ATTRIBUTES, _CAPACITY):
                return _DEVICE_MAP
            return _DEVICE_DRIVER if declared == _DRIVER else _ONE
        if kind == "select_expr":
            return self.member(self.bound(expr.select_expr.operand, scope))
        if kind == "list_expr":
            elements = [self.bound(e, scope) for e in expr.list_expr.elements]
            return _Bound(sum(e.size for e in elements) + 1, len(elements), max((e.size for e in elements), default=1))
        if kind == "struct_expr":
            entries = expr.struct_expr.entries
            keys = [self.bound(e.map_key, scope) for e in entries if e.HasField("map_key")]
            values = [self.bound(e.value, scope) for e in entries]
            size = sum(k.size for k in keys) + sum(v.size for v in values) + 1
            return _Bound(size, len(entries), max((k.size for k in keys), default=1))
        if kind == "call_expr":
            return self.call(expr.call_expr, scope)
        if kind == "comprehension_expr":
            return self.comprehension(expr.comprehension_expr, scope)
        return _ONE

    @staticmethod
    def member(holder: _Bound) -> _Bound:
        """A member of ``holder``: a domain of a device map, a value of a domain, or no more than the whole."""
        if holder.level == 3:
            return _Bound(holder.size, 32, 63, 2)  # at most 32 names of up to 63 characters
        if holder.level == 2:
            return _Bound(64, 64, 64, 1)  # a value: a string of up to 64 characters, or a scalar
        return _Bound(holder.size, holder.size, holder.size)

    def call(self, call: Any, scope: Mapping[str, _Bound]) -> _Bound:
        parts = [self.bound(call.target, scope)] if call.HasField("target") else []
        parts += [self.bound(a, scope) for a in call.args]
        if call.function in ("_[_]", "_[?_]", "_?._") and len(parts) == 2:
            return self.member(parts[0])
        size = sum(p.size for p in parts) + 1  # concatenation, format, split and the rest: no more than their parts
        if call.function == "replace" and len(parts) >= 3:  # each character may become the replacement
            size = parts[0].size * (1 + parts[2].size)
        elif call.function == "join" and len(parts) >= 2:
            size = parts[0].size * (1 + parts[1].size)
        if call.function == "_+_":
            return _Bound(size, sum(p.entries for p in parts), max(p.entry for p in parts))
        return _Bound(size, size, size)

    def comprehension(self, loop: Any, scope: Mapping[str, _Bound]) -> _Bound:
        iterated = self.bound(loop.iter_range, scope)
        initial = self.bound(loop.accu_init, scope)
        inner = dict(scope)
        if not (loop.iter_range.WhichOneof("expr_kind") == "list_expr" and not loop.iter_range.list_expr.elements):
            # The macros' steps add at most one element per iteration to the accumulator (map, filter) or keep a
            # bool or a count (all, exists, exists_one); cel.bind's loop never runs.
            variable = _Bound(iterated.entry, iterated.entry, iterated.entry)
            for name in (loop.iter_var, loop.iter_var2):
                if name:
                    inner[name] = variable
            inner[loop.accu_var] = _Bound(0, 0, 0)
            step = self.bound(loop.loop_step, inner)
            self.bound(loop.loop_condition, inner)
            turns = min(iterated.entries, _ITERATIONS)
            initial = _Bound(
                initial.size + turns * step.size,
                initial.entries + turns * max(step.entries, 1),
                max(initial.entry, step.entry),
            )
        inner[loop.accu_var] = initial
        return self.bound(loop.result, inner)


class _TooLarge(Exception):
    pass


def _reads_of(program: Any) -> Reads:
    packed = any_pb2.Any.FromString(program.serialize())
    checked = _CheckedExpr.FromString(packed.value)
    references = {key: ref.name for key, ref in checked.reference_map.items() if ref.name}
    fixed = {key for key, kind in checked.type_map.items() if _fixed_size(kind)}
    try:
        _Sizes(references, fixed).bound(checked.expr, {})
    except _TooLarge:
        raise SelectorError(
            f"could build a value of more than {MAX_VALUE_SIZE:,} characters or elements (Kubernetes' cost limit "
            "refuses such a selector)"
        ) from None
    walker = _Walker(references)
    walker.escape(walker.visit(checked.expr, {}))
    return walker.reads


# --- devices as CEL input -------------------------------------------------------------------------------------------

_ABSENT = ("absent",)  # a name the device lacks, in a fingerprint (no attribute or capacity value is a tuple)


def _split(qualified: str, driver: str) -> tuple[str, str]:
    """``parseQualifiedName``: a name without a domain is in the driver's."""
    domain, sep, name = qualified.partition("/")
    return (domain, name) if sep else (driver, qualified)


def _attribute_value(value: AttributeValue) -> Any:
    return _semver_message(value.text) if isinstance(value, Version) else value


def _domains(pairs: Iterable[tuple[str, Any]], driver: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for qualified, value in pairs:
        domain, name = _split(qualified, driver)
        names = out.setdefault(domain, {})
        if name not in names or "/" in qualified:  # a qualified name wins over the same name left bare
            names[name] = value
    return out


_GOOD_VERSIONS: dict[str, None] = {}
_GOOD_VERSIONS_LIMIT = 4096  # distinct version texts: driver, CUDA and compute capability versions of a fleet
CACHES.register_table("cel._GOOD_VERSIONS", lambda: _GOOD_VERSIONS, lambda: _GOOD_VERSIONS_LIMIT)


def _check_versions(device: Device) -> None:
    """Kubernetes turns every attribute into a CEL value before it evaluates: a bad version fails each selector."""
    for name, value in device.attributes:
        if value.__class__ is Version and value.text not in _GOOD_VERSIONS:
            try:
                parse_semver(value.text)
            except SemverError as e:
                raise SelectorError(f"device {device.name!r}: attribute {name}: {e}") from None
            if len(_GOOD_VERSIONS) >= _GOOD_VERSIONS_LIMIT:
                _GOOD_VERSIONS.clear()
            _GOOD_VERSIONS[value.text] = None


def _tag(value: object) -> object:
    """A value as a fingerprint holds it: with its type (``True == 1`` in Python, but a bool attribute is not an
    int attribute), a version by its text, a quantity as its two integers (cheaper to hash than a Fraction)."""
    kind = value.__class__
    if kind is Fraction:
        return (value.numerator, value.denominator)  # type: ignore[attr-defined]
    if kind is Version:
        return (kind, value.text)  # type: ignore[attr-defined]
    return (kind, value)


def _whole(pairs: Iterable[tuple[str, Any]], driver: str, domain: str | None) -> tuple[object, ...]:
    """The (domain, name) -> value items of a map, or of one of its domains, in a fixed order."""
    items = [(_split(n, driver), _tag(v)) for n, v in pairs]
    return tuple(sorted((i for i in items if domain is None or i[0][0] == domain), key=lambda i: i[0]))


# --- selectors ------------------------------------------------------------------------------------------------------

_SELECTORS_LIMIT = 2048  # distinct selector texts in DeviceClasses and claims
_SELECTORS: LRUCache[str, Selector | SelectorError] = LRUCache(maxsize=_SELECTORS_LIMIT)
CACHES.register_table("cel._SELECTORS", lambda: _SELECTORS, lambda: int(_SELECTORS.maxsize))

# Answers per (expression, fingerprint): a few selectors x the distinct kinds of device in a fleet (one per GPU model
# and MIG profile, times driver versions): a few hundred; emptied when full.
_MATCHES: dict[tuple[str, tuple[object, ...]], bool | str] = {}
_MATCHES_LIMIT = 65_536
CACHES.register_table("cel._MATCHES", lambda: _MATCHES, lambda: _MATCHES_LIMIT)
CACHES.register_function("cel._quantity_message", lambda: _quantity_message)
CACHES.register_function("cel._quantity_value", lambda: _quantity_value)
CACHES.register_function("cel._semver_message", lambda: _semver_message)
CACHES.register_function("cel.parse_semver", lambda: parse_semver)


class Selector:
    """One compiled selector. ``matches`` is memoised; ``evaluate`` always runs the expression on the whole device."""

    __slots__ = ("_keys", "_lookups", "_prefill", "_program", "expression", "reads")

    def __init__(self, expression: str, program: Any, reads: Reads) -> None:
        self.expression = expression
        self._program = program
        self.reads = reads
        self._keys = tuple(sorted(reads.keys))
        # What a fingerprint is made of, per kind: the whole map, domains whole, then names one by one (those not
        # already covered by a whole read), each as (qualified name, domain, name).
        lookups: dict[str, tuple[bool, tuple[str, ...], tuple[tuple[str, str, str], ...]]] = {}
        for kind in (_ATTRIBUTES, _CAPACITY):
            whole = kind in reads.whole
            domains = () if whole else tuple(sorted(d for k, d in reads.domains if k == kind))
            names = (
                () if whole else tuple((f"{d}/{n}", d, n) for k, d, n in self._keys if k == kind and d not in domains)
            )
            lookups[kind] = (whole, domains, names)
        self._lookups = lookups
        # A domain the device lacks is an empty map (compile.go's newStringInterfaceMapWithDefault). cel-cpp has no
        # map with a default, so the domains the expression can index get an empty map when the device lacks them:
        # those indexed by a constant, or, when a domain name is computed, every string of the expression. An
        # expression that sees the set of domains (``in``, ``size()``, iteration) gets none added, so that it sees
        # the device's own.
        prefill: dict[str, frozenset[str]] = {}
        for kind in (_ATTRIBUTES, _CAPACITY):
            if kind in reads.observed:
                prefill[kind] = frozenset()
            elif kind in reads.computed_domain:
                prefill[kind] = frozenset(reads.strings)
            else:
                prefill[kind] = frozenset(d for k, d in reads.looked_up if k == kind)
        self._prefill = prefill

    def __repr__(self) -> str:
        return f"Selector({_quote(self.expression)})"

    def matches(self, device: Device, driver: str) -> bool:
        """Whether ``device`` of ``driver`` satisfies the selector; SelectorError when the expression fails on it
        (a missing attribute, a bad operand) or gives no bool: Kubernetes then aborts the scheduling attempt."""
        _check_versions(device)
        # Memoisation. An evaluation is a deterministic function of the values it reads: the expression is fixed,
        # the functions are pure and nothing else enters (no time, no randomness). The walk over the checked
        # expression (Reads) follows every path from the device variables to a value, so the values at those
        # paths -- a name that is absent included, as "absent" -- are all an evaluation can read. Two devices equal
        # there get the same answer, error or bool, and the answer is kept per (expression, those values).
        # The paths are found once per expression from its checked form rather than recorded while it runs:
        # cel-cpp converts its whole input before evaluating and offers no hook on a map lookup. They are the union
        # of what any evaluation may read; the fingerprint of a device is built from them only.
        key = (self.expression, self._fingerprint(device, driver))
        answer = _MATCHES.get(key)
        if answer is None:
            try:
                answer = self._run(self._input(device, driver, restricted=True))
            except SelectorError as e:
                answer = str(e)
            if len(_MATCHES) >= _MATCHES_LIMIT:
                _MATCHES.clear()
            _MATCHES[key] = answer
        if answer.__class__ is str:
            raise SelectorError(answer)
        return answer  # type: ignore[return-value]

    def evaluate(self, device: Device, driver: str) -> bool:
        """``matches`` without the memo and with the whole device as input (the reference the memo must equal)."""
        _check_versions(device)
        return self._run(self._input(device, driver, restricted=False))

    def _fingerprint(self, device: Device, driver: str) -> tuple[object, ...]:
        reads = self.reads
        parts: list[object] = []
        if reads.driver:
            parts.append(driver)
        if reads.multi:
            parts.append(device.allow_multiple_allocations)
        for kind, pairs in ((_ATTRIBUTES, device.attributes), (_CAPACITY, device.capacity)):
            whole, domains, names = self._lookups[kind]
            if whole:
                parts.append(_whole(pairs, driver, None))
                continue
            for domain in domains:
                parts.append(_whole(pairs, driver, domain))
            if names:
                found = dict(pairs)
                for qualified, domain, name in names:
                    value = found.get(qualified, _ABSENT)
                    if value is _ABSENT and domain == driver:  # the driver's own domain may be left out
                        value = found.get(name, _ABSENT)
                    parts.append(value if value is _ABSENT else _tag(value))
        return tuple(parts)

    def _input(self, device: Device, driver: str, *, restricted: bool) -> dict[str, Any]:
        """The CEL input: all of the device, or (``restricted``) only what the expression can read."""
        reads = self.reads
        data: dict[str, Any] = {
            _DRIVER: driver if reads.driver or not restricted else "",
            _MULTI: device.allow_multiple_allocations if reads.multi or not restricted else False,
        }
        converted = {
            _ATTRIBUTES: [(n, _attribute_value(v)) for n, v in device.attributes],
            _CAPACITY: [(n, _quantity_message(v)) for n, v in device.capacity],
        }
        for kind, pairs in converted.items():
            domains = _domains(pairs, driver)
            whole, whole_domains, names = self._lookups[kind]
            if restricted and not whole:
                kept = {d: domains[d] for d in whole_domains if d in domains}
                for _, d, n in names:
                    if d in domains and n in domains[d]:
                        kept.setdefault(d, {})[n] = domains[d][n]
                domains = kept
            for d in self._prefill[kind]:
                domains.setdefault(d, {})
            data[kind] = domains
        return data

    def _run(self, data: dict[str, Any]) -> bool:
        try:
            value = self._program.eval(data=data)
        except RuntimeError as e:  # the library's own limits (iteration budget) and internal failures
            raise SelectorError(f"selector {_quote(self.expression)}: runtime error: {_status_text(str(e))}") from None
        kind = value.type()
        if kind == _cel.Type.BOOL:
            return bool(value.value())
        if kind == _cel.Type.ERROR:
            text = _status_text(str(value.value()))
            if text.startswith("Key not found in map"):
                name = text.partition(":")[2].strip()
                text = f"no such key {name} (a missing attribute or capacity is an error; test with has())"
            raise SelectorError(f"selector {_quote(self.expression)}: runtime error: {text}")
        shown = repr(value.plain_value()) if kind != _cel.Type.UNKNOWN else "unknown"
        raise SelectorError(
            f"selector {_quote(self.expression)}: evaluated to {kind.name().lower()} {shown[:_SHOWN]}, not a bool"
        )


def compile_selector(expression: str) -> Selector:
    """The compiled selector, kept per expression text; SelectorError (kept too) naming the problem."""
    kept = _SELECTORS.get(expression)
    if kept is None:
        try:
            kept = _compile(expression)
        except SelectorError as e:
            kept = e
        _SELECTORS[expression] = kept
    if isinstance(kept, SelectorError):
        raise kept
    return kept


def _compile(expression: str) -> Selector:
    if not isinstance(expression, str):
        raise SelectorError(f"selector {expression!r}: not a string")
    size = len(expression.encode())
    if size > MAX_EXPRESSION_BYTES:
        raise SelectorError(
            f"selector {_quote(expression)}: {size} bytes, longer than Kubernetes' limit of {MAX_EXPRESSION_BYTES}"
        )
    try:
        program = _environment().compile(expression)
    except RuntimeError as e:
        text = _status_text(str(e)).removeprefix("ERROR: ").strip()
        raise SelectorError(f"selector {_quote(expression)}: compile error: {text}") from None
    returns = program.return_type()
    if returns not in (_cel.Type.BOOL, _cel.Type.DYN):
        raise SelectorError(f"selector {_quote(expression)}: must evaluate to bool, not {returns.name().lower()}")
    try:
        reads = _reads_of(program)
    except SelectorError as e:
        raise SelectorError(f"selector {_quote(expression)}: {e}") from None
    return Selector(expression, program, reads)
