"""Modelfile rendering (golden file) and the Ollama-rules parser that validates it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bhasha_build.core import chat
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.layout import RunLayout
from bhasha_build.stages.modelfile import (
    ModelfileError,
    expected_template,
    parse_modelfile,
    render_modelfile,
    resolve_from,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "Modelfile.golden"
GGUF_NAME = RunLayout(Path(".")).gguf("Q4_K_M").name  # model-q4_k_m.gguf


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / GGUF_NAME).write_bytes(b"GGUF\x03\x00\x00\x00")
    return run


def _cfg(**model: object) -> BuildConfig:
    return BuildConfig.model_validate({"seed": 3407, "model": {"max_seq_length": 2048, **model}})


def test_golden(run_dir: Path) -> None:
    text = render_modelfile(run_dir / GGUF_NAME, run_dir / "Modelfile", _cfg())
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    assert (run_dir / "Modelfile").read_text(encoding="utf-8") == text
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_rendered_values_parse_back_exactly(run_dir: Path) -> None:
    cfg = _cfg(max_seq_length=256).model_copy(update={"seed": 7})
    mf = parse_modelfile(render_modelfile(run_dir / GGUF_NAME, run_dir / "Modelfile", cfg))
    assert mf.from_ == f"./{GGUF_NAME}"
    assert mf.system == chat.SYSTEM_PROMPT
    assert mf.template == expected_template()
    assert chat.QWEN_DEFAULT_SYSTEM in mf.template and "@@" not in mf.template
    assert mf.parameters == {"stop": chat.STOP_TOKENS, "temperature": 0.0, "repeat_penalty": 1.0,
                             "seed": 7, "num_ctx": 256}
    assert resolve_from(run_dir / "Modelfile", mf.from_) == (run_dir / GGUF_NAME).resolve()


def test_gguf_in_subfolder_is_relative(run_dir: Path) -> None:
    (run_dir / "export").mkdir()
    (run_dir / "export" / GGUF_NAME).write_bytes(b"GGUF")
    mf = parse_modelfile(render_modelfile(run_dir / "export" / GGUF_NAME, run_dir / "Modelfile", _cfg()))
    assert mf.from_ == f"./export/{GGUF_NAME}"


# -- refusals -------------------------------------------------------------------------------------


def test_refuses_triple_quote_in_system(run_dir: Path) -> None:
    with pytest.raises(ModelfileError, match='system prompt contains """'):
        render_modelfile(run_dir / GGUF_NAME, run_dir / "Modelfile", _cfg(), system='Say """hi"""')
    assert not (run_dir / "Modelfile").exists()


def test_refuses_characters_ollama_would_drop(run_dir: Path) -> None:
    # Ollama's parser keeps only strconv.IsPrint runes: a ZWJ in SYSTEM would silently vanish.
    with pytest.raises(ModelfileError, match="U\\+200D"):
        render_modelfile(run_dir / GGUF_NAME, run_dir / "Modelfile", _cfg(), system="क्\u200dष only")


