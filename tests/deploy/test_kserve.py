"""deploy/kubernetes/kserve: Verdict as a KServe serving runtime, checked without a cluster.

No KServe controller runs here, so the tests do what it would do and check
the result: the ServingRuntime and the InferenceService against KServe's own
CRD schemas (vendored from kserve/kserve, tests/deploy/schemas/kserve, strictly:
a field the API server would drop is an error); the predictor pod KServe
builds from the two (its merge rules, its ``{{.Name}}`` placeholder, its
storage mount at /mnt/models) against the Kubernetes API schemas of every
supported version; the container's command lines through the real CLI parser;
the settings loader on exactly the environment the container gets, the
image's included. Finally the container's own start script runs as the pod
would run it, on loopback, against a filesystem store: it registers and
promotes the package at "/mnt/models", serves the Open Inference Protocol on
the runtime's two ports, and a restart changes nothing in the registry.

Rendering reuses test_kubernetes.py (``kubectl kustomize``); without a
renderer the source YAML is read as the kustomization lists it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from tests.deploy.test_container_and_systemd import DOCKERFILE, _instructions
from tests.deploy.test_kubernetes import (
    DIGEST_PINNED,
    K8S,
    SUPPORTED_KUBERNETES,
    _renderer,
    _schema_problem,
    _strict,
    render,
)
from tests.deploy.test_kubernetes import no_network as no_network  # a fixture: used by name

KSERVE = K8S / "kserve"
SCHEMAS = Path(__file__).resolve().parent / "schemas" / "kserve"
CRD_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
}
# Created out of band (deploy/README.md "KServe"), never rendered from the repository.
EXTERNAL_SECRETS = {"verdict-kserve-apikeys", "verdict-kserve-signing-key"}
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's files
HTTP_PORT, GRPC_PORT = 8080, 8081  # KServe's conventions: the first port is HTTP, gRPC's is named h2c

# What KServe does with the predictor's fields (pkg/apis/serving/v1beta1, v0.20.0): the model
# container is merged into the runtime's kserve-container; these are the component's own
# settings; the rest is the pod spec, merged over the runtime's pod-level fields.
MODEL_SETTINGS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}
COMPONENT_SETTINGS = {
    "model",
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "storageUris",
    "workerSpec",
}
RUNTIME_POD_FIELDS = {"nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets", "schedulerName"}
# Strategic merge keys of the lists that are merged item by item rather than replaced.
MERGE_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort", "volumes": "name"}


# --- the manifests, and the pod KServe would build from them -----------------------------------------------


def documents() -> list[dict]:
    """Rendered by kustomize, or (no renderer) the source files the kustomization lists."""
    if _renderer() is not None:
        return render("kserve")
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for entry in kustomization["resources"]:
        docs.extend(doc for doc in yaml.safe_load_all((KSERVE / entry).read_text()) if doc)
    return docs


def _one(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def _merge(base: object, override: object, key: str = "") -> object:
    """A strategic merge patch, as far as these manifests need one."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = _merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        items = {item[by]: item for item in base}
        for item in override:
            items[item[by]] = _merge(items[item[by]], item) if item[by] in items else item
        return list(items.values())
    return override


def _placeholders(container: dict, isvc: dict) -> dict:
    """KServe renders the merged container as a Go template over the InferenceService's metadata."""
    meta = {"Name": isvc["metadata"]["name"], "Namespace": isvc["metadata"].get("namespace", "default")}
    text = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: meta[m.group(1)], json.dumps(container))
    assert "{{" not in text, f"a placeholder KServe would not resolve: {text}"
    return json.loads(text)


