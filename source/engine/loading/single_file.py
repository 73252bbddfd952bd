"""Components from single-file checkpoints in the original (Wan/WanGP, LTX) key layout.

A definition's ``weights.files`` maps a pipeline component to one file, or to a list of files whose tensors are
merged (WanGP keeps a VACE model as the text-to-video transformer plus a ``*_Vace_*_module`` file). A file is
either a path (relative to the checkpoint folder, ``--ckpts-dir`` / ``WGP_CKPTS_DIR``, or absolute) or
``hf://owner/repo/path/in/repo``: the same path under the checkpoint folder is used when it is there (WanGP stores
hub files under their repo paths in ``ckpts/``), else the file comes from the Hugging Face cache or the hub.
Diffusers models go through ``from_single_file`` with the config of the same component in the definition's
diffusers folder; the UMT5 text encoder, which diffusers has no converter for, through the mapping below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from source.engine.paths import ckpts_dir
from source.errors import ModelUnavailable
from source.hub import fetch_hub_file

if TYPE_CHECKING:  # torch only where tensors are read: the worker's start and the CLI need none of it
    import torch

log = structlog.get_logger(__name__)

HUB_PREFIX = "hf://"
# Quantised formats diffusers cannot read from a plain state dict: WanGP's quanto int8, GGUF, nvfp4/nunchaku.
_QUANTISED_NAME = re.compile(r"quanto|int8|int4|nvfp4|nunchaku|\.gguf$", re.IGNORECASE)
_QUANTISED_KEY = re.compile(r"\._data$|\._scale$|\.input_scale$|\.weight_scale$|\.scale_weight$")


@dataclass(frozen=True)
class FileRef:
    """One checkpoint file as a definition names it: a path under the checkpoint folder, or a hub file."""

    text: str
    # The box's checkpoint folder (WeightsSource.ckpts_dir); None: the environment's, read when looked up.
    folder: Path | None = None

    @property
    def ckpts(self) -> Path:
        return self.folder if self.folder is not None else ckpts_dir()

    @property
    def hub(self) -> tuple[str, str] | None:
        if not self.text.startswith(HUB_PREFIX):
            return None
        owner, name, *rest = self.text[len(HUB_PREFIX):].split("/")
        if not rest:
            raise ModelUnavailable(f"{self.text!r} is not hf://owner/repo/path/to/file")
        return f"{owner}/{name}", "/".join(rest)

    @property
    def relative(self) -> str:
        """Where the file sits under the checkpoint folder (WanGP keeps hub files under their repo path)."""
        hub = self.hub
        return hub[1] if hub else self.text

    def local_path(self, also: Sequence[Path] = ()) -> Path | None:
        """The file on this box without any download (checkpoint folder, then ``also`` folders by file name,
        then the HF cache), or None."""
        path = Path(self.relative).expanduser()
        if not path.is_absolute():
            path = self.ckpts / path
        if path.is_file():
            return path
        for folder in also:
            if (folder / path.name).is_file():
                return folder / path.name
        hub = self.hub
        if hub:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(hub[0], hub[1])
            if isinstance(cached, str):
                return Path(cached)
        return None

    def resolve(self, what: str, also: Sequence[Path] = ()) -> Path:
        path = self.local_path(also)
        if path is not None:
            return path
        hub = self.hub
        if hub is None:
            raise ModelUnavailable(
                f"{what}: checkpoint file {self.text!r} not found in the checkpoint folder {self.ckpts} "
                f"(set --ckpts-dir or WGP_CKPTS_DIR to the folder holding WanGP's ckpts/)"
            )
        return fetch_hub_file(hub[0], hub[1], what=what)


def file_refs(entry: str | Sequence[str], folder: Path | None = None) -> list[FileRef]:
    return [FileRef(text, folder) for text in ([entry] if isinstance(entry, str) else entry)]


def ckpts_present(ckpts: Mapping[str, str | Sequence[str]], folder: Path | None = None) -> bool:
    """Whether every file of a definition's ``weights.ckpts`` is on this box (checkpoint folder or HF cache)."""
    return bool(ckpts) and all(ref.local_path() is not None for entry in ckpts.values()
                               for ref in file_refs(entry, folder))


