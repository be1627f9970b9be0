"""The ``kubernetes`` backend: one ``batch/v1`` Job per insitu job, through the official client.

- The Job: ``backoffLimit: 0``, ``restartPolicy: Never``, ``activeDeadlineSeconds`` from the
  flavor; the flavor's CPUs, memory and ``nvidia.com/gpu``; a node selector and an optional
  Kueue queue label.
- The pod: non-root, every capability dropped, no privilege escalation, a read-only root
  filesystem, no service-account token; the datasets and the tool mounted read-only; home and
  results writable; ``/scratch`` a size-capped memory ``emptyDir``.
- A NetworkPolicy per job that denies all ingress and egress.
- Bundles run in the configured base image (pinned by digest) with the tool's environment
  mounted at ``/opt/tool``; OCI tools run their own pinned image.

Volumes are ``hostPath`` folders of INSITU_HOME, so the nodes need them at the same paths
(shared storage), as with Slurm. No real cluster was reachable while this was written: the
tests run it against a fake API server that validates every object against the Kubernetes
schemas and runs the pod's command in the local sandbox (docs/operator-guide.md says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from insitu.jobs import runner
from insitu.jobs.backends.protocol import RunRequest, RunState, RunStatus

MANAGED_BY = "insitu"
JOB_LABEL = "insitu/job"
MANIFEST = "k8s.json"
STARTED = "k8s.started"


class KubernetesExecutor:
    """Runs jobs as Kubernetes Jobs in one namespace."""

    name = "kubernetes"
    can_run_images = True

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        bundle_image: str,
        queue: str = "",
        node_selector: dict[str, str] | None = None,
    ) -> None:
        if "@sha256:" not in bundle_image:
            raise ValueError(
                f"INSITU_KUBERNETES_BUNDLE_IMAGE {bundle_image!r} must be pinned by digest "
                "(registry/name@sha256:...)"
            )
        api = config.new_client_from_config(config_file=kubeconfig)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.network = client.NetworkingV1Api(api)
        self.namespace = namespace
        self.bundle_image = bundle_image
        self.queue = queue
        self.node_selector = node_selector or {}

    # -- manifests -------------------------------------------------------------------------

    def manifests(self, request: RunRequest, image: str | None = None) -> dict[str, Any]:
        """The Job and the NetworkPolicy of one insitu job."""
        spec = request.spec
        name = f"insitu-job-{spec.job_id}"
        labels = {"app.kubernetes.io/managed-by": MANAGED_BY, JOB_LABEL: str(spec.job_id)}
        if self.queue:
            labels["kueue.x-k8s.io/queue-name"] = self.queue
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []

        def host(volume: str, path: Path, mount: str, read_only: bool) -> None:
            volumes.append({"name": volume, "hostPath": {"path": str(path), "type": "Directory"}})
            mounts.append({"name": volume, "mountPath": mount, "readOnly": read_only})

        for index, (view, folder) in enumerate(sorted(spec.views.items())):
            host(f"data-{index}", folder, f"/data/{view}", True)
        if spec.tool is not None:
            host("tool", spec.tool, "/opt/tool", True)
        host("home", spec.home, f"/home/{spec.user}", False)
        host("results", spec.results, "/results", False)
        volumes += [
            {
                "name": "scratch",
                "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.scratch_mb}Mi"},
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ]
        mounts += [
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
        ]
        resources: dict[str, Any] = {"cpu": str(spec.cpus), "memory": f"{spec.memory_mb}Mi"}
        if spec.gpus:  # whole GPUs, or MIG slices where the flavor names a profile (untested)
            gpu = (
                f"nvidia.com/mig-{request.mig_profile}" if request.mig_profile else "nvidia.com/gpu"
            )
            resources[gpu] = str(len(spec.gpus))
        environment = {
            "HOME": f"/home/{spec.user}",
            "INSITU_JOB_ID": str(spec.job_id),
            "INSITU_DATASETS": ":".join(f"/data/{v}" for v in sorted(spec.views)),
            "INSITU_RESULTS": "/results",
            "TMPDIR": "/scratch",
            **{k: v for k, v in spec.env.items() if k not in ("INSITU_TOKEN", "INSITU_URL")},
        }
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": request.max_runtime_s,
                "ttlSecondsAfterFinished": 86400,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "nodeSelector": {**self.node_selector, "insitu/flavor": request.flavor},
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 1000,
                            "runAsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "job",
                                "image": image or self.bundle_image,
                                "command": list(spec.command),
                                "workingDir": f"/home/{spec.user}",
                                "env": [{"name": k, "value": v} for k, v in environment.items()],
                                "resources": {"limits": resources, "requests": resources},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": mounts,
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
        }
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "podSelector": {"matchLabels": {JOB_LABEL: str(spec.job_id)}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [],
            },
        }
        return {"job": job, "policy": policy}

    # -- the executor contract ---------------------------------------------------------------

    def prepare(self, request: RunRequest) -> str:
        """Write the manifests into the job folder (the reference is the folder)."""
        folder = request.folder
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / MANIFEST
        if not target.exists():
            target.write_text(json.dumps(self.manifests(request, request.image)))
        return str(folder)

    def _manifests(self, reference: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((Path(reference) / MANIFEST).read_text())
        return loaded

    def start(self, reference: str) -> None:
        """Create the NetworkPolicy, then the Job (an existing one is left alone)."""
        manifests = self._manifests(reference)
        for create, body in (
            (self.network.create_namespaced_network_policy, manifests["policy"]),
            (self.batch.create_namespaced_job, manifests["job"]),
        ):
            try:
                create(self.namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        (Path(reference) / STARTED).touch()

    def _name(self, reference: str) -> str:
        return str(self._manifests(reference)["job"]["metadata"]["name"])

    def status(self, reference: str) -> RunStatus:
        """From the Job's status and its pod's container state."""
        folder = Path(reference)
        if (folder / runner.EXIT).exists():  # cancelled here
            return LocalFiles.status(folder)
        if not (folder / STARTED).exists():
            return RunStatus(RunState.pending)
        try:
            job = self.batch.read_namespaced_job(self._name(reference), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return RunStatus(RunState.lost, detail="the Job is gone from the cluster")
            raise
        state = job.status
        if state.succeeded:
            return RunStatus(RunState.exited, exit_code=0, end_reason="exit_code")
        if state.failed:
            reasons = {c.reason for c in (state.conditions or [])}
            if "DeadlineExceeded" in reasons:
                return RunStatus(RunState.exited, exit_code=None, end_reason="time_limit")
            code, reason = self._termination(reference)
            end = "out_of_memory" if reason == "OOMKilled" else "exit_code"
            return RunStatus(RunState.exited, exit_code=code, end_reason=end)
        if state.active:
            return RunStatus(RunState.running)
        return RunStatus(RunState.pending)

    def _pod(self, reference: str) -> Any:
        selector = f"job-name={self._name(reference)}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return pods[0] if pods else None

    def _termination(self, reference: str) -> tuple[int | None, str]:
        pod = self._pod(reference)
        for status in (pod.status.container_statuses or []) if pod else []:
            terminated = status.state.terminated if status.state else None
            if terminated is not None:
                return terminated.exit_code, terminated.reason or ""
        return None, ""

    def cancel(self, reference: str) -> None:
        """Record the cancellation, then delete the Job and its pod (no-op once it ended)."""
        folder = Path(reference)
        if self.status(reference).state in (RunState.exited, RunState.lost):
            return
        if not (folder / runner.EXIT).exists():
            runner.write_exit(folder, None, "killed_by_user", 0.0, "deleted from the cluster")
        self._delete(reference)

    def _delete(self, reference: str) -> None:
        name = self._name(reference)
        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise
        try:
            self.network.delete_namespaced_network_policy(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def logs(self, reference: str) -> bytes:
        """The pod's log, saved in the job folder so it outlives the pod."""
        saved = Path(reference) / runner.LOG
        pod = self._pod(reference)
        if pod is not None:
            try:
                answer = self.core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, _preload_content=False
                )
                saved.write_bytes(answer.data)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return saved.read_bytes() if saved.exists() else b""

    def cleanup(self, reference: str) -> None:
        """Keep the log, then remove the Job and its NetworkPolicy."""
        self.logs(reference)
        self._delete(reference)


class LocalFiles:
    """The end state recorded in the job folder (cancellations)."""

    @staticmethod
    def status(folder: Path) -> RunStatus:
        """From ``exit.json``."""
        ended = json.loads((folder / runner.EXIT).read_text())
        return RunStatus(
            RunState.exited,
            exit_code=ended["exit_code"],
            end_reason=ended["end_reason"],
            run_seconds=ended["run_seconds"],
        )
