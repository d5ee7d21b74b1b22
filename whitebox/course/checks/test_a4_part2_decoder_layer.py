"""A4 part 2: one CRATE-MAE decoder layer, y = LN0(x) W^T, out = y - MSSA(LN1(y))."""
import pytest

from course_helpers import assert_close, describe, rng
from module_checks import check_module_gradients
from whitebox.nn.decoder_layers import DecoderLayer


@pytest.mark.parametrize("softmax", [True, False])
def test_decoder_layer_forward(softmax):
    L = DecoderLayer(6, heads=2, dim_head=3, softmax=softmax, dtype="float64", seed=1)
    x = rng(1).standard_normal((2, 4, 6))
    y = L.inverse_ista(x)
    expected = y - L.attn.fn(L.attn.norm(y))
    assert_close("DecoderLayer.forward", L(x), expected, describe(x=x, softmax=softmax), 1e-12)


def test_decoder_layer_forward_capture():
    L = DecoderLayer(6, heads=2, dim_head=3, dtype="float64", seed=2)
    x = rng(2).standard_normal((2, 4, 6))
    capture = {k: [] for k in ("y", "mssa_in", "attention", "z")}
    out = L(x, capture)
    assert all(len(v) == 1 for v in capture.values()), \
        "DecoderLayer.forward(x, capture) must append one entry to each capture list " \
        f"{list(capture)}; got lengths {[len(v) for v in capture.values()]}"
    assert_close('DecoderLayer.forward: capture["z"]', capture["z"][0], out, "", 1e-12)


@pytest.mark.parametrize("softmax", [True, False])
def test_decoder_layer_backward(softmax):
    L = DecoderLayer(6, heads=2, dim_head=3, softmax=softmax, dtype="float64", seed=3)
    x = rng(3).standard_normal((2, 4, 6))
    check_module_gradients("DecoderLayer.backward", L, x,
                           hint="out = y - MSSA(LN1(y)): the MSSA branch receives -dout, "
                                "and dy = dout + (its backward); then inverse_ista's backward")
