"""Typer options generated from the config dataclasses: a field's type, default and docstring are the
option's type, default and help, so no command restates them (HfArgumentParser's idea, on Typer).

    @config_options("train", TrainConfig, SamplerConfig, ModelConfig)
    def train_command(task: ..., opts: Resolved) -> None:
        cfg = opts.build(TrainConfig)

Every generated option defaults to None ("not given"); ``Resolved`` then orders the sources alike for
every command: the command line, then ``--config FILE``, then the model directory's dllmrl.json, then
the command's protocol (``dllmrl.model_defaults.PROTOCOLS``), then the dataclass default. Imports
stay light: no torch, so ``dllmrl --help`` is fast.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Callable, List, Optional

import typer

from dllmrl.config import flag, parse_gen_lens, parse_reward_weights
from dllmrl.adapter_spec import parse_adapter_flags


@lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it in a dataclass body (the one source of help texts)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                out[node.target.id] = " ".join(str(nxt.value.value).split())
    return out


@dataclass(frozen=True)
class Spec:
    """How a field's option differs from the generated one: other flags, a CLI type and a parser."""

    decls: tuple[str, ...] = ()
    cli_type: Any = None
    parse: Callable[[Any], Any] | None = None
    param: str | None = None
    """The command's parameter name when it is not the field's (``gen_len`` for EvalConfig.gen_lens)."""


# Flags that are not simply --field-name (names kept from before the options were generated).
SPECS: dict[str, Spec] = {
    "model": Spec(("--model", "-m")),
    "lam": Spec(("--lambda",)),
    "num_generations": Spec(("--num-generations", "-G")),
    "output": Spec(("--output", "-o")),
    "chat": Spec(("--chat/--raw",)),
    "reward_weights": Spec(("--reward-weight",), List[str], parse_reward_weights),
    "gen_lens": Spec(("--gen-len",), str, parse_gen_lens, param="gen_len"),
    # bench times several settings: one --cache / --decode per setting, as sample and eval spell them
    "caches": Spec(("--cache",), List[str], tuple),
    "decodes": Spec(("--decode",), List[str], tuple),
    # repeatable for a blend (--adapter sudoku=DIR --adapter countdown=DIR); one plain value stays a string
    "adapter": Spec(("--adapter",), List[str], parse_adapter_flags),
    "adapter_subfolder": Spec(("--adapter-subfolder",), List[str], parse_adapter_flags),
}


def option_flag(name: str) -> str:
    """The long flag of a field as the user types it (``lam`` -> ``--lambda``)."""
    decls = SPECS[name].decls if name in SPECS else ()
    return decls[0].split("/")[0] if decls else flag(name)


def spec_for(f: "Field") -> Spec:
    """The field's Spec: its entry in SPECS, else a repeatable option for a ``tuple[X, ...]`` field."""
    if f.name in SPECS:
        return SPECS[f.name]
    inner = _optional_inner(f.type)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        item = args[0] if args and args[0] in (int, float, str) else str
        return Spec(cli_type=List[item], parse=lambda v, tp=f.type: coerce(tp, list(v)))  # type: ignore[valid-type]
    return Spec()


