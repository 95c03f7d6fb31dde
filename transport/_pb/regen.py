"""Regenerate the committed gRPC code from ``transport/protos``, or check that it is current.

Usage::

    python -m transport._pb.regen          # rewrite transport/_pb from the .proto files
    python -m transport._pb.regen --check  # regenerate into a temporary directory; exit 1
                                           # with a diff when anything differs (CI runs it)

For each ``X.proto`` (its path relative to ``transport/protos``) this writes:

* ``X_pb2.py`` and ``X_pb2.pyi``: protoc's message classes and their type stubs, with the
  imports between our own modules rewritten from protoc's top-level form (``import
  daemon_pb2``) to package-relative absolute ones (``from transport._pb import daemon_pb2``).
  The descriptors keep the original file names (``daemon.proto``, ``manager.proto``), as the
  original Go project registers them.
* ``X_rpc.py``: one typed :class:`~transport._pb._methods.UnaryMethod` or
  :class:`~transport._pb._methods.StreamMethod` per method of each service, in a class named
  after the service. These replace grpc's untyped ``_pb2_grpc`` stubs for the bridge.
* ``__init__.py`` for every directory between ``transport/_pb`` and a generated module.

The output depends only on the .proto files and the generator, so the generator is pinned:
this refuses to run with any other grpcio-tools than :data:`PINNED_GRPCIO_TOOLS`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

__all__ = ["PINNED_GRPCIO_TOOLS", "generate", "main"]

PINNED_GRPCIO_TOOLS = "1.85.1"
"""The grpcio-tools release whose protoc produced the committed files (pyproject pins it)."""

PACKAGE = "transport._pb"
_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parents[1]
PROTO_ROOT = ROOT / "transport" / "protos"
OUT_DIR = _HERE

# Files of transport/_pb that are written by hand, never by this script.
_HAND_WRITTEN = frozenset({"__init__.py", "_methods.py", "regen.py"})
_INIT_TEXT = '"""Generated package (python -m transport._pb.regen). DO NOT EDIT."""\n'
# protoc's stubs write bare ``Mapping`` (a message may be given as a dict): tell mypy strict.
_PYI_HEADER = '# mypy: disable-error-code="type-arg"\n'


def _proto_files(proto_root: Path) -> list[str]:
    return sorted(p.relative_to(proto_root).as_posix() for p in proto_root.rglob("*.proto"))


def _module_of(proto: str, suffix: str) -> str:
    """``hostvisor/v1/hostvisor.proto`` -> ``hostvisor.v1.hostvisor_pb2`` (protoc's naming)."""
    return proto.removesuffix(".proto").replace("/", ".").replace("-", "_") + suffix


def _run_protoc(proto_root: Path, protos: Sequence[str], out: Path) -> bytes:
    # Imported here: only the generator needs it (and it ships no type information).
    from grpc_tools import protoc  # type: ignore[import-untyped]

    include = Path(protoc.__file__).resolve().parent / "_proto"
    descriptor_set = out / "descriptor_set.pb"
    argv = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--descriptor_set_out={descriptor_set}",
        "--include_imports",
        *protos,
    ]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed on {', '.join(protos)}")
    data = descriptor_set.read_bytes()
    descriptor_set.unlink()
    return data


