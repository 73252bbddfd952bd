"""WanOrchestrator: the generation side of one worker (not an orchestrator of child rows, which are
source/orchestrators/): a typed ``GenerationRequest`` to files, in two stages.

``prepare`` (no model switch, no GPU lock): the prepare stage, source/generation/prepare.py (one loaded
definition, every check in check_request, LoRAs and inputs fetched, the three tiers resolved once).
``run``: make the model resident and generate from the prepared parameters.

The engine (and so torch) is created on the first model load: a worker that only runs utility tasks
never imports it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from source.engine.model_defs import BoxOptions, ModelDefinition, load_model_def
from source.errors import InvalidParams
from source.generation.conversion import GenerationRequest, db_task_to_generation_task
from source.generation.prepare import ModelCapabilities, PreparedGeneration, prepare
from source.model_memory import ModelMemory
from source.task_files.fetch import engine_inputs
from source.task_files.policy import TaskInputs

if TYPE_CHECKING:
    from source.engine.core import Engine, GenerationResult

log = structlog.get_logger(__name__)

__all__ = ["ModelCapabilities", "PreparedGeneration", "WanOrchestrator"]


class WanOrchestrator:
    def __init__(self, output_dir: Path | str, *, engine: Engine | None = None, box: BoxOptions | None = None,
                 memory: ModelMemory | None = None) -> None:
        self.output_dir = Path(output_dir)
        self._engine = engine
        # The auxiliary models (depth, pose for control videos; RIFE in the engine) beside the resident model,
        # the engine's own when one is given.
        self.memory = memory if memory is not None else engine.memory if engine is not None else ModelMemory()
        # This box's engine options (worker.py's --wgp-*, --ckpts-dir), for the definitions it reads and the
        # engine it creates; None: the environment's.
        self.box = box if box is not None or engine is None else engine.box

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from source.engine.core import Engine

            self._engine = Engine(box=self.box, memory=self.memory)
        return self._engine

    # -- models --------------------------------------------------------------------------------------
    @property
    def current_model(self) -> str | None:
        return self._engine.model_type if self._engine is not None else None

    def load_model(self, model_type: str, definition: ModelDefinition | None = None) -> bool:
        """Make ``model_type`` resident; True when it switched (the previous model is freed first).
        ``definition``: the prepared request's, so one request loads its definition once."""
        return self.engine.load(model_type, definition)

    def unload_model(self) -> None:
        """Free the resident model and the auxiliary ones (after an out-of-memory error, on request)."""
        if self._engine is not None:
            self._engine.unload()
        self.memory.release_auxiliary("unload")
        gc.collect()

    def capabilities(self, model_type: str) -> ModelCapabilities:
        return ModelCapabilities.of(load_model_def(model_type, self.box))

    # -- stage 1: prepare (before the model lock): source/generation/prepare.py ---------------------
    def prepare(self, request: GenerationRequest, *, inputs: TaskInputs) -> PreparedGeneration:
        return prepare(request, inputs, box=self.box, memory=self.memory)

    # -- stage 2: run (under the model lock) ---------------------------------------------------------
    def run(self, prepared: PreparedGeneration, *, progress: Callable[[int, int, str], None] | None = None,
            should_abort: Callable[[], bool] | None = None, output_dir: Path | None = None) -> GenerationResult:
        result = self.engine.generate(prepared.request.model, prepared.resolved,
                                      output_dir=output_dir or self.output_dir, progress=progress,
                                      should_abort=should_abort, definition=prepared.definition)
        return replace(result, ignored_params=prepared.ignored_params)

    # -- programmatic use (WanGP-style keyword parameters) -------------------------------------------
    def generate(self, model_type: str, prompt: str, *, progress: Callable[[int, int, str], None] | None = None,
                 should_abort: Callable[[], bool] | None = None, output_dir: Path | None = None,
                 **params: Any) -> GenerationResult:
        # The same edge as a db row: aliases mapped, values parsed, unknown keys reported (never dropped silently).
        request = db_task_to_generation_task("direct", "generate_video", {**params, "prompt": prompt, "model": model_type})
        prepared = self.prepare(request, inputs=engine_inputs(output_dir or self.output_dir, "direct"))
        return self.run(prepared, progress=progress, should_abort=should_abort, output_dir=output_dir)

    def generate_t2v(self, model_type: str, prompt: str, **params: Any) -> GenerationResult:
        caps = self.capabilities(model_type)
        if caps.vace or caps.flux:
            raise InvalidParams(f"model {model_type!r} is not a text-to-video model")
        return self.generate(model_type, prompt, **params)

    def generate_vace(self, model_type: str, prompt: str, *, video_guide: str, **params: Any) -> GenerationResult:
        if not self.capabilities(model_type).vace:
            raise InvalidParams(f"model {model_type!r} is not a VACE model")
        return self.generate(model_type, prompt, video_guide=video_guide, **params)

    def generate_flux(self, model_type: str, prompt: str, *, num_images: int = 1, **params: Any) -> GenerationResult:
        if not self.capabilities(model_type).flux:
            raise InvalidParams(f"model {model_type!r} is not a Flux model")
        return self.generate(model_type, prompt, video_length=num_images, **params)
