"""Text data: the character tokenizer, the pydoc corpus, windows and the baselines."""
import json

import numpy as np
import pytest

from whitebox.data.text import (CharTokenizer, bigram_cross_entropy, pydoc_corpus,
                                random_windows, read_text, sequential_windows, split_text,
                                unigram_accuracy)


def test_tokenizer_round_trip_and_json():
    tok = CharTokenizer.from_text("hello, world! " * 10, specials=("<mask>",))
    assert tok.chars == sorted(set("hello, world! "))
    assert tok.vocab_size == len(tok.chars) + 1 and tok.token_id("<mask>") == tok.vocab_size - 1
    ids = tok.encode("world, hello")
    assert ids.dtype == np.int64 and tok.decode(ids) == "world, hello"
    assert tok.decode([tok.token_id("<mask>")]) == "<mask>"
    back = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back == tok and back.encode("hello").tolist() == ids[7:].tolist()
    assert CharTokenizer.from_text("abc" * 30) != CharTokenizer.from_text("abd" * 30)


def test_tokenizer_errors():
    tok = CharTokenizer.from_text("abc" * 30)
    with pytest.raises(ValueError, match="'z' is not in the tokenizer's vocabulary"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([3])
    with pytest.raises(ValueError, match="at least 64"):
        CharTokenizer.from_text("short")
    with pytest.raises(TypeError, match="must be a str"):
        CharTokenizer.from_text(b"bytes" * 40)
    with pytest.raises(ValueError, match="not a character tokenizer"):
        CharTokenizer.from_dict({"kind": "bpe"})


def test_pydoc_corpus_split_by_position():
    text = pydoc_corpus()
    assert 400_000 < len(text) < 600_000 and "for" in text
    train, test = split_text(text, 0.1)
    assert train + test == text and abs(len(test) / len(text) - 0.1) < 1e-3


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="0 characters"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_text("x" * 100, encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "x" * 100
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 40)
    with pytest.raises(ValueError, match=r"latin1.txt' is not UTF-8 text \(byte 3: "):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="at least 128"):
        split_text("y" * 100)


def test_windows_are_shifted_by_one():
    ids = np.arange(50)
    x, y = random_windows(ids, 8, 4, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(y, x + 1)
    xs, ys = sequential_windows(ids, 8)
    assert xs.shape == (6, 8) and xs[1, 0] == 8
    np.testing.assert_array_equal(ys, xs + 1)
    with pytest.raises(ValueError, match="fewer than block_size"):
        random_windows(ids[:5], 8, 2, np.random.default_rng(0))


def test_baselines():
    # a deterministic cycle: the bigram model predicts it almost surely
    ids = np.tile(np.arange(5), 200)
    assert bigram_cross_entropy(ids, ids, 5, alpha=0.01) < 0.01
    assert abs(bigram_cross_entropy(ids, ids, 5, alpha=1e6) - np.log(5)) < 1e-3
    assert unigram_accuracy(np.array([1, 1, 2]), np.array([1, 2, 2, 1])) == 0.5