def _rewrite_imports(text: str, ours: frozenset[str]) -> str:
    """Point protoc's top-level imports of our own modules into :data:`PACKAGE`."""

    def plain(match: re.Match[str]) -> str:
        module, alias = match.group(1), match.group(2)
        if module not in ours:
            return match.group(0)
        parent, _, leaf = f"{PACKAGE}.{module}".rpartition(".")
        return f"from {parent} import {leaf} as {alias}"

    def dotted(match: re.Match[str]) -> str:
        parent, leaf, alias = match.group(1), match.group(2), match.group(3)
        if f"{parent}.{leaf}" not in ours:
            return match.group(0)
        return f"from {PACKAGE}.{parent} import {leaf} as {alias}"

    def builder(match: re.Match[str]) -> str:
        module = match.group(2)
        if module not in ours:
            return match.group(0)
        return f"{match.group(1)}'{PACKAGE}.{module}'"

    text = re.sub(r"^import ([\w.]+) as (\w+)$", plain, text, flags=re.MULTILINE)
    text = re.sub(r"^from ([\w.]+) import (\w+) as (\w+)$", dotted, text, flags=re.MULTILINE)
    return re.sub(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'([\w.]+)'", builder, text)


def _rpc_module(
    file: descriptor_pb2.FileDescriptorProto,
    by_type: dict[str, tuple[str, str]],
) -> str:
    """The ``X_rpc.py`` text of one file: a class per service, a descriptor per method."""
    imports: dict[str, str] = {}  # module -> alias

    def ref(type_name: str) -> str:
        module, name = by_type[type_name]
        alias = imports.setdefault(module, f"_{module.rpartition('.')[2]}")
        return f"{alias}.{name}"

    body: list[str] = []
    for service in file.service:
        full = f"{file.package}.{service.name}" if file.package else service.name
        body += [
            "",
            "",
            f"class {service.name}:",
            f'    """The methods of ``{full}``, by name."""',
            "",
            f"    NAME: Final = {full!r}",
        ]
        for method in service.method:
            if method.client_streaming:
                raise SystemExit(f"{full}.{method.name}: client streaming is not supported")
            kind = "StreamMethod" if method.server_streaming else "UnaryMethod"
            body.append(
                f"    {method.name}: Final = {kind}(\n"
                f"        NAME, {method.name!r}, {ref(method.input_type)}, "
                f"{ref(method.output_type)}\n"
                "    )"
            )
    head = [
        f"# Generated by transport._pb.regen from {file.name}. DO NOT EDIT.",
        f'"""Typed method descriptors of ``{file.name}`` for transport\'s bridge."""',
        "",
        "from typing import Final",
        "",
        *(
            f"from {PACKAGE}.{m.rpartition('.')[0]} import {m.rpartition('.')[2]} as {a}"
            if "." in m
            else f"from {PACKAGE} import {m} as {a}"
            for m, a in sorted(imports.items())
        ),
        f"from {PACKAGE}._methods import StreamMethod, UnaryMethod",
    ]
    return "\n".join(head + body) + "\n"


def generate(proto_root: Path = PROTO_ROOT) -> dict[str, str]:
    """Generate every file of ``transport/_pb`` that this script owns.

    Args:
        proto_root: The directory of the .proto files (imports are relative to it).

    Returns:
        The text of each generated file, by its path relative to ``transport/_pb``.

    Raises:
        SystemExit: The installed grpcio-tools is not the pinned one, or protoc failed.
    """
    installed = importlib.metadata.version("grpcio-tools")
    if installed != PINNED_GRPCIO_TOOLS:
        raise SystemExit(
            f"grpcio-tools {installed} is installed; the committed code comes from "
            f"{PINNED_GRPCIO_TOOLS}: pip install grpcio-tools=={PINNED_GRPCIO_TOOLS}"
        )
    protos = _proto_files(proto_root)
    with tempfile.TemporaryDirectory(prefix="hostvisor-protoc-") as tmp:
        out = Path(tmp)
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(
            _run_protoc(proto_root, protos, out)
        )
        ours = frozenset(_module_of(p, "_pb2") for p in protos)
        files: dict[str, str] = {}
        for path in sorted(out.rglob("*_pb2.py*")):
            rel = path.relative_to(out).as_posix()
            text = _rewrite_imports(path.read_text(encoding="utf-8"), ours)
            files[rel] = _PYI_HEADER + text if rel.endswith(".pyi") else text

    by_type: dict[str, tuple[str, str]] = {}
    for file in descriptor_set.file:
        module = _module_of(file.name, "_pb2")
        prefix = f".{file.package}." if file.package else "."
        stack = [(m, m.name) for m in file.message_type]
        while stack:
            message, qualified = stack.pop()
            by_type[prefix + qualified] = (module, qualified)
            stack += [(n, f"{qualified}.{n.name}") for n in message.nested_type]
    for file in descriptor_set.file:
        if file.name in protos and file.service:
            rel = _module_of(file.name, "_rpc").replace(".", "/") + ".py"
            files[rel] = _rpc_module(file, by_type)

    for rel in list(files):
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            files.setdefault("/".join([*parts[:depth], "__init__.py"]), _INIT_TEXT)
    return dict(sorted(files.items()))


def _existing(out_dir: Path) -> dict[str, str]:
    """The files of ``out_dir`` this script owns (everything but the hand-written ones)."""
    found: dict[str, str] = {}
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if not path.is_file() or "__pycache__" in path.parts or rel in _HAND_WRITTEN:
            continue
        found[rel] = path.read_text(encoding="utf-8")
    return found


def check(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Compare the committed files with freshly generated ones.

    Args:
        out_dir: The committed generated code.
        proto_root: The directory of the .proto files.

    Returns:
        A unified diff (lines); empty when everything is current.
    """
    fresh, committed = generate(proto_root), _existing(out_dir)
    diff: list[str] = []
    for rel in sorted(fresh.keys() | committed.keys()):
        diff += difflib.unified_diff(
            committed.get(rel, "").splitlines(keepends=True),
            fresh.get(rel, "").splitlines(keepends=True),
            fromfile=f"committed/{rel}" if rel in committed else "/dev/null",
            tofile=f"generated/{rel}" if rel in fresh else "/dev/null",
        )
    return diff


def write(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Regenerate the files in place, removing generated files whose .proto is gone.

    Args:
        out_dir: Where the generated code lives.
        proto_root: The directory of the .proto files.

    Returns:
        The paths (relative to ``out_dir``) written or removed.
    """
    fresh, committed = generate(proto_root), _existing(out_dir)
    changed: list[str] = []
    for rel in sorted(committed.keys() - fresh.keys()):
        (out_dir / rel).unlink()
        changed.append(rel)
    for rel, text in fresh.items():
        if committed.get(rel) != text:
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when current (or rewritten), 1 when ``--check`` found a difference.
    """
    parser = argparse.ArgumentParser(prog="python -m transport._pb.regen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail with a diff instead of rewriting"
    )
    args = parser.parse_args(argv)
    if args.check:
        diff = check()
        if diff:
            sys.stdout.writelines(diff)
            print(
                "\ntransport/_pb is out of date: run `python -m transport._pb.regen`",
                file=sys.stderr,
            )
            return 1
        print("transport/_pb is current")
        return 0
    for rel in write():
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
