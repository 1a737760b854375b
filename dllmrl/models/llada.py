"""LLaDA (GSAI-ML/LLaDA-8B-Instruct, LLaDA-8B-Base, LLaDA-1.5) as a native transformers model.

    import dllmrl.models.llada  # registers model_type "llada" with the Auto classes
    model = LLaDAModelLM.from_pretrained("GSAI-ML/LLaDA-8B-Instruct", dtype=torch.bfloat16)

Our own implementation of the architecture that the hub's remote code describes: OLMo-style
"llama" blocks (RMSNorm before attention and MLP, rotary embeddings, a SiLU-gated MLP), an
untied output layer, bidirectional attention. It loads the published safetensors by their
own parameter names (``model.transformer.blocks.0.q_proj.weight``, ...), needs no
``trust_remote_code`` and runs on transformers 5.

What differs from the remote code, on purpose: the attention mask is honoured (padded keys
are excluded, rotary positions come from the mask), so a left-padded batch gives every
sequence the logits it gets alone; attention is always PyTorch's scaled_dot_product_attention;
layers support transformers' gradient checkpointing; no global torch flags are touched.
``tests/test_native_models.py`` checks the logits against golden fixtures recorded with the
published code (``scripts/make_fixtures.py``).

The computations that are the same in Dream (RMSNorm, rotary embeddings, masked SDPA attention,
the gated MLP, the layer loop) come from ``layers.py``; the modules holding parameters are built
here, under the published names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

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

from dllmrl.models.families import LLADA_MASK_ID  # noqa: E402  (the published checkpoints' mask token, defined once)


class LLaDAConfig(PretrainedConfig):
    """LLaDA's configuration, with the field names of the published config.json.

    The defaults give LLaDA-8B's shape. Fields of the published config that only matter for
    training from scratch (init_fn, init_std, precision, flash_attention, ...) are kept as
    they come, so a saved checkpoint still loads with the published code.
    """

    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int | None = 12288,
        mlp_ratio: int = 4,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        max_sequence_length: int = 4096,
        rope: bool = True,
        rope_theta: float = 500000.0,
        rope_full_precision: bool = True,
        rms_norm_eps: float = 1e-5,
        activation_type: str = "silu",
        block_type: str = "llama",
        layer_norm_type: str = "rms",
        layer_norm_with_affine: bool = True,
        bias_for_layer_norm: bool | None = False,
        include_bias: bool = False,
        include_qkv_bias: bool | None = False,
        attention_layer_norm: bool = False,
        alibi: bool = False,
        weight_tying: bool = False,
        block_group_size: int = 1,
        scale_logits: bool = False,
        input_emb_norm: bool = False,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        multi_query_attention: bool | None = None,
        mask_token_id: int = LLADA_MASK_ID,
        pad_token_id: int | None = 126081,
        eos_token_id: int | None = 126081,
        use_cache: bool = False,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.mlp_ratio = mlp_ratio
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.max_sequence_length = max_sequence_length
        self.rope = rope
        self.rope_theta = rope_theta
        self.rope_full_precision = rope_full_precision
        self.rms_norm_eps = rms_norm_eps
        self.activation_type = activation_type
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.layer_norm_with_affine = layer_norm_with_affine
        self.bias_for_layer_norm = bias_for_layer_norm
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.attention_layer_norm = attention_layer_norm
        self.alibi = alibi
        self.weight_tying = weight_tying
        self.block_group_size = block_group_size
        self.scale_logits = scale_logits
        self.input_emb_norm = input_emb_norm
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.embedding_dropout = embedding_dropout
        self.multi_query_attention = multi_query_attention
        self.mask_token_id = mask_token_id
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)  # the output layer is its own matrix
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)

    @property
    def num_key_value_heads(self) -> int:
        if self.multi_query_attention:
            return 1
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and output matrices (``embedding_size``, at least ``vocab_size``)."""
        return self.embedding_size or self.vocab_size


def check_supported(config: LLaDAConfig) -> None:
    """Refuse configurations the published checkpoints do not use, instead of computing something else."""
    unsupported = {
        "block_type": (config.block_type, "llama"),
        "layer_norm_type": (config.layer_norm_type, "rms"),
        "rope": (config.rope, True),
        "alibi": (config.alibi, False),
        "weight_tying": (config.weight_tying, False),
        "block_group_size": (config.block_group_size, 1),
        "attention_layer_norm": (config.attention_layer_norm, False),
        "layer_norm_with_affine": (config.layer_norm_with_affine, True),
        "bias_for_layer_norm": (bool(config.bias_for_layer_norm), False),
    }
    bad = [f"{k}={v!r} (supported: {ok!r})" for k, (v, ok) in unsupported.items() if v != ok]
    if str(config.activation_type) not in ("silu", "gelu", "relu"):
        bad.append(f"activation_type={config.activation_type!r} (supported: 'silu', 'gelu', 'relu')")
    if config.d_model % config.n_heads or config.head_dim % 2:
        bad.append(f"d_model={config.d_model} with n_heads={config.n_heads} (need an even head size)")
    if config.n_heads % config.num_key_value_heads:
        bad.append(f"n_kv_heads={config.n_kv_heads} does not divide n_heads={config.n_heads}")
    if config.padded_vocab_size < config.vocab_size:
        bad.append(f"embedding_size={config.embedding_size} is smaller than vocab_size={config.vocab_size}")
    refuse_unsupported("LLaDA", bad)


