"""Static checks of deploy/: Docker, Kubernetes, SLURM and TLS recipes cannot run in CI,
so what can be checked without them is: every YAML parses; the Dask operator manifests
have the fields the operator needs; the SLURM examples render a job script / pass
``bash -n``; the Dockerfiles install dclust with the command the README gives; the TLS
configuration is one Dask accepts; and no file uses the removed hyphenated commands."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
OPERATOR_API = "kubernetes.dask.org/v1"


def _yaml_files():
    return sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)
                  + glob.glob(os.path.join(DEPLOY, "**", "*.yml"), recursive=True))


def _docs():
    """deploy/ (every file) and the project's documentation."""
    files = [p for p in glob.glob(os.path.join(DEPLOY, "**", "*"), recursive=True)
             if os.path.isfile(p) and "__pycache__" not in p]
    files += glob.glob(os.path.join(ROOT, "*.md"))
    files += glob.glob(os.path.join(ROOT, "docs", "**", "*"), recursive=True)
    files += glob.glob(os.path.join(ROOT, "benchmarks", "*.md"))
    return sorted(f for f in files if os.path.isfile(f))


def _load(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return list(yaml.safe_load_all(f))


def _rel(p):
    return os.path.relpath(p, ROOT)


def test_deploy_has_the_recipes():
    for name in ["README.md", "docker/Dockerfile", "docker/Dockerfile.gpu", "docker/compose.yaml",
                 "kubernetes/daskcluster.yaml", "kubernetes/daskcluster-gpu.yaml",
                 "kubernetes/daskjob.yaml", "kubernetes/helm/values.yaml",
                 "kubernetes/helm/values-gpu.yaml", "slurm/jobqueue_cluster.py",
                 "slurm/dclust-fit.sbatch", "tls/README.md", "tls/dask-tls.yaml",
                 "tls/make_certs.py"]:
        assert os.path.isfile(os.path.join(DEPLOY, name)), name


@pytest.mark.parametrize("path", _yaml_files(), ids=_rel)
def test_every_yaml_parses(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert docs, f"{_rel(path)} is empty"


HYPHENATED = re.compile(r"dask-(scheduler|worker)\b")


@pytest.mark.parametrize("path", _docs(), ids=_rel)
def test_no_hyphenated_dask_commands(path):
    with open(path, errors="replace") as f:
        text = f.read()
    found = [m.group(0) for m in HYPHENATED.finditer(text)]
    assert not found, (
        f"{_rel(path)} uses {sorted(set(found))}: those commands are gone from current "
        "distributed; write `dask scheduler` / `dask worker`."
    )


def test_the_hyphen_check_catches_them():
    assert HYPHENATED.search("args: [dask" + "-worker, --nthreads, '2']")
    assert HYPHENATED.search("run dask" + "-scheduler --port 8786")
    assert not HYPHENATED.search("dask scheduler; dask worker; dclust-scheduler:8786")


def _containers(pod_spec, where):
    assert isinstance(pod_spec, dict) and pod_spec.get("containers"), f"{where}: no containers"
    for c in pod_spec["containers"]:
        assert c.get("name") and c.get("image"), f"{where}: a container needs name and image"
    return pod_spec["containers"]


def _check_cluster_spec(spec, where):
    worker = spec["worker"]
    assert isinstance(worker.get("replicas"), int) and worker["replicas"] >= 1, where
    (wc,) = _containers(worker["spec"], f"{where}.worker.spec")
    assert wc["args"][:2] == ["dask", "worker"], f"{where}: workers run `dask worker`"
    scheduler = spec["scheduler"]
    (sc,) = _containers(scheduler["spec"], f"{where}.scheduler.spec")
    assert sc["args"][:2] == ["dask", "scheduler"], f"{where}: the scheduler runs `dask scheduler`"
    ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    assert ports.get("tcp-comm") == 8786
    service = scheduler["service"]
    assert {p["port"] for p in service["ports"]} >= {8786}
    for p in service["ports"]:
        assert p["targetPort"] in ports or p["targetPort"] in ports.values()
    return wc


@pytest.mark.parametrize("name", ["kubernetes/daskcluster.yaml", "kubernetes/daskcluster-gpu.yaml"])
def test_daskcluster_manifests(name):
    (doc,) = _load(name)
    assert doc["apiVersion"] == OPERATOR_API and doc["kind"] == "DaskCluster"
    assert doc["metadata"]["name"]
    wc = _check_cluster_spec(doc["spec"], name)
    selector = doc["spec"]["scheduler"]["service"].get("selector")
    if selector:
        assert selector["dask.org/cluster-name"] == doc["metadata"]["name"]
        assert selector["dask.org/component"] == "scheduler"
    if "gpu" in name:
        assert wc["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert wc["image"].endswith(":gpu")


def test_gpu_worker_group():
    (doc,) = _load("kubernetes/daskworkergroup-gpu.yaml")
    (cluster,) = _load("kubernetes/daskcluster.yaml")
    assert doc["apiVersion"] == OPERATOR_API and doc["kind"] == "DaskWorkerGroup"
    assert doc["spec"]["cluster"] == cluster["metadata"]["name"]
    (wc,) = _containers(doc["spec"]["worker"]["spec"], "DaskWorkerGroup")
    assert wc["args"][:2] == ["dask", "worker"]
    assert wc["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_daskjob_runs_a_fit():
    (doc,) = _load("kubernetes/daskjob.yaml")
    assert doc["apiVersion"] == OPERATOR_API and doc["kind"] == "DaskJob"
    (job,) = _containers(doc["spec"]["job"]["spec"], "DaskJob.spec.job.spec")
    assert job["args"][:3] == ["dclust", "fit", "kmeans"]
    assert "--model" in job["args"]
    # The operator gives the job pod DASK_SCHEDULER_ADDRESS, which dclust connects to;
    # naming another scheduler would bypass the job's own cluster.
    assert "--scheduler" not in job["args"]
    _check_cluster_spec(doc["spec"]["cluster"]["spec"], "DaskJob.spec.cluster.spec")
    # The job parses as the CLI would parse it.
    from dclust.cli.main import build_parser

    args = build_parser().parse_args(job["args"][1:])
    assert args.n_clusters == 256 and args.model.startswith("s3://")


@pytest.mark.parametrize("name", ["kubernetes/helm/values.yaml", "kubernetes/helm/values-gpu.yaml"])
def test_helm_values(name):
    (values,) = _load(name)
    worker = values["worker"]
    assert worker["image"]["dask_worker"] == "worker"  # the image entry point runs `dask worker`
    if "gpu" in name:
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    else:
        assert values["jupyter"]["enabled"] is False
        assert values["scheduler"]["servicePort"] == 8786


def test_entrypoint_maps_subcommands(tmp_path):
    """``worker ...`` and old one-word names become ``dask worker ...`` (with a fake dask)."""
    fake = tmp_path / "dask"
    fake.write_text("#!/bin/sh\necho \"dask $*\"\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    entry = os.path.join(DEPLOY, "docker", "entrypoint.sh")

    def run(*args):
        return subprocess.run(["sh", entry, *args], capture_output=True, text=True, env=env,
                              check=True).stdout.strip()

    assert run("worker", "tcp://s:8786", "--nthreads", "2") == "dask worker tcp://s:8786 --nthreads 2"
    assert run("scheduler") == "dask scheduler"
    assert run("dask" + "-worker", "tcp://s:8786") == "dask worker tcp://s:8786"
    assert run("echo", "dclust", "fit") == "dclust fit"


def test_compose_runs_scheduler_workers_and_a_fit():
    (doc,) = _load("docker/compose.yaml")
    services = doc["services"]
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    assert services["worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert services["worker"]["deploy"]["replicas"] == 3
    job = " ".join(services["job"]["command"])
    assert "dclust fit kmeans" in job and "--scheduler tcp://scheduler:8786" in job
    assert services["job"]["restart"] == "no"
    for name in ("worker", "job"):
        assert "data:/data" in services[name]["volumes"]  # workers see the job's data


def _pip_installs(path):
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    return [" ".join(m.split()) for m in re.findall(r"^RUN (pip install [^\n&]*)", text, re.M)]


@pytest.mark.parametrize("name, extras", [("Dockerfile", ".[s3]"), ("Dockerfile.gpu", ".[gpu,s3]")])
def test_dockerfiles_install_like_the_readme(name, extras):
    installs = _pip_installs(os.path.join(DEPLOY, "docker", name))
    assert installs == [f'pip install "{extras}"']
    with open(os.path.join(DEPLOY, "README.md")) as f:
        readme = f.read()
    assert f"`docker/{name}`: `{installs[0]}`" in readme
    assert installs[0] in readme.split("## The four steps")[1].split("## ")[0]  # step 1
    with open(os.path.join(DEPLOY, "docker", name)) as f:
        text = f.read()
    assert "COPY pyproject.toml" in text and "COPY dclust" in text
    if name.endswith(".gpu"):
        assert re.search(r"^FROM nvidia/cuda:12[\w.\-]*runtime", text, re.M)
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    for extra in extras.strip(".[]").split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"no extra {extra!r} in pyproject"


def test_readme_says_docker_cannot_run_in_ci():
    with open(os.path.join(DEPLOY, "README.md")) as f:
        text = f.read()
    assert "Docker, Kubernetes and SLURM cannot run in dclust's CI" in text


def test_sbatch_script():
    path = os.path.join(DEPLOY, "slurm", "dclust-fit.sbatch")
    subprocess.run(["bash", "-n", path], check=True)
    with open(path) as f:
        text = f.read()
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    assert "dask scheduler --scheduler-file" in text
    assert re.search(r"srun .*\\\n\s+dask worker --scheduler-file", text)
    assert "dclust fit kmeans" in text and '--scheduler-file "$SCHEDULER_FILE"' in text


def test_jobqueue_example_renders_a_job_script():
    pytest.importorskip(
        "dask_jobqueue",
        reason="dask-jobqueue is not installed (pip install dask-jobqueue, in the test extra); "
               "only the SLURM jobqueue example's rendering is skipped")
    spec = importlib.util.spec_from_file_location(
        "dclust_jobqueue_example", os.path.join(DEPLOY, "slurm", "jobqueue_cluster.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cluster = mod.make_cluster(cores=8, memory="32GiB", processes=2, queue="compute",
                               account="proj", job_extra=["--exclusive"],
                               scheduler_options={"host": "127.0.0.1", "port": 0,
                                                  "dashboard_address": ":0"})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert script.startswith("#!/usr/bin/env bash")
    for line in ["#SBATCH -J dclust-worker", "#SBATCH -p compute", "#SBATCH -A proj",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --exclusive", "export NUMBA_CACHE_DIR="]:
        assert line in script, line
    assert re.search(r"distributed\.cli\.dask_worker tcp://127\.0\.0\.1:\d+ .*--nthreads 4 "
                     r".*--nworkers 2", script), script
    assert not HYPHENATED.search(script)


def test_tls_config_is_what_dask_reads():
    import dask
    from distributed import Security

    (cfg,) = _load("tls/dask-tls.yaml")

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    # Dotted keys merge into the configuration, as a YAML file in ~/.config/dask/ does.
    with dask.config.set(dict(flat(cfg))):
        sec = Security()
    assert sec.require_encryption is True
    assert sec.tls_ca_file and sec.tls_client_cert and sec.tls_client_key
    assert sec.tls_scheduler_cert and sec.tls_worker_cert
    assert cfg["distributed"]["comm"]["default-scheme"] == "tls"