def predictor_pod(docs: list[dict] | None = None) -> dict:
    """The predictor pod KServe builds (components/predictor.go buildPodSpec, utils.MergePodSpec,
    MergeRuntimeContainers, the storage initializer's volume at /mnt/models), as a Pod object."""
    docs = docs or documents()
    runtime, isvc = _one(docs, "ServingRuntime"), _one(docs, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    (runtime_container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    overrides = {k: v for k, v in model.items() if k not in MODEL_SETTINGS}
    container = _merge(runtime_container, {k: v for k, v in overrides.items() if k != "args"})
    assert isinstance(container, dict)
    container["args"] = runtime_container.get("args", []) + model.get("args", [])  # concatenated, not replaced
    container = _placeholders(container, isvc)
    pod_spec = _merge(
        {k: v for k, v in runtime["spec"].items() if k in RUNTIME_POD_FIELDS},
        {k: v for k, v in predictor.items() if k not in COMPONENT_SETTINGS},
    )
    assert isinstance(pod_spec, dict)
    if "storageUri" in model:  # the storage initializer's download location (read-only in the model container)
        pod_spec.setdefault("volumes", []).append({"name": "kserve-provision-location", "emptyDir": {}})
        container.setdefault("volumeMounts", []).append(
            {"name": "kserve-provision-location", "mountPath": MODEL_MOUNT, "readOnly": True}
        )
    others = [c for c in runtime["spec"]["containers"] if c["name"] != "kserve-container"]
    pod_spec["containers"] = [container, *others, *predictor.get("containers", [])]
    labels = {
        **runtime["spec"].get("labels", {}),
        **isvc["metadata"].get("labels", {}),
        **predictor.get("labels", {}),
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
        "component": "predictor",
    }
    annotations = {
        **runtime["spec"].get("annotations", {}),
        **isvc["metadata"].get("annotations", {}),
        **predictor.get("annotations", {}),
    }
    metadata = {"name": f"{isvc['metadata']['name']}-predictor-0", "labels": labels, "annotations": annotations}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def model_container(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "kserve-container")


def statements(container: dict) -> list[list[str]]:
    """The `verdict` command lines of a `sh -c` container, `exec` dropped."""
    assert container["command"] == ["/bin/sh", "-c"], "the runtime's command is a shell script in args[0]"
    script = container["args"][0]
    lines = [shlex.split(part) for part in script.split(";") if part.strip()]
    assert lines[0] == ["set", "-eu"], "the script must stop at the first failing command"
    return [line[1:] if line[0] == "exec" else line for line in lines[1:]]


def parse(argv: list[str]) -> tuple[str, dict]:
    """Parse a `verdict ...` command line with the real CLI: (command path, its parsed options).
    Unknown options, missing arguments and bad values raise here as they would in the pod."""
    import typer.main

    import verdict.gateway.cli

    assert argv[0] == "verdict", argv
    command = typer.main.get_command(verdict.gateway.cli.app)
    args, path = list(argv[1:]), []
    while hasattr(command, "commands"):  # a group (typer's own click)
        path.append(args[0])
        command = command.commands[args.pop(0)]
    with command.make_context(" ".join(["verdict", *path]), args) as context:
        return " ".join(path), dict(context.params)


def image_environment() -> dict[str, str]:
    """The VERDICT_* variables the image itself sets (deploy/Dockerfile ENV): the container gets them too."""
    steps = _instructions(DOCKERFILE)
    runtime = steps[[i for i, (kw, _) in enumerate(steps) if kw == "FROM"][-1] :]
    pairs = [item.split("=", 1) for kw, rest in runtime if kw == "ENV" for item in shlex.split(rest)]
    return {name: value for name, value in pairs if name.startswith("VERDICT_")}


# --- KServe's own schemas -------------------------------------------------------------------------------


def crd_validator(doc: dict) -> jsonschema.protocols.Validator:
    """KServe's structural schema as the API server applies it with strict field validation
    (test_kubernetes._strict): a field it would drop (a typo silently doing nothing) is an error."""
    vendored = json.loads((SCHEMAS / CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]).read_text())
    schema = _strict({k: v for k, v in vendored.items() if not k.startswith(("$", "x-verdict"))})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_problems(doc: dict) -> list[str]:
    return [
        f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in crd_validator(doc).iter_errors(doc)
    ]


def test_the_vendored_schemas_are_kserves_and_say_where_from():
    assert (SCHEMAS / "LICENSE").read_text().lstrip().startswith("Apache License")
    for name in CRD_SCHEMAS.values():
        vendored = json.loads((SCHEMAS / name).read_text())
        assert re.search(r"from kserve/kserve v\d+\.\d+\.\d+ \([0-9a-f]{40}\) config/crd/", vendored["$comment"])
        assert vendored["type"] == "object" and "spec" in vendored["properties"]


def test_runtime_and_inference_service_are_valid_for_kserve():
    docs = documents()
    kserve = [d for d in docs if d["apiVersion"].startswith("serving.kserve.io/")]
    assert sorted(d["kind"] for d in kserve) == ["InferenceService", "ServingRuntime"]
    problems = [problem for doc in kserve for problem in crd_problems(doc)]
    assert not problems, "\n".join(problems)


def test_the_schema_check_is_strict():
    """A misspelt field, a missing required one and a wrong type are each caught."""
    docs = documents()
    isvc = copy.deepcopy(_one(docs, "InferenceService"))
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    assert any("'storageURI' was unexpected" in p for p in crd_problems(isvc))
    runtime = copy.deepcopy(_one(docs, "ServingRuntime"))
    containers = runtime["spec"].pop("containers")
    assert any("'containers' is a required property" in p for p in crd_problems(runtime))
    runtime["spec"]["containers"] = containers
    runtime["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    assert any("is not of type 'boolean'" in p for p in crd_problems(runtime))


# --- Kubernetes' schemas, for the pod and the plain objects ---------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_the_predictor_pod_and_plain_objects_are_valid_kubernetes(version, no_network):
    docs = documents()
    plain = [d for d in docs if not d["apiVersion"].startswith("serving.kserve.io/")]
    assert {d["kind"] for d in plain} == {"Namespace", "ServiceAccount", "PersistentVolumeClaim", "NetworkPolicy"}
    problems = [problem for doc in [predictor_pod(docs), *plain] if (problem := _schema_problem(doc, version))]
    assert not problems, f"Kubernetes {version}:\n" + "\n".join(problems)


def test_the_predictor_pod_is_hardened_and_complete():
    """What tests/deploy/test_kubernetes.py asks of every workload, asked of the pod KServe builds."""
    docs = documents()
    pod = predictor_pod(docs)
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["enableServiceLinks"] is False, "service links would inject VERDICT_* variables"
    assert spec["automountServiceAccountToken"] is False
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for container in spec.get("initContainers", []) + spec["containers"]:
        where = f"container {container['name']}"
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
        assert "memory" in container["resources"]["limits"], where
        assert {m["name"] for m in container.get("volumeMounts", [])} <= set(volumes), where
    for volume in volumes.values():
        if "secret" in volume:
            assert volume["secret"]["secretName"] in EXTERNAL_SECRETS, volume
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
    policy = _one(docs, "NetworkPolicy")
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {HTTP_PORT, GRPC_PORT}


def test_images_are_pinned_by_digest():
    """Like every overlay: a tag can be moved after review, a digest names one image."""
    docs = documents()
    pod = predictor_pod(docs)
    images = [c["image"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
    if _renderer() is not None:
        assert all(DIGEST_PINNED.fullmatch(image) for image in images), images
    else:  # the source names the image "verdict"; the kustomization pins it
        assert set(images) == {"verdict"}
        (pin,) = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())["images"]
        assert DIGEST_PINNED.fullmatch(f"{pin['newName']}@{pin['digest']}") and "newTag" not in pin


# --- what the runtime runs ------------------------------------------------------------------------------


def test_runtime_serves_the_verdict_format_over_v2():
    docs = documents()
    runtime, isvc = _one(docs, "ServingRuntime"), _one(docs, "InferenceService")
    assert runtime["metadata"]["name"] == "verdict"
    assert runtime["spec"]["supportedModelFormats"] == [{"name": "verdict", "version": "1", "autoSelect": True}]
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    model = isvc["spec"]["predictor"]["model"]
    # KServe's RuntimeSupportsModel and IsProtocolVersionSupported, for this pair
    assert model["runtime"] == "verdict" and model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"] in [
        {k: f[k] for k in ("name", "version")} for f in runtime["spec"]["supportedModelFormats"]
    ]
    assert re.fullmatch(r"s3://[a-z0-9.-]+/.+/", model["storageUri"]), "a package directory: a prefix ending in /"


def test_the_start_script_is_two_real_verdict_commands():
    container = model_container(predictor_pod())
    register, serve = statements(container)
    command, options = parse(register)
    assert command == "models register"
    assert options["path"] == Path(MODEL_MOUNT) and options["promote_if_unset"] is True
    assert options["by"] == "kserve/german-credit" and options["store"] is None  # the store comes from the env
    command, options = parse(serve)
    assert command == "serve"
    assert (options["host"], options["port"], options["grpc_port"]) == ("0.0.0.0", HTTP_PORT, GRPC_PORT)
    assert options["no_bootstrap"] is True, "the model comes from the storageUri, never from the bootstrap"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": HTTP_PORT, "h2c": GRPC_PORT}
    assert container["ports"][0]["name"] == "http", "KServe's predictor Service maps port 80 to the first port"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", HTTP_PORT), probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _container_environment(container: dict) -> dict[str, str]:
    env = image_environment()
    for entry in container["env"]:
        assert "value" in entry, f"{entry['name']}: only literal values (no secret references) are expected"
        env[entry["name"]] = entry["value"]
    return env


def test_settings_loader_on_the_containers_environment(monkeypatch):
    """What `verdict serve` loads in the pod: the image's and the manifests' variables, the flags
    over them; the chain is the InferenceService's, whatever the pod is called."""
    from verdict.gateway.settings import load_settings

    container = model_container(predictor_pod())
    for name in list(os.environ):
        if name.startswith("VERDICT_") or name == "POD_NAME":
            monkeypatch.delenv(name)
    # a Deployment's pod name whose random suffix happens to be all digits (it would look like an ordinal)
    monkeypatch.setenv("HOSTNAME", "german-credit-predictor-7f9c8d6b54-48273")
    env = _container_environment(container)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _, options = parse(statements(container)[1])
    settings = load_settings(
        options["config"],
        host=options["host"],
        port=options["port"],
        grpc_port=options["grpc_port"],
        chain_id=options["chain_id"],
        bootstrap=False if options["no_bootstrap"] else None,
    )
    assert settings.chain_id == "kserve-german-credit"
    assert (settings.host, settings.port, settings.grpc_port) == ("0.0.0.0", HTTP_PORT, GRPC_PORT)
    assert settings.bootstrap is False
    assert re.fullmatch(r"s3://[a-z0-9.-]+/[a-z0-9-]+\?region=[a-z0-9-]+&retention_days=\d+", settings.store)
    assert settings.kms_key_id.startswith("alias/") and settings.trust_root.startswith("kms:")
    assert settings.keyring_kek.startswith("kms:")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in predictor_pod()["spec"]["volumes"]}
    # the keyring on the persistent volume, never under the memory-backed VERDICT_HOME
    assert volumes[mounts[env["VERDICT_KEYRING"]]]["persistentVolumeClaim"]["claimName"] == "verdict-kserve-keyring"
    assert Path(settings.apikeys_file).parent.as_posix() in mounts
    assert "secret" in volumes[mounts[Path(settings.apikeys_file).parent.as_posix()]]
    assert "emptyDir" in volumes[mounts[env["VERDICT_HOME"]]]


def test_one_writer_per_chain_and_one_keyring_on_one_node():
    """The chain id is the InferenceService's: exactly one pod may write it at a time, and the
    keyring is SQLite on a ReadWriteOnce volume. So: one replica, no autoscaler, Recreate, a plain
    Deployment (Knative would run a new revision's pod beside the old one)."""
    docs = documents()
    isvc = _one(docs, "InferenceService")
    annotations, predictor = isvc["metadata"]["annotations"], isvc["spec"]["predictor"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("RawDeployment", "Standard")
    assert annotations["serving.kserve.io/autoscalerClass"] == "none"
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 1
    assert predictor["deploymentStrategy"] == {"type": "Recreate"}
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = predictor_pod(docs)
    terms = pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and all(pod["metadata"]["labels"].get(k) == v for k, v in t["labelSelector"]["matchLabels"].items())
        for t in terms
    )
    env = {e["name"]: e["value"] for e in model_container(pod)["env"]}
    assert env["VERDICT_CHAIN_ID"] == f"kserve-{isvc['metadata']['name']}"


SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PRIVATE|CREDENTIAL|ACCESS_KEY|API_KEY)", re.IGNORECASE)


