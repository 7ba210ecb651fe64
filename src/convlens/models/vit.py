"""A small, readable vision transformer (Dosovitskiy et al. 2021, arXiv:2010.11929).

The image is cut into ``patch x patch`` squares by a strided convolution
(``patch_embed.proj``), each square becomes a token of width ``dim``; a learned class token
(``cls_token``) and optional register tokens (``reg_tokens``, Darcet et al. 2024,
arXiv:2309.16588) are put in front, a learned position embedding (``pos_embed``) is added,
and ``depth`` pre-norm blocks follow::

    x = x + attn(norm1(x))        attn: softmax(q k^T / sqrt(d)) v over `heads` heads
    x = x + mlp(norm2(x))         mlp: fc1 -> GELU -> fc2

The head reads the class token after a final LayerNorm (or the mean of the patch tokens
with ``class_token=False``). Token layers are ``(N, T, C)`` with ``T = 1 + registers +
(H / patch) * (W / patch)``, the extra tokens first (as timm orders them).

The attention probabilities of block ``i`` pass through their own ``nn.Softmax`` module,
``blocks.i.attn.attend`` (vit-pytorch names it the same), so forward hooks see them:
:mod:`convlens.attribution.attention` reads them there. No dropout, no fused attention.
Nothing is downloaded; weights come from the user or from convlens's own small training
(``digits_vit``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import BadInputError

__all__ = [
    "VIT_TINY",
    "Attention",
    "Block",
    "PatchEmbedding",
    "ViTConfig",
    "VisionTransformer",
    "vit_tiny",
]


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a :class:`VisionTransformer`.

    ``image_size`` is ``(H, W)`` (or one int), divisible by ``patch``; ``dim`` divisible by
    ``heads``; ``mlp_ratio`` sets the MLP's hidden width ``dim * mlp_ratio``.
    """

    image_size: int | tuple[int, int] = 224
    patch: int = 16
    dim: int = 192
    depth: int = 12
    heads: int = 3
    channels: int = 3
    classes: int = 1000
    mlp_ratio: float = 4.0
    n_register_tokens: int = 0
    class_token: bool = True

    @property
    def grid(self) -> tuple[int, int]:
        h, w = (
            (self.image_size, self.image_size)
            if isinstance(self.image_size, int)
            else self.image_size
        )
        return h // self.patch, w // self.patch

    @property
    def prefix_tokens(self) -> int:
        """Tokens in front of the patch tokens: the class token and the registers."""
        return int(self.class_token) + self.n_register_tokens


#: ViT-Tiny's shape (Touvron et al. 2021, DeiT-Ti, arXiv:2012.12877): 224 px, 16 px patches, 192 wide, 12 blocks, 3 heads.
VIT_TINY = ViTConfig()


class PatchEmbedding(nn.Module):
    """``(N, C, H, W) -> (N, h*w, dim)``: one strided convolution, flattened row-major."""

    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; the probabilities go through ``attend`` (an ``nn.Softmax``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise BadInputError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attend = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = (
            self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        )  # each (N, heads, T, d)
        attn = self.attend(
            (q @ k.transpose(-2, -1)) * self.scale
        )  # (N, heads, T, T), rows sum to 1
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class MLP(nn.Module):
    """``fc2(GELU(fc1(x)))``, applied to each token."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, round(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT classifier: ``(N, channels, H, W)`` normalised input -> logits ``(N, classes)``.

    Parameters
    ----------
    config
        The shape (:class:`ViTConfig`); keyword arguments override its fields.

    Examples
    --------
    >>> net = VisionTransformer(image_size=8, patch=2, dim=32, depth=2, heads=4, channels=1, classes=10)
    >>> net(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 10])
    """

    def __init__(self, config: ViTConfig | None = None, **overrides: object) -> None:
        super().__init__()
        cfg = ViTConfig(**{**(config or ViTConfig()).__dict__, **overrides})
        self.config = cfg
        h, w = cfg.grid
        if h < 1 or w < 1:
            raise BadInputError(
                f"image_size={cfg.image_size} is smaller than one {cfg.patch}-pixel patch"
            )
        self.patch_embed = PatchEmbedding(cfg.channels, cfg.dim, cfg.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.class_token else None
        self.reg_tokens = (
            nn.Parameter(torch.zeros(1, cfg.n_register_tokens, cfg.dim))
            if cfg.n_register_tokens
            else None
        )
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.prefix_tokens + h * w, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.classes)
        with torch.no_grad():
            for token in (self.cls_token, self.reg_tokens):
                if token is not None:
                    token.normal_(std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        if tokens.shape[1] + self.config.prefix_tokens != self.pos_embed.shape[1]:
            raise BadInputError(
                f"input {tuple(x.shape[-2:])} makes {tokens.shape[1]} patches; this ViT was built for {self.config.image_size} px ({self.config.grid[0]}x{self.config.grid[1]} patches)"
            )
        prefix = [
            p.expand(x.shape[0], -1, -1) for p in (self.cls_token, self.reg_tokens) if p is not None
        ]
        tokens = torch.cat([*prefix, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        pooled = (
            tokens[:, 0]
            if self.config.class_token
            else tokens[:, self.config.prefix_tokens :].mean(dim=1)
        )
        return self.head(pooled)


def vit_tiny(**overrides: object) -> VisionTransformer:
    """A randomly initialised ViT of ViT-Tiny's shape (5.7 M parameters at 224 px, 1000 classes)."""
    return VisionTransformer(VIT_TINY, **overrides)
