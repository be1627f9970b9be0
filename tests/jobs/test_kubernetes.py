"""The kubernetes backend against the fake API server (no real cluster can run here): what it
sends is valid Kubernetes (strict schemas) and keeps insitu's rules; jobs really run; the
time limit is the Job's activeDeadlineSeconds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes_validate.utils import latest_version

from insitu.jobs.backends.kubernetes import KubernetesExecutor
from insitu.jobs.backends.protocol import RunRequest, RunState
from insitu.jobs.sandbox import SandboxSpec, job_user_ids
from tests.jobs.conftest import needs_sandbox
from tests.k8s_fake import FakeCluster, fake_kubernetes

pytestmark = needs_sandbox
IMAGE = "registry.example.org/insitu/python@sha256:" + "c" * 64


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with fake_kubernetes() as fake:
        yield fake


def _request(folder: Path, command: list[str], runtime_s: int = 30, gpus: int = 0) -> RunRequest:
    home, results, view = folder / "home", folder / "results", folder / "view"
    for path in (home, results, view):
        path.mkdir(parents=True, exist_ok=True)
        ids = job_user_ids("insitu-job")
        if ids is not None and path != view:
            os.chown(path, *ids)
    (view / "README.txt").write_text("a dataset\n")
    spec = SandboxSpec(job_id=3, user="rita", command=command, tool=None,
                       views={"lung-v1": view}, home=home, results=results, memory_mb=256,
                       gpus=list(range(gpus)))  # fmt: skip
    return RunRequest(spec, folder / "job", runtime_s, "insitu-job", "small-gpu")


def test_the_manifests_are_strictly_valid_and_locked_down(shared_tmp: Path) -> None:
    with fake_kubernetes() as fake:
        executor = KubernetesExecutor(str(fake.kubeconfig), "insitu", IMAGE, queue="gpu-queue")
        manifests = executor.manifests(_request(shared_tmp, ["python3", "x.py"], gpus=1))
    for body in manifests.values():
        kubernetes_validate.validate(body, latest_version(), strict=True)
    job = manifests["job"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 30
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"insitu/flavor": "small-gpu"}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data/lung-v1")
    assert data["readOnly"] is True
    policy = manifests["policy"]["spec"]
    assert (policy["policyTypes"], policy["egress"], policy["ingress"]) == (
        ["Ingress", "Egress"],
        [],
        [],
    )
    mig = _request(shared_tmp / "mig", ["python3", "x.py"], gpus=1)
    mig = RunRequest(mig.spec, mig.folder, 30, "insitu-job", "small-gpu", None, "1g.10gb")
    with fake_kubernetes() as fake:
        limits = KubernetesExecutor(str(fake.kubeconfig), "insitu", IMAGE).manifests(mig)["job"][
            "spec"
        ]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == "1"
    assert "nvidia.com/gpu" not in limits
    with pytest.raises(ValueError, match="pinned by digest"):
        KubernetesExecutor(str(Path("/nonexistent")), "insitu", "python:3.11")


def test_the_fake_refuses_what_a_cluster_would(cluster: FakeCluster, shared_tmp: Path) -> None:
    executor = KubernetesExecutor(str(cluster.kubeconfig), "insitu", IMAGE)
    job = executor.manifests(_request(shared_tmp, ["true"]))["job"]
    batch = client.BatchV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    bogus = {**job, "spec": {**job["spec"], "retries": 3}}
    with pytest.raises(ApiException) as refused:
        batch.create_namespaced_job("insitu", bogus)
    assert refused.value.status == 422
    assert "'retries' was unexpected" in str(refused.value.body)
    writable = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    for mount in writable:
        mount["readOnly"] = False
    with pytest.raises(ApiException) as unsafe:
        batch.create_namespaced_job("insitu", job)
    assert "/data/lung-v1 must be mounted read-only" in str(unsafe.value.body)
    assert cluster.jobs == {}


def test_active_deadline_is_the_time_limit(cluster: FakeCluster, shared_tmp: Path) -> None:
    executor = KubernetesExecutor(str(cluster.kubeconfig), "insitu", IMAGE)
    reference = executor.prepare(_request(shared_tmp, ["/bin/sleep", "30"], runtime_s=1))
    executor.start(reference)
    deadline = time.monotonic() + 15
    while (status := executor.status(reference)).state != RunState.exited:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status.end_reason == "time_limit"
    executor.cleanup(reference)
    assert cluster.jobs == {}
    assert cluster.policies == {}