def quantised_alternatives(ref: FileRef) -> list[Path]:
    """WanGP's quantised variants of ``ref`` in the checkpoint folder (``x_quanto_mbf16_int8`` for ``x_mbf16``):
    a WanGP user may have only those, which diffusers cannot load."""
    path = Path(ref.relative).expanduser()
    folder = (path if path.is_absolute() else ref.ckpts / path).parent
    stem = re.sub(r"[_-]m?(bf16|fp16)$", "", path.stem)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{glob_escape(stem)}*") if _QUANTISED_NAME.search(p.name))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def ckpts_notes(weights) -> list[str]:
    """Why a definition's WanGP checkpoints are not used although some are here (shown by ``tasks models`` and
    logged at load): missing files, or only quantised variants of them."""
    if not weights.ckpts or ckpts_present(weights.ckpts, weights.ckpts_dir):
        return []
    refs = [ref for entry in weights.ckpts.values() for ref in file_refs(entry, weights.ckpts_dir)]
    if not any(ref.local_path() or quantised_alternatives(ref) for ref in refs):
        return []
    notes = []
    for ref in refs:
        if ref.local_path() is not None:
            continue
        quantised = quantised_alternatives(ref)
        notes.append(f"{ref.relative}: only the quantised {quantised[0].name} is here (diffusers cannot load it)"
                     if quantised else f"{ref.relative}: not in {ref.ckpts}")
    return notes


def effective_files(weights) -> dict[str, str | Sequence[str]]:
    """The components a definition loads from single files here: its ``files``, plus its ``ckpts`` when they are
    all present (a WanGP checkpoint folder); otherwise those components come from the diffusers folder."""
    files = dict(weights.files)
    if ckpts_present(weights.ckpts, weights.ckpts_dir):
        files.update(weights.ckpts)
    return files


def refuse_quantised_name(path: Path | str, what: str) -> None:
    name = Path(path).name
    if _QUANTISED_NAME.search(name):
        raise ModelUnavailable(
            f"{what}: {name} is a quantised checkpoint that diffusers cannot load from a single file; "
            f"use the bf16/fp16 file of the same model instead ({suggest_unquantised(name)})"
        )


def suggest_unquantised(name: str) -> str:
    """WanGP names its quantised files after the bf16 ones: ``x_quanto_mbf16_int8`` → ``x_mbf16``."""
    match = re.search(r"([_-])quanto(?:_(m?(?:bf16|fp16)))?_int8", name)
    if match:
        return name[:match.start()] + match.group(1) + (match.group(2) or "bf16") + name[match.end():]
    return "the file without quanto/int8/gguf/nvfp4 in its name"


def read_state_dict(paths: list[Path], what: str) -> dict[str, torch.Tensor]:
    """The tensors of ``paths`` merged (a base model plus module files), quantised files refused."""
    from safetensors.torch import load_file

    merged: dict[str, torch.Tensor] = {}
    for path in paths:
        refuse_quantised_name(path, what)
        if path.suffix != ".safetensors":
            raise ModelUnavailable(f"{what}: {path.name} is not a .safetensors file; only safetensors "
                                   f"checkpoints are read (pickled .pth/.ckpt files can run code on load)")
        tensors = load_file(str(path))
        quantised = next((key for key in tensors if _QUANTISED_KEY.search(key)), None)
        if quantised is not None:
            raise ModelUnavailable(
                f"{what}: {path.name} holds quantised tensors ({quantised}) that diffusers cannot load; use the "
                f"bf16/fp16 file of the same model instead ({suggest_unquantised(path.name)})"
            )
        merged.update(tensors)
    return merged


