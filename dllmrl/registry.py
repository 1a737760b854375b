"""One generic registry for tasks, methods, step selectors and model families.

Entries are either objects registered with a decorator next to their code, or lazy
``"module:attr"`` strings, so listing names never imports torch. Third-party task packs
arrive through the ``dllmrl.tasks`` entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from dllmrl.errors import DllmrlError, UnknownNameError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | None:
        """Register ``obj`` (or a lazy ``"module:attr"`` string) under ``name``.

        Used bare as ``@REG.register("name")`` it decorates a class or function.
        """
        if obj is not None:
            self._add(name, obj)
            return None

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T | str) -> None:
        existing = self._entries.get(name)
        if existing is not None:
            # A lazy entry being resolved into its own object is not a duplicate.
            if isinstance(existing, str) and not isinstance(obj, str) and _target(existing) == _qualname(obj):
                self._entries[name] = obj
                return
            raise DllmrlError(f"duplicate {self.kind} name '{name}': it is already registered")
        self._entries[name] = obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self._group):
            if ep.name in self._entries:
                log.warning("%s plugin '%s' (%s) ignored: the name is taken", self.kind, ep.name, ep.value)
                continue
            self._entries[ep.name] = ep.value

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{hint} available: {', '.join(self.names())}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
            return obj
        return entry


def _target(spec: str) -> str:
    return spec.replace(":", ".")


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


# The project's registries. Built-ins are lazy strings; see each package for the code.
TASKS: Registry = Registry("task", entry_point_group="dllmrl.tasks")
METHODS: Registry = Registry("method")
STEP_SELECTORS: Registry = Registry("step selector")
MODELS: Registry = Registry("model family")

# Built-in task packs (lazy: `dllmrl ls tasks` imports only the light pack modules).
TASKS.register("sudoku", "dllmrl.tasks.sudoku:Sudoku")
TASKS.register("countdown", "dllmrl.tasks.countdown:Countdown")
TASKS.register("gsm8k", "dllmrl.tasks.gsm8k:GSM8K")

# Training methods and step selectors (lazy: resolved on first use; `dllmrl ls methods` imports them to show
# each method's summary and paper).
METHODS.register("egspo", "dllmrl.methods.steps:EGSPO")
METHODS.register("egspo-sa", "dllmrl.methods.steps:EGSPO_SA")
METHODS.register("diffu-grpo", "dllmrl.methods.tokens:DIFFU_GRPO")
STEP_SELECTORS.register("entropy", "dllmrl.methods.selection:EntropySelector")
STEP_SELECTORS.register("random", "dllmrl.methods.selection:RandomSelector")
STEP_SELECTORS.register("uniform", "dllmrl.methods.selection:UniformSelector")
METHODS.register("wd1", "dllmrl.methods.baselines:WD1")
METHODS.register("spg", "dllmrl.methods.baselines:SPG")
METHODS.register("d2-stepmerge", "dllmrl.methods.baselines:D2_STEPMERGE")
STEP_SELECTORS.register("entropy-mass", "dllmrl.methods.entropy_mass:EntropyMassSelector")
TASKS.register("math500", "dllmrl.tasks.math500:MATH500")
TASKS.register("humaneval", "dllmrl.tasks.humaneval:HumanEval")
TASKS.register("mbpp", "dllmrl.tasks.mbpp:MBPP")
