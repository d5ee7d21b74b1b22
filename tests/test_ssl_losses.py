"""SimDINO's and DINO's losses: finite differences in float64, PyTorch twins, the centre."""
import math

import numpy as np
import pytest

from whitebox.gradcheck import numerical_gradient, rel_error
from whitebox.losses import DINOLoss, simdino_loss
from whitebox.rate import coding_rate


def _views(rng, n_crops=4, m=5, p=6, unit=True):
    s, t = rng.standard_normal((n_crops * m, p)), rng.standard_normal((2 * m, p))
    if unit:
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
    return s, t


def _loop_simdino(s, t, n_crops, eps, coeff, expansion):
    """The definition, term by term with loops."""
    m, p = t.shape[0] // 2, t.shape[1]
    S, T = s.reshape(n_crops, m, p), t.reshape(2, m, p)
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    comp = sum(np.mean([cos(T[a, i], S[v, i]) for i in range(m)])
               for a in range(2) for v in range(n_crops) if v != a) / (2 * n_crops - 2)
    Z = S[:2] if expansion == "student" else (S[:2] + T) / 2
    expa = np.mean([0.5 * np.linalg.slogdet(np.eye(p) + p / (m * eps) * Z[v].T @ Z[v])[1]
                    for v in range(2)]) * (p + m) / (p * m)
    return -coeff * comp - expa, comp, expa


@pytest.mark.parametrize("expansion", ["mean", "student"])
@pytest.mark.parametrize("n_crops,m,p", [(2, 4, 3), (4, 5, 6), (5, 3, 8)])
def test_simdino_loss_matches_the_loop_definition(rng, expansion, n_crops, m, p):
    s, t = _views(rng, n_crops, m, p, unit=False)
    loss, _, terms = simdino_loss(s, t, n_crops, eps=0.3, coeff=0.7, expansion=expansion,
                                  terms=True)
    ref, comp, expa = _loop_simdino(s, t, n_crops, 0.3, 0.7, expansion)
    assert float(loss) == pytest.approx(ref, rel=1e-12)
    assert float(terms["compression"]) == pytest.approx(comp, rel=1e-12)
    assert float(terms["expansion"]) == pytest.approx(expa, rel=1e-12)


def test_simdino_expansion_is_the_library_coding_rate(rng):
    s, t = _views(rng, 3, 6, 4)
    _, _, terms = simdino_loss(s, t, 3, eps=0.5, expansion="student", terms=True)
    R = coding_rate(s[:12].reshape(2, 6, 4), math.sqrt(0.5))
    assert float(terms["expansion"]) == pytest.approx(float(R.mean()) * (4 + 6) / 24, rel=1e-13)


@pytest.mark.parametrize("expansion", ["mean", "student"])
@pytest.mark.parametrize("unit", [True, False])
def test_simdino_gradient_matches_finite_differences(rng, expansion, unit):
    s, t = _views(rng, 4, 5, 6, unit)
    _, ds = simdino_loss(s, t, 4, eps=0.2, coeff=1.3, expansion=expansion)
    f = lambda: np.asarray(simdino_loss(s, t, 4, eps=0.2, coeff=1.3, expansion=expansion)[0])
    num = numerical_gradient(f, s, np.ones(()))
    assert rel_error(ds, num) < 1e-7


def test_simdino_float32_keeps_dtype_and_agrees(rng):
    s, t = _views(rng, 4, 8, 5)
    loss64, ds64 = simdino_loss(s, t, 4, eps=0.05)
    loss32, ds32 = simdino_loss(s.astype(np.float32), t.astype(np.float32), 4, eps=0.05)
    assert ds32.dtype == np.float32
    assert float(loss32) == pytest.approx(float(loss64), rel=1e-4)
    np.testing.assert_allclose(ds32, ds64, rtol=1e-3, atol=1e-5)


def test_simdino_rejects_bad_inputs(rng):
    s, t = _views(rng, 4, 5, 6)
    with pytest.raises(ValueError, match="teacher must have shape"):
        simdino_loss(s, t[:-1], 4)
    with pytest.raises(ValueError, match="n_crops"):
        simdino_loss(s, t, 3)
    with pytest.raises(ValueError, match="expansion"):
        simdino_loss(s, t, 4, expansion="teacher")
    with pytest.raises(ValueError, match="eps"):
        simdino_loss(s, t, 4, eps=0.0)
    # two images with the same features: I + a Z Z^T is singular but for the identity on
    # both Gram sides, so at eps = 1e-30 even float64 cannot hold R (a full-rank batch is
    # computed on its smaller side instead, and is not refused)
    s2, t2 = s.reshape(4, 5, 6).copy(), t.reshape(2, 5, 6).copy()
    s2[:, 1], t2[:, 1] = s2[:, 0], t2[:, 0]
    with pytest.raises(ValueError, match=r"eps = 1e-30 \(epsilon\^2"):
        simdino_loss(s2.reshape(20, 6), t2.reshape(10, 6), 4, eps=1e-30)


