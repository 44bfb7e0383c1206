"""Showing how a text splits into tokens, on the real embedded tokenizer."""

from __future__ import annotations

import pytest

from smolkit.tokens import TokenPiece, count_tokens, format_pieces, show_tokens, split_tokens, visible


def test_pieces_rebuild_the_text(lm):
    text = "Tokenization is not word splitting."
    pieces = split_tokens(lm, text)
    assert "".join(p.text for p in pieces) == text
    assert all(isinstance(p, TokenPiece) for p in pieces)
    assert [p.id for p in pieces] == lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_rare_word_is_several_tokens_a_common_one_is_one(lm):
    assert count_tokens(lm, " Paris") == 1
    assert count_tokens(lm, "unbelievably") > 1


def test_chat_counts_the_template(lm):
    question = "What is the capital of France?"
    with_template = split_tokens(lm, question, chat=True)
    assert len(with_template) == lm.encode(question).shape[1]
    assert len(with_template) > count_tokens(lm, question)
    assert "".join(p.text for p in with_template).find(question) >= 0


def test_show_tokens_line(lm):
    line = show_tokens(lm, "Hello world!")
    n = count_tokens(lm, "Hello world!")
    assert line.startswith(f"{n} tokens: [")
    assert "[␣world]" in line
    assert show_tokens(lm, "") == "0 tokens: "


def test_visible_and_format():
    assert visible(" a\tb\n") == "␣a⇥b⏎"
    assert format_pieces([]) == ""
    assert format_pieces([" ", ""]) == "[␣][∅]"


def test_text_must_be_a_string(lm):
    with pytest.raises(TypeError, match="text must be a string"):
        split_tokens(lm, 42)


def test_stop_ids_are_tokens_not_text(lm):
    """Notebook 08's claims: `."`, `.)` and `...` are tokens of their own (a stop on `.` misses them), a blank line is
    another token than a newline, and convert_tokens_to_ids does not find the newline by its spelling."""

    def encoded(text):
        return lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    period = lm.tokenizer.convert_tokens_to_ids(".")
    assert encoded(".") == [period]
    for text in ('."', ".)", "..."):
        assert len(encoded(text)) == 1 and encoded(text) != [period], text
    (newline,) = encoded("\n")
    assert lm.tokenizer.convert_tokens_to_ids("\n") != newline
    assert len(encoded("\n\n")) == 1 and encoded("\n\n") != [newline]
