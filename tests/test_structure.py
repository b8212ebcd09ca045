"""The layering the code relies on: the device runtime imports nothing of the workstation side,
policy and search stay apart, and the device CLI runs where torch is not installed."""

from __future__ import annotations

import ast
from pathlib import Path

from without_modules import run_cli_without

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports, relative imports resolved."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: str) -> list[str]:
    return sorted(
        f"{file}: {name}"
        for file, names in imported_modules(ROOT / package).items()
        for name in names
        if name == forbidden or name.startswith(forbidden + ".")
    )


def test_device_runtime_imports_nothing_from_the_workstation_package() -> None:
    assert offenders("edge_adapt", "edge_adapt_tools") == []


def test_search_does_not_import_the_policy() -> None:
    assert offenders("edge_adapt/search", "edge_adapt.budget.policy") == []


def test_lower_layers_do_not_import_the_cli_or_the_composition_root() -> None:
    for layer in ("generator", "prm", "search", "tasks", "energy", "budget"):
        assert offenders(f"edge_adapt/{layer}", "edge_adapt.cli") == []
        assert offenders(f"edge_adapt/{layer}", "edge_adapt.assembly") == []
        assert offenders(f"edge_adapt/{layer}", "edge_adapt.server") == []


def test_the_server_is_a_thin_layer_beside_the_cli() -> None:
    assert offenders("edge_adapt/server", "edge_adapt.cli") == []
    assert offenders("edge_adapt/server", "edge_adapt.budget.policy") == []  # it receives the stack's policy


def test_the_device_cli_runs_without_the_server_extra() -> None:
    blocked = ("fastapi", "uvicorn", "prometheus_client")
    assert run_cli_without(blocked, "solve", "--help").returncode == 0
    serve = run_cli_without(blocked, "serve")
    said = " ".join((serve.stderr + serve.stdout).split())
    assert serve.returncode == 1
    assert "pip install 'edge-adapt[server]'" in said


def test_the_device_cli_runs_without_torch() -> None:
    # torch made unimportable: the device commands still load, `export` says what to install
    blocked = ("torch", "transformers", "optimum")
    info = run_cli_without(blocked, "solve", "--help")
    assert info.returncode == 0, info.stderr
    export = run_cli_without(blocked, "export", "prm", str(ROOT / "tests"), "-c", __file__, "-o", "/tmp/unused")
    assert export.returncode != 0
    said = " ".join((export.stderr + export.stdout).split())  # the console wraps long lines
    assert "pip install 'edge-adapt[export]'" in said
    assert "torch is missing" in said


def test_the_prm_and_its_absence_offer_what_search_asks_of_a_prm() -> None:
    import inspect

    from edge_adapt.prm import PRM, QuantilePRM
    from edge_adapt.prm.absent import NoPRM

    asked = {name for name in PRM.__annotations__} | {"score", "score_question"}
    for implementation in (QuantilePRM, NoPRM):
        missing = [name for name in asked if not hasattr(implementation, name)
                   and name not in getattr(implementation, "__annotations__", {})
                   and name not in inspect.signature(implementation.__init__).parameters
                   and "self." + name not in inspect.getsource(implementation)]
        assert missing == [], (implementation.__name__, missing)
        for method in ("score", "score_question"):
            assert list(inspect.signature(getattr(implementation, method)).parameters) == \
                list(inspect.signature(getattr(PRM, method)).parameters), (implementation.__name__, method)


def test_everything_builds_its_parts_only_in_the_composition_root() -> None:
    """Generator, PRM, meter, policy and searcher are constructed in edge_adapt/assembly.py, in the
    library, the workstation tools and the benchmarks alike (tests build parts to test them)."""
    parts = {"Generator", "Searcher", "EnergyPolicy", "QuantilePRM", "NoPRM"}
    files = [path for folder in ("edge_adapt", "edge_adapt_tools",
                                 "benchmarks") for path in sorted((ROOT / folder).rglob("*.py"))]
    found = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in files
             if path.name != "assembly.py"
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
             and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) in parts]
    assert found == []


def test_modules_and_functions_stay_small() -> None:
    """No module of the library or the workstation tools over 300 lines, no function over 60 (a
    CLI command's option decorators are declarations, not its body, and do not count)."""
    files = [p for package in ("edge_adapt", "edge_adapt_tools") for p in sorted((ROOT / package).rglob("*.py"))]
    long_modules = [f"{p.relative_to(ROOT)}: {n}" for p in files if (n := len(p.read_text().splitlines())) > 300]
    long_functions = [f"{p.relative_to(ROOT)}:{node.name}: {node.end_lineno - node.lineno + 1}"
                      for p in files
                      for node in ast.walk(ast.parse(p.read_text(), str(p)))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert long_modules == []
    assert long_functions == []


def test_the_public_api_exports_every_strategy_a_spec_can_name() -> None:
    import edge_adapt
    from edge_adapt.search.spec import STRATEGY_TYPES

    missing = [cls.__name__ for cls in STRATEGY_TYPES if getattr(edge_adapt, cls.__name__, None) is not cls]
    assert missing == []
    assert all(cls.__name__ in edge_adapt.__all__ for cls in STRATEGY_TYPES)


def test_test_asserts_say_which_part_failed() -> None:
    """An ``assert a and b`` reports the whole chain false; one assert per part names the part."""
    chained = [f"{p.relative_to(ROOT)}:{node.lineno}"
               for p in sorted((ROOT / "tests").glob("*.py"))
               for node in ast.walk(ast.parse(p.read_text(), str(p)))
               if isinstance(node, ast.Assert) and isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And)]
    assert chained == []
