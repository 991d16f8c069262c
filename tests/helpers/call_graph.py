"""Static calls among the project's modules and the benchmarks, read with ast (nothing is
imported or run): which functions a stage's `main` reaches, what a benchmark section's code
calls, and what runs between a benchmark's clock readings.

Used by tests/stages/test_benchmarks_time_production_code.py. The rules:

- A reference is a name or attribute chain that resolves to a definition of ours: a call, or a
  function passed as a value (`dataset.map(prepare_features)`, a callback). Names resolve
  through imports (re-exports followed), module-level definitions, nested definitions, `self`
  and `cls`, and local variables whose class is known: assigned from a class call, from a call
  whose return annotation names a class of ours, or annotated (parameters, dataclass fields,
  `self.x = ...` in any method). A call on an object of unknown class resolves to nothing: the
  analysis misses such an edge rather than guessing it, so a function reached only that way
  shows up as unreached (a false alarm, not a false pass). It over-approximates only where the
  next rules say so.
- Referencing a class reaches its __init__/__post_init__, its dunder methods and properties; a
  class with a base from outside the project (mlflow.pyfunc.PythonModel, a Keras callback)
  reaches all its instance methods, which that framework calls (the export stage creates the
  QAModel it logs, so MLflow's calls to its predict are the export's product, reached).
- Reaching a definition reaches its module's top-level code (run at import) and its nested
  definitions.
- Benchmarks run some code in subprocesses: `-m pipeline.X` in an argument list (or
  f"pipeline.{name}" over a literal tuple of names) references pipeline.X's main;
  `mlflow models serve ...` and `.predict` on the result of `mlflow.pyfunc.load_model(...)`
  reference the pyfunc predict of the MLflow model the benchmark builds (PYFUNC_PREDICT, resolved
  per benchmark module to the PythonModel classes the pipeline functions it calls instantiate).
- A timed region is the statements from `X = time.perf_counter()` (or time.time/monotonic) to
  the first later statement of the same block that reads X, both included (to the end of the
  block if none does).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

PYFUNC_PREDICT = "<the MLflow pyfunc model's predict>"
PYFUNC_MODEL = "<an MLflow pyfunc model>"  # the class of what mlflow.pyfunc.load_model returns
CLOCKS = {"time.perf_counter", "time.perf_counter_ns", "time.monotonic", "time.time", "time.process_time"}
PYFUNC_BASE = "mlflow.pyfunc.PythonModel"
MODULE_CODE = "<module>"  # the definition standing for a module's top-level code


@dataclass
class Definition:
    name: str  # canonical dotted name: module.function, module.Class.method, module.function.inner
    module: str
    node: ast.AST  # FunctionDef, AsyncFunctionDef, ClassDef or Module (MODULE_CODE)
    owner_class: Optional[str] = None  # for methods: the class's canonical name
    enclosing: Optional[str] = None  # for nested definitions: the enclosing function's
    nested: dict[str, str] = field(default_factory=dict)  # local name -> canonical, defined in its body

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, ast.ClassDef)

    @property
    def is_function(self) -> bool:
        return isinstance(self.node, (ast.FunctionDef, ast.AsyncFunctionDef))

    def decorators(self) -> set[str]:
        names = set()
        for d in getattr(self.node, "decorator_list", []):
            target = d.func if isinstance(d, ast.Call) else d
            names.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
        return names


def _dotted(expr: ast.AST) -> Optional[list[str]]:
    """['a', 'b', 'c'] for the expression a.b.c, None for anything else."""
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        return [expr.id, *reversed(parts)]
    return None


def _body_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node of a definition's own code: nested functions and classes contribute their
    decorators, defaults and bases (run here), not their bodies (their own definitions)."""
    roots = node.body if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else [node]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        roots = [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None], *roots]
    yield from _walk_own(roots)


