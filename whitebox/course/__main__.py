"""python -m whitebox.course list | release KEY --out DIR | audit KEY [--folder DIR]
| grade DIR [--assignment KEY] | nbgrader [KEY ...] --course DIR"""
import argparse
import csv
import json
import sys

from .assignments import ASSIGNMENTS
from .grade import grade, grade_many
from .release import AuditError, pointer, release


def cmd_list(args):
    for a in ASSIGNMENTS.values():
        print(f"{a.key}  {a.title}  ({a.points} points, about {a.hours:g} hours; "
              f"tutorials {', '.join(a.tutorials)})")
        if a.coming:
            print(f"    coming: {a.coming}")
        for p in a.parts:
            print(f"    part {p.number}  {p.title:<62} {p.points:>3} points")
            if args.verbose:
                for f in p.functions:
                    print(f"            {f}")
                print(f"            derived in {pointer(p)}")
        print()


def cmd_release(args):
    out = release(args.assignment, args.out, force=args.force)
    print(f"wrote the {args.assignment.upper()} student release to {out}")


def cmd_audit(args):
    from .audit import audit
    failed = False
    for key in args.assignments:
        report = audit(key, args.folder, dynamic=not args.static)
        print(report.table())
        failed |= not report.ok
    if failed:
        raise AuditError("the audit found answers in the release (listed above)")


def cmd_grade(args):
    if len(args.folders) == 1:
        reports = [grade(args.folders[0], args.assignment, args.hidden, timeout=args.timeout,
                         verbose=args.verbose)]
    else:
        reports = grade_many(args.folders, args.assignment, args.hidden, timeout=args.timeout)
    for report in reports:
        print(report.table(failures=not args.quiet))
        if len(reports) > 1:
            print()
    if args.json:
        with open(args.json, "w") as f:
            data = [r.to_dict() for r in reports]
            json.dump(data[0] if len(data) == 1 else data, f, indent=2)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            parts = max(len(r.parts) for r in reports)
            writer.writerow(["folder", "assignment"] + [f"part {i + 1}" for i in range(parts)]
                            + ["score", "points"])
            for r in reports:
                writer.writerow([r.folder, r.assignment] + [round(p.score, 2) for p in r.parts]
                                + [""] * (parts - len(r.parts)) + [round(r.score, 2), r.points])


def cmd_nbgrader(args):
    from .to_nbgrader import write_course
    written = write_course(args.course, args.assignments or None, tutorials=args.tutorials,
                           hidden=not args.no_hidden)
    for key, notebooks in written.items():
        for path, graded in notebooks:
            points = sum(p for _, _, p in graded)
            print(f"{key}: {path} ({len(graded)} autograded check cells, {points} points)")
    print(f"now: cd {args.course} && nbgrader generate_assignment <A1|A2|...>")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m whitebox.course",
                                 description="whitebox course assignments: list, release, grade")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the assignments and their parts with points")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the functions of each part and where they are derived")
    p.set_defaults(run=cmd_list)
    p = sub.add_parser("release", help="write a student folder for one assignment")
    p.add_argument("assignment", help="A1, A2, ...")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(run=cmd_release)
    p = sub.add_parser("audit", help="prove that no code in a release computes a graded "
                                     "function's answer (release runs it too)")
    p.add_argument("assignments", nargs="+", metavar="assignment", help="A1, A2, ...")
    p.add_argument("--folder", help="a release to audit (default: a fresh one in a "
                                    "temporary folder)")
    p.add_argument("--static", action="store_true",
                   help="the static layer only (no probes run)")
    p.set_defaults(run=cmd_audit)
    p = sub.add_parser("grade", help="grade a folder: a score per part and 'score: X/Y'")
    p.add_argument("folders", nargs="+", metavar="folder",
                   help="student folders (or the project itself)")
    p.add_argument("--assignment", help="which assignment (default: the folder's ASSIGNMENT.json)")
    p.add_argument("--hidden", help="a folder of extra tests, test_<assignment>_part<N>_*.py")
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds of wall-clock time the submission may take to answer "
                        "one part's checks (120)")
    p.add_argument("--json", help="also write the report(s) as JSON to this file")
    p.add_argument("--csv", help="also write one row per folder (part scores, total) to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no list of failed checks")
    p.add_argument("-v", "--verbose", action="store_true", help="say when each part is done")
    p.set_defaults(run=cmd_grade)
    p = sub.add_parser("nbgrader", help="the tutorials as nbgrader source notebooks "
                                        "(needs the course extra: jupytext, nbgrader)")
    p.add_argument("assignments", nargs="*", help="A1 A2 ... (default: every ready one)")
    p.add_argument("--course", required=True, help="the nbgrader course folder to write")
    p.add_argument("--tutorials", help="the folder of tutorials (default: the project's)")
    p.add_argument("--no-hidden", action="store_true",
                   help="no hidden stored-array tests (they run each tutorial once)")
    p.set_defaults(run=cmd_nbgrader)
    args = ap.parse_args(argv)
    try:
        args.run(args)
    except (KeyError, ValueError, FileNotFoundError, FileExistsError, AuditError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
