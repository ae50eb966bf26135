"""deploy/kubernetes: every kustomization renders, and what it renders fits Verdict.

Rendering needs ``kubectl kustomize`` (or the ``kustomize`` binary); without
either, the render tests are skipped with that reason and the structural
checks run on the source YAML with Python alone. The checks that matter
most run the project's own code on the manifests: the gateway settings
loader on the shipped gateway.toml with a StatefulSet pod name, and the
real CLI definitions for every command line the jobs run. Every rendered
object is also validated strictly against the API schemas of every supported
Kubernetes version (kubernetes-validate ships them: no cluster, no network);
custom resources (the optional ServiceMonitor) against their published CRDs,
vendored in tests/deploy/crds.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = [
    "base",
    "overlays/staging",
    "overlays/production",
    "overlays/production/batch-replay",
    "jobs/batch-replay",
]
# What gets deployed; base and jobs/batch-replay are only ever applied through these.
OVERLAYS = [path for path in KUSTOMIZATIONS if path.startswith("overlays/")]
# The Kubernetes minor versions the manifests must be valid for.
SUPPORTED_KUBERNETES = [f"1.{minor}" for minor in range(29, 35)]
# registry/repository@sha256:<64 hex>, with no tag beside the digest (it would only mislead a reader).
DIGEST_PINNED = re.compile(r"[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}")
RUNBOOK = REPO / "docs" / "operations.md"
# Optional kustomize components an overlay opts into (a cluster without their CRDs could not apply them).
COMPONENTS = {"prometheus-servicemonitor": "overlays/production"}
"""Each component, and the overlay it is rendered with in these tests."""
CRDS = REPO / "tests" / "deploy" / "crds"
# Created out of band (docs/operations.md), never rendered from the repository.
EXTERNAL_SECRETS = {
    "verdict-apikeys",
    "verdict-gateway-signing-key",
    "verdict-immutability-signing-key",
    "verdict-replay-signing-key",
}


def _renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@functools.cache
def _rendered_yaml(renderer: tuple[str, ...], path: str) -> str:
    """One render per kustomization per run: most tests read the same few renders."""
    result = subprocess.run([*renderer, str(K8S / path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(renderer)} {path} failed:\n{result.stderr}"
    return result.stdout


def render(path: str) -> list[dict]:
    """The objects ``kubectl kustomize`` renders from a kustomization, or (``components/<name>``)
    from the overlay COMPONENTS names with that component added, as an overlay would add it."""
    if path.startswith("components/"):
        return _render_with_component(path)
    renderer = _renderer()
    if renderer is None:
        pytest.skip(
            "neither kubectl nor kustomize is installed (no package registry here offers kustomize; "
            "Debian's kubernetes-client or kubectl >= 1.27 does): render checks skipped, source checks still run"
        )
    return [doc for doc in yaml.safe_load_all(_rendered_yaml(tuple(renderer), path)) if doc]


@functools.cache
def _render_with_component(path: str) -> list[dict]:
    """A throwaway kustomization outside the repository: the overlay plus the component, in
    the overlay's namespace, as the overlay's own ``components:`` would render it (kustomize
    takes relative paths only)."""
    import tempfile

    overlay = COMPONENTS[path.removeprefix("components/")]
    namespace = yaml.safe_load((K8S / overlay / "kustomization.yaml").read_text()).get("namespace")
    with tempfile.TemporaryDirectory() as where:
        relative = os.path.relpath(K8S, where)
        spec = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"{relative}/{overlay}"],
            "components": [f"{relative}/{path}"],
        }
        Path(where, "kustomization.yaml").write_text(
            yaml.safe_dump(spec | ({"namespace": namespace} if namespace else {}))
        )
        renderer = _renderer()
        if renderer is None:
            return render(overlay)  # skips, saying why
        result = subprocess.run([*renderer, where], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(renderer)} {overlay} + {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod template) for every workload."""
    out = []
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment", "Job"):
            out.append((d, d["spec"]["template"]))
        elif d["kind"] == "CronJob":
            out.append((d, d["spec"]["jobTemplate"]["spec"]["template"]))
    return out


