"""Render the run's Ollama Modelfile from ``Modelfile.template`` and validate it by Ollama's rules.

The Modelfile is where fine-tuned GGUFs usually break in Ollama (wrong TEMPLATE, missing stop
tokens: endless or garbage output), so every rendered file is parsed back with a re-implementation
of Ollama's Modelfile parser (``ollama/parser/parser.go``) and compared with what was meant:

  * instructions FROM / PARAMETER / TEMPLATE / SYSTEM / ADAPTER / LICENSE / MESSAGE, names
    case-insensitive; ``#`` starts a comment only at the start of a line (no inline comments);
  * values run to the end of the line, or across lines inside ``"..."`` / ``\"\"\"...\"\"\"``;
    surrounding whitespace is trimmed outside the quotes; runes Go's ``strconv.IsPrint`` rejects
    (ZWJ/ZWNJ, other format characters) are silently dropped by Ollama, so they are dropped here
    too and a value that loses them is refused;
  * PARAMETER names are case-sensitive and typed as in Ollama's ``api.FormatParams``;
  * MESSAGE roles are ``system``, ``user`` or ``assistant``.

Knobs (all from the config; nothing else varies):
  seed -> ``PARAMETER seed``; model.max_seq_length -> ``PARAMETER num_ctx``.
  SYSTEM is ``chat.SYSTEM_PROMPT``, stops are ``chat.STOP_TOKENS``, TEMPLATE lives in
  ``Modelfile.template`` (placeholders ``@@FROM@@``, ``@@SYSTEM@@``, ``@@QWEN_DEFAULT_SYSTEM@@``,
  ``@@STOP_PARAMETERS@@``, ``@@SEED@@``, ``@@NUM_CTX@@``: they cannot clash with Go's ``{{ }}``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bhasha_build.core import chat
from bhasha_build.core.config import REPO_ROOT, BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_text
from bhasha_build.core.layout import RunLayout

TEMPLATE_FILE = REPO_ROOT / "Modelfile.template"

COMMANDS = ("from", "license", "template", "system", "adapter", "parameter", "message")
MESSAGE_ROLES = ("system", "user", "assistant")

# Ollama's api.Options / api.Runner JSON tags (0.5.x-0.6.x) and the Go kind FormatParams parses
# each into. Names are matched case-sensitively, as Ollama does.
PARAMETER_TYPES: dict[str, str] = {
    # sampling
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float",
    "min_p": "float",
    "typical_p": "float",
    "repeat_last_n": "int",
    "temperature": "float",
    "repeat_penalty": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "mirostat": "int",
    "mirostat_tau": "float",
    "mirostat_eta": "float",
    "tfs_z": "float",
    "penalize_newline": "bool",
    "stop": "list",
    # runner
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "low_vram": "bool",
    "f16_kv": "bool",
    "logits_all": "bool",
    "vocab_only": "bool",
    "use_mmap": "bool",
    "use_mlock": "bool",
    "num_thread": "int",
    "numa": "bool",
}

_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_BOOL = {
    "1": True,
    "t": True,
    "T": True,
    "TRUE": True,
    "true": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "FALSE": False,
    "false": False,
    "False": False,
}


class ModelfileError(BhashaError, ValueError):
    """A Modelfile problem, phrased as one line for the user."""


@dataclass(frozen=True)
class Command:
    name: str  # lower-case instruction; FROM is stored as "model" (as Ollama does); PARAMETER as its name
    args: str
    line: int


@dataclass
class Modelfile:
    """A parsed Modelfile: the command list plus convenient views of it."""

    commands: list[Command] = field(default_factory=list)

    def _last(self, name: str) -> str | None:
        values = [c.args for c in self.commands if c.name == name]
        return values[-1] if values else None

    @property
    def from_(self) -> str:
        value = self._last("model")
        assert value is not None  # the parser refuses a file without FROM
        return value

    @property
    def template(self) -> str | None:
        return self._last("template")

    @property
    def system(self) -> str | None:
        return self._last("system")

    @property
    def license(self) -> list[str]:
        return [c.args for c in self.commands if c.name == "license"]

    @property
    def adapters(self) -> list[str]:
        return [c.args for c in self.commands if c.name == "adapter"]

    @property
    def messages(self) -> list[dict[str, str]]:
        out = []
        for c in self.commands:
            if c.name == "message":
                role, _, content = c.args.partition(": ")
                out.append({"role": role, "content": content})
        return out

    @property
    def raw_parameters(self) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        for c in self.commands:
            if c.name not in COMMANDS and c.name != "model":
                params.setdefault(c.name, []).append(c.args)
        return params

    @property
    def parameters(self) -> dict[str, Any]:
        """Typed parameters, as Ollama's FormatParams sends them to /api/create."""
        return format_params(self.raw_parameters)


