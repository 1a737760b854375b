"""``dllmrl merge``: several LoRA adapters merged into one in weight space (peft), the baseline for --blend."""

from __future__ import annotations

from dataclasses import dataclass

from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import ModelConfig


@dataclass(frozen=True)
class MergeConfig:
    """How ``dllmrl merge`` combines the adapters."""

    weights: str | None = None
    """One weight per --adapter, comma-separated ('0.5,0.5'); may be negative (default: 1/n each)."""
    how: str = "linear"
    """peft's combination: linear, cat (exact weighted sum of the LoRA deltas, ranks stacked), svd (that sum truncated to the largest rank), ties, dare (dare_linear), dare-ties."""
    density: float | None = None
    """Fraction of entries kept by ties, dare and dare-ties (0 < density <= 1)."""
    output: str | None = None
    """Directory of the merged adapter (use it with --adapter DIR)."""


EPILOG = """Examples:

  dllmrl merge --model tiny-llada --adapter A --adapter B --weights 0.5,0.5 --how linear -o runs/merged

  dllmrl merge --adapter A --adapter B --weights 0.7,0.3 --how ties --density 0.5 -o runs/ties

--model defaults to the base model the first (local) adapter's adapter_config.json names.
"""


@config_options("merge", MergeConfig, ModelConfig,
                include={ModelConfig: {"model", "adapter", "adapter_subfolder", "device", "dtype"}})
def merge_command(opts: Resolved = None) -> None:  # type: ignore[assignment]
    """Merge LoRA adapters of one base model into one adapter directory, with peft's add_weighted_adapter."""
    from dllmrl.errors import ConfigError
    from dllmrl.ui import stderr_console

    # plain --adapter DIR given several times is fine here (sample/eval want names): parsed below, not by ModelConfig
    cfg, mcfg = opts.build(MergeConfig), opts.build(ModelConfig, adapter=None, adapter_subfolder=None)
    if not cfg.output:
        raise ConfigError("dllmrl merge needs -o DIR, where the merged adapter is written")
    from dllmrl.models.merge import check_merge, merge_adapters, plain_or_named

    adapters = plain_or_named(opts["adapter"], opts["adapter_subfolder"])
    n = len(adapters)
    try:
        weights = tuple(float(w) for w in cfg.weights.split(",")) if cfg.weights else (1.0 / max(n, 1),) * n
    except ValueError:
        raise ConfigError(f"--weights '{cfg.weights}' must be numbers separated by commas, e.g. 0.5,0.5") from None

    check_merge(n, weights, cfg.how, cfg.density)  # before any weights load
    model = mcfg.model  # default: the base model the first adapter names (model_defaults.PROTOCOLS)
    out = merge_adapters(model, adapters, weights, cfg.how, cfg.output, density=cfg.density, device=mcfg.device,
                         dtype=mcfg.dtype)
    stderr_console().print(f"merged {n} adapters ({cfg.how}) into {out}; use it with --model {model} --adapter {out}",
                           highlight=False)


def register(app) -> None:
    app.command("merge", epilog=EPILOG)(merge_command)