def _all_containers(pod_spec: dict) -> list[dict]:
    """Init containers too: they run the same image with the same privileges."""
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def _containers(path: str) -> Iterator[tuple[str, dict]]:
    """(where, container) for every container of every workload that `path` renders."""
    for workload, template in _pod_specs(render(path)):
        for container in _all_containers(template["spec"]):
            yield f"{path}: {workload['kind']}/{workload['metadata']['name']}, container {container['name']}", container


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_and_hangs_together(path):
    docs = render(path)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    config_maps = {n for k, n in names if k == "ConfigMap"}
    pvcs = {n for k, n in names if k == "PersistentVolumeClaim"}
    service_accounts = {n for k, n in names if k == "ServiceAccount"}
    standalone = path.endswith("batch-replay")  # applied next to an already deployed base
    for workload, template in _pod_specs(docs):
        spec = template["spec"]
        where = f"{path}: {workload['kind']}/{workload['metadata']['name']}"
        # hardened pods
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("enableServiceLinks") is False, f"{where}: service links would inject VERDICT_* variables"
        for container in _all_containers(spec):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert container["image"] != "verdict", f"{where}: the image name was not replaced"
        # every reference resolves
        if not standalone:
            assert spec["serviceAccountName"] in service_accounts, where
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
            if "secret" in volume:
                assert volume["secret"]["secretName"] in EXTERNAL_SECRETS, where
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                # a standalone Job uses the base's shared keyring volume, deployed with the base
                assert claim in pvcs or (standalone and claim == "verdict-keyring"), where
        for container in spec["containers"]:
            for ref in container.get("envFrom", []):
                if "configMapRef" in ref:
                    assert standalone or ref["configMapRef"]["name"] in config_maps, where
                    assert ref["configMapRef"]["name"] == "verdict-store"
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounted <= {v["name"] for v in spec.get("volumes", [])}, where
    for pdb in _by_kind(docs, "PodDisruptionBudget") + _by_kind(docs, "Service") + _by_kind(docs, "NetworkPolicy"):
        selector = pdb["spec"].get("selector") or pdb["spec"].get("podSelector")
        if isinstance(selector, dict) and "matchLabels" not in selector and pdb["kind"] == "Service":
            selector = {"matchLabels": selector}
        if selector and (selector.get("matchLabels")):
            assert any(_matches(selector, t["metadata"]["labels"]) for _, t in _pod_specs(docs)), (
                f"{path}: {pdb['kind']}/{pdb['metadata']['name']} selects no pod"
            )


