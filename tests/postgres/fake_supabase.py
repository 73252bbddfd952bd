"""A small stand-in for the two Supabase services the worker talks to, so supabase-py really speaks HTTP in
the tests: PostgREST's ``POST /rest/v1/rpc/<fn>`` (running the real SQL function on the real Postgres, the
way PostgREST binds named JSON arguments) and Storage's object upload / public download (files in a folder).
No PostgREST or Storage server can be installed on these machines."""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from uuid import uuid4

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

FUNCTION_SIGNATURE = """
SELECT p.proretset AS returns_set, t.typtype = 'c' AS returns_composite,
       COALESCE(p.proargnames, '{}') AS names, COALESCE(p.proargmodes::text[], '{}') AS modes,
       ARRAY(SELECT format_type(oid, NULL) FROM unnest(COALESCE(p.proallargtypes, p.proargtypes::oid[])) AS oid)
           AS types
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace JOIN pg_type AS t ON t.oid = p.prorettype
WHERE n.nspname = %s AND p.proname = %s
"""


class FakeSupabase:
    """``url`` is what ``create_client`` takes; ``key`` is the service key, run as the connecting (owner) role;
    ``role_keys`` maps further keys to the role PostgREST would switch to for them (``{anon_key: "anon"}``)."""

    def __init__(self, admin_url: str, schema: str, key: str, storage_root: Path,
                 buckets: tuple[str, ...] = ("image_uploads",), role_keys: dict[str, str] | None = None) -> None:
        self.schema = schema
        self.key = key
        self.role_keys = dict(role_keys or {})
        self.storage_root = storage_root
        self.buckets = set(buckets)
        self.failing_uploads = 0  # the next N uploads answer failing_upload_status
        self.failing_upload_status = 500
        self.failing_rpcs = 0  # the next N rpc calls answer 503 PGRST001 (database unreachable)
        self.requests: list[str] = []
        self._signatures: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        conninfo = make_conninfo(admin_url, options=f"-csearch_path={schema} -cTimeZone=UTC", application_name=schema)
        self.pool = ConnectionPool(conninfo, min_size=1, max_size=8, kwargs={"row_factory": psycopg.rows.dict_row},
                                   open=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-supabase", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.pool.close()

    # -- PostgREST -----------------------------------------------------------------------------------
    def call_function(self, name: str, args: dict[str, Any], role: str | None = None) -> tuple[int, Any]:
        with self.pool.connection() as conn:
            found = self._signatures.get(name)
            if found is None:
                found = conn.execute(FUNCTION_SIGNATURE, (self.schema, name)).fetchone()
                if found is not None:
                    self._signatures[name] = found  # PostgREST caches the schema the same way
            if found is None:
                return 404, {"code": "PGRST202", "message": f"Could not find the function {self.schema}.{name}",
                             "details": None, "hint": None}
            inputs = {n: t for n, t, m in _arguments(found) if m in ("i", "b")}
            unknown = set(args) - set(inputs)
            if unknown:
                return 404, {"code": "PGRST202", "message": f"no function {name} with arguments {sorted(args)}",
                             "details": None, "hint": None}
            # PostgREST: json_to_record turns the body into typed arguments, passed by name.
            record_type = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(inputs[n]))
                                             for n in args)
            call = sql.SQL("{}({})").format(
                sql.Identifier(name),
                sql.SQL(", ").join(sql.SQL("{} => (SELECT {} FROM pgrst_args)").format(sql.Identifier(n),
                                                                                      sql.Identifier(n))
                                   for n in args))
            # the JSON text as the server wrote it, passed through untouched like PostgREST does (a value
            # nested deeper than Python's parser goes reaches the client as it would from Supabase)
            if found["returns_set"] or found["returns_composite"]:
                body = sql.SQL("SELECT COALESCE(json_agg(r), '[]'::json)::text AS body FROM {} AS r").format(call)
            else:
                body = sql.SQL("SELECT to_json({})::text AS body").format(call)
            query = (sql.SQL("WITH pgrst_args AS (SELECT * FROM json_to_record(%s::json) AS x({})) ").format(record_type)
                     if args else sql.SQL("")) + body
            try:
                with conn.transaction():
                    if role is not None:  # PostgREST: SET LOCAL ROLE to the key's role for this request
                        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                    row = conn.execute(query, (json.dumps(args),) if args else ()).fetchone()
            except psycopg.OperationalError as exc:
                if exc.sqlstate and exc.sqlstate.startswith("28"):  # refused credentials: the function's answer
                    return 403, {"code": exc.sqlstate, "message": exc.diag.message_primary, "details": None,
                                 "hint": None}
                return 503, {"code": "PGRST001", "message": str(exc), "details": None, "hint": None}
            except psycopg.Error as exc:
                return 400, {"code": exc.sqlstate or "XX000", "message": str(exc), "details": None, "hint": None}
        return 200, row["body"].encode()

    # -- Storage -------------------------------------------------------------------------------------
    def store_object(self, bucket: str, path: str, data: bytes, upsert: bool) -> tuple[int, Any]:
        with self._lock:
            if self.failing_uploads > 0:
                self.failing_uploads -= 1
                status = self.failing_upload_status
                return status, {"statusCode": str(status), "error": "InternalError",
                                "message": "injected upload failure"}
        if bucket not in self.buckets:
            return 404, {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"}
        target = self._object_file(bucket, path)
        if target is None:
            return 400, {"statusCode": "400", "error": "InvalidKey", "message": f"Invalid key: {path}"}
        if target.exists() and not upsert:
            return 400, {"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"}
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return 200, {"Key": f"{bucket}/{path}", "Id": str(uuid4())}

    def object_file(self, bucket: str, path: str) -> Path | None:
        return self._object_file(bucket, path)

    def _object_file(self, bucket: str, path: str) -> Path | None:
        root = (self.storage_root / bucket).resolve()
        target = (root / path).resolve()
        return target if target.is_relative_to(root) else None


def _arguments(found: dict[str, Any]) -> list[tuple[str, str, str]]:
    names, types = found["names"], found["types"]
    modes = found["modes"] or ["i"] * len(types)
    return list(zip(names, types, modes, strict=False))


def _handler_for(fake: FakeSupabase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:  # quiet
            return

        def _authorized(self) -> bool:
            key = self.headers.get("apikey")
            return key in (fake.key, *fake.role_keys) and self.headers.get("Authorization") == f"Bearer {key}"

        def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            body = self._body()
            fake.requests.append(f"POST {path}")
            if not self._authorized():
                self._reply(401, {"code": "PGRST301", "message": "invalid API key", "details": None, "hint": None})
                return
            if path.startswith("/rest/v1/rpc/"):
                with fake._lock:
                    unreachable = fake.failing_rpcs > 0
                    fake.failing_rpcs -= unreachable
                if unreachable:
                    self._reply(503, {"code": "PGRST001", "message": "Database client error. Retrying the "
                                      "connection.", "details": "injected", "hint": None})
                    return
                args = json.loads(body or b"{}")
                status, payload = fake.call_function(path.removeprefix("/rest/v1/rpc/"), args,
                                                     fake.role_keys.get(self.headers.get("apikey", "")))
                self._reply(status, payload)
            elif path.startswith("/storage/v1/object/"):
                bucket, _, object_path = path.removeprefix("/storage/v1/object/").partition("/")
                data = _multipart_file(self.headers.get("Content-Type", ""), body)
                if data is None:
                    self._reply(400, {"statusCode": "400", "error": "Bad Request", "message": "no file part"})
                    return
                upsert = self.headers.get("x-upsert", "false").lower() == "true"
                status, payload = fake.store_object(bucket, object_path, data, upsert)
                self._reply(status, payload)
            else:
                self._reply(404, {"message": f"no route {path}"})

        def do_GET(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            fake.requests.append(f"GET {path}")
            prefix = "/storage/v1/object/public/"
            if path.startswith(prefix):
                bucket, _, object_path = path.removeprefix(prefix).partition("/")
                target = fake.object_file(bucket, object_path)
                if target is not None and target.is_file():
                    self._reply(200, target.read_bytes(), "application/octet-stream")
                    return
            self._reply(HTTPStatus.NOT_FOUND, {"statusCode": "404", "error": "not_found", "message": "Object not found"})

    return Handler


def _multipart_file(content_type: str, body: bytes) -> bytes | None:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    return None