# --- the UMT5 text encoder: original Wan T5 names → transformers' UMT5EncoderModel names -------------------
_T5_RULES = [
    (re.compile(r"^token_embedding\.weight$"), "shared.weight"),
    (re.compile(r"^norm\.weight$"), "encoder.final_layer_norm.weight"),
    (re.compile(r"^blocks\.(\d+)\.norm1\.weight$"), r"encoder.block.\1.layer.0.layer_norm.weight"),
    (re.compile(r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$"), r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (re.compile(r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$"),
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (re.compile(r"^blocks\.(\d+)\.norm2\.weight$"), r"encoder.block.\1.layer.1.layer_norm.weight"),
    (re.compile(r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$"), r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (re.compile(r"^blocks\.(\d+)\.ffn\.fc1\.weight$"), r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (re.compile(r"^blocks\.(\d+)\.ffn\.fc2\.weight$"), r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
]


def convert_wan_t5_to_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(key.startswith("encoder.block.") for key in state_dict):
        converted = dict(state_dict)  # already in transformers' layout (some WanGP files are)
        converted.setdefault("shared.weight", converted.get("encoder.embed_tokens.weight"))
        return converted
    converted = {}
    for key, tensor in state_dict.items():
        for pattern, target in _T5_RULES:
            if pattern.match(key):
                converted[pattern.sub(target, key)] = tensor
                break
        else:
            raise ModelUnavailable(f"text encoder: unexpected tensor {key!r} for a Wan UMT5 checkpoint")
    converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    return converted


# --- building the components ---------------------------------------------------------------------------------
def component_class_name(folder: Path, component: str) -> tuple[str, str]:
    """(library, class) of ``component`` from the folder's model_index.json; a second expert missing from it
    (a Wan 2.1 config folder serving a Wan 2.2 two-expert model) has the class of the first."""
    index = json.loads((folder / "model_index.json").read_text())
    entry = index.get(component)
    if (entry is None or entry[0] is None) and component.endswith("_2"):
        entry = index.get(component[:-2])
    if not entry or entry[0] is None:
        raise ModelUnavailable(f"{folder.name} has no component {component!r} to take a config from")
    return entry[0], entry[1]


def config_subfolder(folder: Path, component: str) -> str:
    if (folder / component / "config.json").is_file():
        return component
    base = component[:-2] if component.endswith("_2") else component
    if (folder / base / "config.json").is_file():
        return base
    raise ModelUnavailable(f"{folder} has no {component}/config.json for the single-file {component}")


def load_component(folder: Path, component: str, paths: list[Path], dtype: torch.dtype):
    """Build ``component`` from single-file tensors with the config of the same component in ``folder``."""
    what = f"{component} checkpoint {', '.join(p.name for p in paths)}"
    library, class_name = component_class_name(folder, component)
    state_dict = read_state_dict(paths, what)
    subfolder = config_subfolder(folder, component)
    log.info("single_file_loading", component=component, files=[str(p) for p in paths], cls=class_name)
    if library == "transformers" and class_name in ("UMT5EncoderModel", "T5EncoderModel"):
        import torch
        import transformers

        cls = getattr(transformers, class_name)
        config = cls.config_class.from_pretrained(folder / subfolder)
        with torch.device("meta"):
            model = cls(config)
        missing, unexpected = model.load_state_dict(convert_wan_t5_to_transformers(state_dict), strict=False,
                                                    assign=True)
        missing = [key for key in missing if key != "encoder.embed_tokens.weight"]
        if missing or unexpected:
            raise ModelUnavailable(f"{what}: does not match the {class_name} config in {folder / subfolder} "
                                   f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.tie_weights()
        return model.to(dtype).eval()
    import diffusers
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    if library != "diffusers" or class_name not in SINGLE_FILE_LOADABLE_CLASSES:
        raise ModelUnavailable(f"{what}: diffusers cannot load a {class_name} from a single file; "
                               f"take {component} from the diffusers folder instead (drop it from weights.files)")
    cls = getattr(diffusers, class_name)
    try:
        return cls.from_single_file(state_dict, config=str(folder), subfolder=subfolder, torch_dtype=dtype,
                                    local_files_only=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelUnavailable(f"{what}: does not fit the {class_name} config in {folder / subfolder} "
                               f"({type(exc).__name__}: {str(exc)[:300]})") from exc