def test_refuses_from_outside_run_folder(run_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / GGUF_NAME
    outside.write_bytes(b"GGUF")
    with pytest.raises(ModelfileError, match="escapes the run folder"):
        render_modelfile(outside, run_dir / "Modelfile", _cfg())
    link = run_dir / "linked.gguf"
    link.symlink_to(outside)  # a symlink out of the run folder escapes it just the same
    with pytest.raises(ModelfileError, match="escapes the run folder"):
        render_modelfile(link, run_dir / "Modelfile", _cfg())
    with pytest.raises(ModelfileError, match="escapes the run folder"):
        resolve_from(run_dir / "Modelfile", f"../{GGUF_NAME}")
    with pytest.raises(ModelfileError, match="escapes the run folder"):
        resolve_from(run_dir / "Modelfile", str(outside))


def test_refuses_missing_gguf(run_dir: Path) -> None:
    with pytest.raises(ModelfileError, match="invoke export"):
        render_modelfile(run_dir / "nope.gguf", run_dir / "Modelfile", _cfg())


def test_refuses_template_with_unknown_placeholder(run_dir: Path, tmp_path: Path) -> None:
    from bhasha_build.stages.modelfile import TEMPLATE_FILE

    bad = tmp_path / "Modelfile.template"
    bad.write_text(TEMPLATE_FILE.read_text() + "PARAMETER num_predict @@NUM_PREDICT@@\n")
    with pytest.raises(ModelfileError, match="unknown placeholders @@NUM_PREDICT@@"):
        render_modelfile(run_dir / GGUF_NAME, run_dir / "Modelfile", _cfg(), template_file=bad)


def test_refuses_template_that_does_not_parse_back(run_dir: Path, tmp_path: Path) -> None:
    from bhasha_build.stages.modelfile import TEMPLATE_FILE

    # An inline comment is not a comment in Ollama: it becomes part of the value.
    bad = tmp_path / "Modelfile.template"
    bad.write_text(
        TEMPLATE_FILE.read_text().replace("PARAMETER temperature 0", "PARAMETER temperature 0 # greedy")
    )
    with pytest.raises(ModelfileError, match="invalid float value"):
        render_modelfile(run_dir / GGUF_NAME, run_dir / "Modelfile", _cfg(), template_file=bad)


# -- parser rules (Ollama's parser/parser.go) -----------------------------------------------------


def test_instruction_names_case_insensitive_and_comments() -> None:
    mf = parse_modelfile(
        "# comment at line start\n"
        "  # indented comment\n"
        "from ./m.gguf\n"
        "System You are terse.\n"
        "pArAmEtEr stop <|im_end|>\n"
        "license MIT\n"
        "message user hello there\n"
        "MESSAGE assistant hi\n"
    )
    assert mf.from_ == "./m.gguf"
    assert mf.system == "You are terse."
    assert mf.parameters == {"stop": ["<|im_end|>"]}
    assert mf.license == ["MIT"]
    assert mf.messages == [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]


def test_no_inline_comments() -> None:
    mf = parse_modelfile("FROM ./m.gguf # the model\nSYSTEM hi # not a comment\n")
    assert mf.from_ == "./m.gguf # the model"
    assert mf.system == "hi # not a comment"


def test_quoted_and_multiline_values() -> None:
    mf = parse_modelfile(
        'FROM "./my model.gguf"\n'
        'SYSTEM """\n  line one\nline "two"\n"""\n'
        'TEMPLATE "{{ .Prompt }}\n{{ .Response }}"\n'
        'PARAMETER stop "<|im_end|>"\n'
        "PARAMETER stop    <|endoftext|>   \n"
    )
    assert mf.from_ == "./my model.gguf"
    assert mf.system == '\n  line one\nline "two"\n'
    assert mf.template == "{{ .Prompt }}\n{{ .Response }}"
    assert mf.parameters["stop"] == ["<|im_end|>", "<|endoftext|>"]


def test_crlf_and_bom() -> None:
    mf = parse_modelfile('\ufeffFROM ./m.gguf\r\nSYSTEM """a\r\nb"""\r\nPARAMETER seed 1\r\n')
    assert mf.from_ == "./m.gguf"
    assert mf.system == "a\r\nb"
    assert mf.parameters == {"seed": 1}


def test_parameter_names_are_case_sensitive() -> None:
    with pytest.raises(ModelfileError, match="unknown parameter 'Temperature'"):
        parse_modelfile("FROM ./m.gguf\nPARAMETER Temperature 0\n")
    with pytest.raises(ModelfileError, match="unknown parameter 'top_q'"):
        parse_modelfile("FROM ./m.gguf\nPARAMETER top_q 0.5\n")


def test_parameter_values_are_typed_like_ollama() -> None:
    mf = parse_modelfile("FROM m\nPARAMETER num_ctx 4096\nPARAMETER top_p .5\nPARAMETER use_mmap false\n")
    assert mf.parameters == {"num_ctx": 4096, "top_p": 0.5, "use_mmap": False}
    for bad, msg in (
        ("num_ctx 4k", "invalid int"),
        ("seed 1.5", "invalid int"),
        ("temperature hot", "invalid float"),
        ("use_mmap yes", "invalid bool"),
    ):
        with pytest.raises(ModelfileError, match=msg):
            parse_modelfile(f"FROM m\nPARAMETER {bad}\n")


def test_invalid_message_role() -> None:
    with pytest.raises(ModelfileError, match="line 2: message role must be one of"):
        parse_modelfile("FROM m\nMESSAGE tool hello\n")
    with pytest.raises(ModelfileError, match="message role"):
        parse_modelfile("FROM m\nMESSAGE User hello\n")  # roles are case-sensitive


def test_unknown_instruction_and_bad_names() -> None:
    with pytest.raises(ModelfileError, match="line 2: unknown instruction 'STOP'"):
        parse_modelfile("FROM m\nSTOP <|im_end|>\n")
    with pytest.raises(ModelfileError, match="command must be one of"):
        parse_modelfile("FROM m\nPARAM-ETER x\n")


def test_unterminated_quotes_and_missing_from() -> None:
    with pytest.raises(ModelfileError, match="end of file inside a quoted value"):
        parse_modelfile('FROM m\nSYSTEM """never closed\n')
    with pytest.raises(ModelfileError, match="end of file inside a quoted value"):
        parse_modelfile('FROM m\nSYSTEM "open\n')
    with pytest.raises(ModelfileError, match="no FROM line"):
        parse_modelfile("SYSTEM hi\n")
    with pytest.raises(ModelfileError, match="end of file"):
        parse_modelfile("FROM m\nPARAMETER")


def test_triple_quote_in_system_breaks_ollama_parsing() -> None:
    # Why render refuses it: Ollama would end the block early at the inner quotes.
    text = 'FROM m\nSYSTEM """Say """\nhi\n"""\n'
    with pytest.raises(ModelfileError):
        parse_modelfile(text)


def test_non_printable_runes_dropped_like_ollama() -> None:
    mf = parse_modelfile("FROM m\nSYSTEM a\u200cb\u200dc\tend\n")
    assert mf.system == "abc\tend"
