"""text -> ids -> text is the identity for every text an encode accepts, and a text a tokenizer
cannot give back is refused with the position where it changes: an encode never stores a
different text. Property-based (hypothesis) over arbitrary Unicode."""

from __future__ import annotations

import dataclasses

import pytest
from edge_cases import EDGE_TEXTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import normalizers
from typer.testing import CliRunner

from prototok.cli import app
from prototok.codec import encode_texts, tokenize_checked
from prototok.errors import InvalidInput
from prototok.models import load_model
from prototok.testing import byte_tokenizer
from prototok.textio import first_difference

ANY_TEXT = st.text(min_size=1, max_size=40)  # every code point but lone surrogates (category Cs)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def nfkc(tiny):
    """The tiny model with a tokenizer that normalises (NFKC), as some real tokenizers do."""
    tok = byte_tokenizer()
    tok.backend_tokenizer.normalizer = normalizers.NFKC()
    return dataclasses.replace(tiny, name="tiny-nfkc", tokenizer=tok)


def accepted_or_refused_at_the_change(lm, text: str) -> None:
    """The property every model must have: the ids give the text back, or the text is refused
    naming the first character that comes back changed."""
    back = lm.detokenize(lm.tokenize(text))
    if back == text:
        ids = tokenize_checked(lm, text)
        assert lm.detokenize(ids) == text
        return
    with pytest.raises(InvalidInput, match=f"at character {first_difference(text, back)},"):
        tokenize_checked(lm, text)


@PROPERTY
@given(text=ANY_TEXT)
def test_a_byte_level_tokenizer_gives_every_text_back(tiny, text):
    assert tiny.detokenize(tokenize_checked(tiny, text)) == text


@PROPERTY
@given(text=ANY_TEXT)
def test_a_normalising_tokenizer_is_accepted_or_refused_at_the_change(nfkc, text):
    accepted_or_refused_at_the_change(nfkc, text)


def test_a_text_the_tokenizer_changes_is_refused_before_anything_is_optimised(nfkc):
    with pytest.raises(InvalidInput, match=r"at character 3, 'ﬁne' comes back as 'fine'"):
        encode_texts(nfkc, ["so ﬁne"])


def test_a_lone_surrogate_is_refused_naming_it(tiny):
    with pytest.raises(InvalidInput, match="lone surrogate '\\\\udc80' at character 2"):
        tokenize_checked(tiny, "ab\udc80")


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct")


@pytest.mark.integration
@PROPERTY
@given(text=ANY_TEXT)
def test_smollm2_gives_a_text_back_or_refuses_it_at_the_change(smollm2, text):
    accepted_or_refused_at_the_change(smollm2, text)


@pytest.mark.integration
def test_smollm2_takes_the_edge_corpus_and_refuses_what_its_vocabulary_lacks(smollm2, tmp_path):
    """Its vocabulary has no token for some bytes (e.g. 0x16, and 0xF1/0xF2 that begin the characters
    U+40000-U+BFFFF): a text holding one is refused, by the library and by the CLI (exit 2)."""
    for name, text in EDGE_TEXTS.items():
        assert smollm2.detokenize(tokenize_checked(smollm2, text)) == text, name
    for text, at in (("sync\x16idle", 4), ("plane 5: \U000539f5", 9)):
        with pytest.raises(InvalidInput, match=f"at character {at},"):
            tokenize_checked(smollm2, text)
    res = CliRunner().invoke(app, ["encode", "sync\x16idle", "--out", str(tmp_path / "e.safetensors")])
    assert res.exit_code == 2 and "does not give this text back exactly: at character 4" in res.output
    assert not (tmp_path / "e.safetensors").exists()
