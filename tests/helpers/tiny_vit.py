"""A tiny vision transformer for the method registry and token tests (3x16x16, 5 classes).

Built from convlens's own :class:`~convlens.models.vit.VisionTransformer` (4x4-pixel patches:
a 4x4 grid, a class token and one register token, 2 blocks of 2 heads) with seeded random
weights. ``fail = True`` makes the forward raise after the first block, like
``TinyConvNet.fail``. ``inplace`` is accepted for the registry's factories; a ViT has no
in-place activation.
"""

from __future__ import annotations

import torch

from convlens.models.vit import VisionTransformer


class TinyViT(VisionTransformer):
    def __init__(self, inplace: bool = False, seed: int = 0, n_register_tokens: int = 1) -> None:
        super().__init__(
            image_size=16,
            patch=4,
            dim=16,
            depth=2,
            heads=2,
            channels=3,
            classes=5,
            mlp_ratio=2.0,
            n_register_tokens=n_register_tokens,
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix = [
            p.expand(x.shape[0], -1, -1) for p in (self.cls_token, self.reg_tokens) if p is not None
        ]
        tokens = torch.cat([*prefix, self.patch_embed(x)], dim=1) + self.pos_embed
        for i, block in enumerate(self.blocks):
            if self.fail and i == 1:
                raise RuntimeError("forward failed on purpose")
            tokens = block(tokens)
        return self.head(self.norm(tokens)[:, 0])
