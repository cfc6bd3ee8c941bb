"""deploy/tuner.yaml: valid Kubernetes objects (kubernetes-validate: Kubernetes' own schemas, bundled with the
package, offline, strict: no unknown field), a PostgreSQL Service, an indexed Job of GPU workers running
``tuner run --gpus`` on it, and a study file tuner accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tuner.config.spec import spec_from_dict

kubernetes_validate = pytest.importorskip("kubernetes_validate")

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "tuner.yaml"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_every_object_validates_strictly_against_the_schemas() -> None:
    version = kubernetes_validate.latest_version()
    for doc in _docs():
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_strict_schema_check_catches_a_misspelt_field() -> None:
    job = next(d for d in _docs() if d["kind"] == "Job")
    job["spec"]["completionsMode"] = job["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def test_postgres_service_and_indexed_gpu_workers_on_it() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in _docs()}
    svc = kinds[("Service", "tuner-postgres")]
    db = kinds[("StatefulSet", "tuner-postgres")]
    assert svc["spec"]["selector"].items() <= db["spec"]["template"]["metadata"]["labels"].items()
    job = kinds[("Job", "tuner-workers")]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] >= 2
    pod = job["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    command = " ".join(worker["args"])
    assert "tuner run /studies/study.yaml --gpus all" in command
    assert "postgresql+psycopg://" in command and "@tuner-postgres:5432/" in command
    study = kinds[("ConfigMap", "tuner-study")]["data"]["study.yaml"]
    assert spec_from_dict(yaml.safe_load(study)).name