def _go_is_print(ch: str) -> bool:
    # Go's strconv.IsPrint: categories L, M, N, P, S and the ASCII space.
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


def parse_modelfile(text: str) -> Modelfile:
    """Parse ``text`` with Ollama's state machine; raise ModelfileError('line N: ...') on bad input."""
    nil, name_state, value, parameter, message, comment = range(6)
    state = nil
    line = 1
    buf: list[str] = []
    role = ""
    cmd_name = ""
    commands: list[Command] = []
    text = text.removeprefix("\ufeff")  # Ollama decodes with a BOM override

    def finish_value(end_line: int) -> bool:
        nonlocal role
        content, ok = _unquote("".join(buf).strip(" \t\r\n"))
        if not ok:
            return False
        if role:
            content, role = f"{role}: {content}", ""
        commands.append(Command(cmd_name, content, end_line))
        return True

    for ch in text:
        if ch in "\r\n":
            line += 1
        is_space, is_newline = ch in " \t", ch in "\r\n"
        # parseRuneForState: the next state, and whether this rune is kept.
        keep = True
        if state == nil:
            if ch == "#":
                nxt, keep = comment, False
            elif is_space or is_newline:
                nxt, keep = nil, False
            else:
                nxt = name_state
        elif state == name_state:
            if ch.isascii() and ch.isalpha():
                nxt = name_state
            elif is_space:
                nxt, keep = value, False
            else:
                raise ModelfileError(
                    f"line {line}: command must be one of {', '.join(repr(c) for c in COMMANDS)}"
                )
        elif state == value:
            nxt = nil if (is_space or is_newline) else value
        elif state in (parameter, message):
            if ch.isascii() and (ch.isalpha() or (state == parameter and (ch.isdigit() or ch == "_"))):
                nxt = state
            elif is_space:
                nxt, keep = value, False
            else:
                what = "parameter name" if state == parameter else "message role"
                raise ModelfileError(f"line {line}: unexpected {ch!r} in {what}")
        else:  # comment
            nxt, keep = (nil, False) if is_newline else (comment, False)

        if nxt != state:
            word = "".join(buf)
            if state == name_state:
                lowered = word.lower()
                if lowered not in COMMANDS:
                    raise ModelfileError(
                        f"line {line}: unknown instruction {word!r}; "
                        f"command must be one of {', '.join(c.upper() for c in COMMANDS)}"
                    )
                if lowered == "from":
                    cmd_name = "model"
                elif lowered == "parameter":
                    nxt = parameter
                else:
                    cmd_name = lowered
                    if lowered == "message":
                        nxt = message
            elif state == parameter:
                cmd_name = word
            elif state == message:
                if word not in MESSAGE_ROLES:
                    raise ModelfileError(
                        f'line {line}: message role must be one of "system", "user", or '
                        f'"assistant", not {word!r}'
                    )
                role = word
            elif state == value and (is_space or not finish_value(line - 1)):
                # A space, or a newline inside an open quote, continues the value.
                buf.append(ch)
                continue
            buf.clear()
            state = nxt
        if keep and _go_is_print(ch):
            buf.append(ch)

    if state == value:
        if not finish_value(line):
            raise ModelfileError(f"line {line}: unexpected end of file inside a quoted value")
    elif state not in (nil, comment):
        raise ModelfileError(f"line {line}: unexpected end of file after {''.join(buf)!r}")
    if not any(c.name == "model" for c in commands):
        raise ModelfileError("no FROM line")
    modelfile = Modelfile(commands)
    format_params(modelfile.raw_parameters)  # unknown or mistyped parameters fail here, as in Ollama
    return modelfile


