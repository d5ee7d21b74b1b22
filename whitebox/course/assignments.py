"""The assignments: which library functions each part asks a student to write.

An assignment is a week of work built from one or two tutorials. Each part
names the library functions a student writes (``"path/in/whitebox.py:qualname"``,
with ``Class.method`` for methods), the points it is worth, and the tutorial
section that derives it. ``hidden`` names other arrangements of the same
answer that the library keeps (a readable reference, a fused loop): a
release strips them too, so the answer is not left in view, but they are not
asked for; only the functions the part asks for call them, and grading runs
with the fused loops off (WHITEBOX_FUSED=0), so nothing graded needs them. The checks that grade a part live in
``whitebox/course/checks/test_<assignment>_part<N>_*.py``; they are shipped to
students as their visible tests and run by the grader.
"""
import pathlib
from dataclasses import dataclass, field

LIBRARY = pathlib.Path(__file__).resolve().parents[2]      # the project holding whitebox/


@dataclass(frozen=True)
class Part:
    number: int
    title: str
    points: int
    functions: tuple            # ("whitebox/rate/gram.py:gram_logdet_forward", ...)
    tutorial: str               # "01_coding_rate.py"
    section: str                # words of the heading that derives it
    hours: float = 2.0          # expected student time
    hidden: tuple = ()          # other arrangements of the answer, stripped but not asked

    def function_names(self):
        return [f.split(":")[1] for f in self.functions]


@dataclass(frozen=True)
class Assignment:
    key: str
    title: str
    summary: str
    tutorials: tuple
    parts: tuple = field(default_factory=tuple)
    coming: str = ""            # non-empty: not available yet, and why

    @property
    def points(self):
        return sum(p.points for p in self.parts)

    @property
    def hours(self):
        return sum(p.hours for p in self.parts)

    def part(self, number):
        for p in self.parts:
            if p.number == number:
                return p
        raise KeyError(f"{self.key} has no part {number} (parts: "
                       f"{', '.join(str(p.number) for p in self.parts)})")


A1 = Assignment(
    "A1", "The coding rate",
    "How many nats a set of tokens costs, its exact gradient through a Cholesky "
    "log-determinant, the compression rate against subspaces, and MCR^2.",
    ("01_coding_rate.py",),
    (
        Part(1, "coding rate R(Z) and its gradient", 10,
             ("whitebox/rate/gram.py:gram_logdet_forward",
              "whitebox/rate/gram.py:gram_logdet_backward",
              "whitebox/rate/coding.py:coding_rate_forward",
              "whitebox/rate/coding.py:coding_rate_backward"),
             "01_coding_rate.py", "The gradient, derived", 3.0),
        Part(2, "compression rate against subspaces, and one exact step", 10,
             ("whitebox/rate/compression.py:compression_rate_forward",
              "whitebox/rate/compression.py:compression_rate_backward",
              "whitebox/rate/compression.py:compression_step"),
             "01_coding_rate.py", "Compression against subspaces", 3.0),
        Part(3, "MCR^2 and its gradient", 10,
             ("whitebox/rate/mcr2.py:class_compression_forward",
              "whitebox/rate/mcr2.py:class_compression_backward",
              "whitebox/rate/mcr2.py:mcr2_loss"),
             "01_coding_rate.py", "data model", 2.0),
    ))

A2 = Assignment(
    "A2", "Attention as compression",
    "Softmax and LayerNorm backward, then multi-head subspace self-attention "
    "forward and backward, with the symmetric term that q = k = v creates.",
    ("02_mssa.py",),
    (
        Part(1, "softmax forward and backward", 5,
             ("whitebox/functional/softmax.py:softmax_forward",
              "whitebox/functional/softmax.py:softmax_backward"),
             "02_mssa.py", "MSSA backward", 1.0,
             hidden=("whitebox/functional/fused.py:subtract_row_max",
                     "whitebox/functional/fused.py:divide_row_sum")),
        Part(2, "LayerNorm backward", 5,
             ("whitebox/functional/layernorm.py:layernorm_backward",),
             "02_mssa.py", "MSSA backward", 2.0,
             hidden=("whitebox/functional/layernorm.py:layernorm_reference_backward",
                     "whitebox/functional/fused.py:layernorm_rows_backward")),
        Part(3, "MSSA forward and backward (with the symmetric q = k = v term)", 25,
             ("whitebox/functional/mssa.py:mssa_forward",
              "whitebox/functional/mssa.py:mssa_backward"),
             "02_mssa.py", "MSSA forward", 6.0,
             hidden=("whitebox/functional/fused.py:attention_scores_backward",)),
    ))

