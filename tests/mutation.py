"""The engine of scripts/mutate: mutants of a function, put in place in a forked child, judged by tests.

scripts/mutate holds what is checked (the behaviours, their functions and
tests) and the mutants known to be equivalent; this module how. It is no
test module (pytest collects test_*.py only); tests/test_mutate.py tests it.
"""

from __future__ import annotations

import ast
import copy
import importlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Behaviour:
    what: str
    targets: dict[str, tuple[str, ...]]  # module file -> functions (Class.method), or module-level names (regexes)
    tests: tuple[str, ...]


_VALIDATORS = {"canonical_uuid", "canonical_mac", "safe_text"}  # a call of these, replaced by its argument
_METHOD_SWAPS = {"fullmatch": ("match", "search"), "match": ("search",), "startswith": ("endswith",),
                 "endswith": ("startswith",)}
_NAME_SWAPS = {"any": "all", "all": "any", "min": "max", "max": "min"}
_COMPARE_SWAPS = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
                  ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Div: ast.Mult,
                ast.Mod: ast.FloorDiv, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
_STRING_CALLS = {"compile", "match", "fullmatch", "search", "sub", "startswith", "endswith", "strip", "lstrip",
                 "rstrip", "partition", "split", "replace", "get"}


@dataclass
class Mutant:
    file: str
    function: str
    line: int
    start: int  # byte offsets in the file
    end: int
    replacement: str
    original: str
    key: tuple = field(default=())

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.function}: {self.original!r} -> {self.replacement!r}"


class _Sites(ast.NodeVisitor):
    """Every mutation of one function (or module-level value): (node, replacement node or text)."""

    def __init__(self):
        self.found: list[tuple[ast.AST, object]] = []

    def add(self, node: ast.AST, new) -> None:
        self.found.append((node, new))

    def visit_FunctionDef(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        for stmt in body:
            self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_JoinedStr(self, node):  # an f-string: message text
        return

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            if type(op) in _COMPARE_SWAPS:
                new = copy.deepcopy(node)
                new.ops[i] = _COMPARE_SWAPS[type(op)]()
                self.add(node, new)
        for sub in (node.left, *node.comparators):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                self._string(sub)
            elif isinstance(sub, (ast.Tuple, ast.Set, ast.List)):
                for elt in sub.elts:
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                        self._string(elt)
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        swapped = copy.deepcopy(node)
        swapped.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self.add(node, swapped)
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1:]
            self.add(node, rest[0] if len(rest) == 1 else ast.BoolOp(op=node.op, values=rest))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            self.add(node, node.operand)
        self.generic_visit(node)

    def _negate(self, test):
        if not isinstance(test, (ast.Compare, ast.BoolOp, ast.UnaryOp)):
            self.add(test, ast.UnaryOp(op=ast.Not(), operand=test))

    def visit_If(self, node):
        self._negate(node.test)
        last = node.body[-1]
        if not node.orelse and isinstance(last, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
            self.add(node, "pass")  # the guard removed
        self.generic_visit(node)

    def visit_While(self, node):
        self._negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self._negate(node.test)
        self.generic_visit(node)

    def visit_comprehension(self, node):
        for test in node.ifs:
            self._negate(test)
        self.generic_visit(node)

    def visit_Continue(self, node):
        self.add(node, "break")

    def visit_Break(self, node):
        self.add(node, "continue")

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Call):
            self.add(node, "pass")
        self.generic_visit(node)

    def visit_BinOp(self, node):  # and AugAssign: both have an operator in .op
        if type(node.op) in _BINOP_SWAPS:
            new = copy.deepcopy(node)
            new.op = _BINOP_SWAPS[type(node.op)]()
            self.add(node, new)
        self.generic_visit(node)

    visit_AugAssign = visit_BinOp

    def visit_Constant(self, node):
        if isinstance(node.value, bool):
            self.add(node, ast.Constant(not node.value))
        elif isinstance(node.value, int):
            self.add(node, ast.Constant(node.value + 1))

    def _string(self, node):
        self.add(node, ast.Constant("" if node.value else "X"))
        for loose in _looser(node.value):
            self.add(node, ast.Constant(loose))

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _METHOD_SWAPS:
            for other in _METHOD_SWAPS[func.attr]:
                new = copy.deepcopy(node)
                new.func.attr = other
                self.add(node, new)
        if isinstance(func, ast.Name) and func.id in _NAME_SWAPS:
            new = copy.deepcopy(node)
            new.func.id = _NAME_SWAPS[func.id]
            self.add(node, new)
        if isinstance(func, ast.Name) and func.id in _VALIDATORS and len(node.args) == 1:
            self.add(node, node.args[0])  # taken without validation
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in _STRING_CALLS:
            for arg in node.args[:1]:
                for sub in ast.walk(arg):  # a pattern may be built: re.escape(PREFIX) + r"..."
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        self._string(sub)
        self.generic_visit(node)


