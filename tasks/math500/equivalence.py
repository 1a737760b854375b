"""MATH answer equivalence: Hendrycks-style string normalisation, and sympy on top.

    from dllmrl.tasks.math500.equivalence import hendrycks_equal, sympy_equal
    hendrycks_equal("\\\\dfrac{1}{2}", "0.5")   # True
    sympy_equal("\\\\frac{\\\\sqrt{3}}{2}", "\\\\frac12\\\\sqrt3")  # True

``normalise`` re-implements the normalisation of the MATH paper's ``is_equiv`` (the one the
reference scores with), so ``hendrycks_equal`` reproduces the published metric. ``sympy_equal``
converts a small LaTeX subset (fractions, roots, powers, pi, products, tuples, units, degrees,
percent) into sympy and compares values. Model text reaches ``parse_expr`` (which calls ``eval``)
only after a whitelist check: digits, operators, brackets and known names, nothing else; big
exponents are refused before anything is evaluated.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- Hendrycks normalisation
def _braced_sqrt(s: str) -> str:
    """\\sqrt3 -> \\sqrt{3} (one character after a bare \\sqrt)."""
    parts = s.split("\\sqrt")
    out = parts[0]
    for p in parts[1:]:
        out += "\\sqrt" + (p if p.startswith("{") or not p else "{" + p[0] + "}" + p[1:])
    return out


def _braced_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}; leaves \\frac{a}{b} alone."""
    parts = s.split("\\frac")
    out = parts[0]
    for p in parts[1:]:
        out += "\\frac"
        if p.startswith("{"):
            out += p
            continue
        if len(p) < 2:
            return s  # malformed: give up, as the original does
        a, b, rest = p[0], p[1], p[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _slash_to_frac(s: str) -> str:
    """An integer ratio 'a/b' written plainly -> \\frac{a}{b}."""
    m = re.fullmatch(r"(-?\d+)/(-?\d+)", s)
    return f"\\frac{{{int(m.group(1))}}}{{{int(m.group(2))}}}" if m else s


def normalise(s: str) -> str:
    """The MATH paper's answer normalisation (``strip_string``), step for step."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    if "\\text{ " in s:  # a unit on the right: "5 \text{ cm}" -> "5 "
        s = s.split("\\text{ ")[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s.startswith("."):
        s = "0" + s
    lhs_rhs = s.split("=")
    if len(lhs_rhs) == 2 and len(lhs_rhs[0]) <= 2:  # "k = 5" -> " 5"
        s = lhs_rhs[1]
    s = _braced_sqrt(s)
    s = s.replace(" ", "")
    s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def hendrycks_equal(pred: str | None, gold: str | None) -> bool:
    """The reference's metric: equal after normalisation."""
    if pred is None or gold is None:
        return False
    return normalise(pred) == normalise(gold)


# ---------------------------------------------------------------- sympy
_NAMES = {"sqrt", "pi", "oo", "I", "E"}
_SAFE = re.compile(r"^[0-9a-zA-Z+\-*/().,\[\]\s]*$")
_MAX_LEN = 200
_MAX_EXP = 1000


def _unwrap(s: str, head: str) -> str:
    """Replace every ``head{X}`` by ``X`` (brace-matched)."""
    while True:
        i = s.find(head + "{")
        if i < 0:
            return s
        j, depth = i + len(head), 0
        for k in range(j, len(s)):
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            if depth == 0:
                s = s[:i] + s[j + 1:k] + s[k + 1:]
                break
        else:
            return s


def _replace_command(s: str, name: str, nargs: int, build) -> str | None:
    """Rewrite ``\\name{a}{b}`` (brace-matched arguments) with ``build(a, b)``; None when malformed."""
    while True:
        i = s.find("\\" + name + "{")
        if i < 0:
            return s
        args, k = [], i + len(name) + 1
        for _ in range(nargs):
            if k >= len(s) or s[k] != "{":
                return None
            depth = 0
            for m in range(k, len(s)):
                depth += {"{": 1, "}": -1}.get(s[m], 0)
                if depth == 0:
                    args.append(s[k + 1:m])
                    k = m + 1
                    break
            else:
                return None
        s = s[:i] + build(*args) + s[k:]


def to_sympy_text(s: str) -> str | None:
    """A LaTeX answer as sympy-parsable text, or None when it is outside the supported subset."""
    s = s.strip().strip("$").strip()
    s = _unwrap(_unwrap(s, "\\boxed"), "\\fbox")
    for unit_cmd in ("\\text", "\\mbox", "\\mathrm", "\\textbf"):
        # A unit after a value ("5\text{ cm}") goes; a bare word ("\text{Evelyn}") is not maths.
        s = re.sub(r"(?<=[0-9}])\s*" + re.escape(unit_cmd) + r"\{[^{}]*\}", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _braced_fracs(_braced_sqrt(s))
    for old, new in [("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\circ", ""),
                     ("\\degree", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("\\!", ""), ("\\,", ""),
                     ("\\;", ""), ("\\ ", ""), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"),
                     ("\\pi", " pi "), ("\\infty", " oo "), ("\\{", "("), ("\\}", ")")]:
        s = s.replace(old, new)
    if re.fullmatch(r"\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*", s):  # "1,000" is a number, not a pair
        s = s.replace(",", "")
    s = _replace_command(s, "frac", 2, lambda a, b: f"(({a})/({b}))")
    if s is None:
        return None
    s = re.sub(r"\\sqrt\[([^\]]*)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", s)
    s = _replace_command(s, "sqrt", 1, lambda a: f"sqrt({a})")
    if s is None or "\\" in s:
        return None  # an unsupported command is left
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    if "=" in s:
        lhs, _, rhs = s.partition("=")
        if "=" in rhs or len(lhs.strip()) > 2:
            return None
        s = rhs  # "x = 5" -> "5", as the Hendrycks normalisation does
    s = s.strip()
    if not s or len(s) > _MAX_LEN or not _SAFE.match(s) or re.search(r"\.(?!\d)", s):
        return None  # a '.' not followed by a digit could reach an attribute ("E.n(99999)")
    names = set(re.findall(r"[A-Za-z]+", s))
    if any(len(n) > 1 and n not in _NAMES for n in names):
        return None  # words (units, names) are not maths; single letters are variables
    return s


def _split_top(s: str) -> tuple[str, list[str]]:
    """'(1, 2)' -> ('()', ['1', '2']); a plain value -> ('', [value]); brackets kept for intervals."""
    s = s.strip()
    pair = s[:1] + s[-1:]
    inner = s[1:-1] if pair in ("()", "[]", "(]", "[)") else s
    parts, depth, cur = [], 0, ""
    for ch in inner:
        depth += ch in "([" and 1 or (ch in ")]" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if len(parts) == 1:
        return "", [s]
    return (pair if inner is not s else ""), parts


@functools.lru_cache(maxsize=1)
def _sympy_namespace() -> dict:
    """The names sympy's parser emits (Integer, Add, Mul, Pow...): sympy's public namespace."""
    ns: dict = {}
    exec("from sympy import *", ns)  # noqa: S102 - a fixed import statement, no user text
    return ns


def _parse(text: str):
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor, implicit_multiplication_application, parse_expr, standard_transformations,
    )

    # Every single letter is a plain symbol (so 'N' or 'S' never reach sympy functions of that name).
    local = {n: sympy.Symbol(n) for n in set(re.findall(r"[a-zA-Z]", text)) - {"I", "E"}}
    local.update({"sqrt": sympy.sqrt, "pi": sympy.pi, "oo": sympy.oo, "I": sympy.I, "E": sympy.E})
    expr = parse_expr(
        text, local_dict=local, global_dict=_sympy_namespace(),
        transformations=standard_transformations + (implicit_multiplication_application, convert_xor),
        evaluate=False,
    )
    _check_size(expr, [1.0])
    return expr


def _check_size(e, budget: list) -> None:
    """Refuse expressions whose exact value would be enormous (2^10^10^10), before sympy computes it.

    Bottom-up over the unevaluated tree: each constant exponent is evaluated only after its own
    parts passed, and the product of all exponent sizes must stay under _MAX_EXP ** 2 (a number
    of at most about a million digits).
    """
    import sympy

    for arg in e.args:
        _check_size(arg, budget)
    if isinstance(e, sympy.Pow) and not e.exp.free_symbols:
        size = abs(complex(sympy.N(e.exp, 15)))
        budget[0] *= max(1.0, size)
        if size > _MAX_EXP or budget[0] > _MAX_EXP**2:
            raise ValueError("exponent too large to evaluate safely")


def _values_equal(a: str, b: str) -> bool:
    import sympy

    if "[" in a + b or "]" in a + b:
        return False  # brackets are only interval ends, handled by _split_top; a list is not a value

    x, y = _parse(a), _parse(b)
    sx, sy = sympy.simplify(x), sympy.simplify(y)
    if sx == sy:  # also covers infinities, where x - y is nan
        return True
    diff = sympy.simplify(sx - sy)
    if diff == 0:
        return True
    if not diff.free_symbols:
        value = complex(sympy.N(diff))
        return abs(value) < 1e-6 * max(1.0, abs(complex(sympy.N(y))))
    return False


def sympy_equal(pred: str | None, gold: str | None) -> bool | None:
    """True/False when both answers parse and sympy compares them (tuples element by element);
    None when either is outside the supported LaTeX subset, so no verdict exists."""
    if pred is None or gold is None:
        return None if gold is None else False
    a, b = to_sympy_text(pred), to_sympy_text(gold)
    if a is None or b is None:
        return None
    (ka, pa), (kb, pb) = _split_top(a), _split_top(b)
    if len(pa) != len(pb) or (len(pa) > 1 and ka != kb and "[" in ka + kb):
        return False  # different arity, or intervals with different ends
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sympy deprecation chatter on odd input
            return all(_values_equal(x, y) for x, y in zip(pa, pb))
    except Exception as e:  # sympy raises many types on odd input: no verdict
        log.debug("sympy could not compare %r and %r: %s", pred, gold, e)
        return None
