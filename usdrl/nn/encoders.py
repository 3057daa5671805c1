"""The DSTE and STTR encoders, the domain projectors and the classification heads (SPEC.md 3).

References: the paper (Eqs. 1-6) and the authors' released implementation, whose numbers and
parameter layout are reproduced here (golden tests in tests/nn/test_encoders.py). Differences from the
released code that change no number: attention runs through ``scaled_dot_product_attention``
(fused, no attention weights materialised); the number of layers is honoured (the released code
hard-codes two); the attention shared by CA and DSA of a layer is one module here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from usdrl.nn.distributed import GlobalBatchNorm
from usdrl.settings.sections import MAX_TEMPORAL_POSITIONS, ConfigError, ModelSection
from usdrl.skeleton import SkeletonLayout, apply_modality, ntu25_layout, spatial_tokens, temporal_tokens

# The layout's sizes that an encoder record holds beside the model section (checkpoints: "encoder_config",
# bundles: "encoder"); the model itself takes them from its SkeletonLayout.
LAYOUT_SIZES = ("num_joints", "num_persons", "num_coordinates")


def temporal_input_size(layout: SkeletonLayout) -> int:
    """M*V*C, the features of one temporal token (150 for NTU)."""
    return layout.num_persons * layout.num_joints * layout.num_coordinates


def spatial_input_size(model: ModelSection, layout: SkeletonLayout) -> int:
    """T*C, the features of one spatial token (192 for 64 frames of 3-D joints)."""
    return model.clip_frames * layout.num_coordinates


def spatial_length(layout: SkeletonLayout) -> int:
    """M*V, the number of spatial tokens (50 for NTU)."""
    return layout.num_persons * layout.num_joints


def encoder_record(model: ModelSection, layout: SkeletonLayout) -> dict[str, Any]:
    """The encoder as files record it: the model section's fields, then the layout's sizes (``LAYOUT_SIZES``).

    Checkpoints of usdrl pretrain hold it as ``encoder_config``, bundles as ``encoder`` in model.json and results
    files as ``settings.model``; ``model_section_of_record`` reads it back."""
    return {**asdict(model), **{name: getattr(layout, name) for name in LAYOUT_SIZES}}


def model_section_of_record(record: dict[str, Any], layout: SkeletonLayout) -> ModelSection:
    """The model section of an encoder record (``encoder_record``), checked against the layout it goes with.

    A key the record leaves out takes its default (the layout's sizes: those of the NTU layout, as records have
    always been read). TypeError for a key that is neither a model setting nor a layout size, ValueError when the
    recorded sizes are not the layout's."""
    unknown = sorted(map(str, set(record) - set(encoder_record(ModelSection(), layout))))
    if unknown:
        raise TypeError(f"the encoder record has unknown key(s) {', '.join(unknown)}")
    default_layout = ntu25_layout()
    sizes = {name: record.get(name, getattr(default_layout, name)) for name in LAYOUT_SIZES}
    if sizes != {name: getattr(layout, name) for name in LAYOUT_SIZES}:
        raise ValueError(f"layout {layout.name!r} does not match the encoder sizes {sizes}")
    return ModelSection(**{name: value for name, value in record.items() if name not in LAYOUT_SIZES})


def drop_path(x: torch.Tensor, probability: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample: zero a whole residual branch with the given probability."""
    if probability == 0.0 or not training:
        return x
    keep = 1.0 - probability
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * (mask / keep)  # one pass over x: the (N, 1, 1) scale is formed first


def scaled_dot_product(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (N, heads, L, d). On a GPU the fused kernel (flash or memory-efficient);
    on a CPU, for the encoder's short sequences (50-64 tokens), two matrix products and a float32 softmax, which
    run faster there than the fused CPU kernel (docs/benchmarks.md, "Measurements behind code choices")."""
    if query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value)
    scores = (query * query.shape[-1] ** -0.5) @ key.transpose(-2, -1)  # (N, heads, L, L)
    return scores.float().softmax(dim=-1).to(value.dtype) @ value


def initialise_head(head: nn.Linear, generator: torch.Generator | None = None) -> nn.Linear:
    """A classifier head as every protocol starts it (SPEC.md 5): weight ~ N(0, 0.01), bias 0; the weight drawn
    from ``generator``, or from torch's global generator when it is None."""
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    return head


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters, computed by fused SDPA."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * hidden_size))
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, H) -> (N, L, H)
        """Multi-head self-attention over the L tokens of x (N, L, H); returns (N, L, H)."""
        batch, length, hidden = x.shape
        query, key, value = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        heads = lambda t: t.view(batch, length, self.num_heads, hidden // self.num_heads).transpose(1, 2)  # noqa: E731
        attended = scaled_dot_product(heads(query), heads(key), heads(value))  # (N, heads, L, H/heads)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, hidden))


def feed_forward(hidden_size: int) -> nn.Sequential:
    """MLP = Linear(H, 2H), GELU, Linear(2H, H)."""
    return nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, hidden_size))