@pytest.mark.torch
@pytest.mark.parametrize("expansion", ["mean", "student"])
def test_simdino_matches_torch(rng, expansion):
    torch = pytest.importorskip("torch")
    from torch_ssl import simdino_loss_torch
    s, t = _views(rng, 6, 7, 5)
    st = torch.tensor(s, requires_grad=True)
    lt, ct, et = simdino_loss_torch(st, torch.tensor(t), 6, eps=0.05, coeff=1.0,
                                    expansion=expansion)
    lt.backward()
    loss, ds, terms = simdino_loss(s, t, 6, eps=0.05, expansion=expansion, terms=True)
    assert float(loss) == pytest.approx(lt.item(), rel=1e-13)
    assert float(terms["compression"]) == pytest.approx(ct.item(), rel=1e-13)
    assert float(terms["expansion"]) == pytest.approx(et.item(), rel=1e-13)
    np.testing.assert_allclose(ds, st.grad.numpy(), rtol=1e-10, atol=1e-14)


def _dino(**kw):
    args = dict(out_dim=7, n_crops=4, warmup_teacher_temp=0.04, teacher_temp=0.07,
                warmup_teacher_temp_epochs=3, n_epochs=5, dtype="float64")
    args.update(kw)
    return DINOLoss(**args)


def _loop_dino(s, t, center, n_crops, temp, st):
    m = t.shape[0] // 2
    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()
    total, n = 0.0, 0
    for a in range(2):
        for v in range(n_crops):
            if v == a:
                continue
            total += np.mean([-(softmax((t[a * m + i] - center[0]) / temp)
                               * np.log(softmax(s[v * m + i] / st))).sum() for i in range(m)])
            n += 1
    return total / n


def test_dino_loss_matches_the_loop_and_updates_its_center(rng):
    crit = _dino()
    s, t = rng.standard_normal((4 * 3, 7)), rng.standard_normal((6, 7))
    for epoch in (0, 1, 4):
        center = crit.center.copy()
        loss, _ = crit(s, t, epoch)
        temp = np.linspace(0.04, 0.07, 3)[epoch] if epoch < 3 else 0.07
        assert float(loss) == pytest.approx(_loop_dino(s, t, center, 4, temp, 0.1), rel=1e-12)
        np.testing.assert_allclose(crit.center, 0.9 * center + 0.1 * t.mean(axis=0),
                                   rtol=1e-14)


def test_dino_gradient_matches_finite_differences(rng):
    s, t = rng.standard_normal((4 * 3, 7)), rng.standard_normal((6, 7))
    crit = _dino(student_temp=0.5)   # a softer softmax: central differences stay accurate
    crit.center = 0.3 * rng.standard_normal((1, 7))
    center = crit.center.copy()
    _, ds = crit(s, t, 1)

    def f():
        crit.center = center.copy()
        return np.asarray(crit(s, t, 1)[0])
    assert rel_error(ds, numerical_gradient(f, s, np.ones(()))) < 1e-7


def test_dino_rejects_bad_inputs(rng):
    crit = _dino()
    s, t = rng.standard_normal((12, 7)), rng.standard_normal((6, 7))
    with pytest.raises(ValueError, match="epoch"):
        crit(s, t, 5)
    with pytest.raises(ValueError, match="out_dim"):
        crit(s[:, :6], t[:, :6], 0)
    with pytest.raises(ValueError, match="warmup_teacher_temp_epochs"):
        _dino(warmup_teacher_temp_epochs=6)


@pytest.mark.torch
def test_dino_matches_torch_over_epochs(rng):
    torch = pytest.importorskip("torch")
    from torch_ssl import DINOLossTorch
    args = (9, 5, 0.04, 0.07, 2, 4)
    crit, twin = DINOLoss(*args, dtype="float64"), DINOLossTorch(*args)
    for epoch in range(4):
        s, t = 3 * rng.standard_normal((5 * 4, 9)), 3 * rng.standard_normal((2 * 4, 9))
        st = torch.tensor(s, requires_grad=True)
        lt = twin(st, torch.tensor(t), epoch)
        lt.backward()
        loss, ds = crit(s, t, epoch)
        assert float(loss) == pytest.approx(lt.item(), rel=1e-12)
        np.testing.assert_allclose(ds, st.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(crit.center, twin.center.numpy(), rtol=1e-13)