def format_params(params: dict[str, list[str]]) -> dict[str, Any]:
    """Ollama's api.FormatParams: typed values; unknown (case-sensitive) names are an error."""
    out: dict[str, Any] = {}
    for key, values in params.items():
        kind = PARAMETER_TYPES.get(key)
        if kind is None:
            hint = f" (did you mean '{key.lower()}'?)" if key.lower() in PARAMETER_TYPES else ""
            raise ModelfileError(f"unknown parameter '{key}'{hint}")
        first = values[0]
        if kind == "list":
            out[key] = list(values)
        elif kind == "int":
            if not _GO_INT.fullmatch(first):
                raise ModelfileError(f"invalid int value {values} for parameter '{key}'")
            out[key] = int(first)
        elif kind == "float":
            try:
                if "_" in first:
                    raise ValueError(first)
                out[key] = float(first)
            except ValueError:
                raise ModelfileError(f"invalid float value {values} for parameter '{key}'") from None
        else:
            if first not in _GO_BOOL:
                raise ModelfileError(f"invalid bool value {values} for parameter '{key}'")
            out[key] = _GO_BOOL[first]
    return out


def resolve_from(modelfile_path: Path, from_value: str) -> Path:
    """The local file a FROM names (relative to the Modelfile), refused if it leaves that folder."""
    folder = modelfile_path.parent.resolve()
    raw = Path(from_value).expanduser()
    target = (raw if raw.is_absolute() else folder / raw).resolve()
    if not target.is_relative_to(folder):
        raise ModelfileError(
            f"FROM {from_value!r} escapes the run folder {folder}; the GGUF must live inside it "
            "so the run folder stays self-contained"
        )
    return target


def _quote_value(text: str) -> str:
    return f'"{text}"' if (not text or text != text.strip() or " " in text) else text


def expected_parameters(cfg: BuildConfig) -> dict[str, Any]:
    """The typed parameters every rendered Modelfile must carry."""
    return {
        "stop": list(chat.STOP_TOKENS),
        "temperature": 0.0,
        "repeat_penalty": 1.0,
        "seed": cfg.seed,
        "num_ctx": cfg.model.max_seq_length,
    }


def _check_system(system: str) -> None:
    if '"""' in system:
        raise ModelfileError('system prompt contains """, which would end the Modelfile SYSTEM block early')
    dropped = sorted({f"U+{ord(ch):04X}" for ch in system if ch not in "\r\n\t" and not _go_is_print(ch)})
    if dropped:
        raise ModelfileError(
            f"system prompt contains characters Ollama's Modelfile parser drops ({', '.join(dropped)})"
        )


def render_text(
    from_value: str,
    cfg: BuildConfig,
    *,
    system: str = chat.SYSTEM_PROMPT,
    template_file: Path = TEMPLATE_FILE,
) -> str:
    """Fill Modelfile.template; no validation beyond the placeholders (render_modelfile does it)."""
    _check_system(system)
    for stop in chat.STOP_TOKENS:
        if '"' in stop or stop != stop.strip():
            raise ModelfileError(f"stop token {stop!r} cannot be written as a Modelfile value")
    text = template_file.read_text(encoding="utf-8")
    values = {
        "@@FROM@@": _quote_value(from_value),
        "@@SYSTEM@@": system,
        "@@QWEN_DEFAULT_SYSTEM@@": chat.QWEN_DEFAULT_SYSTEM,
        "@@STOP_PARAMETERS@@": "\n".join(f'PARAMETER stop "{s}"' for s in chat.STOP_TOKENS),
        "@@SEED@@": str(cfg.seed),
        "@@NUM_CTX@@": str(cfg.model.max_seq_length),
    }
    for key, val in values.items():
        if key not in text:
            raise ModelfileError(f"{template_file.name}: placeholder {key} is missing")
        text = text.replace(key, val)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ModelfileError(f"{template_file.name}: unknown placeholders {', '.join(left)}")
    return text


