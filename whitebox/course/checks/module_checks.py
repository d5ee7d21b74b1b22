"""A gradient check for Modules, entry by entry, for the assignment checks."""
import numpy as np

from course_helpers import assert_close, numerical_gradient


def check_module_gradients(function, module, x, seed=0, tol=1e-6, hint="", names=None):
    """Compare module.backward with central differences for the input and every parameter."""
    r = np.random.default_rng(seed)
    out = module(x)
    dout = r.standard_normal(out.shape)
    module.zero_grad()
    dx = module.backward(dout)
    grads = {k: v.copy() for k, v in module.grads().items()}
    params = module.parameters()
    checks = [("input x", dx, x)] + [(k, grads[k], params[k]) for k in (names or params)]
    for name, analytic, array in checks:
        numeric = numerical_gradient(lambda: module(x), array, dout)
        floor = max(1e-8, 1e-3 * float(np.max(np.abs(numeric))))
        try:
            assert_close(f"{function}: gradient of {name}, analytic vs numeric", analytic,
                         numeric, f"x {x.shape}", tol, floor)
        except AssertionError as err:
            raise AssertionError(f"{err}{'. ' + hint if hint else ''}") from None