def _looser(pattern: str) -> list[str]:
    """A regular expression made to accept more: an anchor dropped, a bounded repeat made unbounded."""
    out = []
    if pattern.startswith("^"):
        out.append(pattern[1:])
    for anchor in ("$", r"\Z"):
        if pattern.endswith(anchor) and not pattern.endswith("\\" + anchor):
            out.append(pattern[: -len(anchor)])
    for m in re.finditer(r"\{\d+(,\d*)?\}", pattern):
        out.append(pattern[: m.start()] + "+" + pattern[m.end():])
    return out


def _find(tree: ast.Module, qualname: str) -> ast.AST:
    body, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part
                     or isinstance(n, ast.Assign) and any(getattr(t, "id", None) == part for t in n.targets)), None)
        if node is None:
            raise SystemExit(f"mutate: no {qualname} in the source")
        body = getattr(node, "body", [])
    return node


def mutants(file: str, qualname: str) -> list[Mutant]:
    raw = (REPO / file).read_bytes()
    tree = ast.parse(raw)
    line_starts = [0]
    for line in raw.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    node = _find(tree, qualname)
    sites = _Sites()
    sites.visit(node.value if isinstance(node, ast.Assign) else node)
    out = []
    for target, new in sites.found:
        start = line_starts[target.lineno - 1] + target.col_offset
        end = line_starts[target.end_lineno - 1] + target.end_col_offset
        original = raw[start:end].decode()
        text = new if isinstance(new, str) else ast.unparse(new)
        lines = target.end_lineno - target.lineno
        if isinstance(target, ast.expr):
            replacement = f"({text}{chr(10) * lines})"  # keep every later line where it was
        else:
            replacement = text + "\n" * lines if lines else text
        out.append(Mutant(file, qualname, target.lineno, start, end, replacement, original,
                          (file, qualname, " ".join(original.split()), text)))
    return out


def _module_name(file: str) -> str:
    return file[:-3].replace("/", ".")


def _code_in(code, parts: list[str]):
    for const in code.co_consts:
        if hasattr(const, "co_name") and const.co_name == parts[0]:
            return const if len(parts) == 1 else _code_in(const, parts[1:])
    return None


def install(m: Mutant) -> None:
    """Put the mutant in place in this process (a child's): the function's code, or the module's value."""
    raw = (REPO / m.file).read_bytes()
    source = raw[: m.start] + m.replacement.encode() + raw[m.end:]
    module = importlib.import_module(_module_name(m.file))
    parts = m.function.split(".")
    obj = module
    for part in parts[:-1]:
        obj = getattr(obj, part)
    current = obj.__dict__[parts[-1]] if isinstance(obj, type) else getattr(obj, parts[-1])
    if not callable(current) and not isinstance(current, (property, staticmethod, classmethod)):
        node = _find(ast.parse(source), m.function)
        try:
            value = eval(compile(ast.Expression(node.value), m.file, "eval"), vars(module))
        except Exception:  # the module would not import: nothing runs, every test fails
            os._exit(1)
        setattr(module, m.function, value)
        return
    func = current.fget if isinstance(current, property) else getattr(current, "__func__", current)
    new = _code_in(compile(source, str(REPO / m.file), "exec"), parts)
    if new is None or new.co_freevars != func.__code__.co_freevars:
        raise RuntimeError(f"cannot swap the code of {m.function}")
    func.__code__ = new