def _optional_inner(tp: Any) -> Any:
    """X for ``X | None``, else ``tp``."""
    if typing.get_origin(tp) in (typing.Union, _UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _cli_type(tp: Any) -> Any:
    """int | None -> Optional[int]; bool, float, str likewise (every generated option may be left out)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, _UnionType) else [tp]
    base = args[0] if len(args) == 1 else str
    if base not in (int, float, str, bool):
        base = str
    return Optional[base]


_UnionType = type(int | None)


def coerce(tp: Any, value: Any) -> Any:
    """A JSON/YAML value into a field's type (lists into tuples, ints into floats)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, _UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return coerce(inner[0], value) if len(inner) == 1 else value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v) for v in value)
        return tuple(coerce(a, v) for a, v in zip(args, value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass(frozen=True)
class Field:
    """One option: the field name, its type, its default and help, and the first config class holding it."""

    name: str
    type: Any
    default: Any
    help: str
    owner: type


def collect_fields(classes: tuple[type, ...], include: dict[type, set[str]] | None = None,
                   exclude: set[str] = frozenset()) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        docs = field_help(cls)
        for f in dataclasses.fields(cls):
            if f.name in out or f.name in exclude or (include and cls in include and f.name not in include[cls]):
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
            out[f.name] = Field(f.name, hints[f.name], default, docs.get(f.name, ""), cls)
    return out


def _option(f: Field, command: str) -> inspect.Parameter:
    from dllmrl.model_defaults import PROTOCOLS, model_key

    spec = spec_for(f)
    decls = spec.decls or ((f"{flag(f.name)}/--no-{f.name.replace('_', '-')}",) if f.type is bool else (flag(f.name),))
    default = PROTOCOLS.get(command, {}).get(f.name, f.default)
    if callable(default):
        default = default.__doc__ or "computed"
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    where = " or the model's dllmrl.json" if model_key(command, f.name) else ""
    if shown in (None, "", ()):
        text = f.help + (" (default: the model's dllmrl.json)" if where else "")
    else:
        text = f"{f.help} (default: {'the model' + chr(39) + 's dllmrl.json, else ' if where else ''}{shown})"
    annotation = Annotated[spec.cli_type and Optional[spec.cli_type] or _cli_type(f.type), typer.Option(*decls, help=text)]
    return inspect.Parameter(spec.param or f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)


ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", help="JSON or YAML file of option values (a run's config.json repeats the run); the command line wins.")]


def config_options(command: str, *classes: type, include: dict[type, set[str]] | None = None,
                   exclude: set[str] = frozenset()):
    """Decorate a command whose last parameter is ``opts: Resolved``: adds one option per config field
    (plus ``--config``) to its signature and hands it the resolved values."""
    fields_ = collect_fields(classes, include, exclude)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "opts"]
        own_names = {p.name for p in own}
        generated = [_option(f, command) for name, f in fields_.items() if name not in own_names]
        config_param = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=ConfigOpt, default=None)

        def wrapper(**kwargs: Any) -> Any:
            given = {}
            for name, f in fields_.items():
                spec = spec_for(f)
                value = kwargs.pop(spec.param or name) if name not in own_names else kwargs.get(name)
                given[name] = spec.parse(value) if spec.parse and value is not None else value
            opts = Resolved(command, fields_, given, kwargs.pop("config"))
            return fn(**kwargs, opts=opts)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated + [config_param]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__doc__, wrapper.__name__, wrapper.__wrapped_command__ = fn.__doc__, fn.__name__, fn  # type: ignore[attr-defined]
        return wrapper

    return deco


class Resolved:
    """The options of one command invocation, resolved source by source (see the module docstring)."""

    def __init__(self, command: str, fields_: dict[str, Field], given: dict[str, Any], config_file: str | None):
        from dllmrl.config import load_config_file
        from dllmrl.model_defaults import layered

        self.command, self.fields = command, fields_
        aliases = {option_flag(n)[2:].replace("-", "_"): n for n in fields_}
        file_values = load_config_file(config_file, command, set(fields_), aliases) if config_file else {}
        file_values = {k: _parse_file_value(fields_[k], v) for k, v in file_values.items()}
        self.values, self.sources = layered(command, {n: f.default for n, f in fields_.items()}, given, file_values)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def build(self, cls: type, **override: Any) -> Any:
        """An instance of ``cls`` from the resolved values of its fields (``override`` wins)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in self.values.items() if k in names and k not in override}, **override)


def _parse_file_value(f: Field, value: Any) -> Any:
    spec = SPECS.get(f.name)  # a file holds the field's own JSON form (a list for a tuple), not the CLI's
    if spec and spec.parse:
        return spec.parse(value)
    return coerce(f.type, value)
