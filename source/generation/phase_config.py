"""Reigh's ``phase_config`` (and its ``lora_multipliers: [{url, multiplier}]`` list) as WanGP's flat names.

A phase config is ``{num_phases, steps_per_phase, flow_shift, sample_solver, model_switch_phase,
phases: [{phase, guidance_scale, loras: [{url, multiplier}]}]}``. It becomes ``guidance_phases``,
``steps_per_phase`` (the exact split), ``num_inference_steps`` (their sum), ``flow_shift``, ``sample_solver``,
``model_switch_phase``, ``guidance_scale``/``guidance2_scale``/``guidance3_scale``, and each distinct LoRA URL
one ``additional_loras`` entry with one multiplier per phase (0 where a phase does not list it), fetched and
checked like any other. As in reigh-worker, the phase config wins over the same flat names given beside it;
it replaces a model definition's own phase LoRAs (source/generation/loras.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from source.errors import InvalidParams

PHASE_CONFIG_KEYS = frozenset({"num_phases", "steps_per_phase", "flow_shift", "sample_solver", "model_switch_phase",
                               "phases", "mode"})
PHASE_KEYS = frozenset({"phase", "guidance_scale", "loras"})


def expand_phase_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with ``phase_config`` (and a list-of-objects ``lora_multipliers``) turned into flat names."""
    params = dict(params)
    config = params.pop("phase_config", None)
    listed = params.get("lora_multipliers")
    url_list = isinstance(listed, list) and any(isinstance(entry, Mapping) for entry in listed)
    if url_list:
        params.pop("lora_multipliers")
    if config is None:
        if url_list:
            params["additional_loras"] = {**_additional(params), **_from_url_list(listed)}
        return params
    flat = phase_config_values(config)
    loras = flat.pop("additional_loras")
    if url_list:
        unknown = sorted({entry.get("url") for entry in listed if isinstance(entry, Mapping)} - set(loras))
        if unknown:
            raise InvalidParams(f"params.lora_multipliers names {unknown[0]!r}, which params.phase_config's phases "
                                f"do not list (give each phase LoRA in phase_config.phases[].loras)")
    steps = params.get("num_inference_steps", params.get("steps"))
    if steps is not None and steps != flat["num_inference_steps"]:
        raise InvalidParams(f"params.phase_config.steps_per_phase {flat['steps_per_phase']} sums to "
                            f"{flat['num_inference_steps']}, but num_inference_steps is {steps}")
    params.pop("steps", None)
    params.update(flat)
    params["additional_loras"] = {**_additional(params), **loras}
    return params


def phase_config_values(config: Any) -> dict[str, Any]:
    where = "params.phase_config"
    if not isinstance(config, Mapping):
        raise InvalidParams(f"{where} must be an object")
    unknown = sorted(set(config) - PHASE_CONFIG_KEYS)
    if unknown:
        raise InvalidParams(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(PHASE_CONFIG_KEYS))}")
    phases = config.get("phases")
    steps = config.get("steps_per_phase")
    if not isinstance(phases, list) or not isinstance(steps, list):
        raise InvalidParams(f"{where} needs phases (a list) and steps_per_phase (a list of step counts)")
    count = config.get("num_phases", len(phases))
    if not (len(phases) == len(steps) == count) or count not in (2, 3):
        raise InvalidParams(f"{where}: num_phases {count!r}, {len(steps)} steps_per_phase values and {len(phases)} "
                            f"phases must agree, with 2 or 3 phases")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
        raise InvalidParams(f"{where}.steps_per_phase must be step counts, got {steps!r}")
    flat: dict[str, Any] = {
        "guidance_phases": count, "steps_per_phase": list(steps), "num_inference_steps": sum(steps),
    }
    for key in ("flow_shift", "sample_solver", "model_switch_phase"):
        if config.get(key) is not None:
            flat[key] = config[key]
    urls: list[str] = []
    per_phase: list[dict[str, Any]] = []
    for index, phase in enumerate(phases):
        at = f"{where}.phases[{index}]"
        if not isinstance(phase, Mapping) or set(phase) - PHASE_KEYS:
            raise InvalidParams(f"{at} must be an object with phase, guidance_scale and loras")
        if phase.get("guidance_scale") is not None:
            flat[("guidance_scale", "guidance2_scale", "guidance3_scale")[index]] = phase["guidance_scale"]
        found: dict[str, Any] = {}
        for lora in phase.get("loras") or []:
            if not isinstance(lora, Mapping) or not isinstance(lora.get("url"), str):
                raise InvalidParams(f"{at}.loras entries must be {{url, multiplier}}, got {lora!r}")
            url = lora["url"].strip()
            if not url:
                continue  # Reigh leaves empty rows in its editor; reigh-worker skips them too
            if url in found:
                raise InvalidParams(f"{at}.loras lists {url!r} twice")
            found[url] = _multiplier(f"{at}.loras[{url}]", lora.get("multiplier", 1.0))
            if url not in urls:
                urls.append(url)
        per_phase.append(found)
    flat["additional_loras"] = {url: ";".join(str(phase.get(url, 0.0)) for phase in per_phase) for url in urls}
    return flat


def _multiplier(where: str, value: Any) -> float | str:
    """A number, or Reigh's ramp "a,b,c" (kept as text: WanGP spreads it over the phase's steps)."""
    try:
        if isinstance(value, str) and "," in value:
            return ",".join(str(float(part)) for part in value.split(","))
        return float(value)
    except (TypeError, ValueError):
        raise InvalidParams(f"{where}: multiplier must be a number or a ramp 'a,b,c', got {value!r}") from None


def _additional(params: Mapping[str, Any]) -> dict[str, Any]:
    value = params.get("additional_loras")
    if value in (None, {}, []):
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParams("params.additional_loras must be an object {url_or_path: multiplier}")
    return dict(value)


def _from_url_list(listed: list[Any]) -> dict[str, Any]:
    loras: dict[str, Any] = {}
    for entry in listed:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str):
            raise InvalidParams(f"params.lora_multipliers entries must be {{url, multiplier}}, got {entry!r}")
        multiplier = _multiplier(f"params.lora_multipliers[{entry['url']}]", entry.get("multiplier", 1.0))
        if entry["url"] in loras and loras[entry["url"]] != multiplier:
            raise InvalidParams(f"params.lora_multipliers gives {entry['url']!r} two multipliers without a "
                                f"phase_config to say which phase each is for")
        loras[entry["url"]] = multiplier
    return loras