A3 = Assignment(
    "A3", "Sparse coding and the whole layer",
    "One ISTA step forward and backward, one whole CRATE layer, then the "
    "network's reverse walk, a small training run and per-layer compression.",
    ("03_ista.py", "04_crate_end_to_end.py"),
    (
        Part(1, "ISTA step forward and backward", 10,
             ("whitebox/functional/ista.py:ista_forward",
              "whitebox/functional/ista.py:ista_backward"),
             "03_ista.py", "backward with", 3.0),
        Part(2, "one CRATE layer: forward and backward", 10,
             ("whitebox/nn/crate_layers.py:PreNorm.backward",
              "whitebox/nn/crate_layers.py:CRATELayer.forward",
              "whitebox/nn/crate_layers.py:CRATELayer.backward"),
             "03_ista.py", "One whole CRATE layer", 2.0),
        Part(3, "the network's reverse walk, training, per-layer compression", 10,
             ("whitebox/models/crate.py:LayerStack.forward",
              "whitebox/models/crate.py:LayerStack.backward",
              "whitebox/rate/measure.py:measure_compression"),
             "04_crate_end_to_end.py", "compression and sparsity per layer", 3.0),
    ))

A4_PARTS = (
    Part(1, "the masked-autoencoding loss and the mask token", 10,
         ("whitebox/functional/masked_mse.py:masked_mse_forward",
          "whitebox/functional/masked_mse.py:masked_mse_backward",
          "whitebox/functional/masking.py:mask_tokens_forward",
          "whitebox/functional/masking.py:mask_tokens_backward"),
         "05_denoising_decoder.py", "A small CRATE-MAE", 2.0),
    Part(2, "one decoder layer: forward and backward", 10,
         ("whitebox/nn/decoder_layers.py:DecoderLayer.forward",
          "whitebox/nn/decoder_layers.py:DecoderLayer.backward"),
         "05_denoising_decoder.py", "decoder layer", 2.0),
    Part(3, "the masked autoencoder's backward, and a training run", 10,
         ("whitebox/models/crate_mae.py:CRATEMAE.backward",),
         "05_denoising_decoder.py", "A small CRATE-MAE", 3.0),
)


def _missing(parts):
    """The functions of ``parts`` that this library does not have (by reading its sources)."""
    from .strip import _functions
    import ast
    missing = []
    for part in parts:
        for spec in part.functions:
            path, name = spec.split(":")
            file = LIBRARY / path
            if not file.exists() or name not in _functions(ast.parse(file.read_text())):
                missing.append(spec)
    return missing


A4 = Assignment(
    "A4", "The decoder: masked autoencoding with CRATE-MAE",
    "The masked-autoencoding loss, one decoder layer (compression run backwards) "
    "forward and backward, then the whole masked autoencoder's reverse walk.",
    ("05_denoising_decoder.py",),
    A4_PARTS,
    coming="" if not _missing(A4_PARTS) else
    "the CRATE-MAE decoder (whitebox/models/crate_mae.py, whitebox/nn/decoder_layers.py) "
    "is not in this library yet; A4 opens when it is")

ASSIGNMENTS = {a.key: a for a in (A1, A2, A3, A4)}


def get_assignment(key):
    """The assignment named ``key`` ('A2' or 'a2'); a clear error otherwise."""
    a = ASSIGNMENTS.get(str(key).upper())
    if a is None:
        raise KeyError(f"no assignment {key!r}; choose one of {', '.join(ASSIGNMENTS)}")
    return a