def expected_template(template_file: Path = TEMPLATE_FILE) -> str:
    """The TEMPLATE block exactly as rendered (placeholders in it filled)."""
    match = re.search(r'^TEMPLATE """(.*?)"""$', template_file.read_text(encoding="utf-8"), re.S | re.M)
    if not match:
        raise ModelfileError(f'{template_file.name}: no TEMPLATE """...""" block')
    return match.group(1).replace("@@QWEN_DEFAULT_SYSTEM@@", chat.QWEN_DEFAULT_SYSTEM)


def validate_modelfile(
    text: str,
    modelfile_path: Path,
    cfg: BuildConfig,
    *,
    system: str = chat.SYSTEM_PROMPT,
    template_file: Path = TEMPLATE_FILE,
) -> Modelfile:
    """Parse ``text`` by Ollama's rules and check it says exactly what was meant."""
    mf = parse_modelfile(text)
    froms = [c for c in mf.commands if c.name == "model"]
    if len(froms) != 1:
        raise ModelfileError(f"expected exactly one FROM line, found {len(froms)}")
    target = resolve_from(modelfile_path, mf.from_)
    if target.suffix != ".gguf":
        raise ModelfileError(f"FROM {mf.from_!r} is not a .gguf file")
    problems = []
    if mf.template != expected_template(template_file):
        problems.append("TEMPLATE differs from Modelfile.template after parsing")
    if mf.system != system:
        problems.append("SYSTEM differs from the training system prompt after parsing")
    if mf.parameters != expected_parameters(cfg):
        problems.append(f"PARAMETERs {mf.parameters} != expected {expected_parameters(cfg)}")
    if mf.adapters or mf.messages:
        problems.append("unexpected ADAPTER/MESSAGE lines")
    if problems:
        raise ModelfileError("rendered Modelfile is not what was meant: " + "; ".join(problems))
    return mf


def render_modelfile(
    gguf_path: str | Path,
    out_path: str | Path,
    cfg: BuildConfig,
    *,
    system: str = chat.SYSTEM_PROMPT,
    template_file: Path = TEMPLATE_FILE,
) -> str:
    """Render, validate and atomically write the Modelfile; returns its text.

    The modelfile stage (``run``) calls it with the run's GGUF and Modelfile paths (core/layout.py).
    """
    gguf_path, out_path = Path(gguf_path), Path(out_path)
    folder = out_path.parent.resolve()
    gguf = gguf_path if gguf_path.is_absolute() else Path.cwd() / gguf_path
    try:
        rel = gguf.resolve().relative_to(folder)
    except ValueError:
        raise ModelfileError(
            f"FROM {gguf_path} escapes the run folder {folder}; the GGUF must live inside it "
            "so the run folder stays self-contained"
        ) from None
    if not gguf.is_file():
        raise ModelfileError(f"FROM target {gguf_path} does not exist; run `invoke export` first")
    from_value = "./" + rel.as_posix()  # relative to the Modelfile, as Ollama resolves FROM
    text = render_text(from_value, cfg, system=system, template_file=template_file)
    validate_modelfile(text, out_path, cfg, system=system, template_file=template_file)
    atomic_write_text(out_path, text)
    return text


def run(cfg: BuildConfig, layout: RunLayout, **_: Any) -> dict[str, Any]:
    """The modelfile stage: render the run's Modelfile next to its GGUF."""
    render_modelfile(layout.gguf(cfg.export.quant), layout.modelfile, cfg)
    return {"path": layout.modelfile}
