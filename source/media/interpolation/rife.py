"""RIFE inference: IFNet weights from the hub cache, and an interpolator with the flow method's surface."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import torch

from source.errors import ModelUnavailable
from source.hub import fetch_hub_file
from source.media.interpolation.ifnet import IFNet, pad_to_multiple
from source.model_memory import ModelMemory

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RifeWeights:
    """Where the IFNet checkpoint lives: a hub repo file (RIFE_WEIGHTS_REPO/_FILE), or a local file
    (RIFE_WEIGHTS_PATH) for deployments that keep weights outside the Hugging Face cache."""

    repo: str
    filename: str
    path: str | None = None

    @classmethod
    def configured(cls) -> RifeWeights:
        return cls(repo=os.environ.get("RIFE_WEIGHTS_REPO", "DeepBeepMeep/Wan2.1"),
                   filename=os.environ.get("RIFE_WEIGHTS_FILE", "flownet.pkl"),
                   path=os.environ.get("RIFE_WEIGHTS_PATH") or None)

    def local_file(self) -> Path:
        if self.path is None:
            return fetch_hub_file(self.repo, self.filename, what="RIFE (IFNet)")
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"RIFE (IFNet) weights: RIFE_WEIGHTS_PATH {path} is not a file")
        return path

    def describe(self) -> str:
        return self.path or f"{self.repo}/{self.filename}"


def load_ifnet_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's IFNet state dict: bare, under ``state_dict``/``flownet``, or DDP-``module.``-prefixed."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "flownet"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelUnavailable(f"RIFE checkpoint {path} holds {type(state).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def build_ifnet(state: dict[str, torch.Tensor], source: str) -> IFNet:
    net = IFNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelUnavailable(f"RIFE checkpoint {source} does not match the IFNet 4.2x layout: "
                               f"{str(exc).splitlines()[0][:300]}") from exc
    return net.eval()


def load_rife(weights: RifeWeights | None = None, memory: ModelMemory | None = None) -> IFNet:
    """The IFNet for ``weights``, kept by ``memory`` (the worker's) until memory is short, built afresh for a
    caller with none; ModelUnavailable naming the repo and file when the checkpoint cannot be had."""
    weights = weights or RifeWeights.configured()

    def build() -> IFNet:
        net = build_ifnet(load_ifnet_state(weights.local_file()), weights.describe())
        log.info("rife_loaded", weights=weights.describe())
        return net.to("cuda" if torch.cuda.is_available() else "cpu")

    return build() if memory is None else memory.auxiliary(f"rife:{weights.describe()}", build)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


class RifeInterpolator:
    """Frames between two RGB uint8 images with an IFNet; exactly the inputs at t = 0 and t = 1."""

    name = "rife"

    def __init__(self, net: IFNet, image0: np.ndarray, image1: np.ndarray) -> None:
        self.net = net
        self.image0, self.image1 = image0, image1
        self.height, self.width = image0.shape[:2]
        device = next(net.parameters()).device
        self.tensor0 = pad_to_multiple(_to_tensor(image0)).to(device)
        self.tensor1 = pad_to_multiple(_to_tensor(image1)).to(device)

    @torch.inference_mode()
    def frame(self, t: float) -> np.ndarray:
        if t <= 0.0:
            return self.image0
        if t >= 1.0:
            return self.image1
        out = self.net(self.tensor0, self.tensor1, t)[0, :, : self.height, : self.width]
        return (out.clamp(0, 1) * 255.0 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
