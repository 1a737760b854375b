"""Helpers shared by the packs: reading shipped data files, and the tag / ``\\boxed{}`` parsers.

Everything here is pure Python (no torch), so ``dllmrl ls tasks`` stays cheap.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable, Iterator

from dllmrl.errors import DataError


def data_file(package_file: str, name: str) -> Path:
    """A file in the pack's ``data/`` folder; DataError naming it when absent."""
    path = Path(package_file).resolve().parent / "data" / name
    if not path.is_file():
        raise DataError(f"data file {path} is missing; reinstall dllmrl (the pack ships it under data/)")
    return path


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a (possibly gzipped) JSONL file; DataError naming the file and line on a bad row."""
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno} is not valid JSON ({e}); the data file is corrupt, reinstall dllmrl") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno} is not a JSON object; the data file is corrupt, reinstall dllmrl")
                yield row
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} ({e}); the data file is corrupt, reinstall dllmrl") from None


def read_json(path: Path) -> Any:
    try:
        with _open_text(path) as f:
            return json.load(f)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path} ({e}); the data file is corrupt, reinstall dllmrl") from None


def require(row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{where} lacks field(s) {', '.join(missing)}; the data file is corrupt, reinstall dllmrl")


# ---------------------------------------------------------------- answer parsers
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def answer_tag(text: str, *, last: bool = False) -> str | None:
    """Content of the first (or last) closed ``<answer>...</answer>`` pair, stripped; None if none."""
    found = _ANSWER.findall(text)
    if not found:
        return None
    return (found[-1] if last else found[0]).strip()


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with brace matching; None if none.

    Also accepts the brace-less ``\\boxed 5`` form (up to the next ``$`` or line end), as the
    Hendrycks parser does.
    """
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    head = "\\boxed" if text.startswith("\\boxed", idx) else "\\fbox"
    rest = text[idx + len(head):]
    if rest.startswith(" "):
        return re.split(r"[$\n]", rest[1:], maxsplit=1)[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced: the model stopped inside the box


def all_boxed(text: str, *, unclosed: bool = False) -> list[str]:
    """Contents of every ``\\boxed{...}`` in order, brace-matched.

    A box whose braces never balance ("\\boxed{360\\text{ hours} hours.") is skipped, or with
    ``unclosed=True`` read up to its first "}" (what a non-greedy regex would take).
    """
    out = []
    for m in re.finditer(r"\\boxed\{", text):
        depth = 0
        for j in range(m.end() - 1, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    out.append(text[m.end():j])
                    break
        else:
            close = text.find("}", m.end())
            if unclosed and close >= 0:
                out.append(text[m.end():close])
    return out


def first_python_block(text: str) -> str | None:
    """The first fenced ```python block (the reference's code extraction); None if none is closed."""
    m = re.search(r"```python[ \t]*\n(.*?)```", text, re.DOTALL)
    return m.group(1) if m else None


class LazySplit(Sequence):
    """A read-only sequence of examples made on access: ``make(i)`` builds example ``i``.

    Generated training splits are large (Sudoku's stands in for a million-row file); building
    them eagerly would make every ``load("train")`` pay for rows nobody reads.
    """

    def __init__(self, length: int, make: Callable[[int], Any]):
        self._len = length
        self._make = make

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._make(j) for j in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._make(i)
