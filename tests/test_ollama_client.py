"""The Ollama REST client against the in-process contract server: happy paths and every error path."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ollama_server import OllamaContractServer, free_port

from bhasha_build.core.ollama import (
    COMPOSE_HINT,
    LISTING_RETRIES,
    OllamaClient,
    OllamaCreateError,
    OllamaDigestMismatchError,
    OllamaError,
    OllamaNotFoundError,
    OllamaProtocolError,
    OllamaRequestError,
    OllamaTimeoutError,
    OllamaTooOldError,
    OllamaUnreachableError,
    blob_digest,
    cli_create,
    parse_show_parameters,
    parse_version,
    resolve_host,
)

PARAMS = {"stop": ["<|im_end|>", "<|endoftext|>"], "temperature": 0.0, "seed": 3407, "num_ctx": 256}


@pytest.fixture
def server() -> Iterator[OllamaContractServer]:
    with OllamaContractServer() as srv:
        yield srv


@pytest.fixture
def client(server: OllamaContractServer) -> OllamaClient:
    return OllamaClient(server.url, timeout=10)


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model-q4_k_m.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4096))
    return path


# -- host and version parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        ("example.com:1234", "http://example.com:1234"),
        (":5000", "http://127.0.0.1:5000"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("http://h", "http://h:80"),
        ("https://h", "https://h:443"),
        ("http://h:8080/prefix/", "http://h:8080/prefix"),
        ("::1", "http://[::1]:11434"),
        ("[::1]:5000", "http://[::1]:5000"),
    ],
)
def test_resolve_host_like_ollama(raw: str, url: str) -> None:
    assert resolve_host(raw or None, env={}) == url


def test_resolve_host_precedence_and_errors() -> None:
    assert resolve_host(None, env={"OLLAMA_HOST": "10.0.0.2:9"}) == "http://10.0.0.2:9"
    assert resolve_host("h:1", env={"OLLAMA_HOST": "10.0.0.2:9"}) == "http://h:1"
    with pytest.raises(OllamaError, match="scheme"):
        resolve_host("ftp://h", env={})
    with pytest.raises(OllamaError, match="invalid port"):
        resolve_host("h:99999", env={})


def test_parse_version() -> None:
    assert parse_version("0.5.7") == (0, 5, 7)
    assert parse_version("v0.6.0-rc1") == (0, 6, 0)
    assert parse_version("0.5") == (0, 5, 0)


# -- version / reachability ----------------------------------------------------------------------


def test_version_ok(client: OllamaClient) -> None:
    assert client.check_version() == "0.5.7"


@pytest.mark.parametrize("version", ["0.5.4", "0.4.7", "0.1.0"])
def test_too_old(version: str) -> None:
    with (
        OllamaContractServer(version=version) as srv,
        pytest.raises(OllamaTooOldError, match=r"too old: structured /api/create needs >= 0\.5\.5") as err,
    ):
        OllamaClient(srv.url).check_version()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("version", ["0.5.5", "0.6.0-rc1", "0.0.0"])  # 0.0.0: a source build
def test_new_enough(version: str) -> None:
    with OllamaContractServer(version=version) as srv:
        assert OllamaClient(srv.url).check_version() == version


def test_unreachable_names_the_compose_command() -> None:
    client = OllamaClient(f"127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(OllamaUnreachableError) as err:
        client.version()
    message = str(err.value)
    assert COMPOSE_HINT in message and client.host in message and "\n" not in message


# -- blobs ---------------------------------------------------------------------------------------


def test_blob_upload_head_then_post(
    client: OllamaClient, server: OllamaContractServer, fake_gguf: Path
) -> None:
    digest = blob_digest(fake_gguf)
    assert not client.blob_exists(digest)
    assert client.push_blob(fake_gguf) == digest
    assert client.blob_exists(digest)
    assert server.blob_path(digest).read_bytes() == fake_gguf.read_bytes()
    posts = [r for r in server.requests if r[0] == "POST" and r[1].startswith("/api/blobs/")]
    client.push_blob(fake_gguf)  # already there: HEAD only, no second upload
    assert [r for r in server.requests if r[0] == "POST" and r[1].startswith("/api/blobs/")] == posts


def test_blob_digest_mismatch(client: OllamaClient, server: OllamaContractServer, fake_gguf: Path) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(OllamaDigestMismatchError, match="digest mismatch") as err:
        client.push_blob(fake_gguf, digest=wrong)
    assert "invoke export" in str(err.value)
    assert not client.blob_exists(wrong)
    assert client.push_blob(fake_gguf)  # the connection and server are fine afterwards


def test_blob_bad_digest_format(client: OllamaClient, server: OllamaContractServer, fake_gguf: Path) -> None:
    with pytest.raises(OllamaError, match="invalid blob digest 'md5:abc'"):
        client.push_blob(fake_gguf, digest="md5:abc")
    # The server refuses it too, with Ollama's status and error body.
    resp = requests.post(f"{server.url}/api/blobs/md5:abc", data=b"x", timeout=5)
    assert resp.status_code == 400 and resp.json() == {"error": "invalid digest format"}


# -- create / show / tags / delete ---------------------------------------------------------------


def _create(client: OllamaClient, path: Path, name: str = "bhasha-test", **kw: object) -> list[str]:
    digest = client.push_blob(path)
    return client.create(
        name, {path.name: digest}, template="{{ .Prompt }}", system="sys", parameters=PARAMS, **kw
    )


def test_create_show_tags_delete(client: OllamaClient, fake_gguf: Path) -> None:
    seen: list[str] = []
    statuses = _create(client, fake_gguf, on_status=seen.append)
    assert statuses[-1] == "success" and seen == statuses
    assert client.exists("bhasha-test") and client.exists("bhasha-test:latest")
    assert not client.exists("other")
    assert len(client.model_digest("bhasha-test") or "") == 64
    show = client.show("bhasha-test")
    assert show["template"] == "{{ .Prompt }}" and show["system"] == "sys"
    shown = parse_show_parameters(show["parameters"])
    assert shown == {"stop": PARAMS["stop"], "temperature": ["0"], "seed": ["3407"], "num_ctx": ["256"]}
    client.delete("bhasha-test")
    assert client.tags() == []


def test_tags_asks_again_only_through_ollamas_listing_race(client: OllamaClient, server: OllamaContractServer,
                                                           fake_gguf: Path) -> None:
    _create(client, fake_gguf)
    # Ollama 0.24.0 answers a listing that races a deletion with 500 "stat ...: no such file or directory":
    # the client lists again (a short backoff), so a deploy polling its model is not failed by another's tidy-up.
    server.listing_races = LISTING_RETRIES
    before = len(server.requests)
    assert client.model_digest("bhasha-test") is not None
    assert server.requests[before:] == [("GET", "/api/tags")] * (LISTING_RETRIES + 1)
    # A server that keeps failing that way is reported, with Ollama's own words, after the retries.
    server.listing_races = LISTING_RETRIES + 1
    with pytest.raises(OllamaRequestError, match=r"\(500\): stat .*no such file or directory") as err:
        client.tags()
    assert err.value.status == 500 and server.listing_races == 0
    # Any other 500 on the listing is not asked again.
    server.faults["/api/tags"] = "fail-after"
    before = len(server.requests)
    with pytest.raises(OllamaRequestError, match=r"\(500\): injected fail-after"):
        client.tags()
    assert server.requests[before:] == [("GET", "/api/tags")]


def test_create_missing_blob(client: OllamaClient) -> None:
    with pytest.raises(OllamaCreateError, match="not found") as err:
        client.create("x", {"model.gguf": "sha256:" + "1" * 64})
    assert "creating 'x' failed" in str(err.value)


def test_create_error_mid_stream(client: OllamaClient, tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 definitely a zip")
    # The server has started streaming statuses when it finds the bad magic: {"error"} mid-stream.
    with pytest.raises(OllamaCreateError, match="invalid file magic"):
        client.create("x", {"model.gguf": client.push_blob(not_gguf)})
    assert not client.exists("x")


@pytest.mark.parametrize("key", ["/abs/model.gguf", "../model.gguf", "a/../../model.gguf"])
def test_create_files_keys_must_be_relative(client: OllamaClient, fake_gguf: Path, key: str) -> None:
    digest = client.push_blob(fake_gguf)
    with pytest.raises(OllamaCreateError, match="file path must be relative"):
        client.create("x", {key: digest})


def test_create_bad_name_and_parameter(client: OllamaClient, fake_gguf: Path) -> None:
    digest = client.push_blob(fake_gguf)
    with pytest.raises(OllamaCreateError, match="invalid model name"):
        client.create("bad name!", {fake_gguf.name: digest})
    with pytest.raises(OllamaCreateError, match="unknown parameter 'Temperature'"):
        client.create("x", {fake_gguf.name: digest}, parameters={"Temperature": 0})


def test_not_found_paths(client: OllamaClient) -> None:
    with pytest.raises(OllamaNotFoundError, match="model 'ghost' not found"):
        client.show("ghost")
    with pytest.raises(OllamaNotFoundError, match="model 'ghost' not found"):
        client.delete("ghost")
    with pytest.raises(OllamaNotFoundError, match="model 'ghost' not found"):
        client.generate("ghost", "hi")
    with pytest.raises(OllamaNotFoundError, match="model 'ghost' not found"):
        client.chat("ghost", [{"role": "user", "content": "hi"}], stream=True)


# -- CLI fallback --------------------------------------------------------------------------------


def test_cli_missing(tmp_path: Path) -> None:
    with pytest.raises(OllamaError, match="CLI not found on PATH"):
        cli_create("x", tmp_path / "Modelfile", "http://127.0.0.1:1", ollama_bin="no-such-ollama-binary")


def test_cli_failure_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "ollama"
    fake.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "print('gathering model components', file=sys.stderr)\n"
        "print('Error: could not connect to ' + os.environ['OLLAMA_HOST'], file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "Modelfile").write_text("FROM ./m.gguf\n")
    with pytest.raises(
        OllamaCreateError, match=r"failed: Error: could not connect to http://127\.0\.0\.1:1$"
    ):
        cli_create("x", tmp_path / "Modelfile", "http://127.0.0.1:1", ollama_bin=str(fake))


# -- faults: every failure is an OllamaError naming the host and the call (issue 12) ---------------

CHAT = [{"role": "user", "content": "नमस्ते"}]


@pytest.mark.parametrize(("path", "kind", "call", "words"), [
    ("/api/version", "html", "GET /api/version", "answered HTML ("),
    ("/api/version", "list", "GET /api/version", "answered a JSON list, not an object"),
    ("/api/tags", "list", "GET /api/tags", "answered a JSON list, not an object"),
    ("/api/show", "html", "POST /api/show", "not JSON: is"),
    ("/api/chat", "list", "POST /api/chat", "answered a JSON list"),
    ("/api/chat", "truncate", "POST /api/chat", "the answer was cut off midway (ChunkedEncodingError"),
    ("/api/create", "truncate", "POST /api/create", "the answer was cut off midway"),
    ("/api/version", "drop", "GET /api/version", "the connection closed without an answer"),
])
def test_lying_server_is_one_clear_error(
    client: OllamaClient, server: OllamaContractServer, path: str, kind: str, call: str, words: str
) -> None:
    server.faults[path] = kind
    calls = {"/api/version": client.version, "/api/tags": client.tags, "/api/show": lambda: client.show("x"),
             "/api/chat": lambda: client.chat("x", CHAT, stream=kind == "truncate"),
             "/api/create": lambda: client.create("x", {"m.gguf": "sha256:" + "1" * 64})}
    with pytest.raises(OllamaError) as err:
        calls[path]()
    message = str(err.value)
    assert message.startswith(f"Ollama at {server.url}: {call}: "), message
    assert words in message and "\n" not in message


@pytest.mark.parametrize("stream", [True, False])
def test_truncated_stream_and_body(client: OllamaClient, server: OllamaContractServer, stream: bool) -> None:
    server.faults["/api/generate"] = "truncate"
    with pytest.raises(OllamaProtocolError, match=r"POST /api/generate: the answer was cut off midway"):
        client.generate("x", "hi", stream=stream)


@pytest.mark.parametrize(("kind", "timeout"), [("stall", 1.0), ("trickle", 2.0)])
def test_the_deadline_is_wall_clock(server: OllamaContractServer, kind: str, timeout: float) -> None:
    # A server that trickles one line a second kept a read-timeout client busy for 6 s at timeout=2.
    server.faults["/api/chat"] = kind
    server.trickle_interval = 0.5
    server.trickle_lines = 100
    client = OllamaClient(server.url, timeout=timeout)
    start = time.monotonic()
    with pytest.raises(OllamaTimeoutError, match=rf"POST /api/chat: no complete answer within {timeout:g}s"):
        client.chat("x", CHAT, stream=True)
    assert time.monotonic() - start < timeout + 1.0


def test_copy_and_delete_as_ollama_defines_them(client: OllamaClient, server: OllamaContractServer,
                                                fake_gguf: Path) -> None:
    _create(client, fake_gguf, "a")
    client.copy("a", "b:prev-1")
    assert client.model_digest("b:prev-1") == client.model_digest("a") is not None
    resp = requests.post(f"{server.url}/api/copy", json={"source": "a", "destination": "c"}, timeout=5)
    assert (resp.status_code, resp.content) == (200, b"")
    with pytest.raises(OllamaNotFoundError, match="model 'ghost' not found"):
        client.copy("ghost", "d")
    client.delete("a")
    assert not client.exists("a") and client.exists("b:prev-1")


# -- the host: no credentials in it, a token from the environment, a warning for plain http ----------


def test_credentials_in_the_host_are_refused_without_echoing_them() -> None:
    for raw in ("http://user:s3cr3t-token@example.com:11434", "s3cr3t-token@example.com"):
        with pytest.raises(OllamaError, match=r"has credentials in it: .*BHASHA_OLLAMA_TOKEN") as err:
            resolve_host(raw, env={})
        assert "s3cr3t" not in str(err.value) and "example.com" in str(err.value)


@pytest.mark.parametrize(("raw", "shown"), [
    ("http://admin:S3C/RETPW@h", "'http://***@h'"),  # a '/' in the password once ended the host there
    ("admin:S3C/RETPW@h:11434", "'http://***@h:11434'"),
    ("https://admin:S3C?RETPW#x@h/prefix", "'https://***@h'"),
    ("https://h/?token=S3C", "'https://h/'"),
    ("https://h:443/ollama?key=S3C&sig=RETPW", "'https://h:443/ollama'"),
    ("http://h#S3C", "'http://h'"),
])
def test_secrets_in_the_host_are_refused_without_echoing_them(raw: str, shown: str) -> None:
    """A token in a query string is never sent, recorded or printed: the host is refused (a user who put
    it there meant it as a credential; it belongs in BHASHA_OLLAMA_TOKEN)."""
    with pytest.raises(OllamaError, match="BHASHA_OLLAMA_TOKEN") as err:
        resolve_host(raw, env={})
    assert "S3C" not in str(err.value) and "RETPW" not in str(err.value) and shown in str(err.value)
    with pytest.raises(OllamaError) as err:
        OllamaClient(raw)
    assert "S3C" not in str(err.value)


def test_error_texts_are_scrubbed_of_secrets() -> None:
    from bhasha_build.core.errors import BhashaError, first_line, register_secret, scrub

    register_secret("opaque-4f9a1c")
    cases = {
        'POST /api/copy failed (401): {"Authorization": "Bearer abc.def-123"}': "abc.def",
        "502 from proxy; headers: {'authorization': 'Basic dXNlcjpwYXNz', 'x': 1}": "dXNlcjpwYXNz",
        "Proxy-Authorization: Bearer zzz999 was refused": "zzz999",
        "upstream http://admin:S3C/RETPW@gpu-box:11434/api/chat refused": "S3C",
        "GET https://gpu-box/api/tags?token=QQQ123&x=1 failed": "QQQ123",
        "redirected to /login?next=/&api_key=KKK777": "KKK777",
        "the key opaque-4f9a1c is unknown": "opaque-4f9a1c",
    }
    for text, secret in cases.items():
        assert secret not in scrub(text) and "***" in scrub(text), scrub(text)
        assert secret not in str(BhashaError(text)) and secret not in first_line(RuntimeError(text))
    for plain in ("expected section.key=value", "special token <|im_end|> at line 3", "a basic check",
                  "sent as a bearer header", "http://127.0.0.1:11434/api/chat", "runs/ci/model-q4_k_m.gguf"):
        assert scrub(plain) == plain


def test_an_error_body_echoing_the_token_is_scrubbed(server: OllamaContractServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok-" + os.urandom(6).hex()
    monkeypatch.setenv("BHASHA_OLLAMA_TOKEN", token)
    server.faults["/api/version"] = "echo-auth"
    with pytest.raises(OllamaError, match=r"GET /api/version failed \(401\): unauthorized") as err:
        OllamaClient(server.url).version()
    assert server.authorizations[-1] == f"Bearer {token}" and token not in str(err.value)


def test_token_goes_in_a_bearer_header(server: OllamaContractServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BHASHA_OLLAMA_TOKEN", "tok-123")
    OllamaClient(server.url).version()
    assert server.authorizations[-1] == "Bearer tok-123"
    monkeypatch.delenv("BHASHA_OLLAMA_TOKEN")
    OllamaClient(server.url).version()
    assert server.authorizations[-1] is None


def test_plain_http_to_another_machine_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    from bhasha_build.core import ollama

    ollama._warned_plain_http.discard("http://10.9.8.7:11434")
    for _ in range(3):
        OllamaClient("http://10.9.8.7:11434")
    OllamaClient("http://127.0.0.1:11434")
    OllamaClient("https://10.9.8.7")
    OllamaClient("localhost")
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "http://10.9.8.7:11434" in warnings[0] and "plain http" in warnings[0]
