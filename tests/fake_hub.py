"""A stand-in for the Hugging Face Hub API on 127.0.0.1: answers what a dataset push needs and
records every request, so tests see what huggingface_hub really sent."""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "c" * 40
EMPTY_REPO = "e" * 40


@dataclass
class FakeHub:
    """`url` for HF_ENDPOINT; `requests` (method, path); `created` repos; committed `files`."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    repos: set[str] = field(default_factory=set)
    blobs: dict[str, bytes] = field(default_factory=dict)
    url: str = ""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: object = None, headers: dict | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _route(self) -> None:
            hub.requests.append((self.command, self.path))
            path = self.path.split("?")[0]
            body = self._body() if self.command in ("POST", "PUT") else b""
            repo = re.match(r"/api/datasets/([^/]+/[^/]+)", path)
            if path == "/api/repos/create":
                hub.created.append(json.loads(body))
                created = hub.created[-1]
                name = f"{created.get('organization') or 'me'}/{created['name']}"
                hub.repos.add(name)
                return self._send(200, {"url": f"{hub.url}/datasets/{name}", "id": name})
            if repo and "/preupload/" in path:
                files = json.loads(body)["files"]
                mode = {True: "lfs", False: "regular"}  # the parquet shards go through LFS
                return self._send(
                    200,
                    {
                        "files": [
                            {
                                "path": f["path"],
                                "uploadMode": mode[f["path"].endswith(".parquet")],
                                "shouldIgnore": False,
                            }
                            for f in files
                        ]
                    },
                )
            if path.endswith(".git/info/lfs/objects/batch"):
                objects = json.loads(body)["objects"]
                for o in objects:
                    o["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}
                return self._send(200, {"transfer": "basic", "objects": objects})
            if path.startswith("/lfs-upload/"):
                hub.blobs[path.rsplit("/", 1)[1]] = body
                return self._send(200, {})
            if repo and "/commit/" in path:
                for line in body.decode().splitlines():
                    op = json.loads(line)
                    value = op["value"]
                    if op["key"] == "file":
                        hub.files[value["path"]] = base64.b64decode(value["content"])
                    elif op["key"] == "lfsFile":
                        hub.files[value["path"]] = hub.blobs[value["oid"]]
                url = f"{hub.url}/datasets/{repo.group(1)}/commit/{COMMIT}"
                return self._send(200, {"commitUrl": url, "commitOid": COMMIT})
            if path == "/api/validate-yaml":
                return self._send(200, {"errors": [], "warnings": []})
            if repo and repo.group(1) not in hub.repos:
                return self._send(404, {"error": "no repo"}, {"X-Error-Code": "RepoNotFound"})
            if repo and "/paths-info/" in path:
                return self._send(200, [])
            if repo and re.search(r"/tree/[^/]+/.", path):  # a folder in an empty repo
                return self._send(404, {"error": "no entry"}, {"X-Error-Code": "EntryNotFound"})
            if repo and "/tree/" in path:
                return self._send(200, [])
            if repo:  # repo info, any revision
                name = repo.group(1)
                return self._send(200, {"id": name, "sha": EMPTY_REPO, "siblings": []})
            return self._send(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})

        do_GET = do_POST = do_PUT = do_HEAD = _route

    return Handler


def start_fake_hub() -> tuple[FakeHub, ThreadingHTTPServer]:
    """Serve in a daemon thread; call `server.shutdown()` when done."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hub, server
