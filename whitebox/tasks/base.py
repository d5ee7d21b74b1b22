"""What a training task provides to the shared loop.

The loop (:func:`whitebox.training.train`) owns everything tasks share: the
run folder, the optimizer and schedule, gradient clipping, checkpoints and
exact resume, metrics.jsonl, progress bars. A task owns what differs: its
data, its model, its loss, its held-out metrics, its figures and its final
line. One epoch of the loop, with a task ``t``:

    for batch in t.batches():                  # device arrays, drawn from the data rng
        batch = t.draw(model, batch)           # e.g. CRATE-MAE's masks, for the whole batch
        model.zero_grad()
        loss, sums = t.train_step(model, batch)   # forward, loss, backward
                                                  # (or on shards: training/threaded.py)
        clip, optimizer step, schedule step
    record = {train_<k>: sums[k] / count} | t.evaluate(model)
                                   # (or of a snapshot, in a second thread while the next
                                   # epoch trains, when t.evaluate_is_pure: --eval-thread)

Nothing in a step converts device values to Python numbers: ``loss`` and the
``sums`` stay 0-d arrays until the loop logs them.
"""
import dataclasses
import itertools


@dataclasses.dataclass
class NoOptions:
    """A task without settings of its own."""


class Task:
    """Base class; subclasses set the class attributes and implement the methods."""
    name = None
    Options = NoOptions       # dataclass of the task's own settings (fields made with `setting`)
    models = ("crate",)       # values of --model this task can build
    defaults = {}             # shared or own settings whose default differs for this task
    fast = {}                 # settings of --fast: a tiny quick run
    fast_by_dataset = {}      # dataset -> settings of --fast that differ for that dataset
    runtime_options = ()      # own settings that may change on --resume (e.g. a data path)
    renamed = {}              # old setting name -> new one, for config.json of earlier runs
    introduced = {}           # setting added later -> the value runs saved before it had
    description = ""
    # True when evaluate(model) reads only the model it is given and fixed held-out data
    # (it draws from no generator and keeps nothing): then the loop may evaluate a
    # snapshot of the model in a second thread while the next epoch trains (--eval-thread).
    evaluate_is_pure = False

    # A run split over processes (--processes, --distributed) tells each copy of the task
    # its place, (rank, size), and how to add numbers over the copies: an evaluation
    # takes its share of the held-out batches (evaluation_share), adds the sums
    # (add_parts), and leaves what only the written record needs to the first copy.
    part = (0, 1)

    def __init__(self, cfg):
        self.cfg, self.opt = cfg, cfg.options

    @staticmethod
    def add_parts(sums):
        """A dict of Python numbers summed over the run's processes (one process: itself)."""
        return sums

    def evaluation_share(self, batches):
        """The held-out batches (any iterable) this process evaluates: every size-th from
        its rank; all of them in a run of one process."""
        rank, size = self.part
        return itertools.islice(batches, rank, None, size)

    @property
    def writes(self):
        """Whether this copy's record is the one written (the first process's, or the only)."""
        return self.part[0] == 0

    # ------------------------------------------------ settings
    @classmethod
    def resolve(cls, options):
        """Fill settings whose default depends on others (e.g. the patch size); returns options."""
        return options

    @classmethod
    def fast_settings(cls, dataset=None):
        """The settings of --fast for ``dataset`` (None: the task's default data)."""
        return dict(cls.fast, **cls.fast_by_dataset.get(dataset, {}))

    @classmethod
    def default_out(cls, options):
        return f"runs/{cls.name}"

    # ------------------------------------------------ data and model
    def setup(self, rng):
        """Load and check the data once, on the host; ``rng`` is the checkpointed data generator."""
        raise NotImplementedError

    def steps_per_epoch(self):
        raise NotImplementedError

    def describe(self):
        """One line about the data, printed at the start."""
        return ""

    def build_model(self):
        """The model, on the host (the loop moves it to cfg.backend)."""
        raise NotImplementedError

    def generators(self):
        """Generators the task draws from besides the data rng and the model's (checkpointed)."""
        return {}

    def state(self):
        """JSON-able state the run needs besides the config (e.g. a tokenizer); checkpointed."""
        return None

    def check_state(self, saved):
        """Refuse a checkpoint whose task state does not match this run's (resume)."""

    # ------------------------------------------------ one epoch
    def batches(self):
        """One epoch of training batches, on the device."""
        raise NotImplementedError

    def draw(self, model, batch):
        """The batch with any random draws the step takes from the model's generators.

        Called on the WHOLE batch before it is split into shards (threads or
        MPI ranks), so every shard gets its rows of the same draws as a
        one-process step. The default draws nothing here.
        """
        return batch

    def step_splits(self, model):
        """True when ``train_step`` may run on shards of a batch (whitebox.training.threaded):
        its loss is a mean over the rows (or counted tokens), so the shards' weighted sum is
        the whole batch's. Dropout draws are no reason to say False: each shard draws from
        its own generator, derived from the model's at every step."""
        return True

    def train_step(self, model, batch):
        """Forward, loss and backward for one batch (gradients ADDED into model.grads()).

        Returns: (loss, sums): the mean loss of the batch (a 0-d array) and a
        dict of 0-d arrays summed over the batch, with a "count" entry; the
        loop reports train_<key> = sum / count for every other key.
        """
        raise NotImplementedError

    def evaluate(self, model):
        """Held-out metrics after an epoch: a dict of Python numbers (or lists of them)."""
        raise NotImplementedError

    def epoch_line(self, record):
        """The line printed after each epoch."""
        return f"epoch {record['epoch']:3d} | train loss {record['train_loss']:.4f}"

    def figures(self, model, history, out):
        """Draw the run's figures into ``out``."""

    def summary(self, history, model):
        """The last line(s) the job prints, from the metrics and the trained model."""
        raise NotImplementedError


# The per-layer measures of a standard transformer (whitebox.nn.transformer's capture):
# Rc of each block's attention input on its heads' value subspaces, and the non-zero
# fraction of its MLP hidden activations (GELU: dense), the counterparts of CRATE's.
STANDARD_LAYER_TITLES = ("compression Rc of the attention input (value subspaces)",
                         "non-zero fraction of the MLP hidden (GELU)")


def refuse_unused(task, names, model):
    """Refuse CRATE-only settings ``names`` changed from their defaults under ``--model model``,
    which has no use for them (a setting that would be ignored is an error, not a no-op)."""
    defaults = {f.name: f.default for f in dataclasses.fields(task.Options)}
    for name in names:
        value = getattr(task.opt, name)
        if value != defaults[name]:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is a CRATE setting that --model {model} does not use: "
                             f"leave it at its default {defaults[name]}, got {value}")

