"""The guides stay true: their commands parse with the tools' own parsers, their Python compiles
and imports only what the client exports, and the files they point to exist."""

from __future__ import annotations

import os
import re
import shlex

import copy_offload.client as client_pkg
import pytest
from copy_offload.client import cli
from copy_offload.server import admin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
GUIDES = ("admin-guide.md", "user-guide.md")


def read(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


def code_blocks(text: str, languages: tuple) -> list:
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S) if lang in languages]


def command_lines(text: str, program: str) -> list:
    """Shell lines of code blocks that run ``program``, continuations joined, prompts removed."""
    lines = []
    for block in code_blocks(text, ("console", "sh", "")):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"^\$ ", "", line.strip())
            if not re.search(r"(^|\s)%s(\s|$)" % re.escape(program), line):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words = []
            for word in lexer:  # up to the first shell operator; comments dropped
                if word in ("|", "||", "&&", ";", ">", "<", "&"):
                    break
                words.append(word)
            while words and "=" in words[0] and not words[0].startswith("-"):
                words.pop(0)  # VAR=value prefixes
            if words and words[0] == program:
                lines.append(words[1:])
    return lines


def test_admin_commands_in_the_guides_parse():
    parser = admin.build_parser()
    seen = set()
    for name in GUIDES:
        for words in command_lines(read(name), "copy-offload-admin"):
            if words in (["--help"],):
                continue
            args = parser.parse_args(words)  # SystemExit (a failure) on an unknown command or option
            seen.add(words[0])
            assert args.func
    assert {"k8s-secrets", "client-cert", "local-rabbit", "tls", "token-key", "token"} <= seen


def test_client_commands_in_the_guides_parse():
    parser = cli._parser()
    count = 0
    for name in GUIDES:
        for words in command_lines(read(name), "copy-offload"):
            parser.parse_args(words)
            count += 1
    assert count >= 8


def test_python_examples_compile_and_import_what_exists():
    blocks = code_blocks(read("user-guide.md"), ("python",))
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, "user-guide.md", "exec")
        for names in re.findall(r"from copy_offload\.client import ([\w, ]+)", block):
            for imported in (n.strip() for n in names.split(",")):
                assert imported in client_pkg.__all__, imported


def test_documented_client_api_exists():
    text = read("user-guide.md")
    for method in re.findall(r"^  \* `(\w+)\(", text, re.M):
        assert hasattr(client_pkg.Client, method) and hasattr(client_pkg.AsyncClient, method), method
    for field in ("bytes_total", "bytes_copied", "files_total", "files_copied", "bytes_per_second", "elapsed_time"):
        assert field in client_pkg.Status.__dataclass_fields__


@pytest.mark.parametrize("name", GUIDES)
def test_links_and_paths_exist(name):
    text = read(name)
    pending = {"flux.md"}  # written by the Flux side of the project
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith("http") or os.path.basename(target) in pending:
            continue
        assert os.path.exists(os.path.normpath(os.path.join(DOCS, target))), target
    for path in re.findall(r"`(share/[\w./-]+)`", text):
        if path.startswith(("share/flux", "share/rbac")):
            continue  # written by the Flux and nnf sides
        assert os.path.exists(os.path.join(REPO, path)), path


def _all_docs() -> dict:
    paths = [os.path.join(DOCS, n) for n in os.listdir(DOCS) if n.endswith(".md")]
    paths += [os.path.join(REPO, "README.md"), os.path.join(REPO, "share", "README.md")]
    man1 = os.path.join(REPO, "share", "man", "man1")
    paths += [os.path.join(man1, n) for n in os.listdir(man1)]
    docs = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            docs[os.path.relpath(path, REPO)] = handle.read()
    return docs


def test_docs_cite_nothing_outside_the_repository():
    outside = re.compile(r"\.\./shared|\bshared/spec\b|\bspec §|/work/|\btools/mk-usercontainer")
    for name, text in _all_docs().items():
        assert not outside.search(text), (name, outside.search(text).group(0))


def test_one_python_version_story():
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as handle:
        minimum = re.search(r'^requires-python = ">=(3\.\d+)"', handle.read(), re.M).group(1)
    with open(os.path.join(REPO, "share", "container", "Containerfile"), encoding="utf-8") as handle:
        containerfile = handle.read()
    docs = _all_docs()
    for name, text in list(docs.items()) + [("Containerfile", containerfile)]:
        for claim in re.findall(r"Python (3\.\d+)(?:\+| or newer| and newer)|python3? \(?>= ?(3\.\d+)", text, re.I):
            version = claim[0] or claim[1]
            assert version == minimum, (name, version)
    assert "Python %s or newer" % minimum in docs["docs/admin-guide.md"]
    assert "Python %s or newer" % minimum in docs["README.md"]