def _child(tests: tuple[str, ...], m: Mutant | None) -> None:
    os.setpgid(0, 0)
    os.chdir(REPO)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        if m is not None:
            install(m)
        import pytest
        from hypothesis import settings

        # Derandomized: the same examples for every mutant, so a verdict never depends on luck.
        settings.register_profile("mutate", deadline=None, derandomize=True, database=None)
        settings.load_profile("mutate")

        code = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "-m", "not lab and not checkers",
                            "--no-header", "-W", "ignore"])
    except BaseException:
        os._exit(3)
    os._exit(0 if code == 0 else 1)


@dataclass
class Outcome:
    behaviour: str
    tried: int = 0
    killed: int = 0
    survived: list[Mutant] = field(default_factory=list)
    equivalent: list[tuple[Mutant, str]] = field(default_factory=list)
    errors: list[Mutant] = field(default_factory=list)
    left: int = 0
    seconds: float = 0.0


def run(behaviours: Mapping[str, Behaviour], names: list[str], jobs: int, budget: float | None,
        equivalent: Mapping[tuple, str] = MappingProxyType({})) -> list[Outcome]:
    """Run the named behaviours' mutants, jobs at a time; a mutant whose key is in equivalent is not run."""
    sys.dont_write_bytecode = True
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import tests.conftest  # noqa: F401  (imported once here, not in every child)
    for b in (behaviours[n] for n in names):
        for file in b.targets:
            importlib.import_module(_module_name(file))
        for test in b.tests:
            importlib.import_module(_module_name(test))
    start = time.monotonic()
    outcomes = []
    for name in names:
        b = behaviours[name]
        out = Outcome(name)
        began = time.monotonic()
        base = _spawn(b.tests, None)
        status, took = _reap({base: None}, timeout=600)[0][1:]
        if status != 0:
            raise SystemExit(f"mutate: the tests of {name} fail without any mutant: {' '.join(b.tests)}")
        timeout = max(20.0, 10 * took)
        queue = [m for file, funcs in b.targets.items() for f in funcs for m in mutants(file, f)]
        running: dict[int, tuple[Mutant, float]] = {}
        while queue or running:
            while queue and len(running) < jobs:
                if budget is not None and time.monotonic() - start > budget:
                    out.left += len(queue)
                    queue.clear()
                    break
                m = queue.pop(0)
                if m.key in equivalent:
                    out.equivalent.append((m, equivalent[m.key]))
                    continue
                running[_spawn(b.tests, m)] = (m, time.monotonic())
            if not running:
                break
            for pid, status, _ in _reap({pid: began_at for pid, (_, began_at) in running.items()}, timeout, block=1):
                m, _ = running.pop(pid)
                out.tried += 1
                if status == 0:
                    out.survived.append(m)
                elif status == 3:
                    out.errors.append(m)
                else:
                    out.killed += 1  # a failing test, or a hang past the timeout
        out.seconds = time.monotonic() - began
        outcomes.append(out)
    return outcomes


def _spawn(tests, m) -> int:
    pid = os.fork()
    if pid == 0:
        _child(tests, m)
    return pid


def _reap(started: dict[int, float | None], timeout: float, block: int = 0) -> list[tuple[int, int, float]]:
    """Wait until at least one (block=1) or every (block=0) child has ended; a child past timeout is killed."""
    done = []
    begun = {pid: (t if t is not None else time.monotonic()) for pid, t in started.items()}
    while begun and (len(done) < block or not block):
        for pid in list(begun):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                code = os.waitstatus_to_exitcode(status)
                done.append((pid, 1 if code < 0 else code, time.monotonic() - begun.pop(pid)))
            elif time.monotonic() - begun[pid] > timeout:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                done.append((pid, 2, time.monotonic() - begun.pop(pid)))
        if begun and (len(done) < block or not block):
            time.sleep(0.01)
    return done
