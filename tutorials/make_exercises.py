"""Write exercise versions of the tutorials: every solution becomes a NotImplementedError.

    python tutorials/make_exercises.py                 # all tutorials -> exercises/
    python tutorials/make_exercises.py 02_mssa.py --out my_folder

A solution is the block between a `### BEGIN SOLUTION` line and a
`### END SOLUTION` line; it is replaced by one `raise NotImplementedError`
at the indentation of the BEGIN marker, so solutions inside functions
still leave valid Python behind.
"""
import argparse
import pathlib
import re

BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
HERE = pathlib.Path(__file__).resolve().parent


def strip_solutions(source, name="<tutorial>"):
    """Return ``source`` with every solution block replaced; raise ValueError on bad markers."""
    out, indent, start = [], None, 0
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        begin = BEGIN.match(line)
        if indent is None:
            if begin:
                indent, start = begin.group(1), number
                out.append(f'{indent}raise NotImplementedError("exercise: write your solution here")\n')
            elif END.match(line):
                raise ValueError(f"{name}:{number}: '### END SOLUTION' without a BEGIN")
            else:
                out.append(line)
        elif begin:
            raise ValueError(f"{name}:{number}: nested '### BEGIN SOLUTION' (open since line {start})")
        elif END.match(line):
            indent = None
    if indent is not None:
        raise ValueError(f"{name}:{start}: '### BEGIN SOLUTION' is never closed")
    return "".join(out)


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
        target = out / path.name
        target.write_text(strip_solutions(path.read_text(), path.name))
        print(f"{path.name} -> {target}")


if __name__ == "__main__":
    main()