# ----------------------------------------------------------------------------- model


class LLaDABlock(GradientCheckpointingLayer):
    """One "llama" block: x + attn_out(attention(attn_norm(x))), then x + ff_out(act(ff_proj(h)) * up_proj(h))."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.num_key_value_heads, hd
        self.rope_theta, self.rope_full_precision = config.rope_theta, config.rope_full_precision
        self.attention_dropout = config.attention_dropout
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_width, bias=config.include_bias)  # gate
        self.up_proj = nn.Linear(d, config.mlp_width, bias=config.include_bias)
        self.ff_out = nn.Linear(config.mlp_width, d, bias=config.include_bias)
        self.act = ACT2FN[str(config.activation_type)]
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None, cos: Tensor, sin: Tensor,
                kv: tuple[KVCache, int] | None = None) -> Tensor:
        h = self.attn_norm(x)
        q = split_heads(self.q_proj(h), self.n_heads, self.head_dim)  # (B, H, L, D)
        k = split_heads(self.k_proj(h), self.n_kv_heads, self.head_dim)  # (B, Hkv, L, D)
        v = split_heads(self.v_proj(h), self.n_kv_heads, self.head_dim)
        # Rotary in float32 (rope_full_precision, as the published code), then back to the activations' dtype.
        rot_dtype = torch.float32 if self.rope_full_precision else q.dtype
        cos, sin = cos.to(rot_dtype), sin.to(rot_dtype)
        q = apply_rotary(q.to(rot_dtype), cos, sin).to(v.dtype)
        k = apply_rotary(k.to(rot_dtype), cos, sin).to(v.dtype)
        if kv is not None:
            k, v = kv[0].use(kv[1], k, v)
        att = attend(q, k, v, attn_mask, self.attention_dropout if self.training else 0.0)  # (B, L, H * D)
        x = x + self.dropout(self.attn_out(att))
        h = self.ff_norm(x)
        return x + self.dropout(gated_mlp(h, self.ff_proj, self.up_proj, self.ff_out, self.act))


class LLaDABackbone(nn.Module):
    """Holds ``transformer`` so that parameter names are the published ``model.transformer.*``."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        vocab = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab, config.d_model),
                emb_drop=nn.Dropout(config.embedding_dropout),
                blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
                ff_out=nn.Linear(config.d_model, vocab, bias=config.include_bias),
            )
        )


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA with its output layer: (B, L) ids -> (B, L, V) logits; logits[:, i] predicts token i."""

    def __init__(self, config: LLaDAConfig):
        check_supported(config)
        super().__init__(config)
        self.model = LLaDABackbone(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer.ff_out = value

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
        """Logits for every position.

        attention_mask: (B, L) with 0 at padding (or a 4D mask, see ``layers.sdpa_mask``). position_ids:
        (B, L); when absent they are counted over the attention mask. Other keyword arguments
        that generic callers pass (cache_position, ...) are accepted and ignored.
        """
        if labels is not None:
            raise ValueError(
                "LLaDAModelLM computes no loss: the masked-diffusion loss depends on the masking; "
                "compute it from the logits"
            )
        if use_cache or past_key_values is not None:
            raise ValueError("LLaDA attends both ways; there is no key-value cache")
        x, hidden = self.hidden_states(input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states)
        logits = self.head_logits(x)  # (B, L, V)
        out = MaskedLMOutput(logits=logits, hidden_states=hidden)
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
        """The trunk: (B, L) ids -> (B, L, d) final-norm hidden states (and every layer's, when asked).

        ``head_logits`` of them is the forward's logits; callers that need only some positions gather first.
        With ``kv_cache`` in window mode, input_ids are the window's (B, W), attention_mask the whole
        sequence's (B, L) and position_ids the window's (B, W).
        """
        t = self.model.transformer
        x = t.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, d)
        B, L = x.shape[:2]
        if self.config.input_emb_norm:
            x = x * (self.config.d_model**0.5)
        x = t.emb_drop(x)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, B, L, x.device)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta)  # (B, 1, L, D)
        mask = sdpa_mask(attention_mask, x.dtype)
        return run_layers(t.blocks, t.ln_f, x, mask, cos, sin, output_hidden_states, kv_cache)

    def head_logits(self, h: Tensor) -> Tensor:
        """(..., d) hidden states -> (..., V) logits: the output layer (and the optional logit scale)."""
        logits = self.model.transformer.ff_out(h)
        if self.config.scale_logits:
            logits = logits * (self.config.d_model**-0.5)
        return logits

AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
AutoModelForMaskedLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
