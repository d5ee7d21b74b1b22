"""Optimizers against their update rules written out by hand and against torch.optim;
weight-decay masks, resuming from state_dict, gradient clipping and schedules."""
import math
import re

import numpy as np
import pytest

from whitebox import nn
from whitebox.backend import backend_name, to_device, to_numpy
from whitebox.gradcheck import rel_error
from whitebox.optim import (DEFAULT_NO_DECAY, SGD, Adam, AdamW, Lion, StepDecay, WarmupCosine,
                            clip_grad_norm, decay_mask)

# a 2-D weight (decayed), a bias and a position table (both exempt)
SHAPES = {"fc.weight": (4, 3), "fc.bias": (4,), "pos_embedding": (1, 3, 4)}
DECAYS = {"fc.weight": True, "fc.bias": False, "pos_embedding": False}
N_STEPS = 6


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def make_grad_sequence(seed=1, n=N_STEPS):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(n)]


def moved(arrays, xp):
    return {k: to_device(v.copy(), "cupy" if xp is not np else "numpy") for k, v in arrays.items()}


# ------------------------------------------------------------ hand-written rules
def sgd_reference(params, grad_seq, lr, momentum, nesterov, wd):
    p = {k: v.copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    for grads in grad_seq:
        for k in p:
            g = grads[k] + (wd * p[k] if DECAYS[k] else 0.0)
            if momentum:
                buf[k] = momentum * buf[k] + g
                g = g + momentum * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr * g
    return p


def adam_reference(params, grad_seq, lr, b1, b2, eps, wd, decoupled):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, grads in enumerate(grad_seq, start=1):
        for k in p:
            g = grads[k]
            if DECAYS[k] and decoupled:
                p[k] = p[k] - lr * wd * p[k]
            elif DECAYS[k]:
                g = g + wd * p[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g ** 2
            m_hat = m[k] / (1 - b1 ** t)
            v_hat = v[k] / (1 - b2 ** t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def lion_reference(params, grad_seq, lr, b1, b2, wd):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    for grads in grad_seq:
        for k in p:
            update = np.sign(b1 * m[k] + (1 - b1) * grads[k])
            p[k] = p[k] - lr * (update + (wd * p[k] if DECAYS[k] else 0.0))
            m[k] = b2 * m[k] + (1 - b2) * grads[k]
    return p


CASES = [
    ("sgd", lambda P, G: SGD(P, 0.1, grads=G),
     lambda P, S: sgd_reference(P, S, 0.1, 0.0, False, 0.0)),
    ("sgd-wd", lambda P, G: SGD(P, 0.1, weight_decay=0.3, grads=G),
     lambda P, S: sgd_reference(P, S, 0.1, 0.0, False, 0.3)),
    ("sgd-momentum-wd", lambda P, G: SGD(P, 0.05, momentum=0.9, weight_decay=0.2, grads=G),
     lambda P, S: sgd_reference(P, S, 0.05, 0.9, False, 0.2)),
    ("sgd-nesterov-wd", lambda P, G: SGD(P, 0.05, momentum=0.8, nesterov=True,
                                         weight_decay=0.2, grads=G),
     lambda P, S: sgd_reference(P, S, 0.05, 0.8, True, 0.2)),
    ("adam", lambda P, G: Adam(P, 0.01, grads=G),
     lambda P, S: adam_reference(P, S, 0.01, 0.9, 0.999, 1e-8, 0.0, False)),
    ("adam-wd", lambda P, G: Adam(P, 0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3,
                                  grads=G),
     lambda P, S: adam_reference(P, S, 0.01, 0.8, 0.95, 1e-6, 0.3, False)),
    ("adamw", lambda P, G: AdamW(P, 0.01, weight_decay=0.3, grads=G),
     lambda P, S: adam_reference(P, S, 0.01, 0.9, 0.999, 1e-8, 0.3, True)),
    ("lion", lambda P, G: Lion(P, 0.01, grads=G),
     lambda P, S: lion_reference(P, S, 0.01, 0.9, 0.99, 0.0)),
    ("lion-wd", lambda P, G: Lion(P, 0.01, betas=(0.7, 0.95), weight_decay=0.5, grads=G),
     lambda P, S: lion_reference(P, S, 0.01, 0.7, 0.95, 0.5)),
]


def run_optimizer(make_opt, params, grad_seq):
    """Drive an optimizer over a gradient sequence, writing each step's grads in place."""
    grads = {k: v.copy() for k, v in grad_seq[0].items()}
    xp_grads = {k: to_device(v, backend_name(params[k])) for k, v in grads.items()}
    opt = make_opt(params, xp_grads)
    for step_grads in grad_seq:
        for k, g in step_grads.items():
            xp_grads[k][...] = to_device(g, backend_name(params[k]))
        opt.step()
    return opt


@pytest.mark.parametrize("name,make_opt,reference", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_written_rule(xp, name, make_opt, reference):
    params0, grad_seq = make_params(), make_grad_sequence()
    params = moved(params0, xp)
    arrays_before = {k: id(v) for k, v in params.items()}
    opt = run_optimizer(make_opt, params, grad_seq)
    expected = reference(params0, grad_seq)
    for k in SHAPES:
        assert id(params[k]) == arrays_before[k], "parameters must be updated in place"
        assert type(params[k]) is xp.ndarray
        assert rel_error(to_numpy(params[k]), expected[k]) < 1e-12, k
        assert not np.allclose(to_numpy(params[k]), params0[k]), f"{k} did not move"
    assert opt.step_count == N_STEPS


def test_weight_decay_leaves_gradient_untouched():
    params, grad_seq = make_params(), make_grad_sequence(n=1)
    grads = {k: v.copy() for k, v in grad_seq[0].items()}
    for opt in (SGD(params, 0.1, momentum=0.9, weight_decay=0.5, grads=grads),
                Adam(params, 0.1, weight_decay=0.5, grads=grads)):
        opt.step()
        for k in grads:
            assert np.array_equal(grads[k], grad_seq[0][k])


# ------------------------------------------------------------ against torch.optim
TORCH_CASES = [
    ("sgd-momentum", lambda P, G: SGD(P, 0.05, momentum=0.9, weight_decay=0.1, grads=G),
     lambda groups, t: t.optim.SGD(groups, lr=0.05, momentum=0.9)),
    ("sgd-nesterov", lambda P, G: SGD(P, 0.05, momentum=0.9, nesterov=True, weight_decay=0.1,
                                      grads=G),
     lambda groups, t: t.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", lambda P, G: Adam(P, 0.01, betas=(0.85, 0.99), weight_decay=0.1, grads=G),
     lambda groups, t: t.optim.Adam(groups, lr=0.01, betas=(0.85, 0.99))),
    ("adamw", lambda P, G: AdamW(P, 0.01, weight_decay=0.1, grads=G),
     lambda groups, t: t.optim.AdamW(groups, lr=0.01)),
]


@pytest.mark.parametrize("name,make_opt,make_torch", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_optimizer_matches_torch(name, make_opt, make_torch):
    torch = pytest.importorskip("torch")
    params0, grad_seq = make_params(), make_grad_sequence(n=8)
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
               for k, v in params0.items()}
    # torch decays per parameter group: the same split as whitebox's decay mask
    groups = [{"params": [tparams[k] for k in SHAPES if DECAYS[k]], "weight_decay": 0.1},
              {"params": [tparams[k] for k in SHAPES if not DECAYS[k]], "weight_decay": 0.0}]
    topt = make_torch(groups, torch)
    params = {k: v.copy() for k, v in params0.items()}
    grads = {k: np.zeros_like(v) for k, v in params0.items()}
    opt = make_opt(params, grads)
    for t, step_grads in enumerate(grad_seq):
        if t == 4:  # a schedule changing lr mid-run must be honoured by both
            opt.lr *= 0.5
            for group in topt.param_groups:
                group["lr"] *= 0.5
        for k, g in step_grads.items():
            grads[k][...] = g
            tparams[k].grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        topt.step()
    for k in SHAPES:
        assert rel_error(params[k], tparams[k].detach().numpy()) < 1e-12, k


# ------------------------------------------------------------ weight-decay mask
def test_decay_mask_of_crate_names():
    shapes = {"to_patch_embedding.1.weight": (48,), "to_patch_embedding.2.weight": (32, 48),
              "to_patch_embedding.2.bias": (32,), "pos_embedding": (1, 5, 32),
              "cls_token": (1, 1, 32), "transformer.layers.0.0.norm.weight": (32,),
              "transformer.layers.0.0.fn.qkv.weight": (32, 32),
              "transformer.layers.0.1.fn.weight": (32, 32), "wte.weight": (50, 32),
              "tok_emb.weight": (50, 32), "mlp_head.1.weight": (10, 32),
              "mlp_head.1.bias": (10,)}
    mask = decay_mask({k: np.zeros(s) for k, s in shapes.items()})
    decayed = {k for k, d in mask.items() if d}
    assert decayed == {"to_patch_embedding.2.weight", "transformer.layers.0.0.fn.qkv.weight",
                       "transformer.layers.0.1.fn.weight", "mlp_head.1.weight"}
    # custom patterns replace the defaults; the ndim < 2 rule always holds
    mask = decay_mask({k: np.zeros(s) for k, s in shapes.items()}, no_decay=("mlp_head.*",))
    assert mask["pos_embedding"] and not mask["mlp_head.1.weight"]
    assert not mask["to_patch_embedding.2.bias"]
    assert "*pos_embedding*" in DEFAULT_NO_DECAY


class TinyLM(nn.Module):
    """An Embedding table (exempt by type, whatever its name) and a Linear head."""

    def __init__(self):
        super().__init__("float64")
        self.table = nn.Embedding(7, 4, dtype="float64")
        self.norm = nn.LayerNorm(4, dtype="float64")
        self.head = nn.Linear(4, 7, dtype="float64")


@pytest.mark.parametrize("make_opt,decayed", [
    (lambda m: SGD(m, 0.1, momentum=0.9, weight_decay=0.5), lambda p: p * (1 - 0.1 * 0.5)),
    (lambda m: AdamW(m, 0.1, weight_decay=0.5), lambda p: p * (1 - 0.1 * 0.5)),
    (lambda m: Lion(m, 0.1, weight_decay=0.5), lambda p: p * (1 - 0.1 * 0.5)),
    # coupled decay goes through Adam's normalisation: g = wd p, m_hat = g, v_hat = g^2
    (lambda m: Adam(m, 0.1, weight_decay=0.5),
     lambda p: p - 0.1 * (0.5 * p) / (np.abs(0.5 * p) + 1e-8)),
], ids=["sgd", "adamw", "lion", "adam"])
def test_only_decayed_parameters_move(make_opt, decayed):
    """With zero gradients the only force is weight decay, and only on decayed parameters."""
    model = TinyLM()
    for k, p in model.parameters().items():  # LayerNorm starts at 1 / 0: make it nontrivial
        p[...] = np.random.default_rng(len(k)).standard_normal(p.shape)
    before = {k: p.copy() for k, p in model.parameters().items()}
    opt = make_opt(model)
    assert opt.decays == {"table.weight": False, "norm.weight": False, "norm.bias": False,
                          "head.weight": True, "head.bias": False}
    opt.zero_grad()
    opt.step()
    after = model.parameters()
    assert rel_error(after["head.weight"], decayed(before["head.weight"])) < 1e-12
    for k in ("table.weight", "norm.weight", "norm.bias", "head.bias"):
        assert np.array_equal(after[k], before[k]), k


# ------------------------------------------------------------ module input, resuming
def mlp(seed=0):
    return nn.Sequential(nn.Linear(3, 5, dtype="float64", seed=seed), nn.ReLU(),
                         nn.Linear(5, 2, dtype="float64", seed=seed + 1), dtype="float64")


def fill_grads(model, rng):
    for g in model.grads().values():
        g[...] = to_device(rng.standard_normal(g.shape), backend_name(g))


def assert_lockstep(a, opt_a, b, opt_b, rng, steps):
    """Feed both models the same gradients for ``steps`` steps; parameters must stay identical."""
    for _ in range(steps):
        fill_grads(a, rng)
        for k, g in a.grads().items():
            b.grads()[k][...] = g
        opt_a.step()
        opt_b.step()
    for k, p in a.parameters().items():
        assert np.array_equal(p, b.parameters()[k]), k


def test_zero_grad_and_fresh_module_arrays(xp):
    """The optimizer reads module.parameters() every step, so moving the model works."""
    model = mlp()
    opt = Adam(model, 0.01, weight_decay=0.1)
    rng = np.random.default_rng(3)
    fill_grads(model, rng)
    opt.step()
    model.to("cupy" if xp is not np else "numpy")
    before = {k: to_numpy(p).copy() for k, p in model.parameters().items()}
    fill_grads(model, rng)
    opt.step()
    for k, p in model.parameters().items():
        assert type(p) is xp.ndarray and type(opt.state[k]["exp_avg"]) is xp.ndarray
        assert not np.allclose(to_numpy(p), before[k])
    opt.zero_grad()
    assert all(float(abs(g).max()) == 0.0 for g in model.grads().values())


@pytest.mark.parametrize("make_opt", [
    lambda m, lr: SGD(m, lr, momentum=0.9, nesterov=True, weight_decay=0.1),
    lambda m, lr: Adam(m, lr, weight_decay=0.1),
    lambda m, lr: AdamW(m, lr),
    lambda m, lr: Lion(m, lr, weight_decay=0.1),
], ids=["sgd", "adam", "adamw", "lion"])
def test_state_dict_resumes_exactly(make_opt):
    a = mlp()
    opt_a = make_opt(a, 0.01)
    rng = np.random.default_rng(0)
    for _ in range(3):
        fill_grads(a, rng)
        opt_a.step()
    opt_a.lr = 0.005  # as a schedule would have set it
    sd = opt_a.state_dict()
    frozen = {(k, n): buf.copy() for k, bufs in sd["state"].items() for n, buf in bufs.items()}
    b = mlp(seed=7)
    b.load_state_dict(a.state_dict())
    opt_b = make_opt(b, 0.3)  # different lr: it must come from the state_dict
    opt_b.load_state_dict(sd)
    assert opt_b.step_count == 3 and opt_b.lr == 0.005
    assert_lockstep(a, opt_a, b, opt_b, rng, steps=4)
    # the state_dict held copies: later steps did not write into it
    assert all(np.array_equal(sd["state"][k][n], buf) for (k, n), buf in frozen.items())


def test_state_dict_loads_on_other_backend(xp):
    a = mlp()
    opt_a = AdamW(a, 0.01)
    rng = np.random.default_rng(0)
    fill_grads(a, rng)
    opt_a.step()
    b = mlp()
    b.load_state_dict(a.state_dict())
    b.to("cupy" if xp is not np else "numpy")
    opt_b = AdamW(b, 0.01)
    opt_b.load_state_dict(opt_a.state_dict())
    assert type(opt_b.state["0.weight"]["exp_avg_sq"]) is xp.ndarray
    fill_grads(a, rng)
    for k, g in a.grads().items():
        b.grads()[k][...] = to_device(g, backend_name(b.grads()[k]))
    opt_a.step()
    opt_b.step()
    for k, p in a.parameters().items():
        assert np.allclose(to_numpy(b.parameters()[k]), p, rtol=1e-12, atol=1e-14)


def test_load_state_dict_rejects_mismatches():
    a, b = mlp(), nn.Sequential(nn.Linear(3, 4, dtype="float64"), dtype="float64")
    opt = Adam(a)
    fill_grads(a, np.random.default_rng(0))
    opt.step()
    with pytest.raises(ValueError, match="'Adam'.*'SGD'"):
        SGD(a, 0.1).load_state_dict(opt.state_dict())
    with pytest.raises(KeyError, match="2.weight"):
        Adam(b).load_state_dict(opt.state_dict())
    sd = opt.state_dict()
    sd["state"]["0.weight"]["exp_avg"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"0.weight.*\(2, 2\)"):
        Adam(a).load_state_dict(sd)


@pytest.mark.parametrize("saved_momentum,saved_nesterov,built_momentum", [
    (0.9, False, 0.0), (0.9, True, 0.0), (0.0, False, 0.9)],
    ids=["momentum-into-plain", "nesterov-into-plain", "plain-into-momentum"])
def test_sgd_takes_the_saved_momentum(saved_momentum, saved_nesterov, built_momentum):
    """The saved hyper-parameters win, buffers included: b resumes exactly like a."""
    a = mlp()
    opt_a = SGD(a, 0.05, momentum=saved_momentum, nesterov=saved_nesterov, weight_decay=0.1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        fill_grads(a, rng)
        opt_a.step()
    b = mlp(seed=7)
    b.load_state_dict(a.state_dict())
    opt_b = SGD(b, 0.3, momentum=built_momentum)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.hyper == opt_a.hyper
    assert set(opt_b.state["0.weight"]) == ({"momentum_buffer"} if saved_momentum else set())
    assert_lockstep(a, opt_a, b, opt_b, rng, steps=3)


def _snapshot(opt):
    return (opt.lr, opt.step_count, dict(opt.hyper), opt.no_decay, dict(opt.decays),
            {k: {n: b.copy() for n, b in bufs.items()} for k, bufs in opt.state.items()})


def _same_snapshot(x, y):
    return x[:5] == y[:5] and x[5].keys() == y[5].keys() and all(
        x[5][k].keys() == y[5][k].keys()
        and all(np.array_equal(x[5][k][n], y[5][k][n]) for n in x[5][k]) for k in x[5])


def _corrupt(sd, what):
    if what == "buffers-without-momentum":
        sd["hyper"]["momentum"] = 0.0          # buffers present but no momentum
    elif what == "negative-momentum":
        sd["hyper"]["momentum"] = -0.5
    elif what == "nesterov-without-momentum":
        sd["hyper"].update(momentum=0.0, nesterov=True)
        sd["state"] = {}
    elif what == "string-lr":
        sd["lr"] = "fast"
    elif what == "negative-step":
        sd["step"] = -1
    elif what == "unknown-hyper":
        sd["hyper"]["dampening"] = 0.1
    elif what == "bad-shape":
        sd["state"]["2.bias"]["momentum_buffer"] = np.zeros(3)
    return sd


@pytest.mark.parametrize("what,error,match", [
    ("buffers-without-momentum", KeyError, "momentum_buffer"),
    ("negative-momentum", ValueError, "momentum.*-0.5"),
    ("nesterov-without-momentum", ValueError, "nesterov"),
    ("string-lr", TypeError, "lr.*'fast'"),
    ("negative-step", ValueError, "step.*-1"),
    ("unknown-hyper", KeyError, "dampening"),
    ("bad-shape", ValueError, r"2.bias.*\(3,\).*\(2,\)"),
])
def test_refused_state_dict_changes_nothing(what, error, match):
    a = mlp()
    opt_a = SGD(a, 0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(2):
        fill_grads(a, rng)
        opt_a.step()
    opt_b = SGD(a, 0.3, nesterov=True, momentum=0.5, no_decay=("*2.weight",))
    fill_grads(a, rng)
    opt_b.step()
    before = _snapshot(opt_b)
    with pytest.raises(error, match=match):
        opt_b.load_state_dict(_corrupt(opt_a.state_dict(), what))
    assert _same_snapshot(_snapshot(opt_b), before)
    opt_b.step()   # and it still works


@pytest.mark.parametrize("build,name,value", [
    (lambda P, G, v: SGD(P, v, grads=G), "lr", "x"),
    (lambda P, G, v: SGD(P, 0.1, momentum=v, grads=G), "momentum", "0.9"),
    (lambda P, G, v: SGD(P, 0.1, weight_decay=v, grads=G), "weight_decay", None),
    (lambda P, G, v: SGD(P, 0.1, momentum=0.9, nesterov=v, grads=G), "nesterov", "yes"),
    (lambda P, G, v: Adam(P, eps=v, grads=G), "eps", [1e-8]),
    (lambda P, G, v: Adam(P, betas=(v, 0.999), grads=G), r"betas\[0\]", "x"),
    (lambda P, G, v: AdamW(P, lr=v, grads=G), "lr", True),
    (lambda P, G, v: Lion(P, betas=(0.9, v), grads=G), r"betas\[1\]", {}),
    (lambda P, G, v: WarmupCosine(SGD(P, 0.1, grads=G), 1, 5, min_lr=v), "min_lr", "x"),
    (lambda P, G, v: StepDecay(SGD(P, 0.1, grads=G), 2, gamma=v), "gamma", "x"),
    (lambda P, G, v: StepDecay(SGD(P, 0.1, grads=G), v), "step_size", "2"),
    (lambda P, G, v: clip_grad_norm(G, v), "max_norm", "x"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_non_numbers_are_refused_by_name(build, name, value):
    params, grads = make_params(), {k: np.zeros(s) for k, s in SHAPES.items()}
    with pytest.raises(TypeError, match=f"{name}.*{re.escape(repr(value))}"):
        build(params, grads, value)


@pytest.mark.parametrize("build,name,value", [
    (lambda P, G, v: SGD(P, v, grads=G), "lr", float("nan")),
    (lambda P, G, v: SGD(P, v, grads=G), "lr", float("inf")),
    (lambda P, G, v: Adam(P, eps=v, grads=G), "eps", -1e-8),
    (lambda P, G, v: WarmupCosine(SGD(P, 0.1, grads=G), 1, 5, min_lr=v), "min_lr", -0.1),
    (lambda P, G, v: WarmupCosine(SGD(P, 0.1, grads=G), 1, 5, min_lr=v), "min_lr",
     float("nan")),
    (lambda P, G, v: StepDecay(SGD(P, 0.1, grads=G), 2, gamma=v), "gamma", 0.0),
    (lambda P, G, v: StepDecay(SGD(P, 0.1, grads=G), 2, gamma=v), "gamma", float("inf")),
    (lambda P, G, v: clip_grad_norm(G, v), "max_norm", -1.0),
])
def test_out_of_range_numbers_are_refused_by_name(build, name, value):
    params, grads = make_params(), {k: np.zeros(s) for k, s in SHAPES.items()}
    with pytest.raises(ValueError, match=f"{name}.*{re.escape(repr(value))}"):
        build(params, grads, value)


def test_bad_arguments_raise():
    params, grads = make_params(), {k: np.zeros(s) for k, s in SHAPES.items()}
    with pytest.raises(ValueError, match="lr"):
        SGD(params, -0.1, grads=grads)
    with pytest.raises(ValueError, match="grads"):
        SGD(params, 0.1)
    with pytest.raises(KeyError, match="fc.bias"):
        SGD(params, 0.1, grads={"fc.weight": grads["fc.weight"],
                                "pos_embedding": grads["pos_embedding"]})
    with pytest.raises(ValueError, match="fc.weight"):
        SGD(params, 0.1, grads={**grads, "fc.weight": np.zeros((3, 4))})
    with pytest.raises(TypeError, match="params"):
        SGD([np.zeros(3)], 0.1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(params, 0.1, nesterov=True, grads=grads)
    with pytest.raises(ValueError, match="betas"):
        Adam(params, betas=(0.9, 1.0), grads=grads)
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW(params, weight_decay=-1, grads=grads)
    with pytest.raises(TypeError, match="no_decay"):
        Lion(params, grads=grads, no_decay=(3,))


# ------------------------------------------------------------ clipping
def test_clip_grad_norm_scales_only_above_max(xp):
    rng = np.random.default_rng(0)
    raw = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    expected = math.sqrt(sum(float((v ** 2).sum()) for v in raw.values()))
    grads = moved(raw, xp)
    total = clip_grad_norm(grads, max_norm=expected + 1.0)
    assert isinstance(total, xp.ndarray) and total.shape == () and total.dtype == np.float64
    total = float(total)
    assert abs(total - expected) < 1e-12 * expected
    for k in raw:  # below the threshold: untouched
        assert np.array_equal(to_numpy(grads[k]), raw[k])
    total = float(clip_grad_norm(grads, max_norm=0.5))
    assert abs(total - expected) < 1e-12 * expected
    clipped = math.sqrt(sum(float((to_numpy(g) ** 2).sum()) for g in grads.values()))
    assert abs(clipped - 0.5) < 1e-5
    for k in raw:  # one common factor keeps the direction
        assert rel_error(to_numpy(grads[k]), raw[k] * 0.5 / (expected + 1e-6)) < 1e-12


def test_clip_grad_norm_matches_torch_on_a_module():
    torch = pytest.importorskip("torch")
    model = mlp()
    fill_grads(model, np.random.default_rng(1))
    tgrads = [torch.tensor(g.copy()) for g in model.grads().values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads):
        p.grad = g
    t_total = float(torch.nn.utils.clip_grad_norm_(tparams, 0.7))
    total = float(clip_grad_norm(model, 0.7))
    assert abs(total - t_total) < 1e-12 * t_total
    for g, tp in zip(model.grads().values(), tparams):
        assert rel_error(g, tp.grad.numpy()) < 1e-12


def test_clip_grad_norm_bad_input():
    grads = {"w": np.array([3.0, 4.0])}
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)
    with pytest.raises(TypeError, match="grads"):
        clip_grad_norm([np.ones(2)], 1.0)
    grads["w"][0] = np.nan
    assert math.isnan(float(clip_grad_norm(grads, 1.0)))
    assert math.isnan(grads["w"][0]) and grads["w"][1] == 4.0       # left as they were
    with pytest.raises(RuntimeError, match="NaN"):
        clip_grad_norm(grads, 1.0, error_if_nonfinite=True)


class NoSync(np.ndarray):
    """An array that refuses every conversion to a host scalar (what syncs a GPU)."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("a host conversion: on CuPy this would stall the device")

    __float__ = __int__ = __bool__ = __index__ = item = tolist = _refuse


def test_clip_grad_norm_stays_on_the_device():
    rng = np.random.default_rng(2)
    raw = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = {k: v.copy().view(NoSync) for k, v in raw.items()}
    expected = math.sqrt(sum(float((v ** 2).sum()) for v in raw.values()))
    total = clip_grad_norm(grads, 0.5)                 # no float()/bool()/item() inside
    assert isinstance(total, np.ndarray) and total.shape == ()
    assert abs(np.asarray(total).view(np.ndarray)[()] - expected) < 1e-12 * expected
    for k in raw:
        assert rel_error(grads[k].view(np.ndarray), raw[k] * 0.5 / (expected + 1e-6)) < 1e-12


# ------------------------------------------------------------ hyper-parameters after construction
@pytest.mark.parametrize("make", [
    lambda P, G: SGD(P, 0.1, momentum=0.9, weight_decay=0.1, grads=G),
    lambda P, G: Adam(P, grads=G), lambda P, G: AdamW(P, grads=G), lambda P, G: Lion(P, grads=G)])
def test_hyper_parameters_are_checked_on_every_assignment(make):
    params = {"w": np.ones((2, 3))}
    grads = {"w": np.ones((2, 3))}
    opt = make(params, grads)
    before = (opt.lr, dict(opt.hyper))
    for bad in (float("inf"), float("nan"), -1e-3):
        finite = "finite and " if not math.isfinite(bad) else ""
        with pytest.raises(ValueError, match=rf"lr must be {finite}in \[0, inf\), got {bad!r}"):
            opt.lr = bad
        with pytest.raises(ValueError, match=rf"weight_decay must be {finite}in \[0, inf\)"):
            opt.weight_decay = bad
    with pytest.raises(TypeError, match="lr must be a real number, got '1e-3'"):
        opt.lr = "1e-3"
    if "betas" in opt.hyper:
        with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
            opt.betas = (0.9, 1.0)
    if "eps" in opt.hyper:
        with pytest.raises(ValueError, match=r"eps must be finite and in \[0, inf\), got inf"):
            opt.eps = float("inf")
    with pytest.raises(TypeError, match="does not support item assignment"):
        opt.hyper["weight_decay"] = float("inf")      # the view is read-only
    assert (opt.lr, dict(opt.hyper)) == before         # every refusal kept the old values
    opt.lr, opt.weight_decay = 0.5, 0.25               # good values are taken
    assert opt.lr == 0.5 and opt.hyper["weight_decay"] == 0.25
    opt.step()
    assert np.all(np.isfinite(params["w"]))


def test_sgd_rules_across_hyper_parameters_hold_after_construction():
    params, grads = {"w": np.ones(3)}, {"w": np.ones(3)}
    opt = SGD(params, 0.1, momentum=0.9, nesterov=True, grads=grads)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        opt.momentum = 0.0
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        opt.nesterov = "yes"
    assert opt.momentum == 0.9 and opt.nesterov is True


def test_a_schedule_cannot_set_a_bad_lr():
    params, grads = {"w": np.ones(3)}, {"w": np.ones(3)}
    opt = AdamW(params, lr=1e-3, grads=grads)
    sched = WarmupCosine(opt, warmup_steps=1, total_steps=4)
    sched.lr_at = lambda t: float("inf")             # a broken schedule
    with pytest.raises(ValueError, match=r"lr must be finite and in \[0, inf\), got inf"):
        sched.step()
    assert math.isfinite(opt.lr)


# ------------------------------------------------------------ schedules
def test_warmup_cosine_key_steps():
    opt = SGD({"w": np.zeros((2, 2))}, 1.0, grads={"w": np.zeros((2, 2))})
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=12, min_lr=0.1)
    assert opt.lr == pytest.approx(0.25)           # built: lr of update 0
    assert [sched.lr_at(t) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert sched.lr_at(4) == pytest.approx(1.0)    # cosine starts at the base
    assert sched.lr_at(8) == pytest.approx(0.55)   # half-way: (base + min) / 2
    assert sched.lr_at(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert sched.lr_at(12) == pytest.approx(0.1) and sched.lr_at(50) == pytest.approx(0.1)
    lrs = [sched.step() for _ in range(12)]
    assert lrs == pytest.approx([sched.lr_at(t) for t in range(1, 13)])
    assert opt.lr == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # never rises after warm-up


def test_warmup_cosine_without_warmup_and_errors():
    opt = SGD({"w": np.zeros(2)}, 0.2, grads={"w": np.zeros(2)})
    sched = WarmupCosine(opt, 0, 10)
    assert opt.lr == pytest.approx(0.2) and sched.lr_at(10) == 0.0
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(opt, 5, 3)
    with pytest.raises(TypeError, match="warmup_steps"):
        WarmupCosine(opt, 2.5, 10)
    with pytest.raises(ValueError, match="min_lr"):
        WarmupCosine(opt, 0, 10, min_lr=1.0)


def test_step_decay_and_torch_steplr():
    opt = SGD({"w": np.zeros(2)}, 0.8, grads={"w": np.zeros(2)})
    sched = StepDecay(opt, step_size=3, gamma=0.5)
    lrs = [opt.lr] + [sched.step() for _ in range(8)]
    assert lrs == pytest.approx([0.8] * 3 + [0.4] * 3 + [0.2] * 3)
    torch = pytest.importorskip("torch")
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.8)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    tlrs = [topt.param_groups[0]["lr"]]
    for _ in range(8):
        topt.step()
        tsched.step()
        tlrs.append(topt.param_groups[0]["lr"])
    assert lrs == pytest.approx(tlrs)


def test_schedule_state_dict_round_trip():
    opt = AdamW({"w": np.zeros((2, 2))}, 3e-3, grads={"w": np.zeros((2, 2))})
    sched = WarmupCosine(opt, 3, 20, min_lr=1e-4)
    for _ in range(7):
        sched.step()
    opt2 = AdamW({"w": np.zeros((2, 2))}, 1.0, grads={"w": np.zeros((2, 2))})
    sched2 = WarmupCosine(opt2, 1, 5)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.lr == opt.lr
    assert [sched2.step() for _ in range(5)] == [sched.step() for _ in range(5)]
    with pytest.raises(ValueError, match="WarmupCosine"):
        StepDecay(opt2, 2).load_state_dict(sched.state_dict())


@pytest.mark.parametrize("key,value,error", [
    ("min_lr", "x", TypeError), ("min_lr", 1.0, ValueError), ("total_steps", 1, ValueError),
    ("last_step", -3, ValueError), ("base_lr", float("nan"), ValueError),
    ("warmup_steps", None, KeyError)])
def test_refused_schedule_state_changes_nothing(key, value, error):
    opt = SGD({"w": np.zeros(2)}, 0.5, grads={"w": np.zeros(2)})
    sched = WarmupCosine(opt, 2, 10, min_lr=0.01)
    for _ in range(4):
        sched.step()
    sd = WarmupCosine(SGD({"w": np.zeros(2)}, 0.2, grads={"w": np.zeros(2)}), 3, 8).state_dict()
    if value is None:
        del sd[key]
    else:
        sd[key] = value
    before, lr = dict(vars(sched)), opt.lr
    with pytest.raises(error, match=key):
        sched.load_state_dict(sd)
    assert vars(sched) == before and opt.lr == lr


def test_load_state_dict_refuses_non_finite_moments():
    params, grads = {"w": np.ones((2, 2))}, {"w": np.full((2, 2), 0.5)}
    opt = Adam(params, grads=grads)
    opt.step()
    sd = opt.state_dict()
    sd["state"]["w"]["exp_avg"][1, 0] = np.nan
    before = {k: b.copy() for k, b in opt.state["w"].items()}
    with pytest.raises(ValueError, match=r"optimizer buffer 'w'/'exp_avg' contains NaN"):
        opt.load_state_dict(sd)
    for k, b in before.items():
        assert np.array_equal(opt.state["w"][k], b)
