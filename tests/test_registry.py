"""The generic registry: lazy entries, duplicates refused, 'did you mean' errors."""

from __future__ import annotations

import pytest

from dllmrl.errors import DllmrlError, UnknownNameError
from dllmrl.registry import Registry


def test_lazy_entry_is_imported_on_first_get():
    reg = Registry("thing")
    reg.register("json-dumps", "json:dumps")
    import json

    assert reg.get("json-dumps") is json.dumps


def test_duplicate_name_is_refused():
    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(DllmrlError, match="duplicate thing name 'a'"):
        reg.register("a", 2)


def test_decorator_registration_and_did_you_mean():
    reg = Registry("task")

    @reg.register("gsm8k")
    class G:  # noqa: D401
        pass

    assert reg.get("gsm8k") is G
    with pytest.raises(UnknownNameError, match=r"unknown task 'gsm8'; did you mean 'gsm8k'\? available: gsm8k"):
        reg.get("gsm8")


def test_entry_point_plugins_are_discovered(monkeypatch):
    import dllmrl.registry as registry

    class EP:
        name, value = "plugin-task", "json:loads"

    monkeypatch.setattr(registry, "entry_points", lambda group: [EP] if group == "dllmrl.tasks" else [])
    reg = Registry("task", entry_point_group="dllmrl.tasks")
    import json

    assert "plugin-task" in reg.names() and reg.get("plugin-task") is json.loads
