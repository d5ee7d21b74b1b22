"""The Module API: names, state dicts, gradients, modes, dtypes and backends."""
import numpy as np
import pytest

from whitebox import backend
from whitebox.gradcheck import check_module
from whitebox.losses import cross_entropy
from whitebox.nn import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, Module,
                         ModuleList, Patchify, ReLU, Sequential, Softmax)


class Block(Module):
    """A pre-norm residual MLP block: x + fc(norm(x))."""

    def __init__(self, d, dtype="float32", seed=0):
        super().__init__(dtype)
        self.norm = LayerNorm(d, dtype=dtype)
        self.fc = Linear(d, d, dtype=dtype, seed=seed)

    def forward(self, x):
        return x + self.fc(self.norm(x))

    def backward(self, dout):
        return dout + self.norm.backward(self.fc.backward(dout))


class Net(Module):
    """Attribute children, a ModuleList of Sequentials, and a bias-free head."""

    def __init__(self, d_in=4, d=6, classes=3, p=0.0, dtype="float32"):
        super().__init__(dtype)
        self.embed = Linear(d_in, d, dtype=dtype, seed=1)
        self.layers = ModuleList([Sequential(Block(d, dtype, seed=2), GELU(), dtype=dtype),
                                  Sequential(Block(d, dtype, seed=3), Dropout(p), dtype=dtype)],
                                 dtype=dtype)
        self.head = Linear(d, classes, bias=False, dtype=dtype, seed=4)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def backward(self, dout):
        dout = self.head.backward(dout)
        for layer in reversed(list(self.layers)):
            dout = layer.backward(dout)
        return self.embed.backward(dout)


NET_KEYS = [
    ("embed.weight", (6, 4)), ("embed.bias", (6,)),
    ("layers.0.0.norm.weight", (6,)), ("layers.0.0.norm.bias", (6,)),
    ("layers.0.0.fc.weight", (6, 6)), ("layers.0.0.fc.bias", (6,)),
    ("layers.1.0.norm.weight", (6,)), ("layers.1.0.norm.bias", (6,)),
    ("layers.1.0.fc.weight", (6, 6)), ("layers.1.0.fc.bias", (6,)),
    ("head.weight", (3, 6)),
]


def run_backward(model, x, seed=0):
    out = model(x)
    model.backward(np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype))


def _mlp(dtype="float32"):
    """Linear-ReLU-LayerNorm-Linear, 5 -> 7 -> 3."""
    return Sequential(Linear(5, 7, dtype=dtype, seed=0), ReLU(), LayerNorm(7, dtype=dtype),
                      Linear(7, 3, dtype=dtype, seed=1), dtype=dtype)


# ------------------------------------------------------------------ names


def test_state_dict_names_compose_like_pytorch():
    sd = Net().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == NET_KEYS


@pytest.mark.torch
def test_state_dict_names_equal_a_torch_twin():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TBlock(tnn.Module):
        def __init__(self, d):
            super().__init__()
            self.norm, self.fc = tnn.LayerNorm(d), tnn.Linear(d, d)

    class TNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.embed = tnn.Linear(4, 6)
            self.layers = tnn.ModuleList([tnn.Sequential(TBlock(6), tnn.GELU()),
                                          tnn.Sequential(TBlock(6), tnn.Dropout(0.0))])
            self.head = tnn.Linear(6, 3, bias=False)

    theirs = {k: tuple(v.shape) for k, v in TNet().state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in Net().state_dict().items()}
    assert list(ours.items()) == list(theirs.items())


