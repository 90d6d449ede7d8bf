"""One package per vendor, one path per request (issue #14): the shared modules name no vendor, a
vendor package leaves HTTP, Kafka and the logs to them, and each part of the gateway imports only
what its place in the request's path calls for.

1. A shared module (every module under gateway/ outside a vendor package `gateway/vendors/<name>/`)
   imports no vendor package and names no vendor: no built-in vendor's name, nor any registered
   vendor's, as a word in any case, in code, strings, comments or docstrings. The registry
   (gateway/vendors/__init__.py) may name them in its list of built-in packages only, one line each.
2. A vendor package imports neither Starlette, uvicorn, a Kafka client (aiokafka, confluent_kafka)
   nor the logger setup. The logger setup is what decides where log lines go and how they look:
   `gateway.observability` (configure_logging, and the metrics beside it), `structlog.configure`,
   `logging.basicConfig` and `logging.config`. A module logger (`structlog.get_logger(...)`) is
   allowed, and so is quieting a library's logger that would log a secret.

3. What each part may import (`IMPORT_RULES`): Kafka's client libraries only under gateway/kafka/
   (and the tools that read topics, gateway/tools/); gateway/kafka/ nothing of the HTTP layer, the
   request path, the vendors or the tools; the request path (pipeline, boundary, admission) no
   HTTP framework or server; nothing imports `gateway.app` (uvicorn loads it by name). A vendor
   package imports of the gateway only what its contract gives it (`VENDOR_MAY_IMPORT`), and no
   other vendor's package.
4. Every error the gateway answers with is in gateway/errors.py, under `GatewayError`; the
   start-up error (`ConfigError`) is not one of them.

Imports are read from the syntax tree (relative ones resolved, `from a import b` read as `a.b`
too), not by grepping, so that a docstring mentioning a module is no import. The checkers run on
the real tree and, to show they catch what they are for, on deliberately bad modules.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from gateway.vendors import BUILT_IN, registry

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
VENDORS = GATEWAY / "vendors"
REGISTRY = VENDORS / "__init__.py"
# The built-in vendors, by the registry's list: a new vendor needs no line here.
BUILT_IN_NAMES = frozenset(module.rpartition(".")[2] for module in BUILT_IN)
FORBIDDEN_IN_VENDORS = (
    "starlette",
    "uvicorn",
    "aiokafka",
    "confluent_kafka",
    "gateway.observability",
)
LOGGER_SETUP_CALLS = ("structlog.configure", "structlog.configure_once", "logging.basicConfig")
# A line of the registry's list of built-in vendor packages.
REGISTRY_LINE = re.compile(r'\s*"gateway\.vendors\.\w+",\s*')


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of `source` (the module `module`): `from a import b` is
    both `a` and `a.b` (b may be a module); relative imports are resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def is_under(name: str, modules: Iterable[str]) -> str | None:
    """The module of `modules` that `name` is or is inside of."""
    return next((m for m in modules if name == m or name.startswith(m + ".")), None)


def vendor_packages() -> list[Path]:
    return sorted(p.parent for p in VENDORS.glob("*/__init__.py"))


def vendor_names() -> frozenset[str]:
    """The built-in vendors, every registered one and every vendor package's folder."""
    return BUILT_IN_NAMES | set(registry()) | {p.name for p in vendor_packages()}


def shared_module_problems(
    source: str, module: str, vendors: Iterable[str], *, is_package: bool = False
) -> list[str]:
    """What makes `source` not a shared module: vendor packages it imports, vendors it names
    (outside the registry's list of built-in packages, for the registry)."""
    names = {name.lower() for name in vendors}
    problems = []
    for line, name in imported(source, module, is_package):
        inside = name.removeprefix("gateway.vendors.").partition(".")[0]
        if name.startswith("gateway.vendors.") and inside.lower() in names:
            problems.append(f"line {line} imports the vendor package gateway.vendors.{inside}")
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b", re.IGNORECASE)
    registry_file = module == "gateway.vendors"
    for number, text in enumerate(source.splitlines(), 1):
        if registry_file and REGISTRY_LINE.fullmatch(text):
            continue  # the registry's list: one line per built-in vendor
        problems += [f"line {number} names {found.group(0)!r}" for found in pattern.finditer(text)]
    return problems