class ConvolutionalAttention(nn.Module):
    """CA (paper Eq. 4): u = x + ReLU(Conv1d(x)); h = Attn(LN1(u)) + x; CA(x) = MLP(LN2(h)), no residual."""

    def __init__(self, hidden_size: int, kernel_size: int, drop_path_probability: float) -> None:
        super().__init__()
        # padding keeps the length for odd kernels; the released kernel (1) needs none
        self.convolution = nn.Conv1d(hidden_size, hidden_size, kernel_size, padding=kernel_size // 2)
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = feed_forward(hidden_size)
        self.drop_path_probability = drop_path_probability

    def forward(self, x: torch.Tensor, attention: SelfAttention) -> torch.Tensor:  # (N, L, H)
        """CA(x) (N, L, H) of x (N, L, H), with the layer's shared ``attention``."""
        if self.convolution.kernel_size == (1,):  # the released kernel: a matrix product per token, no transposes
            convolved = F.relu(F.linear(x, self.convolution.weight[:, :, 0], self.convolution.bias))
        else:
            convolved = F.relu(self.convolution(x.transpose(1, 2))).transpose(1, 2)
        u = x + convolved
        h = drop_path(attention(self.attention_norm(u)), self.drop_path_probability, self.training) + x
        return drop_path(self.mlp(self.mlp_norm(h)), self.drop_path_probability, self.training)


class DenseShiftAttention(nn.Module):
    """DSA (paper Eq. 3): global mixing along the sequence, DenseShift, and a shared pre-norm block."""

    def __init__(self, hidden_size: int, sequence_length: int, gap: int, drop_path_probability: float) -> None:
        super().__init__()
        self.shift_hidden = nn.Linear(sequence_length, sequence_length)  # W1, along the sequence axis
        self.shift_output = nn.Linear(sequence_length, sequence_length)  # W2
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = feed_forward(hidden_size)
        self.gap = gap
        self.drop_path_probability = drop_path_probability

    def block(self, z: torch.Tensor, attention: SelfAttention) -> torch.Tensor:
        """The shared pre-norm block, z (N, L, H) -> (N, L, H): z + Attn(LN1(z)), then + MLP(LN2(.)), with drop path."""
        z = z + drop_path(attention(self.attention_norm(z)), self.drop_path_probability, self.training)
        return z + drop_path(self.mlp(self.mlp_norm(z)), self.drop_path_probability, self.training)

    def forward(self, x: torch.Tensor, attention: SelfAttention) -> torch.Tensor:  # (N, L, H)
        """DSA(x) (N, L, H): the mean of the block applied to the DenseShifted sequence and to x (N, L, H) itself."""
        along_sequence = x.transpose(1, 2)  # (N, H, L)
        mixed = self.shift_output(F.relu(self.shift_hidden(along_sequence))) + along_sequence
        keep = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
        keep[::self.gap] = True  # DenseShift: positions 0, gap, 2 gap, ... keep the input
        shifted = torch.where(keep, along_sequence, mixed).transpose(1, 2)  # (N, L, H)
        return (self.block(shifted, attention) + self.block(x, attention)) / 2


def skips_a_branch(model: ModelSection) -> bool:
    """Whether the encoder leaves parameters without gradients: a DST layer at alpha 0 or 1 computes one branch
    (``DenseSpatioTemporalLayer.forward``), so DDP must be told to expect unused parameters."""
    return model.backbone == "dste" and model.alpha in (0, 1)


class DenseSpatioTemporalLayer(nn.Module):
    """y = alpha * CA(x) + (1 - alpha) * DSA(x), CA and DSA sharing one attention (paper Eq. 5)."""

    def __init__(self, hidden_size: int, num_heads: int, sequence_length: int, model: ModelSection) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden_size, num_heads)
        self.convolutional_attention = ConvolutionalAttention(hidden_size, model.kernel_size, model.drop_path)
        self.dense_shift_attention = DenseShiftAttention(hidden_size, sequence_length, model.gap, model.drop_path)
        self.alpha = model.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, H)
        """alpha * CA(x) + (1 - alpha) * DSA(x): (N, L, H) -> (N, L, H). A branch weighted 0 (the ablation's
        alpha 0 and 1) is not computed: it adds exactly 0 to the output and to every gradient that reaches
        the output, so only its own unused weights (which then receive no gradient, nor Adam's weight decay) and
        the drop-path random numbers it would have drawn differ. ``skips_a_branch`` tells DDP to expect them."""
        if self.alpha == 1:
            return self.convolutional_attention(x, self.attention)
        if self.alpha == 0:
            return self.dense_shift_attention(x, self.attention)
        return (self.alpha * self.convolutional_attention(x, self.attention)
                + (1 - self.alpha) * self.dense_shift_attention(x, self.attention))


