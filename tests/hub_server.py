"""A small in-memory stand-in for the Hugging Face Hub HTTP API, for tests.

It implements the endpoints that ``huggingface_hub`` 2.x and ``datasets`` 5.x call to create a
dataset repo, push files (preupload, LFS batch + PUT, ndjson commit) and read them back (repo
info, tree, paths-info, resolve with ranges); see REFERENCE.md §6. Repos are kept in memory as
commits (path -> bytes) with SHA-1 ids, so ``parent_commit`` races give HTTP 412 as on the Hub.

Failure injection: ``FakeHub.fail(method, path_regex, status=401 | 403 | 404 | ... | "drop")``
answers the next matching request(s) with that status (or closes the connection without an
answer); ``FakeHub.on_next_commit(repo_id, fn)`` runs ``fn()`` just before the next commit to that
repo is applied (to simulate someone else committing in between). With ``write_tokens`` set,
every write needs ``Authorization: Bearer <one of them>`` (401 otherwise, 403 for ``read_tokens``).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".parquet", ".png", ".safetensors", ".bin", ".arrow")


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


@dataclass
class Failure:
    method: str
    pattern: re.Pattern
    status: int | str
    times: int | None


class FakeHub:
    """The server state; ``url`` is the endpoint to give the clients."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.write_tokens: set[str] | None = None
        self.read_tokens: set[str] = set()
        self.failures: list[Failure] = []
        self.commit_hooks: dict[str, list] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.RLock()
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ test-side helpers
    def fail(self, method: str, path_regex: str, status: int | str, times: int | None = 1) -> None:
        self.failures.append(Failure(method.upper(), re.compile(path_regex), status, times))

    def on_next_commit(self, repo_id: str, fn) -> None:
        self.commit_hooks.setdefault(repo_id, []).append(fn)

    def create_repo(self, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_id, private=private)
            self.repos[repo_id] = repo
            self.commit(repo_id, {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
                                  **(files or {})}, message="initial commit")
            return repo

    def commit(self, repo_id: str, changes: dict[str, bytes | None], message: str = "edit",
               branch: str = "main", lfs: set[str] | None = None) -> str:
        """Apply ``changes`` (None deletes) on top of ``branch`` directly; returns the new sha."""
        with self.lock:
            repo = self.repos[repo_id]
            head = repo.commits.get(repo.branches.get(branch, ""))
            files = dict(head.files) if head else {}
            lfs_paths = set(head.lfs) if head else set()
            for path, data in changes.items():
                if data is None:
                    files.pop(path, None)
                    lfs_paths.discard(path)
                else:
                    files[path] = data
                    lfs_paths.discard(path)
            lfs_paths |= lfs or set()
            digest = hashlib.sha1(json.dumps([head.sha if head else None, message, len(repo.commits),
                                              sorted((p, _git_blob_sha(d)) for p, d in files.items())]).encode())
            sha = digest.hexdigest()
            repo.commits[sha] = Commit(sha, head.sha if head else None, message, files, lfs_paths)
            repo.branches[branch] = sha
            return sha

    def read(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        return self.repos[repo_id].resolve(revision).files[path]

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass

    # ----------------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None,
              head: bool = False) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None = None, message: str | None = None) -> None:
        headers = {}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        self._send(status, {"error": message or code or "error"}, headers)

    def _injected(self, method: str, path: str) -> bool:
        hub = self.hub
        with hub.lock:
            for failure in hub.failures:
                if failure.method == method and failure.pattern.search(path):
                    if failure.times is not None:
                        failure.times -= 1
                        if failure.times == 0:
                            hub.failures.remove(failure)
                    status = failure.status
                    break
            else:
                return False
        if status == "drop":
            self._body() if method in ("POST", "PUT") else None
            self.close_connection = True
            self.connection.shutdown(2)
        elif status == 404:
            self._error(404, "RepoNotFound", "Repository not found")
        else:
            self._error(int(status), message=f"injected HTTP {status}")
        return True

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _may_write(self) -> bool:
        hub = self.hub
        if hub.write_tokens is None:
            return True
        token = self._token()
        if token in hub.write_tokens:
            return True
        if token in hub.read_tokens:
            self._error(403, message="You don't have the rights to write to this repository")
        else:
            self._error(401, message="Invalid credentials in Authorization header")
        return False

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(unquote(repo_id))
        if repo is None or (repo.private and self.hub.write_tokens is not None
                            and self._token() not in (self.hub.write_tokens | self.hub.read_tokens)):
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
        return commit

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        self.hub.requests.append((method, path, self._token()))
        if self._injected(method, path):
            return
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method or (route_method == "GET" and method == "HEAD"):
                if match:
                    with self.hub.lock:
                        return getattr(self, name)(query=query, head=method == "HEAD", **match.groupdict())
        self._error(404, message=f"fake hub: no route for {method} {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # ------------------------------------------------------------------------ endpoints
    def create(self, query, head) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._may_write():
            return
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.hub.repos:
            return self._error(409, message="You already created this dataset repo")
        self.hub.create_repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self._send(200, {"url": f"{self.hub.url}/datasets/{repo_id}", "name": repo_id})

    def branch(self, repo_id, name, query, head) -> None:
        self._body()
        if not self._may_write() or (repo := self._repo(repo_id)) is None:
            return
        name = unquote(name)
        if name in repo.branches:
            return self._error(409, message="Reference already exists")
        repo.branches[name] = repo.branches["main"]
        self._send(200, {})

    def info(self, repo_id, query, head, revision="main") -> None:
        if (repo := self._repo(repo_id)) is None or (commit := self._commit_at(repo, revision)) is None:
            return
        card_data = None
        if "README.md" in commit.files:
            text = commit.files["README.md"].decode(errors="replace")
            try:
                card_data = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
            except yaml.YAMLError:
                card_data = None
        self._send(200, {"id": repo.repo_id, "_id": repo.repo_id, "sha": commit.sha, "private": repo.private,
                         "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(commit.files.items())],
                         "cardData": card_data if isinstance(card_data, dict) else None,
                         "lastModified": "2026-01-01T00:00:00.000Z", "tags": [], "disabled": False,
                         "gated": False, "downloads": 0, "likes": 0})

    def validate_yaml(self, query, head) -> None:
        content = json.loads(self._body()).get("content", "")
        try:
            if content.startswith("---"):
                yaml.safe_load(content.split("---")[1])
        except yaml.YAMLError as err:
            return self._send(400, {"errors": [{"message": str(err).splitlines()[0]}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, repo_id, revision, query, head) -> None:
        payload = json.loads(self._body())
        if not self._may_write() or (repo := self._repo(repo_id)) is None:
            return
        if self._commit_at(repo, revision) is None:
            return
        files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                  "shouldIgnore": False} for f in payload["files"]]
        self._send(200, {"files": files, "commitOid": repo.branches.get(unquote(revision))})

    def lfs_batch(self, repo_id, query, head) -> None:
        payload = json.loads(self._body())
        if not self._may_write() or self._repo(repo_id) is None:
            return
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/fake-lfs/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, oid, query, head) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, message="sha256 mismatch")
        self.hub.lfs_objects[oid] = data
        self._send(200, b"")

    def commit(self, repo_id, revision, query, head) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not self._may_write() or (repo := self._repo(repo_id)) is None:
            return
        branch = unquote(revision)
        if branch not in repo.branches:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        for hook in self.hub.commit_hooks.pop(repo.repo_id, []):
            hook()
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.branches[branch]:
            return self._error(412, message="A commit has happened since. Please refresh and try again.")
        changes: dict[str, bytes | None] = {}
        lfs = set()
        head_files = repo.commits[repo.branches[branch]].files
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    return self._error(422, message=f"LFS object {value['oid']} was never uploaded")
                changes[value["path"]] = self.hub.lfs_objects[value["oid"]]
                lfs.add(value["path"])
            elif key == "deletedFile":
                if value["path"] not in head_files:
                    return self._error(404, "EntryNotFound", "A file with this name doesn't exist")
                changes[value["path"]] = None
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                changes.update({p: None for p in head_files if p.startswith(prefix)})
        sha = self.hub.commit(repo.repo_id, changes, header.get("summary", ""), branch=branch, lfs=lfs)
        self._send(200, {"commitUrl": f"{self.hub.url}/datasets/{repo.repo_id}/commit/{sha}", "commitOid": sha,
                         "success": True})

    def _entry(self, commit: Commit, path: str) -> dict | None:
        if path in commit.files:
            data = commit.files[path]
            entry = {"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": path}
            if path in commit.lfs:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            return entry
        prefix = path.rstrip("/") + "/"
        if path == "" or any(p.startswith(prefix) for p in commit.files):
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        return None

    def tree(self, repo_id, revision, query, head, path="") -> None:
        if (repo := self._repo(repo_id)) is None or (commit := self._commit_at(repo, revision)) is None:
            return
        path = unquote(path or "").strip("/")
        root = self._entry(commit, path)
        if root is None or root["type"] != "directory":
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        names = set()
        for file in commit.files:
            if not file.startswith(prefix):
                continue
            parts = file[len(prefix):].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                names.add(prefix + "/".join(parts[:depth]))
        self._send(200, [self._entry(commit, name) for name in sorted(names)])

    def paths_info(self, repo_id, revision, query, head) -> None:
        body = self._body()
        if (repo := self._repo(repo_id)) is None or (commit := self._commit_at(repo, revision)) is None:
            return
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        entries = [self._entry(commit, unquote(p).strip("/")) for p in paths]
        self._send(200, [e for e in entries if e is not None])

    def resolve(self, repo_id, revision, path, query, head) -> None:
        if (repo := self._repo(repo_id)) is None or (commit := self._commit_at(repo, revision)) is None:
            return
        path = unquote(path)
        if path not in commit.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if path in commit.lfs:
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
            headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()}"'
        else:
            headers["ETag"] = f'"{_git_blob_sha(data)}"'
        status = 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1) or 0)
            end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data) > 0:
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head=head)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers, head=head)


_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
ROUTES = [
    ("POST", r"/api/repos/create", "create"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/datasets/{_REPO}/branch/(?P<name>[^/]+)", "branch"),
    ("POST", rf"/api/datasets/{_REPO}/preupload/(?P<revision>[^/]+)", "preupload"),
    ("POST", rf"/api/datasets/{_REPO}/commit/(?P<revision>[^/]+)", "commit"),
    ("POST", rf"/api/datasets/{_REPO}/paths-info/(?P<revision>[^/]+)", "paths_info"),
    ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/fake-lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("GET", rf"/api/datasets/{_REPO}", "info"),
    ("GET", rf"/api/datasets/{_REPO}/revision/(?P<revision>[^/]+)", "info"),
    ("GET", rf"/api/datasets/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("GET", rf"/datasets/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", "resolve"),
]


def glob_files(hub: FakeHub, repo_id: str, pattern: str, revision: str = "main") -> list[str]:
    """Paths in the repo matching a shell pattern (for assertions)."""
    return sorted(p for p in hub.repos[repo_id].resolve(revision).files if fnmatch.fnmatch(p, pattern))
