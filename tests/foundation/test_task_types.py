"""source/task_types.py is the one home of the task-type facts: the routing tables, the single-image types,
the older shapes and the task types the SQL names (both dialects) all agree with its records."""

from __future__ import annotations

import re

import psycopg
import pytest

from source import routing, task_types
from source.db.sql_files import load_queries
from source.generation import conversion
from source.orchestrators import older_shapes
from source.task_types import TASK_TYPES, OlderShape, Output, TaskType
from tests.pg_fixtures import migrate

_IN_LIST = re.compile(r"task_type\s+IN\s*\(([^()]*)\)", re.IGNORECASE)


def _sql_task_type_lists(sql: str) -> list[set[str]]:
    return [set(re.findall(r"'([^']+)'", body)) for body in _IN_LIST.findall(sql)]


def _expected_lists() -> list[set[str]]:
    # reclaim_expired_leases: orchestrators an older final child completes, then those children
    return [set(task_types.OLDER_FINAL_CHILDREN.values()), set(task_types.OLDER_FINAL_CHILDREN)]


def test_sqlite_reclaim_names_exactly_the_older_final_children_and_their_orchestrators():
    assert _sql_task_type_lists(load_queries("sqlite")["reclaim_expired_leases"]) == _expected_lists()
    assert task_types.OLDER_FINAL_CHILDREN == {"travel_stitch": "travel_orchestrator",
                                               "dp_final_gen": "different_perspective_orchestrator"}


def test_postgres_reclaim_function_names_exactly_the_older_final_children(postgres_schema_url):
    migrate(postgres_schema_url)
    with psycopg.connect(postgres_schema_url) as conn:
        (definition,) = conn.execute(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE p.proname = 'reclaim_expired_leases' AND n.nspname = current_schema()").fetchone()
    assert _sql_task_type_lists(definition) == _expected_lists()


def test_no_other_sql_names_a_task_type():
    """A task type named in SQL outside reclaim_expired_leases would be a second home for a task-type fact."""
    queries = load_queries("sqlite")
    naming = sorted(name for name, sql in queries.items() if _sql_task_type_lists(sql))
    assert naming == ["reclaim_expired_leases"]
    literals = {name for sql in queries.values() for name in re.findall(r"'([a-z_0-9]+)'", sql)}
    names = set(task_types.BY_NAME) | set(task_types.ALIASES)
    assert literals & names <= set(task_types.OLDER_FINAL_CHILDREN) | set(task_types.OLDER_FINAL_CHILDREN.values())


def test_routing_tables_are_views_of_the_records():
    assert set(routing.ROUTES) == {t.name for t in TASK_TYPES}
    assert routing.GENERATION_MODELS["wan_2_2_t2i"] == "t2v_2_2"
    assert all(routing.ROUTES[name] == routing.GENERATION for name in routing.GENERATION_MODELS)
    assert routing.OWN_DEFAULT_MODELS["magic_edit"] == "flux_kontext"
    assert {t.name: t.generates_as for t in TASK_TYPES if t.generates_as} == routing.GENERATES_AS
    assert routing.GENERATES_AS["join_clips"] == routing.GENERATES_AS["inpaint_frames"] == "vace"
    assert routing.OWN_DEFAULT_MODELS["image_inpaint"] == "qwen_image_edit"
    assert routing.OWN_DEFAULT_MODELS["individual_travel_segment"] == "wan_2_2_i2v_lightning_baseline_2_2_2"
    assert routing.LEGACY_ALIASES == {"wgp": "generate_video", "standard_wgp_task": "generate_video"}
    assert routing.default_model("join_clips") == routing.GENERATION_MODELS["vace"]
    assert routing.default_model("standard_wgp_task") == "t2v"
    assert routing.default_model("ping") is None
    assert {"wan_2_2_t2i", "single_image"} == conversion.SINGLE_IMAGE_TASK_TYPES
    assert conversion.TASK_TYPE_MODELS is routing.GENERATION_MODELS


def test_every_older_shape_has_its_translator():
    assert set(older_shapes.OLDER_MARKS) == set(older_shapes._TRANSLATORS)
    assert dict(task_types.OLDER_FINAL_CHILDREN) == older_shapes.OLDER_ORCHESTRATORS


def test_a_single_image_generation_row_makes_one_frame():
    request = conversion.db_task_to_generation_task("t1", "wan_2_2_t2i", {"prompt": "a cat", "video_length": 33})
    assert request.parameters["video_length"] == 1 and request.model == "t2v_2_2"


@pytest.mark.parametrize("records, message", [
    ((TaskType("a", "m:f"), TaskType("a", "m:g")), "named twice"),
    ((TaskType("a", "m:f", aliases=("b",)), TaskType("b", "m:g")), "is itself a task type"),
    ((TaskType("a", task_types.GENERATION),), "names its default model"),
    ((TaskType("a", "m:f", generates_as="nowhere"),), "generates_as"),
    ((TaskType("a", "m:f", older_shape=OlderShape("x", completes="nowhere")),), "completes names no task type"),
    ((TaskType("a", "m:f", output=Output.SINGLE_IMAGE),), "only a direct generation"),
])
def test_a_wrong_record_is_refused(records, message):
    with pytest.raises(ValueError, match=message):
        task_types._check(records)
