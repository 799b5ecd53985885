"""Signatures of the vendors' pybind11 modules (pylibfranka, ur_rtde), read from their docstrings.

pybind11 functions are builtins without `inspect.signature`; their docstring starts with one line
per overload, `name(self: T, x: float, y: int = 3) -> R`. Unnamed arguments appear as `arg0`,
`arg1`: callers can only pass those by position, so their names are free in a double.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

_SIG = re.compile(r"^(?:\d+\.\s+)?(?P<name>\w+)\((?P<params>.*)\)\s*->", re.MULTILINE)
_UNNAMED = re.compile(r"^arg\d+$")


@dataclass(frozen=True)
class Param:
    name: str
    optional: bool

    @property
    def positional_only(self) -> bool:
        return bool(_UNNAMED.match(self.name))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (types like Annotated[list[float], "X"])."""
    out, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def real_overloads(func: object) -> list[list[Param]] | None:
    """Parameter lists (without self) of each overload of a pybind11 callable; None if the
    docstring holds no signature (e.g. a class with no bound constructor)."""
    doc = getattr(func, "__doc__", None) or ""
    name = getattr(func, "__name__", None)
    overloads = []
    for m in _SIG.finditer(doc):
        if name and m.group("name") != name:
            continue
        params = []
        for part in _split_top_level(m.group("params")):
            pname = part.split(":", 1)[0].split("=", 1)[0].strip()
            if pname in ("self", "*args", "**kwargs", "*", "/"):
                continue
            params.append(Param(pname, "=" in part))
        overloads.append(params)
    return overloads or None


def double_params(func: object) -> list[Param]:
    sig = inspect.signature(func)
    return [Param(p.name, p.default is not inspect.Parameter.empty) for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def signature_mismatch(real: object, double: object) -> str | None:
    """Why the double's callable cannot stand for the real one (None when it can): some overload
    of the real must have the same parameters, in order, with the same names (where the real one
    names them) and the same optional/required split."""
    overloads = real_overloads(real)
    if overloads is None:
        return None
    mine = double_params(double)
    for params in overloads:
        if len(params) != len(mine):
            continue
        if all((r.positional_only or r.name == d.name) and r.optional == d.optional for r, d in zip(params, mine)):
            return None
    real = " | ".join(_show(o) for o in overloads)
    return f"{_show(mine)} matches none of the real overloads: {real}"


def _show(params: list[Param]) -> str:
    return "(" + ", ".join(p.name + ("=…" if p.optional else "") for p in params) + ")"
