"""A model's confidence in its change of a line, from the token log-probabilities of its reply.

Definition (one owner: `change_confidence`): the least probability the model gave to a token of its
change. The change is the character diff of the input and the reply (rapidfuzz Levenshtein opcodes,
on the reply as its tokens spell it, outer whitespace aside); a change token is a reply token whose
bytes overlap an inserted or replaced span, or, for a deletion, the token right after the deleted text
(the one chosen instead of copying it; the last token when the deletion is at the end). A reply equal
to its input has no change (None: nothing to accept or refuse), and so has a reply whose tokens do not
spell it (None: no evidence either way; `guard.accept` then lets the confidence rule pass).

Why the minimum over the change and not the mean log-prob of the reply: a line's change is only as
sure as its least sure edit, and the reply's mean is dominated by the copied tokens (each close to
probability 1), which hides a 0.3 guess among forty sure copies.

Probabilities are those of the model's own distribution before sampling (log-softmax of the logits),
as Ollama reports them (`"logprobs": true` on /api/chat: a `logprobs` list of {token, logprob, bytes,
top_logprobs}) and as `TokenRecorder` records them for llama.cpp (a logits processor: greedy decoding
then picks the argmax, so the recorded token is the one generated).

Knobs: correct.min_confidence (the threshold `guard.accept` applies; callers pass it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein


@dataclass(frozen=True)
class TokenProb:
    """One reply token: its bytes and the log-probability the model gave it."""

    bytes: bytes
    logprob: float


def from_ollama(logprobs: Any) -> list[TokenProb] | None:
    """Ollama's /api/chat `logprobs` ([{token, logprob, bytes, top_logprobs}]) → TokenProbs; None when
    the answer has none or they are not in that shape (an older server ignores the request field)."""
    if not isinstance(logprobs, list) or not logprobs:
        return None
    out = []
    for entry in logprobs:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("logprob"), (int, float)):
            return None
        raw = entry.get("bytes")
        if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
            data = bytes(raw)
        elif isinstance(entry.get("token"), str):
            data = entry["token"].encode("utf-8")
        else:
            return None
        out.append(TokenProb(data, float(entry["logprob"])))
    return out


def to_ollama(tokens: Sequence[tuple[bytes, float, Sequence[tuple[bytes, float]]]]) -> list[dict[str, Any]]:
    """Ollama's `logprobs` shape for (bytes, logprob, top alternatives) tokens (the contract server's)."""
    def entry(data: bytes, logprob: float) -> dict[str, Any]:
        return {"token": data.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(data)}

    return [{**entry(data, lp), "top_logprobs": [entry(d, p) for d, p in top]} for data, lp, top in tokens]


def change_confidence(noisy: str, tokens: Sequence[TokenProb] | None) -> float | None:
    """The least probability of a change token (module docstring); None when nothing changed or the
    tokens cannot be aligned."""
    if not tokens:
        return None
    data = b"".join(t.bytes for t in tokens)
    try:
        spelled = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    body = spelled.strip()
    if not body or body == noisy.strip():
        return None
    lead = len(spelled) - len(spelled.lstrip())
    # byte offset of every character of the reply (and of its end)
    offsets = [0]
    for ch in spelled:
        offsets.append(offsets[-1] + len(ch.encode("utf-8")))
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t.bytes)
    text_tokens = [i for i, t in enumerate(tokens) if t.bytes.strip()]
    marked: set[int] = set()
    for op in Levenshtein.opcodes(noisy.strip(), body):
        if op.tag == "equal":
            continue
        if op.dest_end > op.dest_start:
            lo, hi = offsets[lead + op.dest_start], offsets[lead + op.dest_end]
            marked.update(i for i, t in enumerate(tokens) if starts[i] < hi and starts[i] + len(t.bytes) > lo)
        else:  # a deletion: the token that follows it
            at = offsets[lead + op.dest_start]
            after = [i for i in text_tokens if starts[i] + len(tokens[i].bytes) > at]
            marked.add(after[0] if after else (text_tokens[-1] if text_tokens else len(tokens) - 1))
    if not marked:
        return None
    return min(math.exp(tokens[i].logprob) for i in marked)


class TokenRecorder:
    """A llama-cpp-python logits processor that records each generated token's log-probability (and the
    `top` most likely alternatives): called before each sampling step with the tokens so far, it
    learns the previous step's token from them; `finish` closes the last step (greedy: the argmax)."""

    def __init__(self, top: int = 0) -> None:
        self.top = top
        self.steps: list[tuple[int, float, list[tuple[int, float]]]] = []
        self._prev: Any = None
        self._consumed = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        if self._prev is not None:
            self._close(int(input_ids[-1]))
        shifted = scores.astype(np.float64) - float(np.max(scores))
        self._prev = shifted - math.log(float(np.exp(shifted).sum()))
        return scores

    def _close(self, chosen: int) -> None:
        import numpy as np

        prev, alternatives = self._prev, []
        if self.top > 0:
            best = np.argpartition(-prev, min(self.top, len(prev) - 1))[: self.top]
            alternatives = sorted(((int(i), float(prev[i])) for i in best), key=lambda p: -p[1])
        self.steps.append((chosen, float(prev[chosen]), alternatives))
        self._prev = None

    def finish(self) -> None:
        """Close the last step: the token greedy decoding took there is the argmax."""
        if self._prev is not None:
            self._close(int(self._prev.argmax()))

    def take(self) -> list[tuple[int, float, list[tuple[int, float]]]]:
        """The steps recorded since the last take (the contract server streams them chunk by chunk)."""
        new = self.steps[self._consumed:]
        self._consumed = len(self.steps)
        return new


def token_probs(steps: Iterable[tuple[int, float, Any]], detokenize: Any, stop_ids: Iterable[int] = ()
                ) -> list[TokenProb]:
    """TokenRecorder steps → TokenProbs with each token's bytes (`detokenize([id]) -> bytes`), up to the
    first stop token."""
    stops, out = set(stop_ids), []
    for token, logprob, _ in steps:
        if token in stops:
            break
        out.append(TokenProb(bytes(detokenize([token])), logprob))
    return out