def vendor_module_problems(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What a module of a vendor package must not do: import HTTP, Kafka or the logger setup."""
    problems = []
    for line, name in imported(source, module, is_package):
        forbidden = is_under(name, FORBIDDEN_IN_VENDORS)
        if forbidden is not None:
            problems.append(f"line {line} imports {forbidden}")
        if is_under(name, ("logging.config",)):
            problems.append(f"line {line} imports logging.config (the logger setup)")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in LOGGER_SETUP_CALLS:
            problems.append(f"line {node.lineno} calls {ast.unparse(node.func)} (the logger setup)")
    return list(dict.fromkeys(problems))


def vendor_modules() -> list[Path]:
    return [p for package in vendor_packages() for p in sorted(package.rglob("*.py"))]


def shared_modules() -> list[Path]:
    inside_vendor = set(vendor_modules())
    return sorted(p for p in GATEWAY.rglob("*.py") if p not in inside_vendor)


Check = Callable[..., list[str]]  # (source, module, *, is_package) -> problems


def file_problems(check: Check, path: Path) -> list[str]:
    """`check` over the module at `path`, under its module name (a package's `__init__.py`
    resolves relative imports from the package itself)."""
    source = path.read_text(encoding="utf-8")
    return check(source, module_name(path), is_package=path.name == "__init__.py")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the tree as it is ---------------------------------------------------------------------------


def test_there_are_shared_modules_and_vendor_packages_to_check() -> None:
    shared = {module_name(p) for p in shared_modules()}
    assert {"gateway.auth", "gateway.settings", "gateway.privacy", "gateway.cli"} <= shared
    assert {"gateway.vendors", "gateway.vendors.base", "gateway.app"} <= shared
    assert {p.name for p in vendor_packages()} == BUILT_IN_NAMES
    assert not (GATEWAY / "components").exists()


@pytest.mark.parametrize("path", shared_modules(), ids=relative)
def test_a_shared_module_imports_no_vendor_package_and_names_no_vendor(path: Path) -> None:
    names = vendor_names()
    problems = file_problems(
        lambda source, module, **kw: shared_module_problems(source, module, names, **kw), path
    )
    assert not problems, f"{relative(path)}: {problems}"


@pytest.mark.parametrize("path", vendor_modules(), ids=relative)
def test_a_vendor_package_imports_no_http_no_kafka_client_and_no_logger_setup(path: Path) -> None:
    problems = file_problems(vendor_module_problems, path)
    assert not problems, f"{relative(path)}: {problems}"


def test_the_registry_lists_each_built_in_vendor_once_one_line_each() -> None:
    lines = [line for line in REGISTRY.read_text().splitlines() if REGISTRY_LINE.fullmatch(line)]
    assert len(lines) == len(BUILT_IN) == len(BUILT_IN_NAMES)  # no module listed twice
    assert all(name == f"gateway.vendors.{name.rpartition('.')[2]}" for name in BUILT_IN)
    assert set(registry()) >= BUILT_IN_NAMES


@pytest.mark.parametrize("name", sorted(BUILT_IN_NAMES))
def test_a_vendor_package_says_what_it_is_and_links_its_doc_page(name: str) -> None:
    vendor = registry()[name]
    page, _, anchor = vendor.doc.partition("#")
    assert (ROOT / page).is_file(), vendor.doc
    if anchor:
        headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(), re.MULTILINE)
        slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in slugs, f"no heading #{anchor} in {page}"
    docstring = ast.get_docstring(ast.parse((VENDORS / name / "__init__.py").read_text()))
    assert docstring is not None
    assert vendor.doc in docstring


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(GATEWAY.rglob("*.py"))
        if ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    assert not missing


# --- the checkers catch what they are for --------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from gateway.vendors import caliper\n", "imports the vendor package"),
        ("from gateway.vendors.canvas.quiz_log import CanvasQuizLog\n", "imports the vendor"),
        ("import gateway.vendors.pearson.signature as s\n", "imports the vendor package"),
        ("from .vendors import inspera\n", "imports the vendor package"),
        ('"""Like Pearson\'s, this window..."""\n', "names 'Pearson'"),
        ("x = 1  # the CANVAS quiz log\n", "names 'CANVAS'"),
        ("if vendor == 'inspera':\n    pass\n", "names 'inspera'"),
        ("OWN = 'quizbox'\n", "names 'quizbox'"),  # any registered vendor, not only built-in ones
    ],
)
def test_the_shared_module_check_fails_on_a_module_that_knows_a_vendor(
    source: str, found: str
) -> None:
    problems = shared_module_problems(source, "gateway.example", {*BUILT_IN_NAMES, "quizbox"})
    assert any(found in problem for problem in problems), problems


