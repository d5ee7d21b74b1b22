"""Write exercise versions of the tutorials: every solution becomes a NotImplementedError.

    python tutorials/make_exercises.py                 # all tutorials -> exercises/
    python tutorials/make_exercises.py 02_mssa.py --out my_folder

A solution is the block between a `### BEGIN SOLUTION` line and a
`### END SOLUTION` line; it is replaced by one `raise NotImplementedError`
at the indentation of the BEGIN marker, so solutions inside functions
still leave valid Python behind.

Every solution must be graded by a check that lives OUTSIDE it: between its
END marker and the next BEGIN marker (or the end of the file) there must be
a `check(...)` call or an `assert`, so that the stripped copy still tells a
student what is wrong. ``ungraded_solutions`` finds the blocks that break
this rule and the command line refuses to write them.
"""
import argparse
import pathlib
import re

BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
GRADER = re.compile(r"^\s*(check\(|assert\b)")
STUB = 'raise NotImplementedError("exercise: write your solution here; the check below grades it")'
HERE = pathlib.Path(__file__).resolve().parent


def solution_blocks(source, name="<tutorial>"):
    """Line ranges (begin, end), 1-based and inclusive of the markers; ValueError on bad markers."""
    blocks, start = [], None
    for number, line in enumerate(source.splitlines(), 1):
        if BEGIN.match(line):
            if start is not None:
                raise ValueError(f"{name}:{number}: nested '### BEGIN SOLUTION' "
                                 f"(open since line {start})")
            start = number
        elif END.match(line):
            if start is None:
                raise ValueError(f"{name}:{number}: '### END SOLUTION' without a BEGIN")
            blocks.append((start, number))
            start = None
    if start is not None:
        raise ValueError(f"{name}:{start}: '### BEGIN SOLUTION' is never closed")
    return blocks


def strip_solutions(source, name="<tutorial>"):
    """Return ``source`` with every solution block replaced; raise ValueError on bad markers."""
    lines = source.splitlines(keepends=True)
    out, previous_end = [], 0
    for begin, end in solution_blocks(source, name):
        out.extend(lines[previous_end:begin - 1])
        indent = BEGIN.match(lines[begin - 1]).group(1)
        out.append(f"{indent}{STUB}\n")
        previous_end = end
    out.extend(lines[previous_end:])
    return "".join(out)


def ungraded_solutions(source, name="<tutorial>"):
    """BEGIN line numbers of the solutions with no check(...) or assert after them.

    A solution is graded when a line after its END marker, and before the
    next BEGIN marker (or the end of the file), starts with ``check(`` or
    ``assert``. Solutions in one notebook cell (no ``# %%`` line between
    them, e.g. a forward and a backward in one class) share the checks that
    follow the last of them.
    """
    lines = source.splitlines()
    blocks = solution_blocks(source, name)
    graded = [False] * len(blocks)
    for i in reversed(range(len(blocks))):
        end = blocks[i][1]
        stop = blocks[i + 1][0] - 1 if i + 1 < len(blocks) else len(lines)
        gap = lines[end:stop]
        if any(GRADER.match(line) for line in gap):
            graded[i] = True
        elif i + 1 < len(blocks) and not any(line.startswith("# %%") for line in gap):
            graded[i] = graded[i + 1]                       # same cell: graded with the next
    return [begin for (begin, _), ok in zip(blocks, graded) if not ok]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="tutorial files (default: every NN_*.py here)")
    ap.add_argument("--out", default="exercises", help="output folder (default: exercises)")
    args = ap.parse_args(argv)
    files = [pathlib.Path(f) if pathlib.Path(f).exists() else HERE / f for f in args.files] \
        or sorted(HERE.glob("[0-9][0-9]_*.py"))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        source = path.read_text()
        ungraded = ungraded_solutions(source, path.name)
        if ungraded:
            raise SystemExit(f"{path.name}: the solutions starting on lines {ungraded} have no "
                             "check(...) or assert after them: a student could not tell "
                             "whether their answer is right")
        target = out / path.name
        target.write_text(strip_solutions(source, path.name))
        print(f"{path.name} -> {target} ({len(solution_blocks(source))} exercises)")


if __name__ == "__main__":
    main()