@pytest.mark.torch
def test_torch_weights_loaded_give_torch_outputs(rng):
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    twin = tnn.Sequential(tnn.Linear(5, 7), tnn.ReLU(), tnn.LayerNorm(7), tnn.Linear(7, 3))
    twin = twin.double()
    with torch.no_grad():
        twin[2].weight.normal_()
        twin[2].bias.normal_()
    model = _mlp("float64")
    model.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})
    x = rng.standard_normal((2, 4, 5))
    np.testing.assert_allclose(model(x), twin(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_sequential_and_modulelist_indexing():
    seq = _mlp()
    assert isinstance(seq[0], Linear) and isinstance(seq[-1], Linear) and seq[-1] is seq[3]
    assert len(seq) == 4
    with pytest.raises(IndexError, match=r"Sequential index 4 out of range for 4 modules"):
        seq[4]
    ml = ModuleList([ReLU(), GELU()])
    assert isinstance(ml[-1], GELU)
    with pytest.raises(IndexError, match=r"ModuleList index -3 out of range"):
        ml[-3]
    for bad in (1.0, True):
        with pytest.raises(TypeError, match=rf"ModuleList index must be an integer, got {bad}"):
            ml[bad]


def test_replacing_a_child_with_a_plain_value_unregisters_it():
    net = Net()
    net.head = None
    assert not any(k.startswith("head.") for k in net.state_dict())


# ------------------------------------------------------------- state dicts


def test_load_state_dict_round_trip(rng):
    a, b = Net(), Net()
    for v in b.state_dict().values():      # make b differ from a everywhere
        v[...] = rng.standard_normal(v.shape)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    assert not np.allclose(a(x), b(x))
    before = {k: id(v) for k, v in b.state_dict().items()}
    result = b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    assert result == {"missing": [], "unexpected": []}
    np.testing.assert_array_equal(a(x), b(x))
    assert {k: id(v) for k, v in b.state_dict().items()} == before   # copied in place


def test_load_state_dict_casts_to_the_module_dtype():
    m = Linear(3, 2)
    m.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(2)})
    assert m.param("weight").dtype == np.float32
    np.testing.assert_array_equal(m.param("weight"), 1.0)


def test_load_state_dict_missing_key():
    sd = Net().state_dict()
    del sd["layers.1.0.fc.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['layers\.1\.0\.fc\.bias'\]"):
        Net().load_state_dict(sd)


def test_load_state_dict_unexpected_key():
    sd = dict(Net().state_dict(), **{"head.bias": np.zeros(3)})
    with pytest.raises(KeyError, match=r"unexpected keys \['head\.bias'\]"):
        Net().load_state_dict(sd)


def test_load_state_dict_misshaped_key_names_both_shapes():
    sd = dict(Net().state_dict())
    sd["head.weight"] = np.zeros((4, 6))
    with pytest.raises(ValueError, match=r"'head\.weight' has shape \(4, 6\), expected \(3, 6\)"):
        Net().load_state_dict(sd)


def test_load_state_dict_non_strict_reports_instead_of_raising():
    net = Net()
    result = net.load_state_dict({"embed.weight": np.full((6, 4), 0.5), "extra": np.zeros(1)},
                                 strict=False)
    assert result["unexpected"] == ["extra"]
    assert set(result["missing"]) == {k for k, _ in NET_KEYS} - {"embed.weight"}
    np.testing.assert_array_equal(net.state_dict()["embed.weight"], 0.5)


def test_load_state_dict_rejects_bad_values():
    with pytest.raises(TypeError, match=r"state must be a dict of arrays, got list"):
        Linear(2, 2).load_state_dict([])
    with pytest.raises(TypeError, match=r"key 'weight' must hold a NumPy or CuPy array, "
                                        r"got builtins.list"):
        Linear(2, 2).load_state_dict({"weight": [[1, 2], [3, 4]], "bias": np.zeros(2)})
    with pytest.raises(ValueError, match=r"key 'bias' holds NaN"):
        Linear(2, 2).load_state_dict({"weight": np.zeros((2, 2)), "bias": np.full(2, np.nan)})
    layer = Linear(2, 2)                          # float32: 1e39 does not fit, nothing changes
    before = layer.param("weight").copy()
    with pytest.raises(ValueError, match=r"key 'bias' holds NaN or infinite values "
                                         r"\(in the model's float32\)"):
        layer.load_state_dict({"weight": np.ones((2, 2)), "bias": np.full(2, 1e39)})
    np.testing.assert_array_equal(layer.param("weight"), before)


