"""``--adapter`` values: one plain adapter, or several named ones for a blend.

    --adapter DIR [--adapter-subfolder SUB]                   one adapter (peft's name 'default')
    --adapter sudoku=DIR --adapter countdown=HUB_ID:sub/dir   named adapters, each with an optional subfolder
    --adapter-subfolder countdown=sub/dir                     (the same subfolder, given separately)

No torch here: the options are parsed while ``--help`` is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dllmrl.errors import ConfigError

PLAIN = "default"
"""peft's adapter name, given to a plain (unnamed) --adapter."""
BASE = "base"
"""The reserved blend term meaning 'the adapters disabled'."""

_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.+)$")


@dataclass(frozen=True)
class NamedAdapter:
    name: str
    source: str
    """A directory or a hub id."""
    subfolder: str | None = None

    @property
    def peft_name(self) -> str:
        """The name peft keeps it under: a short name such as 'a' lies inside peft's key prefix 'lora_', which
        peft warns may re-initialise the weights on loading, so named adapters get a prefix of their own."""
        return self.name if self.name == PLAIN else f"adapter_{self.name}"

    def describe(self) -> str:
        return f"{self.source}:{self.subfolder}" if self.subfolder else self.source


def parse_adapter_flags(value: Any) -> str | tuple[str, ...] | None:
    """The repeatable option (a list; a config file may hold a string) -> one string, a tuple, or None."""
    if value is None or isinstance(value, str):
        return value or None
    items = tuple(str(v) for v in value)
    if not items:
        return None
    return items[0] if len(items) == 1 else items


def _entries(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def named_adapters(adapter: str | tuple[str, ...] | None,
                   subfolder: str | tuple[str, ...] | None = None) -> tuple[NamedAdapter, ...]:
    """Every adapter to load, by name; raises ConfigError naming the option on a malformed value."""
    entries, subs = _entries(adapter), _entries(subfolder)
    if len(entries) == 1 and not _NAMED.match(entries[0]):  # the plain form, as before blending existed
        if len(subs) > 1:
            raise ConfigError(f"--adapter-subfolder given {len(subs)} times for one plain --adapter; give it once, "
                              "or name the adapters (--adapter NAME=DIR --adapter-subfolder NAME=SUB)")
        return (NamedAdapter(PLAIN, entries[0], subs[0] if subs else None),)
    out: dict[str, NamedAdapter] = {}
    for e in entries:
        m = _NAMED.match(e)
        if not m:
            raise ConfigError(f"--adapter '{e}': with several adapters each needs a name, e.g. --adapter sudoku={e}")
        name, rest = m.groups()
        if name == BASE or name in out:
            raise ConfigError(f"--adapter {e}: the name '{name}' is "
                              f"{'reserved for the base model' if name == BASE else 'given twice'}; pick another name")
        source, _, sub = rest.partition(":")
        out[name] = NamedAdapter(name, source, sub or None)
    for s in subs:
        m = _NAMED.match(s)
        if not m or m.group(1) not in out:
            raise ConfigError(f"--adapter-subfolder '{s}': with named adapters give NAME=SUB, NAME one of "
                              f"{', '.join(out) or '(none: pass --adapter NAME=DIR first)'}")
        name, sub = m.groups()
        if out[name].subfolder not in (None, sub):
            raise ConfigError(f"--adapter-subfolder {s}: adapter '{name}' already has subfolder "
                              f"'{out[name].subfolder}' (from --adapter {name}=...:SUB); give it once")
        out[name] = NamedAdapter(name, out[name].source, sub)
    return tuple(out.values())


def single_adapter(adapter: Any, subfolder: Any, command: str) -> tuple[str | None, str | None]:
    """(source, subfolder) of the one adapter a command such as ``train`` takes; several are refused."""
    named = named_adapters(adapter, subfolder)
    if len(named) > 1:
        raise ConfigError(f"dllmrl {command} takes one --adapter, got {len(named)} "
                          f"({', '.join(a.name for a in named)}); merge them first with dllmrl merge")
    return (named[0].source, named[0].subfolder) if named else (None, None)
