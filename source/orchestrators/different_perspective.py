"""different_perspective_orchestrator → pose/depth of the input → a short generation → extract_frame →
pose/depth of that frame → dp_final_gen (guide video morphing one pose/depth map into the other, the input
image as reference). The final step's image completes the orchestrator."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from source.generation.conversion import lift_orchestrator_details
from source.generation.handler import generate
from source.handlers.context import TaskContext, TaskOutcome
from source.handlers.task_params import TaskParams, parse_params, takes
from source.media.video import read_image, read_video, save_video
from source.media.write import save_picture
from source.orchestrators.checks import check_model, check_resolution, nearest_frame_count
from source.orchestrators.children import ChildSpec, child_id, child_payload, dependency_output, spawn_chain
from source.orchestrators.older_shapes import older_orchestrator_to_complete, translate_older_child
from source.task_files.fetch import resolve_input
from source.task_files.paths import safe_filename

PERSPECTIVE_TASK_TYPES = {"pose": "generate_openpose", "depth": "generate_depth"}
# The intermediate "single frame" is the shortest clip Wan makes (4*1+1 frames); extract_frame takes frame 0.
PREVIEW_FRAMES = 5
DEFAULT_T2I_MODEL = "t2v"
GUIDE_FPS = 16


class DifferentPerspectiveParams(TaskParams):
    input_image_path: str
    prompt: str = Field(min_length=1)
    model_name: str
    resolution: str | list[int]
    seed: int = -1
    perspective_type: Literal["pose", "depth"] = "pose"
    # The older worker's default; rounded to 17 (4n+1) like any other length.
    output_video_frames: int = 16
    use_causvid_lora: bool = False
    fps_helpers: int = Field(16, ge=1, le=120)
    # Which text-to-video model makes the intermediate view (the VACE model_name needs a guide).
    t2i_model_name: str = DEFAULT_T2I_MODEL
    # Which depth estimator the two generate_depth steps use (perspective_type "depth"); None = its default.
    depth_model: str | None = None


@takes(DifferentPerspectiveParams, translated=True)
def handle_different_perspective_orchestrator(ctx: TaskContext) -> TaskOutcome:
    lifted = lift_orchestrator_details(ctx.params)
    p = parse_params(DifferentPerspectiveParams, lifted.params)
    check_model("params.model_name", p.model_name, ("wan_vace",), "the final generation (pose/depth guide)")
    check_model("params.t2i_model_name", p.t2i_model_name, ("wan_t2v",), "the intermediate text-to-image view")
    adjusted: dict[str, Any] = {}
    width, height = check_resolution("params.resolution", p.resolution, adjusted=adjusted)
    frames = nearest_frame_count("params.output_video_frames", p.output_video_frames, adjusted)
    resolve_input(p.input_image_path, "input_image_path", ctx.inputs, kind="image")
    perspective = PERSPECTIVE_TASK_TYPES[p.perspective_type]
    resolution = f"{width}x{height}"
    estimator = {"model": p.depth_model} if p.perspective_type == "depth" and p.depth_model else {}
    specs = [
        ChildSpec("input_perspective", perspective, {"input_image_path": p.input_image_path, **estimator}),
        ChildSpec("view", "t2v", {
            "prompt": p.prompt, "model": p.t2i_model_name, "resolution": resolution,
            "video_length": PREVIEW_FRAMES, "seed": p.seed, "use_causvid_lora": p.use_causvid_lora,
        }),
        ChildSpec("view_frame", "extract_frame", {"input_video_task_id": child_id(ctx, "view"), "frame_index": 0}),
        ChildSpec("view_perspective", perspective, {"input_image_task_id": child_id(ctx, "view_frame"), **estimator}),
        ChildSpec("final", "dp_final_gen", child_payload(FinalGenParams(
            orchestrator_task_id_ref=ctx.task.id, input_image_path=p.input_image_path, prompt=p.prompt,
            model=p.model_name, resolution=resolution, seed=p.seed,
            perspective_type=p.perspective_type, output_video_frames=frames,
            use_causvid_lora=p.use_causvid_lora, fps_helpers=p.fps_helpers,
            input_perspective_task_id=child_id(ctx, "input_perspective"),
            view_perspective_task_id=child_id(ctx, "view_perspective"),
        ))),
    ]
    result: dict[str, Any] = {"perspective_type": p.perspective_type}
    if ignored := p.ignored_params():
        result["ignored_params"] = lifted.ignored(ignored)
    if adjusted:
        result["adjusted"] = adjusted
    return spawn_chain(ctx, specs, result=result)


class FinalGenParams(TaskParams):
    orchestrator_task_id_ref: str
    input_image_path: str
    prompt: str = Field(min_length=1)
    model: str
    resolution: str
    seed: int = -1
    perspective_type: Literal["pose", "depth"]
    output_video_frames: int
    use_causvid_lora: bool = False
    fps_helpers: int = Field(16, ge=1, le=120)
    input_perspective_task_id: str
    view_perspective_task_id: str


@takes(FinalGenParams, translated=True)
def handle_dp_final_gen(ctx: TaskContext) -> TaskOutcome:
    older = translate_older_child("dp_final_gen", ctx.params)
    p = parse_params(FinalGenParams, older.params if older else ctx.params)
    width, height = check_resolution("params.resolution", p.resolution)
    size, work = (width, height), ctx.work_dir
    maps = []
    for name, task_id in (("input perspective", p.input_perspective_task_id),
                          ("view perspective", p.view_perspective_task_id)):
        location = dependency_output(ctx, task_id, name)
        maps.append(read_image(resolve_input(location, name, ctx.inputs, kind="image"), name, size).astype(np.float32))
    # The guide morphs the input's pose/depth map into the generated view's, frame by frame.
    t = np.linspace(0.0, 1.0, p.output_video_frames)[:, None, None, None]
    guide = np.clip(((1 - t) * maps[0] + t * maps[1]).round(), 0, 255).astype(np.uint8)
    guide_path = save_video(guide, work / "perspective_guide.mp4", p.fps_helpers)
    ctx.check_cancelled()
    request: dict[str, Any] = {
        "prompt": p.prompt, "model": p.model, "resolution": f"{width}x{height}",
        "video_length": p.output_video_frames, "seed": p.seed, "video_guide": str(guide_path),
        "image_refs": [p.input_image_path], "use_causvid_lora": p.use_causvid_lora,
    }
    output = generate(ctx, "vace", request)
    video = output.paths[0]
    last = read_video(video, "final video")[-1]
    image_path = ctx.output_path("different_perspective.png", subdir=safe_filename(f"dp_{p.orchestrator_task_id_ref}"))
    save_picture(Image.fromarray(last), image_path)
    older_parent, older_note = older_orchestrator_to_complete(ctx.store, ctx.task, older)
    return TaskOutcome(output_path=image_path, completes_parent=True, parent_task_id=older_parent, result={
        **output.summary(), "video": str(video), **ctx.scratch_record("guide_video", guide_path),
        "perspective_type": p.perspective_type, **(older.result_extras() if older else {}), **older_note,
    })
