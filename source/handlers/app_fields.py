"""Keys Reigh stores on its rows for its own records (generations, shots, variants, UI state, contracts): the
worker reads none of them, and reports them as such instead of as unknown parameters."""

from __future__ import annotations

from collections.abc import Iterable

APP_RECORD_KEYS = frozenset({
    "shot_id", "parent_generation_id", "tool_type", "orchestration_contract", "task_view_contract",
    "family_contract", "contract_version", "task_family", "based_on", "orchestrator_task_id", "advanced_mode",
    "motion_mode", "selected_phase_preset_id", "video_edit_mode", "is_primary", "source_variant_id",
})


def split_app_fields(ignored: Iterable[str]) -> dict[str, list[str]]:
    """A result's ``ignored_params`` (parameters nobody honoured) and ``app_fields`` (the app's records)."""
    ignored = sorted(set(ignored))
    app = [key for key in ignored if key.rsplit(".", 1)[-1] in APP_RECORD_KEYS]
    rest = [key for key in ignored if key not in app]
    return {**({"ignored_params": rest} if rest else {}), **({"app_fields": app} if app else {})}