def _walk_own(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    todo = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend([*node.decorator_list, *node.args.defaults, *[d for d in node.args.kw_defaults if d]])
        elif isinstance(node, ast.ClassDef):
            todo.extend([*node.decorator_list, *node.bases, *[k.value for k in node.keywords]])
        elif isinstance(node, ast.Lambda):
            todo.append(node.body)
        else:
            todo.extend(ast.iter_child_nodes(node))


class Project:
    """Definitions and references of a set of modules: `sources` maps a dotted module name (as
    it is imported: pipeline.qa.postprocess, or speed for benchmarks/speed.py) to its source."""

    def __init__(self, sources: dict[str, str]):
        self.trees = {name: ast.parse(src) for name, src in sources.items()}
        self.defs: dict[str, Definition] = {}
        self.bindings: dict[str, dict[str, str]] = {}  # module -> local name -> dotted target
        self.constants: dict[str, dict[str, tuple[str, ...]]] = {}  # module -> NAME -> literal strings
        for module, tree in self.trees.items():
            self._index_module(module, tree)
        self._edges: dict[str, set[str]] = {}
        self._attr_types: dict[str, dict[str, str]] = {}

    @classmethod
    def from_files(
        cls, root: Path, packages: Iterable[str] = ("pipeline",), flat_dirs: Iterable[str] = ()
    ) -> "Project":
        """The .py files under root/<package> (named pipeline.x.y) and in root/<flat dir> (named by
        their stem, as a script's own directory on sys.path imports them)."""
        sources = {}
        for package in packages:
            for path in sorted((root / package).rglob("*.py")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                sources[".".join(parts)] = path.read_text(encoding="utf-8")
        for directory in flat_dirs:
            for path in sorted((root / directory).glob("*.py")):
                sources[path.stem] = path.read_text(encoding="utf-8")
        return cls(sources)

    # -- indexing --------------------------------------------------------------------------

    def _index_module(self, module: str, tree: ast.Module) -> None:
        bindings: dict[str, str] = {}
        constants: dict[str, tuple[str, ...]] = {}
        for node in tree.body:  # absolute imports only: the project uses no relative ones
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        bindings[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        bindings[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    bindings[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                values = _string_literals(node.value)
                if values is not None:
                    constants[node.targets[0].id] = values
        self.bindings[module] = bindings
        self.constants[module] = constants
        self.defs[f"{module}.{MODULE_CODE}"] = Definition(f"{module}.{MODULE_CODE}", module, tree)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bindings[node.name] = f"{module}.{node.name}"
                self._index_def(module, node, f"{module}.{node.name}", None, None)

    def _index_def(self, module: str, node, name: str, owner_class: Optional[str], enclosing: Optional[str]) -> None:
        definition = Definition(name, module, node, owner_class, enclosing)
        self.defs[name] = definition
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self._index_def(
                        module,
                        child,
                        f"{name}.{child.name}",
                        name if not isinstance(child, ast.ClassDef) else None,
                        enclosing,
                    )
            return
        for child in _walk_own(node.body):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definition.nested[child.name] = f"{name}.{child.name}"
                self._index_def(module, child, f"{name}.{child.name}", None, name)

    # -- name resolution -------------------------------------------------------------------

    def resolve_dotted(self, dotted: str, depth: int = 0) -> Optional[str]:
        """The canonical definition a dotted name denotes (re-exports followed), or None."""
        if depth > 20:
            return None
        if dotted in self.defs and not dotted.endswith(MODULE_CODE):
            return dotted
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:cut])
            if module not in self.trees:
                continue
            head, rest = parts[cut], parts[cut + 1 :]
            if f"{module}.{head}" in self.defs:
                return self._attribute_chain(f"{module}.{head}", rest)
            target = self.bindings[module].get(head)
            if target is not None:
                return self.resolve_dotted(".".join([target, *rest]), depth + 1)
            return None
        return None

    def _attribute_chain(self, definition: str, attrs: list[str]) -> Optional[str]:
        for attr in attrs:
            if not self.defs[definition].is_class:
                return None
            found = self.class_attribute(definition, attr)
            if found is None:
                return None
            definition = found
        return definition

    def bases(self, cls: str) -> tuple[list[str], list[str]]:
        """(project base classes, dotted names of the other bases) of a class."""
        definition = self.defs[cls]
        ours, others = [], []
        for base in definition.node.bases:
            dotted = self.dotted_name(base, definition.module)
            resolved = self.resolve_dotted(dotted) if dotted else None
            if resolved and self.defs[resolved].is_class:
                ours.append(resolved)
            elif dotted:  # builtins (object, Exception) are not bound: not counted
                others.append(dotted)
        return ours, others

    def class_attribute(self, cls: str, attr: str, seen: Optional[set] = None) -> Optional[str]:
        seen = seen or set()
        if cls in seen:
            return None
        seen.add(cls)
        if f"{cls}.{attr}" in self.defs:
            return f"{cls}.{attr}"
        for base in self.bases(cls)[0]:
            found = self.class_attribute(base, attr, seen)
            if found:
                return found
        return None

    def dotted_name(self, expr: ast.AST, module: str) -> Optional[str]:
        """The dotted name an expression spells with its module's top-level bindings
        (`np.argsort` -> numpy.argsort), or None."""
        parts = _dotted(expr)
        head = self.bindings[module].get(parts[0]) if parts else None
        return ".".join([head, *parts[1:]]) if head else None

    def has_foreign_base(self, cls: str, seen: Optional[set] = None) -> bool:
        seen = seen or set()
        if cls in seen:
            return False
        seen.add(cls)
        ours, others = self.bases(cls)
        return bool(others) or any(self.has_foreign_base(b, seen) for b in ours)

    def foreign_bases(self, cls: str) -> set[str]:
        ours, others = self.bases(cls)
        found = set(others)
        for base in ours:
            found |= self.foreign_bases(base)
        return found

    # -- references ------------------------------------------------------------------------

    def scope(self, name: str) -> "Scope":
        return Scope(self, self.defs[name])

    def references(self, nodes: Iterable[ast.AST], scope: "Scope") -> set[str]:
        """The definitions of ours (and the pseudo-references: subprocess `-m pipeline.X`, the
        pyfunc predict) that these nodes name."""
        found: set[str] = set()
        skip: set[int] = set()  # sub-chains of an attribute chain already handled
        for node in nodes:
            if id(node) in skip:
                continue
            if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(getattr(node, "ctx", None), ast.Load):
                resolved = scope.resolve(node)
                if resolved is not None:
                    found.add(resolved)
                    inner = node
                    while isinstance(inner, ast.Attribute):
                        inner = inner.value
                        skip.add(id(inner))
            if isinstance(node, (ast.List, ast.Tuple, ast.Call)):
                elements = node.args if isinstance(node, ast.Call) else node.elts
                found |= self._subprocess_references(elements, scope)
        return found

    def _subprocess_references(self, elements: list[ast.AST], scope: "Scope") -> set[str]:
        found: set[str] = set()
        strings = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None for e in elements]
        for i, value in enumerate(strings):
            if value == "-m" and i + 1 < len(elements):
                for module in scope.module_names(elements[i + 1]):
                    if module == "pipeline" or module.startswith("pipeline."):
                        found.add(self.resolve_dotted(f"{module}.main") or f"{module}.main")
            if strings[i : i + 3] == ["mlflow", "models", "serve"]:
                found.add(PYFUNC_PREDICT)
        return found

    def edges(self, name: str) -> set[str]:
        """What reaching this definition reaches."""
        if name in self._edges:
            return self._edges[name]
        self._edges[name] = set()  # cycles
        definition = self.defs[name]
        out: set[str] = set()
        if definition.is_class:
            out |= self.references(
                _walk_own([*definition.node.bases, *definition.node.decorator_list]), self.scope(name)
            )
            out |= self.references(_body_nodes(definition.node), self.scope(name))
            out |= set(self.bases(name)[0])
            for attr in self._instance_members(name):
                out.add(attr)
        else:
            out |= self.references(_body_nodes(definition.node), self.scope(name))
            out |= set(definition.nested.values())
            if definition.is_function:
                out |= self.references(
                    _walk_own(definition.node.decorator_list),
                    Scope(self, self.defs[definition.enclosing])
                    if definition.enclosing
                    else self.scope(f"{definition.module}.{MODULE_CODE}"),
                )
        if not name.endswith(MODULE_CODE):
            out.add(f"{definition.module}.{MODULE_CODE}")
        out.discard(name)
        self._edges[name] = out
        return out

    def _instance_members(self, cls: str) -> list[str]:
        """Methods that instantiating the class reaches: __init__ and the other dunders (called by
        syntax), properties, and for a class with a foreign base every instance method."""
        foreign = self.has_foreign_base(cls)
        members = []
        for candidate in [cls, *self._all_project_bases(cls)]:
            for child in self.defs[candidate].node.body:
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                member = self.defs[f"{candidate}.{child.name}"]
                dunder = child.name.startswith("__") and child.name.endswith("__")
                static = member.decorators() & {"classmethod", "staticmethod"}
                if dunder or "property" in member.decorators() or (foreign and not static):
                    members.append(member.name)
        return members

    def _all_project_bases(self, cls: str) -> list[str]:
        out = []
        for base in self.bases(cls)[0]:
            out += [base, *self._all_project_bases(base)]
        return out

    def reach(self, roots: Iterable[str]) -> dict[str, Optional[str]]:
        """Every definition reachable from the roots -> the definition it was first reached from."""
        parent: dict[str, Optional[str]] = {}
        todo = []
        for root in roots:
            if root in self.defs and root not in parent:
                parent[root] = None
                todo.append(root)
        while todo:
            name = todo.pop(0)
            for nxt in sorted(self.edges(name)):
                if nxt in self.defs and nxt not in parent:
                    parent[nxt] = name
                    todo.append(nxt)
        return parent

    @staticmethod
    def path(parent: dict[str, Optional[str]], name: str) -> list[str]:
        chain = [name]
        while parent.get(chain[-1]) is not None:
            chain.append(parent[chain[-1]])
        return [c for c in reversed(chain) if not c.endswith(MODULE_CODE)]

    # -- types -----------------------------------------------------------------------------

    def returned_class(self, function: str) -> Optional[str]:
        definition = self.defs[function]
        if definition.is_class:
            return function
        annotation = getattr(definition.node, "returns", None)
        return self.annotation_class(annotation, definition, owner=definition.owner_class)

    def annotation_class(self, annotation, definition: Definition, owner: Optional[str] = None) -> Optional[str]:
        if annotation is None:
            return None
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                annotation = ast.parse(annotation.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):  # X | None
            return self.annotation_class(annotation.left, definition, owner) or self.annotation_class(
                annotation.right, definition, owner
            )
        if isinstance(annotation, ast.Subscript) and (_dotted(annotation.value) or [""])[-1] == "Optional":
            return self.annotation_class(annotation.slice, definition, owner)
        parts = _dotted(annotation)
        if parts is None:
            return None
        if owner and parts == [self.defs[owner].node.name]:
            return owner
        # module-level names only (an annotation names a class, not a local)
        target = self.bindings[definition.module].get(parts[0])
        resolved = self.resolve_dotted(".".join([target, *parts[1:]])) if target else None
        return resolved if resolved and self.defs[resolved].is_class else None

    def attribute_types(self, cls: str) -> dict[str, str]:
        """Instance attribute -> class of ours, from the class body's annotations (dataclass fields)
        and `self.attr = ...` in its methods."""
        if cls in self._attr_types:
            return self._attr_types[cls]
        self._attr_types[cls] = {}
        types: dict[str, str] = {}
        definition = self.defs[cls]
        for child in definition.node.body:
            if isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name):
                found = self.annotation_class(child.annotation, definition, owner=cls)
                if found:
                    types[child.target.id] = found
        for child in definition.node.body:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                method_scope = self.scope(f"{cls}.{child.name}")
                for node in _walk_own(child.body):
                    if isinstance(node, ast.Assign):
                        for target in node.targets:
                            if (
                                isinstance(target, ast.Attribute)
                                and isinstance(target.value, ast.Name)
                                and target.value.id == method_scope.self_name
                            ):
                                found = method_scope.type_of(node.value)
                                if found and found != PYFUNC_MODEL:
                                    types.setdefault(target.attr, found)
        for base in self.bases(cls)[0]:
            for k, v in self.attribute_types(base).items():
                types.setdefault(k, v)
        self._attr_types[cls] = types
        return types


class Scope:
    """Names inside one definition: its locals (and their classes, where known), nested
    definitions, enclosing function, `self`/`cls`, and loop variables over literal strings."""

    def __init__(self, project: Project, definition: Definition):
        self.project = project
        self.definition = definition
        self.module = definition.module
        self.enclosing = Scope(project, project.defs[definition.enclosing]) if definition.enclosing else None
        self.self_name: Optional[str] = None
        self.cls_name: Optional[str] = None
        self.locals: set[str] = set()
        self.types: dict[str, str] = {}
        self.loops: dict[str, tuple[str, ...]] = {}
        self.imports: dict[str, str] = {}  # imports inside the function: local name -> dotted
        node = definition.node
        if definition.is_function:
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            self.locals |= {a.arg for a in params}
            self.locals |= {a.arg for a in (args.vararg, args.kwarg) if a}
            decorators = definition.decorators()
            if definition.owner_class and params and "staticmethod" not in decorators:
                if "classmethod" in decorators:
                    self.cls_name = params[0].arg
                else:
                    self.self_name = params[0].arg
            for a in params:
                found = project.annotation_class(a.annotation, definition, owner=definition.owner_class)
                if found:
                    self.types[a.arg] = found
        if definition.is_function:
            own = list(_walk_own(node.body))
            for child in own:
                if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                    self.locals.add(child.id)
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.locals.add(child.name)
                elif isinstance(child, ast.arg):
                    self.locals.add(child.arg)
                elif isinstance(child, ast.Import):
                    for alias in child.names:
                        top = alias.name.split(".")[0]
                        self.imports[alias.asname or top] = alias.name if alias.asname else top
                elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                    for alias in child.names:
                        self.imports[alias.asname or alias.name] = f"{child.module}.{alias.name}"
                elif isinstance(child, (ast.For, ast.comprehension)) and isinstance(child.target, ast.Name):
                    values = _string_literals(child.iter) or self._constant(child.iter)
                    if values is not None:
                        self.loops[child.target.id] = values
            for _ in range(2):  # a type may come from a variable typed later in the walk
                for child in own:
                    if (
                        isinstance(child, ast.Assign)
                        and len(child.targets) == 1
                        and isinstance(child.targets[0], ast.Name)
                    ):
                        found = self.type_of(child.value)
                        if found:
                            self.types[child.targets[0].id] = found
                    elif isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name):
                        found = project.annotation_class(child.annotation, definition, definition.owner_class)
                        if found:
                            self.types[child.target.id] = found

    def _constant(self, expr) -> Optional[tuple[str, ...]]:
        if isinstance(expr, ast.Name):
            return self.project.constants[self.module].get(expr.id)
        return None

    def module_names(self, expr) -> list[str]:
        """The module names an argument after `-m` can be: a literal, or f"prefix{name}" with name
        a loop variable over literal strings."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, ast.JoinedStr):
            pieces: list[list[str]] = []
            for value in expr.values:
                if isinstance(value, ast.Constant):
                    pieces.append([str(value.value)])
                elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                    options = self.loop_values(value.value.id)
                    if options is None:
                        ours = pieces and pieces[0][0].startswith("pipeline")
                        return ["pipeline.<unresolved f-string>"] if ours else []
                    pieces.append(list(options))
                else:
                    return []
            names = [""]
            for options in pieces:
                names = [n + o for n in names for o in options]
            return names
        return []

    def loop_values(self, name: str) -> Optional[tuple[str, ...]]:
        scope: Optional[Scope] = self
        while scope is not None:
            if name in scope.loops:
                return scope.loops[name]
            scope = scope.enclosing
        return None

    def dotted_name(self, expr) -> Optional[str]:
        """The dotted name an expression spells through the imports in scope (the function's own,
        its enclosing functions', the module's), or None."""
        parts = _dotted(expr)
        if parts is None:
            return None
        scope: Optional[Scope] = self
        while scope is not None:
            if parts[0] in scope.imports:
                return ".".join([scope.imports[parts[0]], *parts[1:]])
            if parts[0] in scope.locals:
                return None
            scope = scope.enclosing
        return self.project.dotted_name(expr, self.module)

    def type_of(self, expr) -> Optional[str]:
        if isinstance(expr, ast.Call):
            if self.dotted_name(expr.func) == "mlflow.pyfunc.load_model":
                return PYFUNC_MODEL
            if isinstance(expr.func, ast.Name) and expr.func.id == self.cls_name:
                return self.definition.owner_class
            target = self.resolve(expr.func)
            if target is not None and target in self.project.defs:
                return self.project.returned_class(target)
            return None
        if isinstance(expr, ast.Name):
            scope: Optional[Scope] = self
            while scope is not None:
                if expr.id in scope.types:
                    return scope.types[expr.id]
                if expr.id == scope.self_name or expr.id == scope.cls_name:
                    return scope.definition.owner_class
                if expr.id in scope.locals:
                    return None
                scope = scope.enclosing
            return None
        if isinstance(expr, ast.Attribute):
            owner = self.type_of(expr.value)
            if owner and owner in self.project.defs:
                return self.project.attribute_types(owner).get(expr.attr)
        return None

    def resolve(self, expr) -> Optional[str]:
        """The definition of ours an expression names, PYFUNC_PREDICT, or None."""
        parts = _dotted(expr)
        if parts is None:
            if isinstance(expr, ast.Attribute):
                owner = self.type_of(expr.value)
                if owner == PYFUNC_MODEL:
                    return PYFUNC_PREDICT if expr.attr == "predict" else None
                if owner:
                    return self.project.class_attribute(owner, expr.attr)
            return None
        return self.resolve_parts(parts)

    def resolve_parts(self, parts: list[str]) -> Optional[str]:
        head, rest = parts[0], parts[1:]
        scope: Optional[Scope] = self
        while scope is not None:
            if head in scope.definition.nested:
                return self.project._attribute_chain(scope.definition.nested[head], rest)
            owner = None
            if head in scope.types:
                owner = scope.types[head]
            elif head == scope.self_name or head == scope.cls_name:
                owner = scope.definition.owner_class
            if owner is not None:
                return self._member_chain(owner, rest) if rest else None
            if head in scope.imports:
                return self.project.resolve_dotted(".".join([scope.imports[head], *rest]))
            if head in scope.locals:
                return None
            scope = scope.enclosing
        target = self.project.bindings[self.module].get(head)
        if target is None:
            return None
        return self.project.resolve_dotted(".".join([target, *rest]))

    def _member_chain(self, owner: str, attrs: list[str]) -> Optional[str]:
        if owner == PYFUNC_MODEL:
            return PYFUNC_PREDICT if attrs == ["predict"] else None
        for i, attr in enumerate(attrs):
            member = self.project.class_attribute(owner, attr)
            if member is not None:
                rest = attrs[i + 1 :]
                return member if not rest else self.project._attribute_chain(member, rest)
            owner = self.project.attribute_types(owner).get(attr)
            if owner is None:
                return None
        return None


def _string_literals(expr) -> Optional[tuple[str, ...]]:
    if (
        isinstance(expr, (ast.Tuple, ast.List))
        and expr.elts
        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in expr.elts)
    ):
        return tuple(e.value for e in expr.elts)
    return None


# -- timed regions -----------------------------------------------------------------------------


def timed_regions(project: Project, name: str) -> list[list[ast.stmt]]:
    """The statement runs of a definition's own body between clock readings (see the module doc)."""
    definition = project.defs[name]
    if not definition.is_function:
        return []
    regions = []
    blocks = [definition.node.body]
    for node in _walk_own(definition.node.body):
        for attr in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, attr, None)
            if isinstance(block, list) and block and isinstance(block[0], (ast.stmt, ast.ExceptHandler)):
                blocks.append(block)
    scope = project.scope(name)
    for block in blocks:
        for i, statement in enumerate(block):
            clock = _clock_variable(scope, statement)
            if clock is None:
                continue
            region = []
            for later in block[i + 1 :]:
                region.append(later)
                if any(
                    isinstance(n, ast.Name) and n.id == clock and isinstance(n.ctx, ast.Load) for n in ast.walk(later)
                ):
                    break
            regions.append(region)
    return regions


