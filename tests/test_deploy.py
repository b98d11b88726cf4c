"""deploy/kubernetes/: the nightly retraining schedule as the files a cluster applies, checked against the Kubernetes
schema (kubernetes-validate, strict: an unknown or misspelt field fails) and against what the job needs."""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from job.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.33"  # validated against this release's schema (CronJob timeZone needs 1.27 or later)


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str) -> dict:
    [doc] = [doc for doc in documents() if doc["kind"] == kind]
    return doc


def pod_of(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("doc", documents(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_every_manifest_is_valid_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validator_catches_a_misspelt_field():
    broken = copy.deepcopy(one("CronJob"))
    container = pod_of(broken)["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError, match="volumeMount"):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_schedule_runs_once_a_night_within_its_deadlines():
    spec = one("CronJob")["spec"]
    minute, hour, *every = spec["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"]  # once a day, at a fixed time
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 24 * 3600  # a missed night is skipped, not run the next day
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] > 0
    assert pod_of(one("CronJob"))["restartPolicy"] == "Never"
    # Waiting for another run's publish lock must end (exit 10) before the deadline kills the pod (exit 143).
    [container] = pod_of(one("CronJob"))["containers"]
    wait = float({item["name"]: item.get("value") for item in container["env"]}["LENET_PUBLISH_WAIT_SECONDS"])
    assert wait < job["activeDeadlineSeconds"]


def test_the_pod_meets_the_restricted_pod_security_standard():
    """The restricted profile's rules (kubernetes.io/docs/concepts/security/pod-security-standards), pod and container,
    plus the read-only root this job is built for."""
    pod = pod_of(one("CronJob"))
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert all(set(volume) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "secret", "configMap"}
               for volume in pod["volumes"])
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("privileged") is not True and "add" not in context["capabilities"]


def test_the_volumes_are_where_the_image_reads_and_writes():
    """Writable: /outputs and /data (the image's LENET_OUTPUT_DIR and LENET_DATA_DIR), /tmp; the labelled pictures
    read-only, in the mount and in the claim; every claim is one that storage.yaml makes."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    pod = pod_of(one("CronJob"))
    [container] = pod["containers"]
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    for variable in ("LENET_OUTPUT_DIR", "LENET_DATA_DIR"):
        image_path = re.search(rf"{variable}=(\S+)", dockerfile).group(1)
        assert image_path in mounts and not mounts[image_path].get("readOnly")
    assert "/tmp" in mounts
    labelled = mounts[env["LENET_EXTRA_DATA"]]
    assert labelled["readOnly"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert set(volumes) == {mount["name"] for mount in container["volumeMounts"]}
    assert volumes[labelled["name"]]["persistentVolumeClaim"]["readOnly"] is True
    claims = {doc["metadata"]["name"] for doc in documents() if doc["kind"] == "PersistentVolumeClaim"}
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v} == claims


def test_the_settings_are_the_jobs_and_the_mlflow_address_comes_from_a_secret(monkeypatch, tmp_path):
    [container] = pod_of(one("CronJob"))["containers"]
    env = container["env"]
    from_secret = {item["name"] for item in env if "secretKeyRef" in item.get("valueFrom", {})}
    assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= from_secret
    monkeypatch.chdir(tmp_path)  # no .env
    for item in env:
        if "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
    settings = load_settings()  # an unknown LENET_ name or a bad value raises SettingsError here
    assert str(settings.extra_data) == "/labelled" and settings.champion_check


def test_the_docs_point_at_the_manifests_instead_of_copying_them():
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    assert "deploy/kubernetes/cronjob.yaml" in deployment
    assert "kind: CronJob" not in deployment
