"""What this box can run: every definition, where its weights come from, whether they are here, and the memory
profile it needs on this accelerator (``tasks models``). Reads the Hugging Face cache and the checkpoint folder;
never downloads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from source.engine.loading.single_file import FileRef, ckpts_notes, ckpts_present, effective_files, file_refs
from source.engine.model_defs import ModelDefinition, list_model_types, load_model_def
from source.engine.paths import loras_dir
from source.errors import InvalidParams

# Room for activations and the CUDA context on top of the weights (a 14B Wan model at 832x480x81 peaked at
# ~39 GiB with ~29 GiB of weights on the H100, NOTES.md).
HEADROOM = 1.35


@dataclass(frozen=True)
class ModelAvailability:
    model_type: str
    name: str
    family: str
    source: str  # hub | local | tiny | single-file | ckpts (WanGP checkpoints found here replace hub weights)
    weights: str
    present: str  # yes | partial | no
    size_gb: float | None
    memory_gb: float | None
    profile: int | None  # the lowest memory profile that fits this accelerator; None: no accelerator / unknown
    profile_note: str
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _hub_cache() -> dict[str, float]:
    """repo id → GB on disk, for the models in the Hugging Face cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return {}
    return {repo.repo_id: repo.size_on_disk / 1e9 for repo in info.repos if repo.repo_type == "model"}


def memory_need_gb(definition: ModelDefinition, profile: int | None = None) -> float | None:
    """Accelerator memory the definition declares it needs at ``profile`` (default: the profile it runs with,
    after --wgp-profile): every component (1), the largest one (2, 3: model offload), with HEADROOM. None when
    nothing bounds it here: weights not recorded, or block/sequential offload (4, 5) that streams the weights."""
    weights = definition.weights
    if weights.tiny:
        return 0.0
    profile = definition.engine.profile if profile is None else profile
    whole = weights.memory_gb or weights.size_gb
    largest = weights.largest_gb or whole
    if whole is None or profile >= 4:
        return None
    return round((whole if profile == 1 else largest) * HEADROOM, 1)  # type: ignore[operator]


def memory_profile(definition: ModelDefinition, gpu_gb: float | None) -> tuple[int | None, str]:
    """Profile 1 keeps every component on the accelerator, 2 one component at a time (model offload), 4 streams
    the largest one block by block (group offload), so it fits where 2 does not."""
    weights = definition.weights
    if weights.tiny:
        return 1, "tiny: fits anywhere"
    whole = weights.memory_gb or weights.size_gb
    largest = weights.largest_gb or whole
    if whole is None:
        return None, "memory not recorded in the definition"
    if gpu_gb is None:
        return None, f"no GPU found; needs ~{whole * HEADROOM:.0f} GB for profile 1, ~{largest * HEADROOM:.0f} GB for 2"
    if whole * HEADROOM <= gpu_gb:
        return 1, f"~{whole * HEADROOM:.0f} GB of {gpu_gb:g} GB"
    if largest * HEADROOM <= gpu_gb:
        return 2, f"profile 1 needs ~{whole * HEADROOM:.0f} GB; model offload needs ~{largest * HEADROOM:.0f} GB"
    return 4, f"the largest component (~{largest:g} GB) does not fit {gpu_gb:g} GB whole: group offload"


def builtin_lora_folders(definition: ModelDefinition) -> list[Path]:
    """Where a definition's own LoRAs may already be, besides the checkpoint folder: its LoRA folder (WanGP keeps
    model LoRAs with the others)."""
    from source.engine.families import family_for

    return [loras_dir() / (definition.lora_folder or family_for(definition.architecture).lora_folder)]


def _folder_presence(weights, files, cache: dict[str, float]) -> tuple[str, str | None]:
    """(yes | partial | no, what is missing) for the diffusers folder a definition takes its configs from."""
    if weights.tiny:
        return "yes", None  # built on first use, no download
    if weights.local:
        ok = (Path(weights.local).expanduser() / "model_index.json").is_file()
        return ("yes", None) if ok else ("no", f"local folder {weights.local}")
    on_disk = cache.get(weights.repo, 0.0)
    # With single files the folder only gives configs (and the components not in files): any cached copy does.
    if on_disk > 0 and (files or weights.size_gb is None or on_disk >= 0.9 * weights.size_gb):
        return "yes", None
    if on_disk > 0:
        return "partial", f"hub repo {weights.repo} ({on_disk:.1f} of ~{weights.size_gb:g} GB cached)"
    return "no", f"hub repo {weights.repo}"


def _presence(definition: ModelDefinition, cache: dict[str, float]) -> tuple[str, str, list[str]]:
    """(source, present, missing) for one definition: present is yes, partial or no."""
    weights = definition.weights
    files = effective_files(weights)
    also = builtin_lora_folders(definition) if weights.loras else []
    wanted = [ref for entry in files.values() for ref in file_refs(entry, weights.ckpts_dir)]
    wanted += [FileRef(file, weights.ckpts_dir) for file, _ in weights.loras]
    missing = [ref.text for ref in wanted if ref.local_path(also) is None]
    folder, folder_missing = _folder_presence(weights, files, cache)
    if folder_missing:
        missing.insert(0, folder_missing)
    source = ("ckpts" if ckpts_present(weights.ckpts, weights.ckpts_dir) else "single-file") if files else weights.kind
    if folder == "yes" and not missing:
        present = "yes"
    else:
        present = "no" if folder == "no" and len(missing) == len(wanted) + 1 else "partial"
    # Informational: WanGP files that are here but not used (one missing, or only quantised variants).
    return source, present, missing + [f"WanGP checkpoints not used: {note}" for note in ckpts_notes(weights)]


def model_inventory(gpu_gb: float | None) -> list[ModelAvailability]:
    cache = _hub_cache()
    rows = []
    for model_type in list_model_types():
        try:
            definition = load_model_def(model_type)
        except InvalidParams as exc:
            rows.append(ModelAvailability(model_type, model_type, "?", "?", f"malformed: {exc}", "no", None, None,
                                          None, ""))
            continue
        source, present, missing = _presence(definition, cache)
        profile, note = memory_profile(definition, gpu_gb)
        rows.append(ModelAvailability(
            model_type=model_type, name=definition.name, family=definition.architecture, source=source,
            weights=definition.weights.describe(), present=present, size_gb=definition.weights.size_gb,
            memory_gb=definition.weights.memory_gb, profile=profile, profile_note=note, missing=missing,
        ))
    return rows
