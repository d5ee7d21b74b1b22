"""A4 part 3: the whole masked autoencoder's backward, and a short training run."""
import numpy as np

from course_helpers import assert_close, numerical_gradient, rng
from whitebox.models.crate_mae import CRATEMAE

MASK = np.array([[1.0, 0, 1, 0], [0, 1, 1, 0]])


def tiny(dtype="float64", norm_pix=False):
    return CRATEMAE(image_size=8, patch_size=4, dim=8, depth=1, heads=2, decoder_depth=1,
                    channels=1, norm_pix_loss=norm_pix, dtype=dtype, seed=0)


def test_crate_mae_backward_matches_finite_differences():
    model = tiny()
    images = rng(1).standard_normal((2, 1, 8, 8))
    r = rng(2)

    def loss():
        return model.forward(images, mask=MASK)[0]

    model.zero_grad()
    loss()
    dimages = model.backward(1.0)
    grads = {k: v.copy() for k, v in model.grads().items()}
    params = model.parameters()
    checks = [("images", dimages, images)] + [(k, grads[k], params[k]) for k in grads]
    for name, analytic, array in checks:
        flat = r.choice(array.size, size=min(array.size, 6), replace=False)
        numeric = numerical_gradient(loss, array, np.ones(()))
        a, n = np.asarray(analytic).reshape(-1)[flat], numeric.reshape(-1)[flat]
        floor = max(1e-8, 1e-3 * float(np.abs(numeric).max()))
        assert_close(f"CRATEMAE.backward: gradient of {name}, analytic vs numeric", a, n,
                     f"entries {flat.tolist()} of {tuple(array.shape)}", 1e-6, floor)


def test_crate_mae_trains():
    model = tiny("float32")
    from whitebox.optim import Adam
    r = rng(3)
    images = np.repeat(r.standard_normal((4, 1, 8, 8)).astype(np.float32), 2, axis=0)
    opt = Adam(model, lr=1e-2)
    mask = np.tile(MASK, (4, 1)).astype(np.float32)
    losses = []
    for _ in range(30):
        model.zero_grad()
        loss, _, _ = model.forward(images, mask=mask)
        model.backward(1.0)
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], (
        f"30 Adam steps on 8 fixed images took the masked loss from {losses[0]:.3f} only to "
        f"{losses[-1]:.3f} (expected below 70% of it): the autoencoder's backward is wrong")