def test_no_secret_is_inline():
    """Secrets are created out of band and mounted; no manifest carries one, and no variable
    holds one: the KMS variables name keys that never leave KMS, the others are paths."""
    docs = documents()
    assert not [d for d in docs if d["kind"] == "Secret"]
    pod = predictor_pod(docs)
    for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        for entry in container.get("env", []):
            name, value = entry["name"], str(entry.get("value", ""))
            assert not SECRET_NAME.search(name), f"{container['name']}: {name}"
            assert not re.search(r"(AKIA|ASIA)[A-Z0-9]{16}|-----BEGIN|[A-Za-z0-9_-]{40,}", value), name
            if name.endswith(("_KEY_ID", "_KEK", "TRUST_ROOT")):
                assert re.fullmatch(r"(kms:)?(alias/[A-Za-z0-9/_-]+|arn:aws:kms:[a-z0-9:/-]+)", value), name
    text = "\n".join(path.read_text() for path in KSERVE.glob("*.yaml"))
    assert "aws_secret_access_key" not in text.lower() and "stringData" not in text


# --- the runtime's start, for real ----------------------------------------------------------------------


def _free_port() -> int:
    from tests.support.moto_server import free_port

    return free_port()


class RuntimeStart:
    """The model container's script, run as the pod runs it (/bin/sh -c), with the paths of its
    volumes and of /mnt/models mapped to directories here, a filesystem store for the S3 one and
    local keys for the KMS ones, on loopback ports."""

    def __init__(self, root: Path, model_dir: Path) -> None:
        from verdict.gateway.apikeys import ApiKeyStore

        pod = predictor_pod()
        container = model_container(pod)
        self.root = root
        self.paths = {m["mountPath"]: root / m["name"] for m in container["volumeMounts"]}
        self.paths[MODEL_MOUNT] = model_dir
        self.http = _free_port()
        self.grpc = next(port for port in iter(_free_port, None) if port != self.http)
        script = container["args"][0]
        script = script.replace("--host 0.0.0.0", "--host 127.0.0.1")
        script = script.replace(f"--port {HTTP_PORT}", f"--port {self.http}")
        script = script.replace(f"--grpc-port {GRPC_PORT}", f"--grpc-port {self.grpc}")
        self.script = self._local(script)
        env = {k: self._local(v) for k, v in _container_environment(container).items()}
        for kms in ("VERDICT_KMS_KEY_ID", "VERDICT_TRUST_ROOT", "VERDICT_KEYRING_KEK"):
            env.pop(kms)  # a key file and a root in VERDICT_HOME, a local KEK in the keyring
        self.store = root / "store"
        env["VERDICT_STORE"] = self.store.as_uri()
        for path in self.paths.values():
            path.mkdir(parents=True, exist_ok=True)
        _, self.token = ApiKeyStore(Path(env["VERDICT_APIKEYS_FILE"])).create(["score"], name="lending service")
        base = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
        self.env = {**base, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"}
        self.process: subprocess.Popen | None = None
        self.log = root / "container.log"

    def _local(self, text: str) -> str:
        """Each mount path (a whole path or its prefix) to its directory here, in one pass."""
        mounts = "|".join(re.escape(m) for m in sorted(self.paths, key=len, reverse=True))
        pattern = rf"(?<![\w./-])({mounts})(?=$|[/\s\"';])"
        return re.sub(pattern, lambda m: str(self.paths[m.group(1)]), text)

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(["/bin/sh", "-c", self.script], env=self.env, stdout=log, stderr=log)

    def wait_ready(self) -> None:
        from tests.support.gateway_server import GatewayServer

        # GatewayServer's wait: /readyz, or the exit status and the log if the process died
        server = GatewayServer(self.root, port=self.http, process=self.process, log_path=self.log)
        server.wait_ready(timeout=240)

    def stop(self) -> None:
        from tests.support.gateway_server import stop_process

        stop_process(self.process)

    def run_statement(self, index: int) -> subprocess.CompletedProcess:
        """One statement of the script on its own, in the same environment (what a restart runs)."""
        statement = [s for s in self.script.split(";") if s.strip()][index]
        return subprocess.run(["/bin/sh", "-c", statement], env=self.env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runtime_started(tmp_path_factory, trained_dirs) -> Iterator[RuntimeStart]:
    start = RuntimeStart(tmp_path_factory.mktemp("kserve-pod"), trained_dirs["german-credit"])
    start.start()
    try:
        start.wait_ready()
        yield start
    finally:
        start.stop()


def test_the_runtime_registers_promotes_and_serves_the_package(runtime_started):
    from verdict.audit.stores import FilesystemStore
    from verdict.gateway.registry import Registry

    start = runtime_started
    log = start.log.read_text(errors="replace")
    assert "registered german-credit:1.0.0 sha256 " in log
    assert "production alias of german-credit -> 1.0.0 (promotion #0 at " in log
    assert "chain kserve-german-credit" in log
    headers = {"Authorization": f"Bearer {start.token}"}
    url = f"http://127.0.0.1:{start.http}"
    assert httpx.get(f"{url}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert httpx.get(f"{url}/v2/models/german-credit/ready", headers=headers, timeout=10).status_code == 200

    # The gRPC port answers the protocol (GRPCInferenceService), as KServe's h2c port must.
    import tritonclient.grpc

    client = tritonclient.grpc.InferenceServerClient(f"127.0.0.1:{start.grpc}")
    metadata = {"authorization": headers["Authorization"]}  # gRPC metadata keys are lower case
    try:
        assert client.is_server_ready(headers=metadata)
        assert client.is_model_ready("german-credit", headers=metadata)
    finally:
        client.close()

    # A decision through the protocol, as deploy/README.md shows a client making one: tritonclient
    # pointed at the InferenceService's URL (here the HTTP port), tensors as the model's metadata says.
    import numpy as np
    import tritonclient.http

    from verdict.gateway.datasets import load_dataset

    applicant = load_dataset("german-credit").rows[0]
    http = tritonclient.http.InferenceServerClient(f"127.0.0.1:{start.http}")
    dtypes = {"INT64": np.int64, "FP64": np.float64, "BYTES": np.object_}
    inputs = []
    for spec in http.get_model_metadata("german-credit", headers=headers)["inputs"]:
        tensor = tritonclient.http.InferInput(spec["name"], [1], spec["datatype"])
        tensor.set_data_from_numpy(np.array([applicant[spec["name"]]], dtype=dtypes[spec["datatype"]]))
        inputs.append(tensor)
    result = http.infer("german-credit", inputs, request_id="loan-0001", headers=headers)
    assert 0.0 < float(result.as_numpy("score")[0]) < 1.0
    assert result.as_numpy("decision")[0].decode() in ("approve", "decline")
    assert result.as_numpy("request_id")[0].decode() == "loan-0001.0"
    receipt = json.loads(result.as_numpy("receipt")[0])
    assert receipt["chain_id"] == "kserve-german-credit", receipt

    # A restart (the container again, same store) changes nothing in the registry.
    registry = Registry(FilesystemStore(start.store))
    before = registry.alias("german-credit", "production")
    again = start.run_statement(1)  # [0] is `set -eu`
    assert again.returncode == 0, again.stderr
    assert "already registered (identical) german-credit:1.0.0" in again.stdout
    assert "production version of german-credit is 1.0.0 (promotion #0), left as it is" in again.stdout
    assert registry.alias("german-credit", "production") == before