def test_the_shared_module_check_passes_what_a_shared_module_may_do() -> None:
    source = (
        "from gateway.vendors import registry\n"
        "from gateway.vendors.base import Vendor\n"
        "# canvasapi and Canvases are other words; a vendor is found through the registry\n"
    )
    assert shared_module_problems(source, "gateway.example", BUILT_IN_NAMES) == []


def test_the_registry_may_name_vendors_in_its_list_only() -> None:
    listed = 'BUILT_IN = (\n    "gateway.vendors.caliper",\n)\n'
    assert shared_module_problems(listed, "gateway.vendors", BUILT_IN_NAMES, is_package=True) == []
    elsewhere = listed + "# caliper comes first\n"
    assert shared_module_problems(elsewhere, "gateway.vendors", BUILT_IN_NAMES, is_package=True)
    # A shared module is not the registry: the same line there names a vendor.
    assert shared_module_problems(listed, "gateway.example", BUILT_IN_NAMES)


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from starlette.requests import Request\n", "imports starlette"),
        ("import uvicorn\n", "imports uvicorn"),
        ("from aiokafka import AIOKafkaConsumer\n", "imports aiokafka"),
        ("import confluent_kafka\n", "imports confluent_kafka"),
        ("from gateway.observability import configure_logging\n", "gateway.observability"),
        ("from gateway import observability\n", "imports gateway.observability"),
        ("from ... import observability\n", "imports gateway.observability"),
        ("import logging.config\n", "logging.config"),
        ("import structlog\nstructlog.configure(processors=[])\n", "structlog.configure"),
        ("import logging\nlogging.basicConfig(level=10)\n", "logging.basicConfig"),
    ],
)
def test_the_vendor_package_check_fails_on_http_kafka_and_the_logger_setup(
    source: str, found: str
) -> None:
    problems = vendor_module_problems(source, "gateway.vendors.example.module")
    assert any(found in problem for problem in problems), problems


def test_the_vendor_package_check_allows_a_module_logger_and_the_shared_services() -> None:
    source = (
        "import logging\nimport structlog\n"
        "from gateway.pipeline import Tally\n"
        "from gateway.kafka.follower import TopicFollower\n"
        'log = structlog.get_logger("gateway.example")\n'
        'logging.getLogger("httpx").setLevel(logging.WARNING)\n'
    )
    assert vendor_module_problems(source, "gateway.vendors.example.module") == []


# --- what each part may import -------------------------------------------------------------------

KAFKA_CLIENTS = ("aiokafka", "confluent_kafka")
HTTP_LAYER = ("starlette", "uvicorn", "httptools", "gateway.app", "gateway.http_server")
REQUEST_PATH = ("gateway.pipeline", "gateway.boundary", "gateway.admission")
# (which modules, what they must not import, why)
IMPORT_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        ("gateway",),
        ("gateway.kafka", "gateway.tools"),
        KAFKA_CLIENTS,
        "Kafka's clients are built under gateway/kafka/ (and by the tools that read topics)",
    ),
    (
        ("gateway.kafka",),
        (),
        (
            *HTTP_LAYER,
            *REQUEST_PATH,
            "gateway.cli",
            "gateway.tools",
            "gateway.vendors",
            "gateway.observability",
        ),
        "Kafka knows records, not requests, vendors or commands",
    ),
    (REQUEST_PATH, (), HTTP_LAYER, "the HTTP layer translates; the request path knows no HTTP"),
    (("gateway",), (), ("gateway.app",), "uvicorn loads the app by name; nothing imports it"),
)
# What of the gateway a vendor package may import (besides its own package): its contract, the
# shared verifiers, the canonical record, the errors, the body limits, its settings section, and
# for a component the pipeline's publishing, a topic follower and a SQLite store.
VENDOR_MAY_IMPORT = (
    "gateway.vendors.base",
    "gateway.auth",
    "gateway.canonical",
    "gateway.errors",
    "gateway.limits",
    "gateway.settings",
    "gateway.pipeline.Pipeline",
    "gateway.pipeline.Tally",
    "gateway.kafka.follower",
    "gateway.sqlite_store",
)


