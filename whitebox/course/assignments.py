"""The assignments: which library functions each part asks a student to write.

An assignment is a week of work built from one or two tutorials. Each part
names the library functions a student writes (``"path/in/whitebox.py:qualname"``,
with ``Class.method`` for methods), the points it is worth, and the tutorial
section that derives it. ``hidden`` names other arrangements of the same
answer that the library keeps (a readable reference, a fused loop): a
release strips them too (a hidden function the library does not have is
skipped: the release audit finds any path left open), so the answer is not
left in view, but they are not asked for; only the functions the part asks
for call them, and grading runs with the fused loops off (WHITEBOX_FUSED=0),
so nothing graded needs them. The checks that grade a part are registered in
``whitebox/course/checks/<assignment>.py`` (``@check(key, part, weight=...)``)
and run by the grader's judge (whitebox.course.judge); a release ships the
values they compare with, not the checks (whitebox.course.visible).

``setup``, ``probes`` and ``calls`` feed the release audit
(whitebox.course.audit): ``setup`` draws a part's inputs with NumPy; each
Probe is another way to the part's answer that a release must close (it
must raise, or return something else, on the handout); ``calls`` give the
arguments of a graded function, with which every function of the handout
that takes them is tried.
"""
import pathlib
import re
from dataclasses import dataclass, field

LIBRARY = pathlib.Path(__file__).resolve().parents[2]      # the project holding whitebox/


@dataclass(frozen=True)
class Probe:
    """A snippet that reaches a part's answer another way: it sets ``out`` (an array or a
    tuple of arrays) from the names ``setup`` made. ``answer``: the snippet that gives
    the answer on the library, when it is not ``code`` itself. ``optional``: a way
    that the library may not offer (an option of a function being reshaped); when it
    fails on the library the audit notes it instead of failing, since the probes
    through the Modules still cover it."""
    label: str
    code: str
    answer: str = ""
    optional: bool = False


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
    setup: str = ""             # NumPy code drawing the inputs of the probes and calls
    probes: tuple = ()          # Probe(...): other ways to the answer, closed in a release
    calls: tuple = ()           # (graded function, "its arguments, from setup's names")

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


# ---- what the release audit tries on each part (whitebox.course.audit)

A1_SETUP = """
r = np.random.default_rng(0)
Z = r.standard_normal((6, 4))                                  # (N, d)
U = np.stack([np.linalg.qr(r.standard_normal((4, 2)))[0] for _ in range(2)])   # (K, d, p)
labels = np.array([0, 1, 0, 1, 1, 0])
eps, kappa = 0.5, 0.1
X, a = r.standard_normal((6, 4)), 0.7
"""
EXACT_STEP = """
from whitebox.functional import mssa_variant_forward
K, d, p = U.shape
b = p / (Z.shape[0] * eps ** 2)
W = U.transpose(0, 2, 1).reshape(K * p, d)                     # rows: the stacked U_k^T
y, _ = mssa_variant_forward(Z[None], W, W.T, None, K, scale=b, update="exact",
                            gain=kappa * b)                    # tied: W_out = W_qkv^T
out = Z + y[0]
"""
EXACT_STEP_MODULE = """
from whitebox.nn import MSSA
K, d, p = U.shape
m = MSSA(d, heads=K, dim_head=p, out="tied", scale="rate", update="exact", eps=eps,
         kappa=kappa, dtype="float64")
m.qkv._params["weight"][...] = U.transpose(0, 2, 1).reshape(K * p, d)
out = Z + m(Z[None])[0]
"""
STEP_ANSWER = "from whitebox.rate import compression_step\nout = compression_step(Z, U, eps, kappa)"

TOKENS_SETUP = """
r = np.random.default_rng(0)
x = r.standard_normal((2, 5, 6))                               # (B, N, d)
W_qkv = r.standard_normal((6, 6)) * 0.5
W_out = r.standard_normal((6, 6)) * 0.5
b_out = r.standard_normal(6)
W = r.standard_normal((6, 6)) * 0.3
dout = r.standard_normal((2, 5, 6))
gamma, beta = 1 + 0.1 * r.standard_normal(6), 0.1 * r.standard_normal(6)
"""

DECODER_PARAMS = """
from whitebox.nn.decoder_layers import DecoderLayer
m = DecoderLayer(6, 2, 3, dtype='float64')
ps = [m.inverse_ista.norm.param('weight'), m.inverse_ista.norm.param('bias'),
      m.inverse_ista.fn.param('weight'),
      m.attn.norm.param('weight'), m.attn.norm.param('bias'), m.attn.fn.qkv.param('weight'),
      m.attn.fn.to_out[0].param('weight'), m.attn.fn.to_out[0].param('bias')]
"""


