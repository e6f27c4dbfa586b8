"""Kubernetes resource quantities (``81152Mi``, ``1.5``, ``100m``, ``1e3``) as exact fractions.

The grammar is apimachinery's ``resource.ParseQuantity`` (k8s.io/apimachinery/pkg/api/resource/quantity.go):
an optional sign, a decimal number, and one suffix: binary SI (``Ki`` .. ``Ei``), decimal SI (``n`` .. ``E``)
or a decimal exponent (``e3``, ``E-2``). Counters, capacities and CEL ``quantity()`` values all go through here,
so that ``81152Mi`` compares with ``85093171200`` as the API server compares them.

Like ``ParseQuantity``, a value finer than a nano unit is rounded away from zero to the next nano unit
(``0.0000000001`` is ``1n``), and a binary-suffixed value beyond int64 is capped at 2^63-1 (``8Ei``). Values the
API server has stored are canonical already; this matters for literals such as CEL's ``quantity('...')``.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY = re.compile(r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?[0-9]+))?$")
_MAX_TEXT = 64  # far beyond any real quantity; keeps a hostile string from costing a big-number parse
_MAX_EXPONENT = 64
_NANO = 10**9
MAX_BINARY = 2**63 - 1
"""``resource.maxAllowed``: where ParseQuantity caps binary-suffixed (``Ki`` .. ``Ei``) values."""


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message quotes it."""


def parse_quantity(text: str) -> Fraction:
    """The exact value of ``text``; raises QuantityError naming it when it is not a quantity."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise QuantityError(f"{str(text)[:_MAX_TEXT]!r} is not a quantity")
    match = _QUANTITY.match(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity (a number with an optional suffix such as Mi, k or e3)")
    sign, number, suffix, exponent = match.groups()
    value = Fraction(number)
    if exponent is not None:
        power = int(exponent)
        if abs(power) > _MAX_EXPONENT:
            raise QuantityError(f"{text!r}: exponent out of range")
        value *= Fraction(10) ** power
    elif suffix in _BINARY:
        value = min(value * _BINARY[suffix], Fraction(MAX_BINARY))
    else:
        value *= _DECIMAL[suffix or ""]
    if (value * _NANO).denominator != 1:
        value = Fraction(-((-value.numerator * _NANO) // value.denominator), _NANO)  # up, to the next nano unit
    return -value if sign == "-" else value


def quantity_of(value: object) -> Fraction:
    """A quantity from JSON: a string as above, or a JSON number (kubectl and YAML may give either)."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value).limit_denominator(10**9)
    if isinstance(value, str):
        return parse_quantity(value.strip())
    raise QuantityError(f"{value!r} is not a quantity")
