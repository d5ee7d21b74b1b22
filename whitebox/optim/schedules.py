"""Learning-rate schedules that write ``optimizer.lr`` once per optimizer step.

Convention (as in torch.optim.lr_scheduler): build the schedule after the
optimizer, then in the loop call ``optimizer.step()`` and then
``schedule.step()``. ``lr_at(t)`` is the learning rate used by update number
t, counted from 0; building the schedule sets ``optimizer.lr = lr_at(0)`` and
the k-th ``schedule.step()`` sets it to ``lr_at(k)``. The base learning rate
is the optimizer's ``lr`` when the schedule is built.
"""
import math

from ..functional._checks import check_int, to_float
from .optimizer import check_hyper


class Schedule:
    """Base: holds the optimizer, the base lr and the number of steps taken.

    Subclasses define ``lr_at`` and ``check_config(base_lr, **config)``, which
    checks their settings and returns them as a dict of attributes.
    """

    def __init__(self, optimizer):
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"optimizer must have an 'lr' attribute, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = check_hyper("optimizer.lr", optimizer.lr)
        self.last_step = 0

    def lr_at(self, step):
        raise NotImplementedError

    @staticmethod
    def check_config(base_lr, **config):
        if config:
            raise TypeError(f"unexpected schedule settings {sorted(config)}")
        return {}

    def _apply(self):
        self.optimizer.lr = self.lr_at(self.last_step)

    def step(self):
        """Advance one step and set the optimizer's lr for the next update."""
        self.last_step += 1
        self._apply()
        return self.optimizer.lr

    def _config(self):
        return {}

    def state_dict(self):
        """Plain Python numbers only (so it can travel as JSON)."""
        return {"type": type(self).__name__, "base_lr": self.base_lr,
                "last_step": self.last_step, **self._config()}

    def check_state_dict(self, sd):
        """Validate a :meth:`state_dict` WITHOUT changing anything.

        Returns: the checked attributes {"base_lr", "last_step", settings...}.
        """
        if not isinstance(sd, dict) or sd.get("type") != type(self).__name__:
            got = sd.get("type") if isinstance(sd, dict) else type(sd).__name__
            raise ValueError(f"state_dict is for schedule {got!r}, "
                             f"but this is {type(self).__name__!r}")
        for key in ("base_lr", "last_step", *self._config()):
            if key not in sd:
                raise KeyError(f"schedule state_dict lacks {key!r}")
        base_lr = check_hyper("state_dict 'base_lr'", sd["base_lr"])
        last_step = check_int("state_dict 'last_step'", sd["last_step"], 0)
        config = self.check_config(base_lr, **{key: sd[key] for key in self._config()})
        return {"base_lr": base_lr, "last_step": last_step, **config}

    def load_state_dict(self, sd):
        """Restore the position and settings, and set the optimizer's lr to match.

        A refused state_dict leaves the schedule and the optimizer as they were.
        """
        for key, value in self.check_state_dict(sd).items():
            setattr(self, key, value)
        self._apply()


class WarmupCosine(Schedule):
    """Linear warm-up, then half a cosine down to ``min_lr``.

        lr_at(t) = base * (t + 1) / warmup_steps                      t < warmup_steps
        lr_at(t) = min_lr + (base - min_lr) (1 + cos(pi s)) / 2,      s = (t - W) / (T - W)
        lr_at(t) = min_lr                                             t >= total_steps
    with W = warmup_steps and T = total_steps. Warm-up reaches ``base`` at the
    last warm-up update (no update is wasted at lr 0), the cosine starts from
    ``base`` at t = W and lands on ``min_lr`` at t = T.
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0):
        super().__init__(optimizer)
        config = self.check_config(self.base_lr, warmup_steps=warmup_steps,
                                   total_steps=total_steps, min_lr=min_lr)
        for key, value in config.items():
            setattr(self, key, value)
        self._apply()

    @staticmethod
    def check_config(base_lr, warmup_steps, total_steps, min_lr):
        warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        total_steps = check_int("total_steps", total_steps, 1)
        if total_steps < warmup_steps:
            raise ValueError(f"total_steps must be >= warmup_steps={warmup_steps}, "
                             f"got {total_steps}")
        min_lr = to_float("min_lr", min_lr)
        if not 0.0 <= min_lr <= base_lr:
            raise ValueError(f"min_lr must be in [0, base lr={base_lr}], got {min_lr!r}")
        return {"warmup_steps": warmup_steps, "total_steps": total_steps, "min_lr": min_lr}

    def lr_at(self, step):
        W, T = self.warmup_steps, self.total_steps
        if step < W:
            return self.base_lr * (step + 1) / W
        if step >= T:
            return self.min_lr
        progress = (step - W) / max(1, T - W)   # 0 -> 1 over the decay phase
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))   # 1 -> 0
        return self.min_lr + (self.base_lr - self.min_lr) * cosine

    def _config(self):
        return {"warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "min_lr": self.min_lr}


class StepDecay(Schedule):
    """lr_at(t) = base * gamma ** (t // step_size), as torch.optim.lr_scheduler.StepLR."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        config = self.check_config(self.base_lr, step_size=step_size, gamma=gamma)
        for key, value in config.items():
            setattr(self, key, value)
        self._apply()

    @staticmethod
    def check_config(base_lr, step_size, gamma):
        step_size = check_int("step_size", step_size, 1)
        gamma = to_float("gamma", gamma)
        if not (gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        return {"step_size": step_size, "gamma": gamma}

    def lr_at(self, step):
        return self.base_lr * self.gamma ** (step // self.step_size)

    def _config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}