def test_load_state_dict_says_how_to_load_torch_tensors():
    torch = pytest.importorskip("torch")
    layer = Linear(2, 2)
    state = {k: torch.from_numpy(v) for k, v in layer.state_dict().items()}
    with pytest.raises(TypeError, match=r"key 'weight' must hold a NumPy or CuPy array, got "
                                        r"torch.Tensor \(convert with t.numpy\(\), or read an "
                                        r"official checkpoint with whitebox.interop.load_official"):
        layer.load_state_dict(state)


# -------------------------------------------------------------- gradients


def test_grads_are_keyed_like_the_state_dict():
    net = Net()
    grads, sd = net.grads(), net.state_dict()
    assert list(grads) == list(sd)
    assert all(grads[k].shape == sd[k].shape and grads[k].dtype == sd[k].dtype for k in sd)


def test_zero_grad_clears_every_gradient(rng):
    net = Net()
    run_backward(net, rng.standard_normal((2, 4)).astype(np.float32))
    assert all(np.any(g != 0) for g in net.grads().values())
    net.zero_grad()
    assert all(np.all(g == 0) for g in net.grads().values())


def test_backward_adds_into_gradients(rng):
    net = Net()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    run_backward(net, x)
    once = {k: g.copy() for k, g in net.grads().items()}
    run_backward(net, x)
    for k, g in net.grads().items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-6, err_msg=k)


class TwiceLinear(Module):
    """y = lin(lin(x)): one weight used twice, so its gradient has two terms.

    A module keeps one cache, so the outer module keeps the inner call's
    cache and hands it back for the matching backward.
    """

    def __init__(self, d, dtype="float64"):
        super().__init__(dtype)
        self.lin = Linear(d, d, dtype=dtype, seed=5)

    def forward(self, x):
        h = self.lin(x)
        first_cache = self.lin._cache
        out = self.lin(h)
        self._cache = (first_cache, self.lin._cache)
        return out

    def backward(self, dout):
        first_cache, second_cache = self._take_cache()
        self.lin._cache = second_cache
        dh = self.lin.backward(dout)
        self.lin._cache = first_cache
        return self.lin.backward(dh)


def test_a_weight_used_twice_gets_both_contributions(rng):
    model = TwiceLinear(4)
    errors = check_module(model, [rng.standard_normal((3, 4))])
    assert set(errors) == {"lin.weight", "lin.bias", "input 0"}
    assert max(errors.values()) < 1e-7

    # and a backward that kept only the second use would be caught
    class OnlySecondUse(TwiceLinear):
        def backward(self, dout):
            first_cache, second_cache = self._take_cache()
            self.lin._cache = second_cache
            dh = self.lin.backward(dout)
            return dh @ self.lin.param("weight")

    with pytest.raises(AssertionError, match=r"gradient of lin\.weight"):
        check_module(OnlySecondUse(4), [rng.standard_normal((3, 4))])


@pytest.mark.parametrize("module", [Linear(3, 2), LayerNorm(3), ReLU(), GELU(), Softmax(),
                                    Dropout(0.5), Identity(), Patchify(2), Embedding(5, 3),
                                    _mlp(), Block(3)],
                         ids=lambda m: type(m).__name__)
def test_backward_before_forward_raises(module):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        module.backward(np.zeros((2, 3), dtype=np.float32))


