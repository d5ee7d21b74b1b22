"""A run folder: what one training run leaves, and the rules that keep runs apart.

    <out>/config.json     the run's settings and its ``run_id`` (written first)
    <out>/metrics.jsonl   one JSON line per finished epoch, each with the run_id
    <out>/checkpoint.npz  model, optimizer, schedule, generators, and the run_id
    <out>/*.png           figures

Rules, so that nothing is lost and no two runs are spliced:
  * A fresh run in a folder that holds an earlier run moves that run's files
    aside to ``<out>/earlier/<its run id>/`` (``overwrite=True`` deletes them
    instead), so a later ``--resume`` can never continue the earlier run.
  * ``--resume`` needs config.json and checkpoint.npz, and refuses a
    checkpoint or metric lines whose run_id is not the one in config.json.
  * Every file is replaced atomically; temporary files left by a killed
    write are removed when the next run starts.
  * One process changes the folder: in a distributed run the other ranks
    wait until rank 0 has prepared it and never write or remove anything
    there (distributed.SharedRun).
"""
import json
import os
import secrets
import warnings

from ..checkpoint import atomic_write, clean_stale_temporaries

CHECKPOINT, METRICS, CONFIG = "checkpoint.npz", "metrics.jsonl", "config.json"
RUN_FILES = (CONFIG, METRICS, CHECKPOINT)
EARLIER = "earlier"


class RunFolder:
    """The files of one run in ``out`` (see the module docstring)."""

    def __init__(self, out):
        self.out = out
        self.checkpoint = os.path.join(out, CHECKPOINT)
        self.metrics = os.path.join(out, METRICS)
        self.config = os.path.join(out, CONFIG)
        self.run_id = None

    def path(self, name):
        return os.path.join(self.out, name)

    # ---------------------------------------------------------------- starting
    def start_fresh(self, overwrite=False):
        """Make the folder ready for a new run.

        Returns: the folder an earlier run's files were moved to, or None
        (nothing there, or ``overwrite`` deleted them).
        """
        os.makedirs(self.out, exist_ok=True)
        clean_stale_temporaries(self.out)   # left by a killed write
        used = [name for name in os.listdir(self.out)
                if name in RUN_FILES or name.endswith(".png")]
        aside = None
        if used and not overwrite:
            earlier = read_json(self.config).get("run_id") if os.path.isfile(self.config) \
                else None
            aside = os.path.join(self.out, EARLIER, earlier or secrets.token_hex(4))
            os.makedirs(aside, exist_ok=True)
            for name in used:
                os.replace(self.path(name), os.path.join(aside, name))
        elif used:
            for name in used:
                os.remove(self.path(name))
        self.run_id = secrets.token_hex(8)
        return aside

    def open_for_resume(self):
        """The saved config dict of the run to continue; clear errors when it cannot be."""
        if not os.path.isfile(self.config):
            raise FileNotFoundError(
                f"--resume: {self.config!r} is missing, so the run's settings are unknown "
                "(start a new run without --resume, or pick the --out of the run to continue)")
        if not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(
                f"--resume: no checkpoint {self.checkpoint!r} to continue from (the run "
                "stopped before its first epoch ended: start it again without --resume)")
        clean_stale_temporaries(self.out)   # left by a killed write
        saved = read_json(self.config)
        self.run_id = saved.get("run_id")
        return saved

    def check_checkpoint_run(self, saved_run_id):
        """The checkpoint must belong to config.json's run."""
        if saved_run_id != self.run_id:
            raise ValueError(
                f"--resume: {self.checkpoint!r} belongs to run {saved_run_id!r} but "
                f"{self.config!r} describes run {self.run_id!r}; the folder mixes two runs, "
                "so resuming would splice them (start a new run, or restore the matching files)")

    # ---------------------------------------------------------------- writing
    def write_config(self, config):
        data = dict(config, run_id=self.run_id)
        atomic_write(self.config, lambda f: json.dump(data, f, indent=2), binary=False)

    def write_metrics(self, records):
        """metrics.jsonl: one JSON line per record, rewritten atomically (a few kB)."""
        def write(f):
            for r in records:
                f.write(json.dumps(dict(r, run=self.run_id)) + "\n")
        atomic_write(self.metrics, write, binary=False)

    def read_metrics(self, last_epoch):
        """The metric lines of epochs 1..last_epoch (later ones belong to a lost epoch).

        A damaged LAST line (a write cut short by a crash) is dropped with a
        warning: the checkpoint, not the metrics file, says where training
        stands. A damaged line elsewhere, or a line of another run: ValueError.
        """
        if not os.path.isfile(self.metrics):
            return []
        lines = [(number, line) for number, line in enumerate(_read_text(self.metrics).split(
            "\n"), start=1) if line.strip()]
        history = []
        for i, (number, line) in enumerate(lines):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "epoch" not in record:
                    raise ValueError("not a metrics record (a JSON object with an 'epoch')")
            except ValueError as err:
                if i < len(lines) - 1:
                    raise ValueError(f"{self.metrics!r} line {number} is not a valid metrics "
                                     f"line ({err}); only a truncated last line can be "
                                     "repaired on --resume") from err
                warnings.warn(f"{self.metrics!r}: dropping its last line {number}, cut short by "
                              f"an interrupted write ({line.strip()[:40]!r}...)",
                              RuntimeWarning, stacklevel=2)
                continue
            if record.get("run", self.run_id) != self.run_id:
                raise ValueError(f"{self.metrics!r} line {number} belongs to run "
                                 f"{record.get('run')!r}, not to {self.run_id!r} of "
                                 f"{self.config!r}; refusing to splice two runs")
            record.pop("run", None)
            history.append(record)
        return [h for h in history if h["epoch"] <= last_epoch]


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path!r} is not UTF-8 text ({err}); it is not a file this "
                         "project wrote, or it was damaged") from None


def read_json(path):
    """A JSON file written by a run (the file is named in every error)."""
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} must hold a JSON object, got {type(data).__name__}")
    return data