def module_probe(label, where, make, call="m(x)"):
    """m = ``make`` (an expression that builds a float64 Module, its leading name imported
    from module ``where``), then forward ``call`` and backward with the setup's dout."""
    name = re.match(r"\w+", make).group()
    return Probe(label, f"from {where} import {name}\nm = {make}\nm.train()\ny = {call}\n"
                        "out = (y, m.backward(dout))")


MSSA_PROBES = (
    module_probe("the MSSA Module, forward and backward",
                 "whitebox.nn", "MSSA(6, heads=2, dim_head=3, dtype='float64')"),
    module_probe("the language model's attention, forward and backward",
                 "whitebox.nn.lm_layers", "LMAttention(6, 2, 1, causal=True, dtype='float64')"),
    Probe("the language model's attention, one inference step",
          "from whitebox.nn.lm_layers import LMAttention\n"
          "m = LMAttention(6, 2, 1, causal=True, dtype='float64')\n"
          "out = m.decode_step(x, None)[0]"),
    module_probe("the CRATE-alpha layer's attention, forward and backward",
                 "whitebox.nn.alpha_layers", "AlphaLayer(6, 2, 3, dtype='float64').attn.fn"),
)


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
             "01_coding_rate.py", "The gradient, derived", 3.0,
             setup=A1_SETUP,
             calls=(("gram_logdet_forward", "X, a"), ("coding_rate_forward", "Z, eps"))),
        Part(2, "compression rate against subspaces, and one exact step", 10,
             ("whitebox/rate/compression.py:compression_rate_forward",
              "whitebox/rate/compression.py:compression_rate_backward",
              "whitebox/rate/compression.py:compression_step"),
             "01_coding_rate.py", "Compression against subspaces", 3.0,
             hidden=("whitebox/functional/mssa_exact.py:exact_heads_forward",
                     "whitebox/functional/mssa_exact.py:exact_heads_backward"),
             setup=A1_SETUP,
             probes=(Probe("the exact-step, tied MSSA: one step on the compression rate",
                           EXACT_STEP, STEP_ANSWER, optional=True),
                     Probe("the MSSA Module with out='tied', scale='rate', update='exact'",
                           EXACT_STEP_MODULE, STEP_ANSWER)),
             calls=(("compression_rate_forward", "Z, U, eps"),
                    ("compression_step", "Z, U, eps, kappa"))),
        Part(3, "MCR^2 and its gradient", 10,
             ("whitebox/rate/mcr2.py:class_compression_forward",
              "whitebox/rate/mcr2.py:class_compression_backward",
              "whitebox/rate/mcr2.py:mcr2_loss"),
             "01_coding_rate.py", "data model", 2.0,
             setup=A1_SETUP,
             calls=(("class_compression_forward", "Z, labels, eps"),
                    ("mcr2_loss", "Z, labels, eps"))),
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
                     "whitebox/functional/fused.py:divide_row_sum",
                     "whitebox/functional/softmax.py:softmax_fast_forward",
                     "whitebox/functional/softmax.py:softmax_fast_backward"),
             setup=TOKENS_SETUP, calls=(("softmax_forward", "x"),)),
        Part(2, "LayerNorm backward", 5,
             ("whitebox/functional/layernorm.py:layernorm_backward",),
             "02_mssa.py", "MSSA backward", 2.0,
             hidden=("whitebox/functional/layernorm.py:layernorm_reference_backward",
                     "whitebox/functional/fused.py:layernorm_rows_backward"),
             setup=TOKENS_SETUP,
             probes=(module_probe("the LayerNorm Module, forward and backward",
                                  "whitebox.nn", "LayerNorm(6, dtype='float64')"),)),
        Part(3, "MSSA forward and backward (with the symmetric q = k = v term)", 25,
             ("whitebox/functional/mssa.py:mssa_forward",
              "whitebox/functional/mssa.py:mssa_backward"),
             "02_mssa.py", "MSSA forward", 6.0,
             hidden=("whitebox/functional/fused.py:attention_scores_backward",
                     "whitebox/functional/mssa.py:attention_heads_fast_forward",
                     "whitebox/functional/mssa.py:attention_heads_fast_backward",
                     "whitebox/functional/mssa.py:mssa_fast_forward",
                     "whitebox/functional/mssa.py:mssa_fast_backward",
                     "whitebox/functional/mssa_variants.py:mssa_variant_forward",
                     "whitebox/functional/mssa_variants.py:mssa_variant_backward",
                     "whitebox/functional/mssa_decode.py:mssa_decode",
                     "whitebox/functional/attention.py:sdpa_forward",
                     "whitebox/functional/attention.py:sdpa_backward",
                     "whitebox/functional/attention.py:sdpa_fast_forward",
                     "whitebox/functional/attention.py:sdpa_fast_backward",
                     "whitebox/nn/lm_layers.py:LMAttention.decode_step"),
             setup=TOKENS_SETUP, probes=MSSA_PROBES,
             calls=(("mssa_forward", "x, W_qkv, W_out, b_out, 2"),)),
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
             "03_ista.py", "backward with", 3.0,
             hidden=("whitebox/functional/overcomplete_ista.py:overcomplete_ista_backward",),
             setup=TOKENS_SETUP,
             probes=(module_probe("the ISTA Module, forward and backward",
                                  "whitebox.nn", "ISTA(6, dtype='float64')"),),
             calls=(("ista_forward", "x, W, 0.1, 0.1"),)),
        Part(2, "one CRATE layer: forward and backward", 10,
             ("whitebox/nn/crate_layers.py:PreNorm.backward",
              "whitebox/nn/crate_layers.py:CRATELayer.forward",
              "whitebox/nn/crate_layers.py:CRATELayer.backward"),
             "03_ista.py", "One whole CRATE layer", 2.0,
             hidden=("whitebox/nn/block.py:ResidualBlock.forward",
                     "whitebox/nn/block.py:ResidualBlock.backward"),
             setup=TOKENS_SETUP,
             probes=(module_probe("the CRATE layer, forward and backward",
                                  "whitebox.nn", "CRATELayer(6, 2, 3, dtype='float64')"),
                     module_probe("the CRATE-alpha layer, forward and backward",
                                  "whitebox.nn.alpha_layers",
                                  "AlphaLayer(6, 2, 3, dtype='float64')"))),
        Part(3, "the network's reverse walk, training, per-layer compression", 10,
             ("whitebox/models/crate.py:LayerStack.forward",
              "whitebox/models/crate.py:LayerStack.backward",
              "whitebox/rate/measure.py:measure_compression"),
             "04_crate_end_to_end.py", "compression and sparsity per layer", 3.0,
             setup=TOKENS_SETUP + "Z, U = x[0], W_qkv.T.reshape(6, 2, 3).transpose(1, 0, 2)\n",
             probes=(module_probe("the layer stack, forward and backward",
                                  "whitebox.models.crate",
                                  "Transformer(6, 2, 2, 3, dtype='float64')"),),
             calls=(("measure_compression", "Z, U"),)),
    ))