def test_backward_twice_for_one_forward_raises(rng):
    m = Dropout(0.5).eval()                         # even the identity pass is tracked
    m(rng.standard_normal((2, 3)))
    m.backward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"Dropout\.backward called before forward"):
        m.backward(np.ones((2, 3)))


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)])
def test_whole_small_model_passes_check_module(rng, shape):
    errors = check_module(_mlp("float64"), [rng.standard_normal(shape)])
    assert set(errors) == {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias",
                           "input 0"}
    assert max(errors.values()) < 1e-7


def test_tree_model_passes_check_module_with_a_loss(rng):
    labels = np.array([0, 2, 1])
    errors = check_module(Net(dtype="float64"), [rng.standard_normal((3, 4))],
                          loss=lambda out: cross_entropy(out, labels))
    assert len(errors) == len(NET_KEYS) + 1 and max(errors.values()) < 1e-7


# -------------------------------------------------------------- modes


def test_train_and_eval_propagate_to_every_descendant(rng):
    net = Net(p=0.5)
    assert net.eval() is net
    assert all(not m.training for _, m in net.named_modules())
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(net(x), net(x))   # dropout is the identity in eval mode
    net.train()
    assert all(m.training for _, m in net.named_modules())
    assert not np.allclose(net(x), net(x))          # fresh masks each call in training


def test_num_params():
    expected = (4 * 6 + 6) + 2 * (6 + 6 + 6 * 6 + 6) + 6 * 3
    assert Net().num_params() == expected
    assert Embedding(10, 3).num_params() == 30 and ReLU().num_params() == 0


# -------------------------------------------------------------- dtypes


def test_float32_is_the_default_and_init_does_not_upcast(rng):
    net = Net()
    assert net.dtype == "float32"
    assert all(v.dtype == np.float32 for v in net.state_dict().values())
    assert all(g.dtype == np.float32 for g in net.grads().values())
    x = rng.standard_normal((2, 4)).astype(np.float32)
    out = net(x)
    assert out.dtype == np.float32
    net.backward(np.ones_like(out))
    assert all(g.dtype == np.float32 for g in net.grads().values())


def test_float64_is_chosen_at_construction():
    net = Net(dtype="float64")
    assert all(v.dtype == np.float64 for v in net.state_dict().values())
    # the same seeds draw the same numbers; float32 is their rounding
    for k, v in Net().state_dict().items():
        np.testing.assert_allclose(v, net.state_dict()[k], rtol=1e-7, atol=1e-7)
    assert Embedding(4, 2, dtype=np.float64).param("weight").dtype == np.float64


@pytest.mark.parametrize("bad", ["float16", "int64", "complex", None])
def test_unsupported_dtype_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"dtype must be one of \('float32', 'float64'\)"):
        Linear(2, 2, dtype=bad)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match=r"in_features must be a positive integer, got 0"):
        Linear(0, 2)
    with pytest.raises(ValueError, match=r"normalized dimension d must be a positive integer"):
        LayerNorm(2.5)
    with pytest.raises(ValueError, match=r"approximate must be 'none' or 'tanh', got 'exact'"):
        GELU("exact")
    with pytest.raises(ValueError, match=r"num_embeddings must be a positive integer, got -1"):
        Embedding(-1, 3)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"x has 3 input features"):
        Linear(4, 2)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"last dimension 3 .*expected 4"):
        LayerNorm(4)(np.zeros((2, 3), np.float32))


# -------------------------------------------------------------- backends


def test_to_numpy_keeps_arrays_on_numpy(rng):
    net = Net()
    assert net.to("numpy") is net and net.backend == "numpy"
    assert all(isinstance(v, np.ndarray) for v in net.state_dict().values())


def test_to_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy'\), got 'tpu'"):
        Net().to("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present")
@pytest.mark.parametrize("module", [Net(), ReLU()], ids=["with_params", "without_params"])
def test_to_cupy_without_a_gpu_is_a_clear_runtime_error(module):
    with pytest.raises(RuntimeError, match=r"backend 'cupy' was asked for, but cupy is"):
        module.to("cupy")