def imported_names(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, name) of what `source` imports: the module of an `import`, each `a.b` of a
    `from a import b` (a module or a name in it); relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def import_rule_problems(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports of `module` that `IMPORT_RULES` forbid it."""
    problems = []
    for applies, exempt, forbidden, why in IMPORT_RULES:
        if not is_under(module, applies) or is_under(module, exempt):
            continue
        for line, name in imported(source, module, is_package):
            found = is_under(name, forbidden)
            if found is not None and not is_under(found, (module,)):
                problems.append(f"line {line} imports {found}: {why}")
    return list(dict.fromkeys(problems))


# The one declared dependency of a vendor on another: Canvas Live Events come in Caliper 1.1 too,
# and those go through the Caliper normalizer and schemas exactly as if posted to /v1/caliper
# (issue #19): one module, importing the Caliper package's public names only. Any other
# vendor-to-vendor import is refused.
VENDOR_TO_VENDOR: dict[str, tuple[str, ...]] = {
    "gateway.vendors.canvas.live_events": ("gateway.vendors.caliper",),
}


def vendor_import_problems(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports of the gateway a vendor package's module may not have."""
    own = ".".join(module.split(".")[:3])  # gateway.vendors.<name>
    allowed = VENDOR_TO_VENDOR.get(module, ())
    problems = []
    for line, name in imported_names(source, module, is_package):
        if not is_under(name, ("gateway",)) or is_under(name, (own, *VENDOR_MAY_IMPORT, *allowed)):
            continue
        problems.append(f"line {line} imports {name}, which no vendor's contract gives it")
    return problems


@pytest.mark.parametrize("path", sorted(GATEWAY.rglob("*.py")), ids=relative)
def test_each_part_imports_only_what_its_place_calls_for(path: Path) -> None:
    problems = file_problems(import_rule_problems, path)
    assert not problems, f"{relative(path)}: {problems}"


@pytest.mark.parametrize("path", vendor_modules(), ids=relative)
def test_a_vendor_package_imports_of_the_gateway_only_its_contract(path: Path) -> None:
    problems = file_problems(vendor_import_problems, path)
    assert not problems, f"{relative(path)}: {problems}"


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("from aiokafka import AIOKafkaConsumer\n", "gateway.pipeline", "imports aiokafka"),
        ("import confluent_kafka\n", "gateway.app", "imports confluent_kafka"),
        ("from gateway.pipeline import Pipeline\n", "gateway.kafka.publisher", "gateway.pipeline"),
        ("from gateway.app import create_app\n", "gateway.cli", "imports gateway.app"),
        ("from starlette.requests import Request\n", "gateway.boundary", "imports starlette"),
        ("from gateway.http_server import serve\n", "gateway.pipeline", "gateway.http_server"),
        ("from ..vendors import registry\n", "gateway.kafka.spool", "imports gateway.vendors"),
    ],
)
def test_the_import_rules_catch_what_they_are_for(source: str, module: str, found: str) -> None:
    problems = import_rule_problems(source, module)
    assert any(found in problem for problem in problems), problems


