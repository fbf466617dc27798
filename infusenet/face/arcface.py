"""ArcFace IR-SE50 (the identity embedder InfiniteYou was trained on), in plain torch.

The module tree mirrors the parameter names of ``recognition_arcface_ir_se50.pth`` (397 keys), so the
file loads with ``load_state_dict(strict=True)``. Input ``[N, 3, 112, 112]`` in ``[-1, 1]`` (BGR, as
the reference feeds it); output ``[N, 512]``, L2-normalised.
"""
from __future__ import annotations

import torch
from torch import nn

# (output channels, units) per stage; the first unit of each stage halves the resolution.
IR_SE50_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))
EMBEDDING_DIM = 512
INPUT_SIZE = 112


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, reduction 16."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(gate))))
        return x * gate


class IRSEUnit(nn.Module):
    """Improved-residual unit with squeeze-excitation: ``[N, C_in, H, W] -> [N, C_out, H/s, W/s]``.

    Residual: BN -> conv3x3 -> PReLU -> conv3x3 (stride s) -> BN -> SE. Shortcut: conv1x1 + BN when the
    channel count changes, otherwise plain subsampling by ``s`` (a 1x1 max-pool, no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels),
        )
        self.shortcut_layer: nn.Module | None = None
        if in_channels != out_channels:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_layer is None:
            shortcut = x[:, :, :: self.stride, :: self.stride]
        else:
            shortcut = self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


class ArcFaceIRSE50(nn.Module):
    """IR-SE50 backbone + embedding head: ``[N, 3, 112, 112] -> [N, 512]`` unit vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        channels = 64
        for out_channels, count in IR_SE50_STAGES:
            for i in range(count):
                units.append(IRSEUnit(channels, out_channels, 2 if i == 0 else 1))
                channels = out_channels
        self.body = nn.Sequential(*units)
        side = INPUT_SIZE // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(),
            nn.Flatten(),
            nn.Linear(512 * side * side, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.output_layer(self.body(self.input_layer(x)))
        return nn.functional.normalize(features.float(), dim=1).to(features.dtype)


def crops_to_input(crops_bgr, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Aligned uint8 crops ``[N, 112, 112, 3]`` (BGR, as cropped) -> ``[N, 3, 112, 112]`` in ``[-1, 1]``.

    Same steps as the reference: ``x / 255`` then ``2 * x - 1``, channel order unchanged."""
    x = torch.as_tensor(crops_bgr).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (2.0 * x - 1.0).to(device=device, dtype=dtype).contiguous()