def sinusoidal_positions(length: int, hidden_size: int) -> torch.Tensor:
    """(1, length, H): sin on even features, cos on odd ones."""
    position = torch.arange(length).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, hidden_size, 2) * (-math.log(10000.0) / hidden_size))
    table = torch.zeros(1, length, hidden_size)
    table[0, :, 0::2] = torch.sin(position * frequency)
    table[0, :, 1::2] = torch.cos(position * frequency)
    return table


def token_embedding(input_size: int, hidden_size: int) -> nn.Sequential:
    """Linear(in, H) -> LayerNorm -> ReLU -> Linear(H, H)."""
    return nn.Sequential(nn.Linear(input_size, hidden_size), nn.LayerNorm(hidden_size), nn.ReLU(inplace=True),
                         nn.Linear(hidden_size, hidden_size))


def dense_spatio_temporal_layer(model: ModelSection, sequence_length: int) -> nn.Module:
    """One DST layer (DSTE)."""
    return DenseSpatioTemporalLayer(model.hidden_size, model.num_heads, sequence_length, model)


def transformer_layer(model: ModelSection, sequence_length: int) -> nn.Module:
    """One standard transformer encoder layer (STTR, as released: feed-forward width H, no dropout)."""
    return nn.TransformerEncoderLayer(model.hidden_size, model.num_heads, dim_feedforward=model.hidden_size,
                                      dropout=0.0, batch_first=True)


@dataclass(frozen=True)
class Backbone:
    """What a backbone name stands for: how one layer is built, and where the positions are added."""

    layer: Callable[[ModelSection, int], nn.Module]  # (model section, sequence length) -> one layer
    positions_every_layer: bool  # DSTE adds the positions before every layer, STTR once (as released)


# The backbones, registered once under the names of usdrl.settings.sections.BACKBONE_NAMES (which params.yaml's
# checks and the CLI's --backbone take, below this layer).
BACKBONES: dict[str, Backbone] = {
    "dste": Backbone(dense_spatio_temporal_layer, positions_every_layer=True),
    "sttr": Backbone(transformer_layer, positions_every_layer=False),
}


