"""Remove (and put back) the bodies of named functions in Python source, by the AST.

    strip_functions(source, {"mssa_forward": message, "CRATELayer.backward": message})

Each named function keeps its decorators, signature, docstring and the
input checks it opens with (leading statements that call a ``check_*``
helper); the rest of its body becomes ``raise NotImplementedError(message)``.
Every other line of the file is left exactly as it was, so a release is the
library minus the lines a student writes.
"""
import ast


def _functions(tree):
    """{qualname: FunctionDef} for module-level functions and methods of module-level classes."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = item
    return found


def _is_docstring(stmt):
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _is_check(stmt):
    """A statement that only validates inputs: ``check_x(...)`` or ``name = check_x(...)``."""
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return name.startswith("check_")


def _kept(node):
    """The leading statements of a function that stay: docstring and input checks."""
    body = node.body
    i = 1 if body and _is_docstring(body[0]) else 0
    while i < len(body) - 1 and _is_check(body[i]):
        i += 1
    return body[:i], body[i:]


def find_functions(source, names, filename="<source>"):
    """{name: FunctionDef} for every name; KeyError naming the missing ones."""
    found = _functions(ast.parse(source, filename))
    missing = [n for n in names if n not in found]
    if missing:
        raise KeyError(f"{filename}: no function {', '.join(missing)} "
                       f"(functions here: {', '.join(sorted(found))})")
    return {n: found[n] for n in names}


def solution_lines(source, names, filename="<source>"):
    """{name: the source lines a student writes} (the body after the docstring and checks)."""
    lines = source.splitlines()
    out = {}
    for name, node in find_functions(source, names, filename).items():
        _, removed = _kept(node)
        out[name] = lines[removed[0].lineno - 1:node.end_lineno] if removed else []
    return out


def strip_functions(source, messages, filename="<source>"):
    """Return ``source`` with each named function's body replaced by a NotImplementedError.

    messages: {qualname: the message the error carries}.
    """
    lines = source.splitlines(keepends=True)
    nodes = find_functions(source, list(messages), filename)
    # edit from the bottom up so earlier line numbers stay valid
    for name, node in sorted(nodes.items(), key=lambda kv: -kv[1].lineno):
        kept, removed = _kept(node)
        if not removed:
            continue
        first = removed[0]
        indent = " " * first.col_offset
        start = first.lineno - 1
        # a statement sharing its line with the def (``def f(): return 1``) cannot be cut
        if first.lineno == node.lineno:
            raise ValueError(f"{filename}: {name} has its body on the def line; "
                             "put it on its own lines")
        stub = f"{indent}raise NotImplementedError({messages[name]!r})\n"
        lines[start:node.end_lineno] = [stub]
    return "".join(lines)


def function_source(source, name, filename="<source>"):
    """The full source of one function (decorators and def included), dedented."""
    node = find_functions(source, [name], filename)[name]
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.splitlines(keepends=True)[first - 1:node.end_lineno]
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "".join(line[indent:] if line.strip() else line for line in lines)


def replace_function(source, name, new_function, filename="<source>"):
    """Return ``source`` with function ``name`` (decorators included) replaced by
    ``new_function`` (its full, dedented source), re-indented to fit."""
    node = find_functions(source, [name], filename)[name]
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.splitlines(keepends=True)
    indent = " " * node.col_offset
    new = [indent + line if line.strip() else line
           for line in new_function.splitlines(keepends=True)]
    if new and not new[-1].endswith("\n"):
        new[-1] += "\n"
    lines[first - 1:node.end_lineno] = new
    return "".join(lines)