@pytest.mark.gpu
def test_to_cupy_moves_everything_and_matches_numpy(rng):
    if not backend.gpu_available():
        pytest.skip("no CuPy/GPU available")
    cp = backend.xp_of("cupy")
    x = rng.standard_normal((2, 4)).astype(np.float32)
    ref = Net()
    out_ref = ref(x)
    ref.backward(np.ones_like(out_ref))
    net = Net().to("cupy")
    assert net.backend == "cupy"
    assert all(isinstance(v, cp.ndarray) for v in net.state_dict().values())
    assert all(isinstance(g, cp.ndarray) for g in net.grads().values())
    out = net(cp.asarray(x))
    net.backward(cp.ones_like(out))
    np.testing.assert_allclose(backend.to_numpy(out), out_ref, rtol=1e-5, atol=1e-6)
    for k, g in net.grads().items():
        np.testing.assert_allclose(backend.to_numpy(g), ref.grads()[k], rtol=1e-4, atol=1e-5)
    assert all(isinstance(v, np.ndarray) for v in net.to("numpy").state_dict().values())


def test_unpatchify_module_inverts_patchify_and_checks_out():
    from whitebox.nn import Patchify, Unpatchify
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6))
    p = Patchify((2, 3), dtype="float64")
    u = Unpatchify((2, 3, 4, 6), (2, 3), dtype="float64")
    np.testing.assert_array_equal(u(p(x)), x)
    check_module(u, [p(x)])


def test_load_state_dict_refuses_integer_arrays():
    m = Linear(2, 3)
    sd = {k: np.ones(v.shape, dtype=np.int64) for k, v in m.state_dict().items()}
    with pytest.raises(TypeError, match="expected floating point"):
        m.load_state_dict(sd)


def test_generators_lists_each_dropout_generator_once():
    a, b = Dropout(0.1, seed=1), Dropout(0.1, seed=2)
    model = Sequential(Linear(2, 2), a, Sequential(b, ReLU()))
    gens = model.generators()
    assert gens == {"1": a.rng, "2.0": b.rng}


def _overcomplete(tied):
    from whitebox.nn import OvercompleteISTA
    return OvercompleteISTA(4, 2, tied=tied, dtype="float64")


def _alpha_layer():
    from whitebox.nn import AlphaLayer
    return AlphaLayer(4, 2, 2, dtype="float64")


def _lm_block():
    from whitebox.nn import LMBlock
    return LMBlock(4, 2, 1, dtype="float64")


@pytest.mark.parametrize("make,x,name", [
    (lambda: _overcomplete(True), np.ones((2, 3, 4)), "OvercompleteISTA"),
    (lambda: _overcomplete(False), np.ones((2, 3, 4)), "OvercompleteISTA"),
    (_alpha_layer, np.ones((2, 3, 4)), "OvercompleteISTA"),
    (_lm_block, np.ones((2, 3, 4)), "OvercompleteISTA"),
    (lambda: Dropout(0.5), np.ones((2, 3, 4)), "Dropout"),
    (lambda: Dropout(0.0), np.ones((2, 3, 4)), "Dropout"),
    (lambda: Embedding(5, 4), np.array([[0, 1, 2]]), "embedding"),
])
def test_backward_names_a_dout_of_the_wrong_shape(make, x, name):
    """The shape of the upstream gradient is checked where a module's backward begins,
    not discovered by a product deep inside (or broadcast)."""
    import re
    m = make()
    out = m(x)
    with pytest.raises(ValueError, match=re.escape(f"{name} backward: dout has shape (10, 4), "
                                                   f"expected {tuple(out.shape)}")):
        m.backward(np.zeros((10, 4)))


def test_overcomplete_ista_tied_must_be_a_bool():
    from whitebox.nn import OvercompleteISTA
    with pytest.raises(TypeError, match="tied must be True or False, got 'no'"):
        OvercompleteISTA(4, tied="no")