def test_the_import_rules_pass_what_each_part_may_do() -> None:
    assert not import_rule_problems("from aiokafka import AIOKafkaConsumer\n", "gateway.tools.tail")
    assert not import_rule_problems("import confluent_kafka\n", "gateway.kafka.producer")
    assert not import_rule_problems("from gateway.kafka.publisher import P\n", "gateway.pipeline")
    assert not import_rule_problems("from starlette.routing import Route\n", "gateway.app")


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("from gateway.pipeline import Pipeline, Tally\n", True),
        ("from gateway.kafka.follower import TopicFollower\n", True),
        ("from gateway.vendors.example import normalize\n", True),  # its own package
        ("from . import settings\n", True),
        ("from gateway.pipeline import split_request\n", False),
        ("from gateway.boundary import Boundary\n", False),
        ("from gateway.kafka.publisher import Publisher\n", False),
        ("from gateway.vendors.other import VENDOR\n", False),
        ("import gateway.app\n", False),
    ],
)
def test_the_vendor_import_check_allows_the_contract_only(source: str, allowed: bool) -> None:
    problems = vendor_import_problems(source, "gateway.vendors.example.module")
    assert (not problems) is allowed, problems


def gateway_modules() -> list[str]:
    return sorted({module_name(p) for p in GATEWAY.rglob("*.py")})


def subclasses(root: type) -> Iterator[type]:
    cls: type
    for cls in root.__subclasses__():
        yield cls
        yield from subclasses(cls)


def test_every_error_the_gateway_answers_with_is_in_errors_py() -> None:
    for module in gateway_modules():
        importlib.import_module(module)  # every module: no error class is left out
    from gateway.errors import ConfigError, GatewayError  # noqa: PLC0415

    outside = {f"{c.__module__}.{c.__qualname__}" for c in subclasses(GatewayError)}
    outside = {name for name in outside if not name.startswith("gateway.errors.")}
    assert not {name for name in outside if name.startswith("gateway.")}
    assert not issubclass(ConfigError, GatewayError)  # start-up errors are no HTTP answers


# --- the tests: shared helpers in tests/support/, no test module imports another ---------------

TESTS = ROOT / "tests"
# Spelt apart so that grepping the tests for such an import finds none.
UNIT, INTEGRATION = "unit", "integration"
TEST_MODULES = sorted(p for p in TESTS.rglob("*.py") if TESTS / "vendor" not in p.parents)


def cross_test_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports of a module under tests/ that reach into another test module or a conftest
    (anything of `tests` but `tests.support`): shared helpers live in tests/support/."""
    problems = []
    for line, name in imported(source, module, is_package):
        inside = is_under(name, ("tests",)) and not is_under(name, ("tests.support",))
        if inside and name not in ("tests", module):
            problems.append(f"line {line} imports {name}: shared helpers go to tests/support/")
    return list(dict.fromkeys(problems))


@pytest.mark.parametrize("path", TEST_MODULES, ids=relative)
def test_no_test_module_imports_another_or_a_conftest(path: Path) -> None:
    problems = file_problems(cross_test_imports, path)
    assert not problems, f"{relative(path)}: {problems}"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        (f"from tests.{INTEGRATION}.conftest import TOKEN\n", "conftest"),
        (f"from tests.{UNIT}.test_pearson_auth import sign\n", "test_pearson_auth"),
        (f"from tests.{INTEGRATION} import load\n", "load"),
        ("from ..unit.test_canvas_decode import ids\n", "tests.unit.test_canvas_decode"),
        ("import tests.golden\n", "tests.golden"),
    ],
)
def test_the_test_module_check_fails_on_an_import_of_another_test_module(
    source: str, found: str
) -> None:
    problems = cross_test_imports(source, "tests.integration.test_example")
    assert any(found in problem for problem in problems), problems


def test_the_test_module_check_allows_the_support_package() -> None:
    source = "from tests.support.gateway import TOKEN\nfrom tests.support import golden\n"
    assert not cross_test_imports(source, "tests.integration.test_example")


def test_the_one_vendor_to_vendor_allowance_is_used_and_no_other_module_has_it() -> None:
    source = (VENDORS / "canvas" / "live_events.py").read_text(encoding="utf-8")
    module = "gateway.vendors.canvas.live_events"
    used = {name for _, name in imported_names(source, module)}
    assert any(name.startswith("gateway.vendors.caliper") for name in used)
    # The same import anywhere else in the Canvas package is refused.
    elsewhere = vendor_import_problems(
        "from gateway.vendors.caliper import normalize\n", "gateway.vendors.canvas.normalize"
    )
    assert elsewhere
