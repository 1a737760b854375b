"""Dream (Dream-org/Dream-v0-Instruct-7B, Dream-v0-Base-7B) as a native transformers model.

    import dllmrl.models.dream  # registers model_type "Dream" with the Auto classes
    model = DreamModel.from_pretrained("Dream-org/Dream-v0-Instruct-7B", dtype=torch.bfloat16)

Our own implementation of the architecture that the hub's remote code describes: Qwen2-style
decoder layers (RMSNorm, rotary embeddings, grouped-query attention with biased q/k/v, a
SiLU-gated MLP) run bidirectionally. Dream was initialised from an autoregressive model, so
the logits at position i predict token i+1; ``ModelAdapter(shift_logits=True)`` shifts them
back. It loads the published safetensors by their own parameter names
(``model.layers.0.self_attn.q_proj.weight``, ...), needs no ``trust_remote_code`` and runs on
transformers 5.

What differs from the remote code, on purpose: a plain (B, L) padding mask is accepted
(padded keys excluded, rotary positions counted over real tokens) besides the 4D mask the
published ``generate`` builds; padded query rows stay finite; layers support transformers'
gradient checkpointing. The generation mixin is not reproduced: dllmrl's sampler is the
one way to generate. ``tests/test_native_models.py`` checks the logits against golden
fixtures recorded with the published code (``scripts/make_fixtures.py``).

The computations that are the same in LLaDA (RMSNorm, rotary embeddings, masked SDPA attention,
the gated MLP, the layer loop) come from ``layers.py``; the modules holding parameters are built
here, under the published names.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

from dllmrl.errors import ModelLoadError
from dllmrl.models.layers import (
    KVCache,
    RMSNorm,
    apply_rotary,
    attend,
    gated_mlp,
    positions_from_mask,
    refuse_unsupported,
    rotary_cos_sin,
    run_layers,
    sdpa_mask,
    split_heads,
)

DREAM_MASK_ID = 151666
"""The mask token of the published Dream checkpoints ("<|mask|>"), used when neither tokenizer nor config names one."""


class DreamConfig(PretrainedConfig):
    """Dream's configuration, with the field names of the published config.json (Qwen2's).

    The defaults give Dream-7B's shape (Qwen2.5-7B).
    """

    model_type = "Dream"

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: int | None = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1000000.0,
        attention_dropout: float = 0.0,
        use_sliding_window: bool = False,
        sliding_window: int | None = None,
        max_window_layers: int = 28,
        tie_word_embeddings: bool = False,
        use_cache: bool = False,
        mask_token_id: int = DREAM_MASK_ID,
        pad_token_id: int | None = 151643,
        bos_token_id: int | None = 151643,
        eos_token_id: int | None = 151643,
        **kwargs,
    ):
        # transformers 5 treats `rope_scaling` as a deprecated alias; Dream's checkpoints carry null.
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling:
            raise ModelLoadError(
                f"this Dream configuration has rope_scaling={rope_scaling!r}, which dllmrl does not implement; "
                "pass --trust-remote-code to run the repository's own code instead"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads if num_key_value_heads is not None else num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.attention_dropout = attention_dropout
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.max_window_layers = max_window_layers
        self.tie_word_embeddings = tie_word_embeddings
        self.use_cache = use_cache
        self.mask_token_id = mask_token_id
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings, **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def check_supported(config: DreamConfig) -> None:
    """Refuse configurations the published checkpoints do not use, instead of computing something else."""
    bad = []
    if config.hidden_size % config.num_attention_heads or config.head_dim % 2:
        bad.append(f"hidden_size={config.hidden_size} with {config.num_attention_heads} heads (need an even head size)")
    if config.num_attention_heads % config.num_key_value_heads:
        bad.append(f"num_key_value_heads={config.num_key_value_heads} does not divide {config.num_attention_heads}")
    if config.hidden_act not in ACT2FN:
        bad.append(f"hidden_act={config.hidden_act!r}")
    refuse_unsupported("Dream", bad)


# ----------------------------------------------------------------------------- model


class DreamAttention(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(self, x: Tensor, attn_mask: Tensor | None, cos: Tensor, sin: Tensor,
                kv: tuple[KVCache, int] | None = None) -> Tensor:
        q = split_heads(self.q_proj(x), self.n_heads, self.head_dim)  # (B, H, L, D)
        k = split_heads(self.k_proj(x), self.n_kv_heads, self.head_dim)  # (B, Hkv, L, D)
        v = split_heads(self.v_proj(x), self.n_kv_heads, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv is not None:
            k, v = kv[0].use(kv[1], k, v)
        att = attend(q, k, v, attn_mask, self.attention_dropout if self.training else 0.0)  # (B, L, H * D)
        return self.o_proj(att)


class DreamMLP(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return gated_mlp(x, self.gate_proj, self.up_proj, self.down_proj, self.act_fn)


class DreamDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: DreamConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = DreamAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = DreamMLP(config)

    def forward(self, x: Tensor, attn_mask: Tensor | None, cos: Tensor, sin: Tensor,
                kv: tuple[KVCache, int] | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), attn_mask, cos, sin, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBackbone(nn.Module):
    """Embeddings, layers and final norm: parameter names ``model.embed_tokens``, ``model.layers.N``, ``model.norm``."""

    def __init__(self, config: DreamConfig):
        super().__init__()
        pad = config.pad_token_id
        # As published: the pad row gets no gradient (matters only if embeddings are trained).
        padding_idx = pad if isinstance(pad, int) and 0 <= pad < config.vocab_size else None
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx)
        self.layers = nn.ModuleList(DreamDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamPreTrainedModel(PreTrainedModel):
    config_class = DreamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DreamDecoderLayer"]
    _supports_sdpa = True


class DreamModel(DreamPreTrainedModel):
    """Dream with its LM head: (B, L) ids -> (B, L, V) logits; logits[:, i] predicts token i+1 (shifted)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # only when tie_word_embeddings

    def __init__(self, config: DreamConfig):
        check_supported(config)
        super().__init__(config)
        self.model = DreamBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | str | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        """Unshifted logits for every position (the published call ``model(x, mask4d, tok_idx)`` works too).

        attention_mask: (B, L) with 0 at padding, or a 4D mask, or "full". position_ids: (B, L);
        when absent they are counted over a 2D attention mask. Other keyword arguments that generic
        callers pass (cache_position, ...) are accepted and ignored.
        """
        if labels is not None:
            raise ValueError(
                "DreamModel computes no loss: the masked-diffusion loss depends on the masking; "
                "compute it from the logits"
            )
        if use_cache or past_key_values is not None:
            raise ValueError("Dream attends both ways here; there is no key-value cache")
        x, hidden = self.hidden_states(input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states)
        out = MaskedLMOutput(logits=self.head_logits(x), hidden_states=hidden)
        return out if return_dict is not False else out.to_tuple()

    def hidden_states(
        self,
        input_ids: Tensor | None,
        attention_mask: Tensor | str | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """The trunk: (B, L) ids -> (B, L, d) final-norm hidden states (unshifted: position i predicts i+1).

        With ``kv_cache`` in window mode, input_ids are the window's (B, W), attention_mask the whole
        sequence's (B, L) and position_ids the window's (B, W).
        """
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, d)
        B, L = x.shape[:2]
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, B, L, x.device)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)  # (B, 1, L, D)
        mask = sdpa_mask(attention_mask, x.dtype)
        return run_layers(self.model.layers, self.model.norm, x, mask, cos, sin, output_hidden_states, kv_cache)

    def head_logits(self, h: Tensor) -> Tensor:
        """(..., d) hidden states -> (..., V) logits."""
        return self.lm_head(h)

AutoConfig.register(DreamConfig.model_type, DreamConfig, exist_ok=True)
AutoModel.register(DreamConfig, DreamModel, exist_ok=True)
AutoModelForMaskedLM.register(DreamConfig, DreamModel, exist_ok=True)
