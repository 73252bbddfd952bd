"""RIFE's IFNet (the Practical-RIFE 4.2x layout: a feature head and five coarse-to-fine flow blocks).

Each block sees both images (and their features) warped by the flow so far, and predicts a flow
correction for both directions, a blend mask and features for the next block. Module and parameter
names follow the published checkpoints' keys so their state dicts load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Channels per block, coarsest first, and the downscale each block works at (× the 4× of its stem).
BLOCK_CHANNELS = (192, 128, 96, 64, 32)
BLOCK_SCALES = (16.0, 8.0, 4.0, 2.0, 1.0)
FEATURE_CHANNELS = 4  # per image, from the Head
PAD_MULTIPLE = 64  # the coarsest block sees 1/16 of the frame, then its stem halves it twice more


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=True), nn.LeakyReLU(0.2, True))


class Head(nn.Module):
    """Per-image features, at full resolution, that the blocks warp alongside the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, FEATURE_CHANNELS, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(image.clamp(0.0, 1.0)))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class ResConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


@dataclass(frozen=True)
class BlockOutput:
    flow: torch.Tensor  # (B, 4, H, W): t→0 in channels 0-1, t→1 in 2-3, in pixels
    mask: torch.Tensor  # (B, 1, H, W): blend logits
    features: torch.Tensor  # (B, 8, H, W): passed to the next block


class IFBlock(nn.Module):
    OUT_CHANNELS = 4 + 1 + 8  # flow, mask, features

    def __init__(self, in_channels: int, channels: int, depth: int = 8) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, channels // 2, 2), _conv(channels // 2, channels, 2))
        self.convblock = nn.Sequential(*(ResConv(channels) for _ in range(depth)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(channels, 4 * self.OUT_CHANNELS, 4, 2, 1),
                                      nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float) -> BlockOutput:
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            coarse_flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, coarse_flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return BlockOutput(flow=out[:, :4] * scale, mask=out[:, 4:5], features=out[:, 5:])


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at each pixel's position plus ``flow`` (pixels, x then y)."""
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=flow.dtype),
                            torch.arange(width, device=image.device, dtype=flow.dtype), indexing="ij")
    x = (xs + flow[:, 0]) * (2.0 / max(width - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(height - 1, 1)) - 1.0
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = BLOCK_CHANNELS, scales: tuple[float, ...] = BLOCK_SCALES) -> None:
        super().__init__()
        if len(channels) != len(scales):
            raise ValueError("one scale per block")
        self.scales = scales
        self.encode = Head()
        first_in = 3 + 3 + 2 * FEATURE_CHANNELS + 1  # both images, their features, the timestep plane
        later_in = first_in + 1 + 8 + 4  # + mask, block features, current flow
        for index, width in enumerate(channels):
            self.add_module(f"block{index}", IFBlock(first_in if index == 0 else later_in, width))

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.scales))]

    def forward(self, image0: torch.Tensor, image1: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """The frame at ``timestep`` between (B, 3, H, W) images in [0, 1]; H and W multiples of 64."""
        image0, image1 = image0.clamp(0.0, 1.0), image1.clamp(0.0, 1.0)
        batch, _, height, width = image0.shape
        t = torch.as_tensor(timestep, dtype=image0.dtype, device=image0.device).reshape(-1, 1, 1, 1)
        t_plane = t.expand(batch, 1, height, width)
        feat0, feat1 = self.encode(image0), self.encode(image1)
        warped0, warped1 = image0, image1
        flow = mask = features = None
        for block, scale in zip(self.blocks, self.scales, strict=True):
            if flow is None:
                out = block(torch.cat((image0, image1, feat0, feat1, t_plane), 1), None, scale)
                flow = out.flow
            else:
                wfeat0 = backward_warp(feat0, flow[:, :2])
                wfeat1 = backward_warp(feat1, flow[:, 2:4])
                out = block(torch.cat((warped0, warped1, wfeat0, wfeat1, t_plane, mask, features), 1), flow, scale)
                flow = flow + out.flow
            mask, features = out.mask, out.features
            warped0 = backward_warp(image0, flow[:, :2])
            warped1 = backward_warp(image1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1.0 - weight)


def pad_to_multiple(image: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    _, _, height, width = image.shape
    return F.pad(image, (0, -width % multiple, 0, -height % multiple), mode="replicate")