A4_PARTS = (
    Part(1, "the masked-autoencoding loss and the mask token", 10,
         ("whitebox/functional/masked_mse.py:masked_mse_forward",
          "whitebox/functional/masked_mse.py:masked_mse_backward",
          "whitebox/functional/masking.py:mask_tokens_forward",
          "whitebox/functional/masking.py:mask_tokens_backward"),
         "05_denoising_decoder.py", "A small CRATE-MAE", 2.0,
         setup=TOKENS_SETUP + "mask = (r.random((2, 5)) < 0.5).astype(float)\n"
                              "token = r.standard_normal(6)\n",
         calls=(("masked_mse_forward", "x, dout, mask"),
                ("mask_tokens_forward", "x, mask, token"))),
    Part(2, "one decoder layer: forward and backward", 10,
         ("whitebox/nn/decoder_layers.py:DecoderLayer.forward",
          "whitebox/nn/decoder_layers.py:DecoderLayer.backward"),
         "05_denoising_decoder.py", "decoder layer", 2.0,
         setup=TOKENS_SETUP,
         probes=(module_probe("the decoder layer, forward and backward",
                              "whitebox.nn.decoder_layers",
                              "DecoderLayer(6, 2, 3, dtype='float64')"),
                 Probe("tutorial 05's decoder layer in named steps",
                       DECODER_PARAMS + "t = tutorial('05_denoising_decoder.py')\n"
                       "y, c = t.decoder_steps_forward(x, *ps, 2)\n"
                       "out = (y, t.decoder_steps_backward(dout, c)[0])",
                       DECODER_PARAMS + "y = m(x)\nout = (y, m.backward(dout))"))),
    Part(3, "the masked autoencoder's backward, and a training run", 10,
         ("whitebox/models/crate_mae.py:CRATEMAE.backward",),
         "05_denoising_decoder.py", "A small CRATE-MAE", 3.0,
         setup="r = np.random.default_rng(0)\nimages = r.standard_normal((2, 3, 8, 8))\n"
               "mask = np.array([[1, 0, 1, 0], [0, 1, 1, 0]], dtype=float)\n",
         probes=(Probe("the masked autoencoder, forward and backward",
                       "from whitebox.models import CRATEMAE\n"
                       "m = CRATEMAE(8, 4, 8, 1, 2, 1, dtype='float64')\n"
                       "loss, pred, _ = m(images, mask=mask)\n"
                       "out = (loss, m.backward())"),)),
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
