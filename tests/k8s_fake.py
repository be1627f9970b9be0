"""A small fake Kubernetes API server for the kubernetes backend's tests: no API server can run
here. It is honest about two things and nothing more:

- every object it is sent is validated against the Kubernetes JSON schemas
  (``kubernetes-validate``, strict: unknown fields are refused), and a Job must also meet the
  rules insitu promises (backoffLimit 0, restartPolicy Never, non-root, all capabilities
  dropped, a read-only root filesystem, read-only dataset mounts); a bad object gets a 422
  ``Status`` as from a real server;
- a Job's pod really runs: its command in the local bubblewrap sandbox, with the pod's
  ``hostPath`` volumes mounted where the pod mounts them, its memory limit, its
  ``activeDeadlineSeconds`` and its memory ``emptyDir`` size for /scratch.

It does not schedule, pull images, enforce NetworkPolicies or speak watch; the image is
ignored (the host's /usr is used). The docs say what was and was not tested.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
from kubernetes_validate.utils import latest_version

from insitu.jobs import runner

KUBERNETES_VERSION = latest_version()
_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
_POLICIES = re.compile(
    r"^/apis/networking.k8s.io/v1/namespaces/([^/]+)/networkpolicies(?:/([^/]+))?$"
)
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)/log)?$")


@dataclass
class FakeCluster:
    url: str
    kubeconfig: Path
    folder: Path
    job_user: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def _insitu_rules(job: dict[str, Any]) -> list[str]:
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    security = container.get("securityContext", {})
    problems = []
    if spec.get("backoffLimit") != 0:
        problems.append("backoffLimit must be 0")
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy must be Never")
    if not spec.get("activeDeadlineSeconds"):
        problems.append("activeDeadlineSeconds is missing")
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problems.append("the pod must run as non-root")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("all capabilities must be dropped")
    if not security.get("readOnlyRootFilesystem"):
        problems.append("the root filesystem must be read-only")
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"].startswith(("/data/", "/opt/tool")) and not mount.get("readOnly"):
            problems.append(f"{mount['mountPath']} must be mounted read-only")
    return problems


def _run_pod(cluster: FakeCluster, job: dict[str, Any]) -> Path:
    """Start the pod's command in the local sandbox; returns its runner folder."""
    name = job["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    views, tool, home, results, user = {}, None, "", "", "job"
    for mount in container["volumeMounts"]:
        source, target = host_paths.get(mount["name"]), mount["mountPath"]
        if source is None:
            continue
        if target.startswith("/data/"):
            views[target.removeprefix("/data/")] = source
        elif target == "/opt/tool":
            tool = source
        elif target.startswith("/home/"):
            home, user = source, target.removeprefix("/home/")
        elif target == "/results":
            results = source
    limits = container["resources"]["limits"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    folder: Path = cluster.folder / str(name)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "job_id": int(job["metadata"]["labels"]["insitu/job"]),
        "user": user,
        "command": container["command"],
        "tool": tool,
        "views": views,
        "home": home,
        "results": results,
        "cpus": int(limits["cpu"]),
        "memory_mb": int(limits["memory"].removesuffix("Mi")),
        "pids": 512,
        "scratch_mb": int(scratch["emptyDir"]["sizeLimit"].removesuffix("Mi")),
        "gpus": [],
        "env": {k: v for k, v in env.items() if not k.startswith("INSITU_") and k != "HOME"},
        "socket": None,
    }
    run = {"max_runtime_s": job["spec"]["activeDeadlineSeconds"], "job_user": cluster.job_user}
    (folder / runner.SPEC).write_text(json.dumps({"sandbox": spec, "run": run}))
    subprocess.run([sys.executable, "-m", "insitu.jobs.runner", "--detach", str(folder)],
                   check=True)  # fmt: skip
    return folder


def _job_status(cluster: FakeCluster, name: str) -> dict[str, Any]:
    folder = cluster.folder / name
    exit_file = folder / runner.EXIT
    if not exit_file.exists():
        return {"active": 1}
    ended = json.loads(exit_file.read_text())
    if ended["end_reason"] == "exit_code" and ended["exit_code"] == 0:
        return {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    reason = "DeadlineExceeded" if ended["end_reason"] == "time_limit" else "BackoffLimitExceeded"
    return {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": reason}]}


def _pod_of(cluster: FakeCluster, namespace: str, name: str) -> dict[str, Any]:
    folder = cluster.folder / name
    exit_file = folder / runner.EXIT
    state: dict[str, Any] = {"running": {}}
    if exit_file.exists():
        ended = json.loads(exit_file.read_text())
        reason = {"out_of_memory": "OOMKilled", "time_limit": "DeadlineExceeded"}.get(
            ended["end_reason"], "Completed" if ended["exit_code"] == 0 else "Error"
        )
        state = {"terminated": {"exitCode": ended["exit_code"] or 0, "reason": reason}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-pod", "namespace": namespace, "labels": {"job-name": name}},
        "status": {"containerStatuses": [{"name": "job", "ready": False, "restartCount": 0,
                                          "image": "x", "imageID": "x", "state": state}]},
    }  # fmt: skip


def _handler(cluster: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, code: int, body: Any, text: bool = False) -> None:
            data = body.encode() if text else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._reply(code, {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                               "reason": reason, "message": message, "code": code})  # fmt: skip

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length", "0"))
            document: dict[str, Any] = json.loads(self.rfile.read(length))
            return document

        def _validate(self, body: dict[str, Any], extra: list[str]) -> bool:
            try:
                kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                extra = [str(exc).splitlines()[0], *extra]
            if extra:
                cluster.refused.extend(extra)
                self._status(422, "Invalid", "; ".join(extra))
                return False
            return True

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            body = self._body()
            if _JOBS.match(path):
                name = body["metadata"]["name"]
                if not self._validate(body, _insitu_rules(body)):
                    return
                if name in cluster.jobs:
                    self._status(409, "AlreadyExists", f"jobs.batch {name!r} already exists")
                    return
                cluster.jobs[name] = body
                _run_pod(cluster, body)
                self._reply(201, body)
            elif _POLICIES.match(path):
                name = body["metadata"]["name"]
                if not self._validate(body, []):
                    return
                if name in cluster.policies:
                    self._status(409, "AlreadyExists", f"networkpolicy {name!r} already exists")
                    return
                cluster.policies[name] = body
                self._reply(201, body)
            else:
                self._status(404, "NotFound", path)

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            if (match := _JOBS.match(parsed.path)) and match.group(2):
                name = match.group(2)
                if name not in cluster.jobs:
                    self._status(404, "NotFound", f"jobs.batch {name!r} not found")
                    return
                self._reply(200, {**cluster.jobs[name], "status": _job_status(cluster, name)})
            elif match := _PODS.match(parsed.path):
                namespace, pod = match.group(1), match.group(2)
                if pod:
                    log = cluster.folder / pod.removesuffix("-pod") / runner.LOG
                    self._reply(200, log.read_text() if log.exists() else "", text=True)
                    return
                selector = parse_qs(parsed.query).get("labelSelector", [""])[0]
                name = selector.removeprefix("job-name=")
                items = [_pod_of(cluster, namespace, name)] if name in cluster.jobs else []
                self._reply(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                                  "items": items})  # fmt: skip
            else:
                self._status(404, "NotFound", parsed.path)

        def do_DELETE(self) -> None:
            path = urlparse(self.path).path
            if (match := _JOBS.match(path)) and match.group(2):
                name = match.group(2)
                if cluster.jobs.pop(name, None) is None:
                    self._status(404, "NotFound", name)
                    return
                (cluster.folder / name / runner.CANCEL).touch()
                self._reply(200, {"kind": "Status", "status": "Success"})
            elif (match := _POLICIES.match(path)) and match.group(2):
                if cluster.policies.pop(match.group(2), None) is None:
                    self._status(404, "NotFound", match.group(2))
                    return
                self._reply(200, {"kind": "Status", "status": "Success"})
            else:
                self._status(404, "NotFound", path)

    return Handler


@contextlib.contextmanager
def fake_kubernetes(job_user: str = "insitu-job") -> Iterator[FakeCluster]:
    """The fake on a loopback port, with a kubeconfig that points at it."""
    folder = Path(tempfile.mkdtemp(prefix="insitu-k8s-", dir="/var/tmp"))
    folder.chmod(0o711)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "insitu", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "insitu"}}],
    }))  # fmt: skip
    cluster = FakeCluster(url, kubeconfig, folder / "pods", job_user)
    cluster.folder.mkdir()
    server.RequestHandlerClass = _handler(cluster)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cluster
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)
