"""A training step on the device path reads nothing back to the host.

On a GPU every float(), bool(), int(), .item() or .get() of a device array
waits for the device and copies: a step that does one per layer runs at the
speed of the round trips. This test runs one whole training step (forward,
loss, backward, gradient clipping, AdamW, schedule) on arrays of a NumPy
subclass that counts every such conversion, with value checks switched to
their device behaviour (off unless whitebox.backend.set_device_checks), and
asserts that the step performs none. The loop then reads the loss once when
it logs it.
"""
import numpy as np
import pytest

from whitebox import backend
from whitebox.models import CRATE
from whitebox.optim import AdamW, WarmupCosine, clip_grad_norm
from whitebox.tasks.classify import Classify
from whitebox.training import make_config


class Counting(np.ndarray):
    """A NumPy array that counts every conversion a device array would sync for."""
    reads = []

    def _read(self, how):
        Counting.reads.append(how)

    def __float__(self):
        self._read("float")
        return super().__float__()

    def __int__(self):
        self._read("int")
        return super().__int__()

    def __bool__(self):
        self._read("bool")
        return super().__bool__()

    def __index__(self):
        self._read("index")
        return super().__index__()

    def item(self, *args):
        self._read("item")
        return super().item(*args)

    def tolist(self):
        self._read("tolist")
        return super().tolist()


@pytest.fixture
def device_like(monkeypatch):
    """Counting arrays behave as device arrays: value checks skip them, as on CuPy."""
    monkeypatch.setattr(backend, "_on_host", lambda a: not isinstance(a, Counting))
    Counting.reads = []
    return Counting


def on_device(model):
    """The model with every parameter and gradient as a Counting ("device") array."""
    for _, m in model.named_modules():
        m._params = {k: v.view(Counting) for k, v in m._params.items()}
        m._grads = {k: v.view(Counting) for k, v in m._grads.items()}
    return model


def _counting_model():
    return on_device(CRATE(image_size=28, patch_size=7, num_classes=10, dim=32, depth=2,
                           heads=2, dim_head=16, channels=1, dropout=0.1, seed=0))


def test_one_training_step_reads_nothing_back(device_like):
    model = _counting_model()
    optimizer = AdamW(model, lr=1e-3, weight_decay=0.05)
    schedule = WarmupCosine(optimizer, 2, 10)
    task = Classify(make_config(Classify, {}))
    rng = np.random.default_rng(0)
    images = rng.random((8, 1, 28, 28), dtype=np.float32).view(Counting)
    labels = (np.arange(8) % 10).view(Counting)

    model.zero_grad()
    loss, sums = task.train_step(model, (images, labels))
    clip_grad_norm(model, 1.0)
    optimizer.step()
    schedule.step()
    assert Counting.reads == [], f"the step read device values back: {Counting.reads}"
    assert isinstance(loss, Counting) and loss.shape == ()
    float(loss)                                    # the logged loss: the one read
    assert Counting.reads == ["float"]


def test_the_shim_sees_a_read(device_like):
    """The counter works: a host check in a step would be caught."""
    a = np.ones(3).view(Counting)
    if (a > 0).all():
        pass
    assert Counting.reads == ["bool"]


def test_device_checks_can_be_switched_on(device_like):
    from whitebox import losses
    logits = np.zeros((2, 3)).view(Counting)
    bad = np.array([0, 7]).view(Counting)
    with pytest.raises(IndexError):               # device-like: no range check, NumPy's own
        losses.cross_entropy(logits, bad)         # error (CuPy would wrap silently)
    backend.set_device_checks(True)
    try:
        with pytest.raises(ValueError, match="labels must lie in"):
            losses.cross_entropy(logits, bad)
    finally:
        backend.set_device_checks(False)


def test_a_crate_alpha_step_reads_nothing_back(device_like):
    from whitebox.models import CRATEAlpha
    model = on_device(CRATEAlpha(image_size=28, patch_size=7, num_classes=10, dim=16, depth=2,
                                 heads=2, channels=1, seed=0))
    optimizer = AdamW(model, lr=1e-3, weight_decay=0.05)
    task = Classify(make_config(Classify, {"model": "crate-alpha"}))
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32).view(Counting)
    model.zero_grad()
    loss, _ = task.train_step(model, (images, (np.arange(4) % 10).view(Counting)))
    clip_grad_norm(model, 1.0)
    optimizer.step()
    assert Counting.reads == [], f"the step read device values back: {Counting.reads}"
