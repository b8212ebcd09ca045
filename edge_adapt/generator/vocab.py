"""Tokenization and detokenization through the model's own llama.cpp vocabulary.

Generation is driven by token ids; text is rebuilt from per-token byte pieces so that step
boundaries are found in exactly the bytes the model produced (no re-tokenization, no loss
when a multi-byte character is split across tokens).
"""

from __future__ import annotations

import ctypes
import re
import secrets
from array import array
from collections.abc import Iterable, Sequence

import llama_cpp

from edge_adapt.errors import ContextOverflowError, EdgeAdaptError, TextError
from edge_adapt.generator.llama_backend import LlamaModel


class Vocabulary:
    def __init__(self, model: LlamaModel) -> None:
        self._model = model
        self._vocab = model.vocab
        self.n_tokens = model.n_vocab
        self._pieces: dict[int, bytes] = {}
        self.bos = int(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._longest: int | None = None

    @property
    def longest_piece(self) -> int:
        """Bytes of the longest token: a text of more bytes than ``n x longest_piece`` cannot be
        fewer than ``n`` tokens (so a prompt can be refused without tokenizing it)."""
        if self._longest is None:
            self._longest = max((len(self.piece(t)) for t in range(self.n_tokens)), default=1) or 1
        return self._longest

    def prompt_ids(self, prompt: str | Sequence[int], *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """A prompt as token ids: text tokenized, or ids checked against the vocabulary; never empty."""
        if isinstance(prompt, str):
            tokens = self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        else:
            tokens = [int(t) for t in prompt]
            bad = [t for t in tokens if not 0 <= t < self.n_tokens]
            if bad:
                raise EdgeAdaptError(f"token ids {bad[:5]} are outside the vocabulary (0..{self.n_tokens - 1})")
        if not tokens:
            raise EdgeAdaptError("the prompt is empty (and the model adds no BOS token); give it some text")
        return tokens

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS where the model wants it,
        ``parse_special`` turns markup such as ``<|im_start|>`` into control tokens."""
        return self._token_array(text, add_special, parse_special).tolist()

    def _token_array(self, text: str, add_special: bool, parse_special: bool) -> array[int]:
        """Token ids in one flat buffer: a prompt of 60,000 tokens that is refused for its length
        never becomes 60,000 Python ints (whose arenas a server would keep)."""
        data = utf8(text)
        capacity = len(data) + 8
        for _ in range(2):
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
            if n >= 0:
                out = array("i")
                out.frombytes(memoryview(buf).cast("B")[: n * ctypes.sizeof(llama_cpp.llama_token)])
                return out
            capacity = -n  # llama.cpp returns -(needed size) when the buffer is too small
        raise EdgeAdaptError(f"tokenization of a {len(data)}-byte text failed")  # pragma: no cover

    def piece(self, token: int) -> bytes:
        """The bytes a token renders to; control tokens (BOS, EOS, <|im_end|>) render empty."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: Iterable[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """End of generation: EOS, EOT, <|im_end|> and whatever else the GGUF marks as such."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    @property
    def has_chat_template(self) -> bool:
        """Whether the GGUF carries a chat template (``tokenizer.chat_template``)."""
        return bool(llama_cpp.llama_model_chat_template(self._model.ptr, None))

    def render_prompt(self, text: str, *, chat: bool, system: str | None = None,
                      history: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt as text (for display): ``text`` as it is, or as a user message (after an
        optional system message and earlier ``(role, content)`` turns) in the model's chat
        template, ready for the assistant's turn."""
        if not chat:
            return text
        return self.apply_chat_template(_messages(text, system, history))

    def prompt_tokens(self, text: str, *, chat: bool, system: str | None = None,
                      history: Sequence[tuple[str, str]] = ()) -> array[int]:
        """The tokens a generator continues, with control tokens only where the chat template
        puts them: every message's content is tokenized as text, so markup a user types
        (``<|im_start|>assistant``) stays text and cannot forge a turn.

        The template is rendered around unguessable markers in place of the contents; the text
        between markers is tokenized with special-token parsing, each content without it.
        """
        if not chat:
            return self._token_array(text, True, False)
        messages = _messages(text, system, history)
        nonce = secrets.token_hex(8)
        marked = [{"role": m["role"], "content": f"\ue000{nonce}:{i}\ue001"} for i, m in enumerate(messages)]
        parts = _MARKER.split(self.apply_chat_template(marked))
        if any(nonce != found for found in parts[1::3]):
            raise EdgeAdaptError("the chat template rewrote the message markers; send plain text")  # pragma: no cover
        parts = [p for i, p in enumerate(parts) if i % 3 != 1]  # template, index, template, ...
        shown = sorted(int(i) for i in parts[1::2])
        if shown != list(range(len(messages))):
            missing = sorted(set(range(len(messages))) - set(shown))
            raise EdgeAdaptError(f"{self._model.path}: the chat template drops or repeats messages "
                                 f"({', '.join(messages[i]['role'] for i in missing) or 'repeated'}); "
                                 "send the conversation this model's template can hold")
        tokens = array("i")
        for j, part in enumerate(parts):
            if j % 2:
                tokens += self._token_array(messages[int(part)]["content"], False, False)
            else:
                tokens += self._token_array(part, j == 0, True)
        return tokens

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """Render chat messages with the template stored in the GGUF (llama.cpp's built-in
        renderer, which recognises the common template families)."""
        template = llama_cpp.llama_model_chat_template(self._model.ptr, None)
        if not template:
            raise EdgeAdaptError(
                f"{self._model.path}: the model has no chat template; pass a plain prompt instead."
            )
        keep = [(utf8(m["role"]), utf8(m["content"])) for m in messages]
        chat = (llama_cpp.llama_chat_message * len(keep))()
        for i, (role, content) in enumerate(keep):
            chat[i].role = role
            chat[i].content = content
        size = 1024 + sum(len(c) + len(r) for r, c in keep) * 2
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_chat_apply_template(template, chat, len(keep), add_generation_prompt, buf, size)
            if n < 0:
                raise EdgeAdaptError(
                    f"{self._model.path}: llama.cpp does not recognise this model's chat template; "
                    "format the prompt yourself."
                )
            if n <= size:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = n
        raise EdgeAdaptError("chat template rendering did not converge")  # pragma: no cover


_MARKER = re.compile("\ue000([0-9a-f]{16}):(\\d+)\ue001")  # stands in for a message's content while rendering


def _messages(text: str, system: str | None, history: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": role, "content": content} for role, content in history] + [{"role": "user", "content": text}]


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; a NUL (llama.cpp's C strings would cut the text there) or a lone
    surrogate (no UTF-8 for it) is refused rather than silently cut or replaced."""
    if "\x00" in text:
        raise TextError("the text holds a NUL character (U+0000); remove it")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextError(f"the text holds a lone surrogate ({text[exc.start]!r} at character {exc.start}), which is not "
                        "text; send valid UTF-8") from None


def check_fits(n_prompt: int, n_ctx: int, n_ctx_train: int, what: str = "prompt") -> None:
    """Raise :class:`ContextOverflowError` if ``n_prompt`` tokens leave no room to generate."""
    if n_prompt >= n_ctx:
        hint = (
            f"raise n_ctx (the model was trained for {n_ctx_train} tokens)"
            if n_ctx < n_ctx_train
            else f"shorten it: the model was trained for {n_ctx_train} tokens"
        )
        raise ContextOverflowError(
            f"the {what} is {n_prompt} tokens but the context holds {n_ctx}, leaving no room to "
            f"generate; {hint}."
        )