def test_gateway_statefulset_gives_each_pod_its_own_chain():
    from verdict.gateway.settings import load_settings

    docs = render("overlays/production")
    (sts,) = _by_kind(docs, "StatefulSet")
    assert sts["metadata"]["name"] == "gateway" and sts["spec"]["replicas"] == 3
    assert _matches(sts["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    headless = next(s for s in _by_kind(docs, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway")
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "VERDICT_CHAIN_ID" not in env
    assert container["args"][0] == "serve"
    probes = {name: container[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert _by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1

    # The shipped gateway.toml, loaded by the gateway's own settings code in pod gateway-2.
    config = next(d for d in _by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("verdict-gateway-config"))
    store = next(d for d in _by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "verdict-store")
    toml_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gateway-{os.getpid()}.toml"
    toml_path.write_text(config["data"]["gateway.toml"])
    saved = {k: os.environ.get(k) for k in ("POD_NAME", "VERDICT_CHAIN_ID", "VERDICT_STORE", "HOSTNAME")}
    try:
        os.environ.pop("VERDICT_CHAIN_ID", None)
        os.environ["POD_NAME"] = "gateway-2"
        os.environ["VERDICT_STORE"] = store["data"]["VERDICT_STORE"]
        settings = load_settings(toml_path)
    finally:
        toml_path.unlink()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert settings.chain_id == "gateway-2"
    assert settings.host == "0.0.0.0" and settings.port == 8000 and settings.bootstrap is False
    assert settings.store.startswith("s3://acme-verdict-audit-production/trail?")
    assert settings.apikeys_file == "/etc/verdict/apikeys/apikeys.json"


def _command_line(template: dict, container_name: str) -> list[str]:
    container = next(c for c in template["spec"]["containers"] if c["name"] == container_name)
    script = " ".join(container["args"])
    return shlex.split(script.split("exec ", 1)[1])


def _options(command) -> set[str]:
    return {opt for param in command.params for opt in param.opts}


def test_immutability_cronjob_runs_the_real_command_nightly():
    import typer.main

    from verdict.audit.cli import audit_app

    docs = render("base")
    (cron,) = [c for c in _by_kind(docs, "CronJob") if c["metadata"]["name"] == "verdict-immutability-test"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and len(cron["spec"]["schedule"].split()) == 5
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    argv = _command_line(template, "immutability-test")
    assert argv[:3] == ["verdict", "audit", "immutability-test"]
    assert "--json" in argv and "--junit" in argv
    assert argv[argv.index("--json") + 1].startswith("/evidence/") and argv[argv.index("--junit") + 1].startswith(
        "/evidence/"
    )
    command = typer.main.get_command(audit_app).commands["immutability-test"]
    assert {a for a in argv[3:] if a.startswith("--")} <= _options(command)
    mounts = {m["mountPath"]: m["name"] for m in template["spec"]["containers"][0]["volumeMounts"]}
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == mounts["/evidence"])
    assert volume["persistentVolumeClaim"]["claimName"] == "verdict-immutability-evidence"
    # a FAILED probe (exit 1) fails the Job at once; it is a finding, not a flake
    rules = cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and r.get("onExitCodes", {}).get("values") == [1] for r in rules)


def _keyring_mounts(template: dict) -> bool:
    """The pod mounts the data keyring PVC at VERDICT_KEYRING and is scheduled on its node."""
    spec = template["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in spec["containers"]:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        path = env.get("VERDICT_KEYRING")
        if path is None or path not in mounts:
            return False
        if volumes[mounts[path]].get("persistentVolumeClaim", {}).get("claimName") != "verdict-keyring":
            return False
    terms = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    together = any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and t["labelSelector"]["matchLabels"] == {"verdict.example.com/keyring": "true"}
        for t in terms
    )
    return together and template["metadata"]["labels"].get("verdict.example.com/keyring") == "true"


def test_every_pod_that_seals_or_opens_mounts_the_one_keyring_on_one_node():
    """Gateways seal, the sweep erases, replays open: all with the one keyring (SQLite, one node)."""
    import typer.main

    import verdict.gateway.cli

    docs = render("base")
    (gateway,) = _by_kind(docs, "StatefulSet")
    assert _keyring_mounts(gateway["spec"]["template"])
    (sweep,) = [c for c in _by_kind(docs, "CronJob") if c["metadata"]["name"] == "verdict-retention-sweep"]
    template = sweep["spec"]["jobTemplate"]["spec"]["template"]
    assert _keyring_mounts(template) and sweep["spec"]["concurrencyPolicy"] == "Forbid"
    args = next(c for c in template["spec"]["containers"] if c["name"] == "retention-sweep")["args"]
    assert args[:2] == ["retention", "sweep"]
    retention = typer.main.get_command(verdict.gateway.cli.app).commands["retention"]
    assert {a for a in args[2:] if a.startswith("--")} <= _options(retention.commands["sweep"])
    (claim,) = [c for c in _by_kind(docs, "PersistentVolumeClaim") if c["metadata"]["name"] == "verdict-keyring"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (job,) = _by_kind(render("overlays/production/batch-replay"), "Job")
    assert _keyring_mounts(job["spec"]["template"])


def test_batch_replay_job_runs_verdict_replay_all():
    import typer.main

    from verdict.replay.cli import replay_app

    docs = render("overlays/production/batch-replay")
    (job,) = _by_kind(docs, "Job")
    assert job["metadata"]["namespace"] == "verdict"
    argv = _command_line(job["spec"]["template"], "replay")
    assert argv[:3] == ["verdict", "replay", "--all"]
    assert {a for a in argv[2:] if a.startswith("--")} <= _options(typer.main.get_command(replay_app))
    assert argv[argv.index("--replay-chain") + 1].startswith("replay-")  # never a gateway chain


def test_the_verdict_cli_offers_every_command_the_manifests_run():
    """The image's entry point is `verdict` (verdict.gateway.cli:main): serve, audit immutability-test, replay."""
    import typer.main

    import verdict.gateway.cli

    commands = typer.main.get_command(verdict.gateway.cli.app).commands
    assert "serve" in commands
    assert "immutability-test" in commands["audit"].commands
    assert "replay" in commands, (
        "the batch-replay Job runs `verdict replay --all`, but gateway/cli.py does not mount replay.cli.replay_app "
        '(app.add_typer(replay_app, name="replay"))'
    )


def test_source_yaml_is_well_formed_without_a_renderer():
    """Runs everywhere: every YAML file parses, every kustomization lists files that exist."""
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        component = kustomization.parent.parent == K8S / "components"
        assert spec["kind"] == ("Component" if component else "Kustomization"), kustomization
        for entry in spec.get("resources", []):
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry} missing"
        for patch in spec.get("patches", []):
            if "path" in patch:
                assert (kustomization.parent / patch["path"]).exists(), f"{kustomization}: {patch['path']} missing"
        for generator in spec.get("configMapGenerator", []):
            for name in generator.get("files", []):
                assert (kustomization.parent / name).exists()
        assert "namePrefix" not in spec and "nameSuffix" not in spec, f"{kustomization}: the pod name is the chain id"
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is None or ("kind" in doc and "apiVersion" in doc), path
    toml = (K8S / "base" / "gateway.toml").read_text()
    assert "chain_id" not in [
        line.split("=")[0].strip() for line in toml.splitlines() if "=" in line and not line.lstrip().startswith("#")
    ]


# --- strict schemas, tokens, resources, image digests ----------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Fail on any connection attempt: the validator must use the schemas it ships, so that the
    result never depends on what a server returned that day, nor on having a network at all."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("schema validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _strict(schema: object) -> object:
    """A CRD's structural schema as the API server applies it with strict field validation
    (kubectl's default): an object with declared properties takes no others, unless it says
    x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _custom_resource_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the strict schema of each vendored CRD's served versions."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for served in spec["versions"]:
            if served.get("served", True):
                key = (f"{spec['group']}/{served['name']}", spec["names"]["kind"])
                schemas[key] = _strict(served["schema"]["openAPIV3Schema"])
    return schemas


def _custom_resource_problem(doc: dict) -> str | None:
    """Why the API server would reject a custom resource, by its published CRD; None if valid."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    schema = _custom_resource_schemas().get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        return f"{where}: no CRD for {doc['apiVersion']} {doc['kind']} in {CRDS.relative_to(REPO)}"
    error = jsonschema.exceptions.best_match(jsonschema.Draft4Validator(schema).iter_errors(doc))
    return None if error is None else f"{where}: {'.'.join(map(str, error.absolute_path))}: {error.message}"


def _schema_problem(doc: dict, version: str) -> str | None:
    """Why the API server of `version` would reject `doc` (unknown or missing fields), or None."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    if not doc["apiVersion"].split("/")[0].endswith(".k8s.io") and "." in doc["apiVersion"].split("/")[0]:
        return _custom_resource_problem(doc)  # a CRD's kind: kubernetes-validate has only the built-in ones
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{where}: {'.'.join(map(str, error.path))}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return f"{where}: {error.message}"
    # the library falls back to an older version's schemas when it lacks the one asked for
    return None if validated == version else f"{where}: validated against {validated}, not {version}"


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
@pytest.mark.parametrize("path", KUSTOMIZATIONS + [f"components/{name}" for name in COMPONENTS])
def test_every_rendered_object_is_valid_for_every_supported_kubernetes(path, version, no_network):
    """`kubectl kustomize` checks no field; the API server does, at apply time (a CronJob's
    podFailurePolicy condition without `status` was refused there). Strict mode also rejects
    unknown fields, which the API server would drop or refuse (a typo'd securityContext field
    would otherwise silently not apply)."""
    problems = [problem for doc in render(path) if (problem := _schema_problem(doc, version))]
    assert not problems, f"{path} on Kubernetes {version}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_no_pod_gets_a_kubernetes_api_token(path):
    """Nothing in Verdict calls the Kubernetes API, so a mounted token could only serve someone who
    took over a pod. AWS credentials do not need it: IRSA and EKS Pod Identity project their own
    token volume. A pod that ever needs the API must say why in a YAML comment, and here."""
    docs = render(path)
    for workload, template in _pod_specs(docs):
        assert template["spec"].get("automountServiceAccountToken") is False, (
            f"{path}: {workload['kind']}/{workload['metadata']['name']} mounts a Kubernetes API token"
        )
    for account in _by_kind(docs, "ServiceAccount"):
        assert account.get("automountServiceAccountToken") is False, (
            f"{path}: ServiceAccount/{account['metadata']['name']}"
        )


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_container_has_requests_and_a_memory_limit(path):
    """Init containers included: without requests the scheduler places the pod blind (and the
    namespace's quota, if any, refuses it), and without a memory limit one container can take
    the node's memory from the gateways beside it."""
    for where, container in _containers(path):
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where}: no cpu/memory requests"
        assert "memory" in resources.get("limits", {}), f"{where}: no memory limit"


@pytest.mark.parametrize("path", OVERLAYS)
def test_overlays_deploy_images_by_digest_only(path):
    """A tag (`:main`, `:0.1.0`) can be moved to another image after review and staging; a digest
    names exactly one image. Placeholders are the all-zero digest, which no registry serves."""
    for where, container in _containers(path):
        assert DIGEST_PINNED.fullmatch(container["image"]), f"{where}: {container['image']} is not pinned by digest"


def test_release_step_pins_the_digest_of_every_deployed_kustomization():
    """The runbook's release step must reach every kustomization that pins the image, or a release
    leaves one of them on the placeholder (or on the previous image)."""
    section = RUNBOOK.read_text().partition("Release: pin the image digest")[2].partition("\n## ")[0]
    assert "kustomize edit set image" in section, "the runbook has no release step that pins the digest"
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        images = yaml.safe_load(kustomization.read_text()).get("images", [])
        if any("digest" in image for image in images):
            directory = str(kustomization.parent.relative_to(REPO))
            assert directory in section, f"the release step does not pin {directory}"


# --- the optional ServiceMonitor -----------------------------------------------------------------


def test_the_service_monitor_scrapes_each_gateway_pod_once_at_its_metrics_port():
    """prometheus-operator's ServiceMonitor (components/prometheus-servicemonitor) selects exactly
    one Service (both gateway Services carry the app label), by a port name that Service has,
    whose target is the gateway container's port, which the NetworkPolicy opens to monitoring."""
    docs = render("components/prometheus-servicemonitor")
    (monitor,) = _by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "verdict"  # the overlay's namespace reached it
    assert _custom_resource_problem(monitor) is None
    selected = [s for s in _by_kind(docs, "Service") if _matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in selected] == ["gateway-headless"], selected
    (service,) = selected
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint.get("scheme", "http") == "http"
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    (sts,) = _by_kind(docs, "StatefulSet")
    assert _matches({"matchLabels": service["spec"]["selector"]}, sts["spec"]["template"]["metadata"]["labels"])
    gateway = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway")
    container_port = next(p for p in gateway["ports"] if p["name"] == port["targetPort"])
    policy = next(p for p in _by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "gateway")
    from_monitoring = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(
            peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
            for peer in rule["from"]
        )
    ]
    assert any(p["port"] == container_port["containerPort"] for rule in from_monitoring for p in rule["ports"])
    assert "ServiceMonitor" not in {d["kind"] for d in render("base")}  # optional: base applies without the CRD


def test_the_vendored_crd_schema_is_strict():
    """The CRD check is not vacuous: a misspelt field and a wrong type are refused."""
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "probe"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "http", "path": "/metrics"}]},
    }
    assert _custom_resource_problem(monitor) is None
    misspelt = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": "http", "paht": "/metrics"}]}}
    assert "paht" in (_custom_resource_problem(misspelt) or "")
    wrong = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": 8000}]}}
    assert _custom_resource_problem(wrong) is not None
