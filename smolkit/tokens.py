"""How a text splits into tokens: the unit the model reads, predicts, and max_new_tokens / min_tokens count.

A token is not a word: common words are one token (often with their leading space, ' Paris'), rare words split into
pieces ('un', 'belie', 'v', 'ably'), and digits are one token each for SmolLM2. These helpers show the split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from smolkit import _checks
from smolkit.models import LoadedModel

__all__ = ["TokenPiece", "count_tokens", "format_pieces", "show_tokens", "split_tokens", "visible"]


@dataclasses.dataclass(frozen=True)
class TokenPiece:
    """One token of a text: its id in the vocabulary and the text it adds."""

    id: int
    text: str


def visible(text: str) -> str:
    """A token's text with its whitespace made visible: space as '␣', newline as '⏎', tab as '⇥', empty as '∅'.

    >>> visible(" Paris"), visible("\\n\\n"), visible("")
    ('␣Paris', '⏎⏎', '∅')
    """
    if text == "":
        return "∅"
    return text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣")


def format_pieces(pieces: Sequence[str]) -> str:
    """The pieces of a text in brackets, one bracket per token, whitespace visible.

    >>> format_pieces(["Hello", " world", "!"])
    '[Hello][␣world][!]'
    """
    return "".join(f"[{visible(p)}]" for p in pieces)


def split_tokens(lm: LoadedModel, text: str, chat: bool = False) -> list[TokenPiece]:
    """The tokens of ``text`` as the model reads them, in order.

    ``chat=False`` (default) tokenizes the text as it is, the way generated text is counted; ``chat=True`` shows
    the whole prompt the model reads for a question, chat template included. A character split over several
    tokens (some accented letters, emoji) shows as '�' in the pieces that hold only part of it.
    """
    text = _checks.text("text", text)
    ids = lm.encode(text, chat=chat)[0].tolist() if text or chat else []
    return [TokenPiece(int(i), lm.token_text(i)) for i in ids]


def count_tokens(lm: LoadedModel, text: str, chat: bool = False) -> int:
    """How many tokens ``text`` is for this model's tokenizer (see ``split_tokens``)."""
    return len(split_tokens(lm, text, chat=chat))


def show_tokens(lm: LoadedModel, text: str, chat: bool = False) -> str:
    """One line: how many tokens ``text`` is, then each token in brackets, e.g. '3 tokens: [Hello][␣world][!]'."""
    pieces = split_tokens(lm, text, chat=chat)
    return f"{len(pieces)} token{'s' if len(pieces) != 1 else ''}: {format_pieces([p.text for p in pieces])}"
