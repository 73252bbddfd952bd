"""Where the engine finds definitions, LoRAs and the tiny-model cache (each overridable by env var)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def defaults_dir() -> Path:
    return Path(os.environ.get("WGP_DEFAULTS_DIR", REPO_ROOT / "defaults"))


def loras_dir() -> Path:
    return Path(os.environ.get("WGP_LORA_DIR", REPO_ROOT / "loras"))


def tiny_cache_dir() -> Path:
    return Path(os.environ.get("WGP_TINY_CACHE", REPO_ROOT / ".cache" / "tiny-models"))


def lora_cache_dir() -> Path:
    """Content-addressed LoRAs that rows brought (``<sha256>.safetensors``): outside every family folder,
    so no LoRA name a row gives resolves there."""
    return Path(os.environ.get("WGP_LORA_CACHE", loras_dir() / ".cache" / "sha256"))


def ckpts_dir() -> Path:
    """Single-file checkpoints, e.g. WanGP's ``ckpts/`` folder (``--ckpts-dir`` on worker.py sets the env var)."""
    return Path(os.environ.get("WGP_CKPTS_DIR", REPO_ROOT / "ckpts")).expanduser()