class SkeletonEncoder(nn.Module):
    """DSTE or STTR over the temporal tokens (N, T, M*V*C) and spatial tokens (N, M*V, T*C).

    Built from the model section (backbone, sizes, clip length T) and the layout (V, M, C)."""

    def __init__(self, model: ModelSection, layout: SkeletonLayout) -> None:
        super().__init__()
        if model.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {model.backbone!r}; choose {' or '.join(BACKBONES)}")
        if not isinstance(model.clip_frames, int):
            raise ConfigError(f"model.clip_frames is {model.clip_frames!r}: resolve it from the training data first "
                              f"(usdrl.training.settings_from_data.resolve_for_data)")
        if model.clip_frames > MAX_TEMPORAL_POSITIONS:
            raise ValueError(f"clip_frames {model.clip_frames} exceeds the {MAX_TEMPORAL_POSITIONS} temporal positions")
        self.config = model
        hidden = model.hidden_size
        self.temporal_embedding = token_embedding(temporal_input_size(layout), hidden)
        self.spatial_embedding = token_embedding(spatial_input_size(model, layout), hidden)
        self.register_buffer("temporal_position", sinusoidal_positions(MAX_TEMPORAL_POSITIONS, hidden), persistent=False)
        self.spatial_position = nn.Parameter(torch.zeros(1, spatial_length(layout), hidden))  # (1, M*V, H)
        nn.init.trunc_normal_(self.spatial_position, std=0.02)
        layer = BACKBONES[model.backbone].layer
        self.temporal_layers = nn.ModuleList(layer(model, model.clip_frames) for _ in range(model.num_layers))
        self.spatial_layers = nn.ModuleList(layer(model, spatial_length(layout)) for _ in range(model.num_layers))

    def forward(self, temporal: torch.Tensor, spatial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, M*V*C), (N, M*V, T*C) -> dense y_t (N, T, H), y_s (N, M*V, H)."""
        y_t = self.temporal_embedding(temporal)
        y_s = self.spatial_embedding(spatial)
        temporal_position = self.temporal_position[:, :y_t.shape[1]]
        repeat_positions = BACKBONES[self.config.backbone].positions_every_layer
        for index, (temporal_layer, spatial_layer) in enumerate(zip(self.temporal_layers, self.spatial_layers)):
            if index == 0 or repeat_positions:
                y_t = y_t + temporal_position
                y_s = y_s + self.spatial_position
            y_t = temporal_layer(y_t)
            y_s = spatial_layer(y_s)
        return y_t, y_s


def projector(input_size: int, hidden_size: int, output_size: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(input_size, hidden_size), GlobalBatchNorm(hidden_size), nn.ReLU(inplace=True),
        nn.Linear(hidden_size, hidden_size), GlobalBatchNorm(hidden_size), nn.ReLU(inplace=True),
        nn.Linear(hidden_size, output_size),
    )


def initialise_weights(module: nn.Module) -> None:
    """Linear weights trunc-normal std 0.02, biases 0; LayerNorm 1 / 0 (as released)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SkeletonModel(nn.Module):
    """Encoder + temporal, spatial and instance projectors (pretraining) and an optional linear head.

    Built from the model section (params.yaml ``model``) and the skeleton layout (default: NTU's), kept as
    ``config`` and ``layout``. ``model(x, modality="joint")`` on x (N, C, T, V, M) returns a dict with
    ``dense_t``, ``dense_s``, ``features`` (instance feature, 2H), ``z_t``, ``z_s``, ``z_i`` and, with a head,
    ``logits``.
    """

    def __init__(self, model: ModelSection, layout: SkeletonLayout | None = None, num_classes: int | None = None,
                 projectors: bool = True) -> None:
        super().__init__()
        self.config = model
        self.layout = layout or ntu25_layout()
        hidden = model.hidden_size
        self.encoder = SkeletonEncoder(model, self.layout)
        if projectors:
            self.temporal_projector = projector(hidden, 2 * hidden, 2 * hidden)
            self.spatial_projector = projector(hidden, 2 * hidden, 2 * hidden)
            self.instance_projector = projector(2 * hidden, 2 * hidden, 4 * hidden)
        self.head = nn.Linear(2 * hidden, num_classes) if num_classes else None
        self.apply(initialise_weights)
        if self.head is not None:  # linear-probe initialisation (SPEC.md 5)
            initialise_head(self.head)

    @property
    def has_projectors(self) -> bool:
        """Whether the model has the pretraining projectors (built with ``projectors=True``)."""
        return hasattr(self, "instance_projector")

    def encoder_record(self) -> dict[str, Any]:
        """The encoder as checkpoints, bundles and results files record it (``encoder_record``)."""
        return encoder_record(self.config, self.layout)

    def tokens(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, T, V, M) -> temporal (N, T, M*V*C) and spatial (N, M*V, T*C) tokens of the modality."""
        if x.ndim != 5 or x.shape[2] != self.config.clip_frames:
            raise ValueError(f"expected x of shape (N, C, {self.config.clip_frames}, V, M), got {tuple(x.shape)}")
        view = apply_modality(x, modality, self.layout)
        return temporal_tokens(view), spatial_tokens(view)

    def encode(self, x: torch.Tensor, modality: str = "joint") -> dict[str, torch.Tensor]:
        """Dense outputs and the instance feature concat(max_T y_t, max_tokens y_s)."""
        temporal, spatial = self.tokens(x, modality)
        dense_t, dense_s = self.encoder(temporal, spatial)
        features = torch.cat([dense_t.amax(dim=1), dense_s.amax(dim=1)], dim=-1)  # (N, 2H)
        return {"dense_t": dense_t, "dense_s": dense_s, "features": features}

    def project(self, encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """z_t, z_s, z_i from the pooled dense outputs; BatchNorm sees exactly the batch given here."""
        hidden = self.config.hidden_size
        pooled_t, pooled_s = encoded["features"][:, :hidden], encoded["features"][:, hidden:]
        return {"z_t": self.temporal_projector(pooled_t), "z_s": self.spatial_projector(pooled_s),
                "z_i": self.instance_projector(encoded["features"])}

    def forward(self, x: torch.Tensor, modality: str = "joint") -> dict[str, torch.Tensor]:
        """``encode`` of x (N, C, T, V, M), plus ``z_t``, ``z_s``, ``z_i`` (with projectors) and ``logits``
        (N, classes) (with a head)."""
        outputs = self.encode(x, modality)
        if self.has_projectors:
            outputs.update(self.project(outputs))
        if self.head is not None:
            outputs["logits"] = self.head(outputs["features"])
        return outputs


def count_parameters(module: nn.Module) -> int:
    """The number of parameter elements of ``module`` (trainable or not)."""
    return sum(parameter.numel() for parameter in module.parameters())
