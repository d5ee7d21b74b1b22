"""Text for the language models: a character tokenizer, a corpus that ships with Python, batches.

The default corpus is the text of Python's own documentation topics,
``pydoc_data.topics`` in the standard library (the pages ``help("if")`` or
``help("FORMATTING")`` print: about 465,000 characters of English prose and
code about the language). Nothing is downloaded. Any UTF-8 text file works
too (``read_text(path)``, ``--data path.txt``).

A corpus is split by position (first part to train, last part held out),
never by shuffling characters, so the held-out text is unseen prose.
"""
import json
import os

import numpy as np

MIN_CHARS = 64        # below this a corpus cannot fill even a tiny training window


class CharTokenizer:
    """One id per distinct character (sorted), then the special tokens (e.g. "<mask>").

    ``CharTokenizer.from_text(text, specials=("<mask>",))`` builds it from a
    corpus; ``to_dict()``/``from_dict()`` store it as plain JSON, which is
    how it travels inside a checkpoint.
    """

    def __init__(self, chars, specials=()):
        chars, specials = list(chars), list(specials)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be a non-empty sequence of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct")
        if any(not isinstance(s, str) or len(s) < 2 or s in chars for s in specials) or \
                len(set(specials)) != len(specials):
            raise ValueError(f"specials must be distinct names of two or more characters, "
                             f"got {specials!r}")
        self.chars, self.specials = chars, specials
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.stoi.update({s: len(chars) + i for i, s in enumerate(specials)})
        self.itos = chars + specials

    @classmethod
    def from_text(cls, text, specials=()):
        check_text(text, "text")
        return cls(sorted(set(text)), specials)

    @property
    def vocab_size(self):
        return len(self.itos)

    def token_id(self, name):
        """The id of a character or special token."""
        if name not in self.stoi:
            raise KeyError(f"{name!r} is not in the vocabulary")
        return self.stoi[name]

    def encode(self, text):
        """str -> int64 array of ids (specials are not parsed out of text)."""
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's vocabulary "
                             f"({len(self.chars)} characters)") from None

    def decode(self, ids):
        """ids -> str (a special token is written as its name)."""
        ids = np.asarray(ids).reshape(-1)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(f"id {int(ids[bad][0])} is outside the vocabulary "
                             f"[0, {self.vocab_size})")
        return "".join(self.itos[i] for i in ids.tolist())

    def to_dict(self):
        return {"kind": "char", "chars": "".join(self.chars), "specials": list(self.specials)}

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict) or d.get("kind") != "char":
            raise ValueError(f"not a character tokenizer: {d!r:.80}")
        return cls(list(d["chars"]), d.get("specials", ()))

    def __eq__(self, other):
        return isinstance(other, CharTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"CharTokenizer({len(self.chars)} chars, specials={self.specials})"

    def to_json(self):
        return json.dumps(self.to_dict())


def check_text(text, name="text", min_chars=MIN_CHARS):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if len(text) < min_chars:
        raise ValueError(f"{name} has {len(text)} characters; at least {min_chars} are needed")
    return text


def pydoc_corpus():
    """The standard library's documentation topics as one string (topics in sorted order)."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


def read_text(path):
    """A UTF-8 text file as a str, with clear errors for a missing, empty or short file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"text file {path!r} is not UTF-8 text (byte {e.start}: {e.reason}); "
                         "the language-model tasks read UTF-8") from e
    return check_text(text, f"text file {path!r}")


def split_text(text, held_out=0.1, min_chars=MIN_CHARS):
    """(train, test): the first 1 - held_out of the characters, and the rest."""
    check_text(text, "text", 2 * min_chars)
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out!r}")
    cut = int(round(len(text) * (1 - held_out)))
    cut = min(max(cut, min_chars), len(text) - min_chars)
    return text[:cut], text[cut:]


def random_windows(ids, block_size, batch_size, rng):
    """``batch_size`` random windows of ``block_size`` ids and the same shifted by one.

    Returns x (B, T) and y (B, T) with y[:, t] = ids[start + t + 1] (next-token targets).
    """
    n = len(ids) - block_size - 1
    if n < 0:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than block_size + 1 = "
                         f"{block_size + 1}")
    starts = rng.integers(0, n + 1, size=batch_size)
    offsets = starts[:, None] + np.arange(block_size)[None, :]     # (B, T)
    return ids[offsets], ids[offsets + 1]


def sequential_windows(ids, block_size, max_windows=None):
    """Non-overlapping windows covering ``ids`` in order: x (n, T), y (n, T) shifted by one."""
    n = (len(ids) - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than block_size + 1 = "
                         f"{block_size + 1}")
    x = ids[:n * block_size].reshape(n, block_size)
    y = ids[1:n * block_size + 1].reshape(n, block_size)
    return x, y


def bigram_cross_entropy(train_ids, test_ids, vocab_size, alpha=1.0):
    """Held-out cross-entropy (nats/token) of a bigram model counted on ``train_ids``.

    p(b | a) = (count(a b) + alpha) / (count(a) + alpha V), add-alpha smoothed
    so unseen pairs keep a probability. Scored on every pair of test_ids.
    """
    counts = np.zeros((vocab_size, vocab_size))
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1)
    counts += alpha
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    return float(-logp[test_ids[:-1], test_ids[1:]].mean())


def unigram_accuracy(train_ids, test_ids):
    """Accuracy of always guessing the most frequent training token, on ``test_ids``."""
    top = np.bincount(train_ids).argmax()
    return float((np.asarray(test_ids) == top).mean())
