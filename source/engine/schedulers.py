"""WanGP solver names (unipc, euler, dpm++) → diffusers schedulers built from the pipeline's own config."""

from __future__ import annotations

from source.errors import InvalidParams


def _unipc(config: dict, shift: float):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(
        config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
    )


def _euler(config: dict, shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(config, shift=shift)


def _dpmpp(config: dict, shift: float):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        algorithm_type="dpmsolver++",
    )


_FACTORIES = {"unipc": _unipc, "euler": _euler, "dpm++": _dpmpp}


class SchedulerSwitcher:
    """Sets the scheduler a call asks for, reusing the previous one when nothing changed (cheap per call)."""

    def __init__(self, pipe, supported: tuple[str, ...]) -> None:
        self._pipe = pipe
        self._supported = supported
        self._native = pipe.scheduler
        self._base_config = dict(pipe.scheduler.config)
        self._current: tuple[str, float | None] | None = None

    def apply(self, solver: str, shift: float | None) -> None:
        if solver not in self._supported:
            raise InvalidParams(
                f"sample_solver {solver!r} is not available for this model; choose one of {', '.join(self._supported)}"
            )
        if (solver, shift) == self._current:
            return
        if shift is None and solver == self._supported[0]:
            # The model's own scheduler: families like Flux/LTX compute their shift per resolution.
            self._pipe.scheduler = self._native
        else:
            default_shift = self._base_config.get("flow_shift", self._base_config.get("shift", 1.0))
            self._pipe.scheduler = _FACTORIES[solver](self._base_config, default_shift if shift is None else shift)
        self._current = (solver, shift)