def _clock_variable(scope: Scope, statement) -> Optional[str]:
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
        and isinstance(statement.value, ast.Call)
        and not statement.value.args
        and scope.dotted_name(statement.value.func) in CLOCKS
    ):
        return statement.targets[0].id
    return None


# -- benchmarks --------------------------------------------------------------------------------


class Benchmark:
    """One benchmark module of a Project: its TIMED_PRODUCTION_CODE declaration, what each
    section's code references, and what its timed regions reference."""

    DECLARATION = "TIMED_PRODUCTION_CODE"

    def __init__(self, project: Project, module: str, benchmark_modules: Iterable[str], production_prefix="pipeline"):
        self.project = project
        self.module = module
        self.benchmark_modules = set(benchmark_modules)
        self.prefix = production_prefix

    def declared(self) -> Optional[dict[str, tuple[str, tuple[str, ...]]]]:
        """section -> (function, production names), read as a literal; None when not declared."""
        for node in self.project.trees[self.module].body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == self.DECLARATION
            ):
                value = ast.literal_eval(node.value)
                return {section: (function, tuple(names)) for section, (function, names) in value.items()}
        return None

    def is_benchmark(self, name: str) -> bool:
        return self.project.defs[name].module in self.benchmark_modules if name in self.project.defs else False

    def is_production(self, name: str) -> bool:
        return name == PYFUNC_PREDICT or name == self.prefix or name.startswith(self.prefix + ".")

    def closure(self, names: Iterable[str]) -> set[str]:
        """Benchmark definitions run by these: the ones they reference, transitively (a
        benchmark's own helpers and its sibling modules', e.g. course_recipe)."""
        seen: set[str] = set()
        todo = [n for n in names if self.is_benchmark(n)]
        while todo:
            name = todo.pop()
            if name in seen or name.endswith(MODULE_CODE):
                continue
            seen.add(name)
            todo.extend(n for n in self.direct_references(name) if self.is_benchmark(n))
        return seen

    def direct_references(self, name: str) -> set[str]:
        definition = self.project.defs[name]
        nodes = list(_body_nodes(definition.node))
        refs = self.project.references(nodes, self.project.scope(name))
        return refs | set(definition.nested.values())

    def production_references(self, names: Iterable[str]) -> set[str]:
        found = set()
        for name in names:
            found |= {r for r in self.direct_references(name) if self.is_production(r)}
        return self.expand_pyfunc(found)

    def section_references(self, function: str) -> set[str]:
        return self.production_references(self.closure([f"{self.module}.{function}"]))

    def timed_references(self, name: str) -> set[str]:
        """Production code referenced in a definition's timed regions, through the benchmark
        helpers they call."""
        scope = self.project.scope(name)
        found: set[str] = set()
        for region in timed_regions(self.project, name):
            refs = self.project.references(_walk_own(region), scope)
            found |= {r for r in refs if self.is_production(r)}
            found |= self.production_references(self.closure(r for r in refs if self.is_benchmark(r)))
        return self.expand_pyfunc(found)

    def expand_pyfunc(self, refs: set[str]) -> set[str]:
        if PYFUNC_PREDICT not in refs:
            return refs
        return (refs - {PYFUNC_PREDICT}) | (self.pyfunc_predicts() or {PYFUNC_PREDICT})

    def pyfunc_predicts(self) -> set[str]:
        """The predict methods of the MLflow PythonModel classes the production code this
        benchmark calls instantiates (the model it saves and then loads or serves)."""
        called = set()
        for name, definition in self.project.defs.items():
            if definition.module == self.module and not definition.is_class:
                called |= {r for r in self.direct_references(name) if r in self.project.defs and self.is_production(r)}
        reached = self.project.reach(called)
        return {
            f"{c}.predict"
            for c in reached
            if self.project.defs[c].is_class
            and PYFUNC_BASE in self.project.foreign_bases(c)
            and f"{c}.predict" in self.project.defs
        }

    def functions_with_timing(self) -> list[str]:
        return [
            name
            for name, d in self.project.defs.items()
            if d.module == self.module and d.is_function and timed_regions(self.project, name)
        ]
