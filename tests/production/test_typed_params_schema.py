"""Typed params in /openapi.json: one POST /api/tasks variant per task type, its params schema the one the
worker parses that type with, every published bound and choice refused beyond it (422 naming the field), and a
request built from the schema runs in a real worker process."""

from __future__ import annotations

import jsonschema
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from source.engine.params import MAX_STEPS, SOLVERS
from source.routing import known_task_types
from source.web.app import create_app
from tests.helpers import run_worker


@pytest.fixture(scope="module")
def openapi(tmp_path_factory):
    from source.db.sqlite import SqliteTaskStore

    folder = tmp_path_factory.mktemp("schema")
    store = SqliteTaskStore(folder / "tasks.db")
    store.migrate()
    with TestClient(create_app(store, output_root=folder)) as client:
        yield client.get("/openapi.json").json()
    store.close()


@pytest.fixture
def client(sqlite_store, tmp_path):
    with TestClient(create_app(sqlite_store, output_root=tmp_path)) as test_client:
        yield test_client


def _params_of(openapi, task_type: str) -> dict:
    schemas = openapi["components"]["schemas"]
    ref = schemas[f"Submit_{task_type}"]["allOf"][1]["properties"]["params"]["$ref"]
    return schemas[ref.rsplit("/", 1)[1]]


def test_the_schema_is_valid_openapi_with_one_variant_per_task_type(openapi):
    validate(openapi)
    body = openapi["paths"]["/api/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "task_type"
    assert set(body["discriminator"]["mapping"]) == set(known_task_types())
    assert len(body["oneOf"]) == len(known_task_types())


def test_generation_params_publish_the_engine_parsers_bounds_choices_and_aliases(openapi):
    params = _params_of(openapi, "t2v")
    assert _params_of(openapi, "wgp") == params  # a legacy alias of generate_video
    props = params["properties"]
    assert params["required"] == ["prompt"] and props["prompt"]["minLength"] == 1
    assert props["num_inference_steps"] == {"type": "integer", "minimum": 1, "maximum": MAX_STEPS}
    assert props["steps"]["maximum"] == MAX_STEPS  # the alias, described as its parameter
    assert props["sample_solver"]["enum"] == list(SOLVERS)
    assert {"model", "additional_loras", "webhook_url", "webhook_events"} <= set(props)


def test_handler_params_publish_their_model(openapi):
    ping = _params_of(openapi, "ping")["properties"]
    assert ping["sleep_seconds"]["maximum"] == 3600 and ping["message"]["anyOf"][0]["maxLength"] == 10_000
    travel = _params_of(openapi, "travel_orchestrator")
    assert travel["properties"]["orchestrator_details"]["$ref"] == "#/components/schemas/TravelDetails"
    assert "webhook_url" in _params_of(openapi, "extract_frame")["properties"]


def _beyond(schema: dict) -> list:
    """Values a published schema rules out, for the properties that carry a bound or a choice."""
    values = []
    if "maximum" in schema:
        values.append(schema["maximum"] + 1)
    if "minimum" in schema:
        values.append(schema["minimum"] - 1)
    if schema.get("type") == "string" and "enum" in schema:
        values.append("no-such-choice")
    if schema.get("type") == "integer" and "enum" in schema:
        values.append(max(schema["enum"]) + 1)
    return values


def test_every_published_bound_and_choice_is_refused_beyond_it_naming_the_field(openapi, client):
    checked = 0
    for task_type, base in (("t2v", {"prompt": "a cat"}), ("ping", {})):
        for name, schema in _params_of(openapi, task_type)["properties"].items():
            for value in _beyond(schema):
                response = client.post("/api/tasks", json={"task_type": task_type, "params": {**base, name: value}})
                assert response.status_code == 422, (task_type, name, value, response.text)
                assert response.json()["detail"][0]["loc"] == ["body", "params", name], (name, value)
                checked += 1
    assert checked > 30
    assert client.get("/api/tasks").json()["tasks"] == []


@pytest.mark.slow
def test_a_request_built_from_the_schema_runs_in_a_worker(openapi, client, sqlite_store, tmp_path):
    params = {"model": "tiny_t2v", "prompt": "a red cat", "resolution": "32x32", "video_length": 5,
              "num_inference_steps": 2, "sample_solver": "euler", "seed": 3}
    request = {"task_type": "t2v", "params": params}
    resolver = {"components": openapi["components"], **_params_of(openapi, "t2v")}
    jsonschema.validate(params, resolver)
    created = client.post("/api/tasks", json=request)
    assert created.status_code == 201, created.text
    done = run_worker(sqlite_store.path, tmp_path / "out", "--once", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = sqlite_store.get_task(created.json()["id"])
    assert row.status.value == "Complete", row.error_message
    assert row.result.get("ignored_params", []) == []


def test_every_task_type_publishes_the_params_its_handler_parses(openapi):
    for task_type in known_task_types():
        assert "properties" in _params_of(openapi, task_type), task_type
    assert _params_of(openapi, "image_inpaint")["title"] == "MaskedEditParams"
