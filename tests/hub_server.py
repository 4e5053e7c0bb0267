"""A stand-in for the Hugging Face Hub's HTTP API, enough for uploads and downloads by huggingface_hub.

Answers what `create_repo`, `upload_folder`/`create_commit` (files sent inline: every file is
declared "regular" at preupload, so no LFS or Xet transfer happens), `repo_info`/`model_info`,
`list_repo_tree`, `hf_hub_download` and `snapshot_download` send (and the check of a README's
YAML front matter), and keeps each repository's
files in memory. Point a process at it with ``HF_ENDPOINT=server.endpoint`` (read at import).

    with HubServer() as server:
        ...  # server.endpoint, server.files("user/repo") -> {path: bytes}
"""

import base64
import hashlib
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict

import yaml


class _Repo:
    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.commit = "0" * 40
        self.commits = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # quiet: tests read the recorded requests instead
        pass

    # ------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: Dict[str, str] = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload, **headers):
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers})

    def _not_found(self, code: str, head: bool = False):
        self._send(404, b'{"error": "not found"}', {"X-Error-Code": code, "X-Error-Message": code}, head=head)

    def _repo(self, repo_id: str):
        return self.server.repos.get(repo_id)

    # ------------------------------------------------------------ routes

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path
        body = self._body()
        self.server.requests.append(("POST", path))
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request.get('organization') or 'user'}/{request['name']}"
            exists = repo_id in self.server.repos
            self.server.repos.setdefault(repo_id, _Repo())
            return self._json(409 if exists else 200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":  # a README's front matter, checked before upload
            try:
                yaml.safe_load(json.loads(body)["content"].split("---")[1])
            except (yaml.YAMLError, IndexError) as err:
                return self._json(400, {"errors": [{"message": str(err)}], "warnings": []})
            return self._json(200, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if match is None or self._repo(match.group(1)) is None:
            return self._not_found("RepoNotFound")
        repo_id, action = match.group(1), match.group(2)
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        repo = self._repo(repo_id)
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] in ("deletedFile",):
                repo.files.pop(item["value"]["path"], None)
            elif item["key"] != "header":
                return self._json(400, {"error": f"the stand-in Hub does not support {item['key']!r}"})
        repo.commits += 1
        repo.commit = hashlib.sha1(f"{repo_id}-{repo.commits}".encode()).hexdigest()
        return self._json(
            200,
            {
                "commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{repo.commit}",
                "commitOid": repo.commit,
                "pullRequestUrl": None,
            },
        )

    def do_GET(self):
        self._get(head=False)

    def do_HEAD(self):
        self._get(head=True)

    def _get(self, head: bool):
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        self.server.requests.append(("HEAD" if head else "GET", path))
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        if match:
            repo = self._repo(match.group(1))
            if repo is None:
                return self._not_found("RepoNotFound")
            return self._json(
                200,
                {
                    "id": match.group(1),
                    "modelId": match.group(1),
                    "sha": repo.commit,
                    "private": False,
                    "tags": [],
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                },
            )
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/]+(?:/(.*))?", path)
        if match:
            repo = self._repo(match.group(1))
            if repo is None:
                return self._not_found("RepoNotFound")
            prefix = (match.group(2) or "").strip("/")
            entries = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in sorted(repo.files.items())
                if name.startswith(prefix)
            ]
            return self._json(200, entries)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            repo = self._repo(match.group(1))
            if repo is None:
                return self._not_found("RepoNotFound", head)
            data = repo.files.get(match.group(3))
            if data is None:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}, head)
            etag = '"' + hashlib.sha1(data).hexdigest() + '"'
            return self._send(
                200,
                data,
                {"X-Repo-Commit": repo.commit, "ETag": etag, "Content-Type": "application/octet-stream"},
                head,
            )
        return self._not_found("NotImplemented", head)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    repos: Dict[str, _Repo]
    requests: list
    endpoint: str


class HubServer:
    """The stand-in Hub on 127.0.0.1 at a free port, served from a background thread."""

    def __init__(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.repos, self._server.requests = {}, []
        self.endpoint = self._server.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_id: str) -> Dict[str, bytes]:
        """The repository's files as uploaded, {path: content}; empty if it was never created."""
        repo = self._server.repos.get(repo_id)
        return dict(repo.files) if repo else {}

    @property
    def requests(self):
        return list(self._server.requests)
