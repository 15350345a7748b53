"""DiffEvidence: what a commit's hunks show, read once so the scorer never reads git.

Only production and test files feed the evidence. Python files get a structural
view of the new blob (`PythonView`): the enclosing def/class of each changed line,
from the file's def/class outline and indentation, with triple-quoted strings
blanked first. A full `ast` parse of every changed blob was measured at three
times the cost of git's own diff over a loop history, so the outline stands in for
it; `DiffEvidence.ast` says a Python file was seen this way. Other languages, and
Python files too big or missing, use git's hunk-header function context and line
patterns (and mark the evidence truncated).

Symbols and test functions are `path::Qual.name`; a scorer matches them against
`test_references` by their last dotted part.
"""

from __future__ import annotations

import bisect
import functools
import builtins
import hashlib
import keyword
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from collectors.gitlog import FileDiff, Hunk
from monitor.events import DiffEvidence

# A class longer than this is parsed member by member.
_MEMBER_SPLIT_LINES = 150
_MAX_LIST = 300  # cap for symbol, test and reference lists

LANGUAGES = {
    ".py": "python",
    ".pyx": "python",
    ".pyi": "python",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cxx": "cpp",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".rb": "ruby",
    ".jl": "julia",
    ".sh": "shell",
    ".toml": "toml",
    ".cfg": "ini",
    ".ini": "ini",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
}

# ------------------------------------------------------------------ line patterns

_DEF_LINE = re.compile(
    r"^\s*(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:static\s+)?"
    r"(?:def|class|fn|func|function|sub|struct|enum|trait|interface|impl|module)\s+"
    r"(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)"
)
_CALLISH = re.compile(r"([A-Za-z_$][\w$]*)\s*\(")
_NOT_NAMES = frozenset(
    {"if", "for", "while", "switch", "return", "sizeof", "catch", "elif", "else", "with", "match", "new", "typeof"}
)
_ASSERT = re.compile(
    r"^\s*assert\b|\bself\.assert\w*\s*\(|\bassert_\w+\s*\(|\bnp\.testing\.assert|\bpytest\.(?:raises|warns|approx)\b"
    r"|\bexpect\s*\(|\bassert(?:_eq|_ne)?!\s*\(|\b(?:require|assert)\.\w+\s*\(|\bt\.(?:Error|Fatal)f?\s*\("
)
_SKIP_ADDED = re.compile(
    r"@pytest\.mark\.(?:skip|skipif|xfail)\b|\bpytest\.(?:skip|xfail|importorskip)\s*\(|@unittest\.(?:skip\w*|expectedFailure)\b"
    r"|\bself\.skipTest\s*\(|\bt\.Skip(?:f|Now)?\s*\(|\b(?:it|test|describe)\.(?:skip|todo)\s*\(|\bx(?:it|describe)\s*\("
    r"|#\[ignore\]"
)
_TOLERANCE = re.compile(
    r"\b(rtol|atol|abs_tol|rel_tol|abs|rel|tol|tolerance|eps|epsilon|delta|places|decimal)\s*=\s*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
)
_TIGHTER_WHEN_LARGER = frozenset({"places", "decimal"})
_APPROX = re.compile(r"\bapprox\s*\(|\bassert_allclose\b|\ballclose\s*\(|\bisclose\s*\(|\bassertAlmostEqual\b")
_TEST_NAME = re.compile(
    r"^\s*(?:async\s+)?def\s+(test\w*)|^\s*func\s+(Test\w*)|\b(?:it|test)\s*\(\s*(['\"`])(.{1,120}?)\3"
    r"|^\s*(?:pub\s+)?fn\s+(test\w*)|^\s*(?:public\s+)?void\s+(test\w*)\s*\("
)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_COMMENT = re.compile(r"(?:#|//).*$")
_IDENT = re.compile(r"[A-Za-z_][\w]*")
_STOP_REFERENCES = frozenset(
    set(keyword.kwlist)
    | set(keyword.softkwlist)
    | set(dir(builtins))
    | {
        "self",
        "cls",
        "pytest",
        "mock",
        "patch",
        "fixture",
        "mark",
        "parametrize",
        "raises",
        "approx",
        "monkeypatch",
        "tmp_path",
        "capsys",
        "caplog",
        "request",
        "unittest",
        "TestCase",
        "np",
        "numpy",
        "testing",
        "expected",
        "actual",
        "result",
        "results",
        "value",
        "args",
        "kwargs",
        "const",
        "let",
        "var",
        "func",
        "err",
        "nil",
        "true",
        "false",
        "null",
        "undefined",
        "expect",
        "describe",
        "it",
        "test",
    }
)

_ARGPARSE = re.compile(r"\badd_argument\s*\((.*)")
_CLICK = re.compile(r"@(?:click|\w+)\.(?:option|argument)\s*\((.*)")
_OPTION_STRING = re.compile(r"(['\"])(-{1,2}[A-Za-z0-9][\w-]*)\1")
_POSITIONAL = re.compile(r"^\s*(['\"])([A-Za-z_][\w-]*)\1")
_DEST = re.compile(r"\bdest\s*=\s*(['\"])(\w+)\1")
_FIELD_LINE = re.compile(r"^\s+([A-Za-z_]\w*)\s*:\s*[^=\s][^=]*?(?:=(?!=).*)?$")
_CONFIG_FILE = re.compile(r"(?:^|/)[\w-]*(?:config|settings|options|params|conf|cfg|args)[\w-]*\.py$", re.IGNORECASE)
_CONFIG_CLASS = re.compile(
    r"@(?:\w+\.)*(?:dataclass|define|frozen|attr\.s|attrs)\b|\b(?:BaseModel|BaseSettings|NamedTuple|TypedDict)\b"
    r"|class\s+\w*(?:Config|Settings|Options|Params|Args|Arguments|Hyperparameters)\w*"
)
_RECEIVER_READ = re.compile(
    r"\b(?:\w*(?:args|opts|options|config|cfg|conf|settings|params|namespace|hparams)|ns)\.([A-Za-z_]\w*)\b(?!\s*\()(?!\s*=[^=])",
    re.IGNORECASE,
)
_GETATTR_READ = re.compile(r"\bgetattr\s*\([^,()]+,\s*['\"]([A-Za-z_]\w*)['\"]")
_REVERT = re.compile(r"This reverts commit ([0-9a-fA-F]{7,64})")


def language_of(path: str) -> str | None:
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return LANGUAGES.get(path[dot:].lower())


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


# ------------------------------------------------------------------ python scopes

# Possessive whitespace and a look-ahead on the first letter keep this fast: it runs on every blob.
_OUTLINE = re.compile(r"\n([ \t]*+)(?=[@dca])(?:(@)|(?:async[ \t]+)?(def|class)[ \t]+(\w+))")
_closers: dict[int, re.Pattern[str]] = {}


def _closer(indent: int) -> re.Pattern[str]:
    """A code line indented at most `indent`: it ends every block opened at `indent`."""
    pattern = _closers.get(indent)
    if pattern is None:
        pattern = _closers[indent] = re.compile(r"\n[ \t]{0,%d}[^\s#)\]}]" % indent)
    return pattern


def _mask_triple_quoted(source: str) -> str:
    """Empty the lines inside triple-quoted strings (the line count stays), so none looks like code.

    What follows a closing quote on its line becomes a comment: `\"\"\".format(x)` closes no block."""
    out: list[str] = []
    pos = 0
    size = len(source)
    find = source.find
    double, single = find('"""'), find("\'\'\'")
    while double >= 0 or single >= 0:
        at = double if single < 0 or 0 <= double < single else single
        close = find(source[at : at + 3], at + 3)
        stop = size if close < 0 else close + 3
        newlines = source.count("\n", at + 3, stop)
        out.append(source[pos : at + 3])
        out.append("\n" * newlines + "#" if newlines else " ")
        pos = stop
        if double >= 0 and double < pos:
            double = find('"""', pos)
        if single >= 0 and single < pos:
            single = find("\'\'\'", pos)
    if not out:
        return source
    out.append(source[pos:])
    return "".join(out)


@dataclass(slots=True)
class Scope:
    """A def or class of a Python file."""

    line: int  # the def/class line
    start: int  # its first decorator's line
    indent: int
    kind: str  # "def" or "class"
    name: str
    qualname: str = ""
    offset: int = 0  # in PythonView.text, of the newline before the def/class line
    end: int = -1  # its last line (a huge number when it runs past the text read); -1: not yet known


class PythonView:
    """The def/class outline of one Python source, for the scope of any line.

    Blocks are found from indentation, with triple-quoted strings blanked first so a
    docstring at column 0 closes nothing. This answers "which def or class holds
    this line" like `ast` does for ordinary code, at a fraction of its cost: parsing
    every changed blob with `ast` would take longer than git takes for the whole diff.
    """

    def __init__(
        self, source: str, upto: int | None = None, *, base: "PythonView | None" = None, same_before: int = 0
    ) -> None:
        """`upto`: the last line that will be asked about; nothing after it is read.

        `base`: the outline of this file's previous version, whose lines before
        `same_before` are unchanged. Its outline up to the last def/class starting
        before them is reused, and only the rest is read again."""
        if upto is not None and upto >= 0 and source.count("\n") > upto + 1:
            head = source.split("\n", upto + 1)
            if len(head) > upto + 1:
                source = source[: sum(map(len, head[: upto + 1])) + upto + 1]
        self.scopes: list[Scope] = []
        cut = 1  # the first line read here
        if base is not None and same_before > 1:
            index = bisect.bisect_left(base.scope_starts, same_before) - 1
            if index >= 0:
                cut = base.scopes[index].start
                self.scopes = [Scope(s.line, s.start, s.indent, s.kind, s.name, offset=s.offset) for s in base.scopes[:index]]
        if cut > 1:
            assert base is not None
            parts = source.split("\n", cut - 1)
            tail = _mask_triple_quoted(parts[-1] if len(parts) == cut else "")
            prefix = base.text[: base._line_offset(cut)]
            self.text = prefix + "\n" + tail
            self.lines = base.lines[: cut - 1] + tail.split("\n")
            self._scan(len(prefix), cut - 1)
        else:
            masked = _mask_triple_quoted(source)
            self.text = "\n" + masked
            self.lines = masked.split("\n")
            self._scan(0, 0)
        self.scope_lines = [s.line for s in self.scopes]
        self.scope_starts = [s.start for s in self.scopes]

    def _scan(self, position: int, line: int) -> None:
        """Outline self.text from `position` (the newline that ends line `line`)."""
        decorators: dict[int, int] = {}  # indent -> first line of a decorator run
        last = position
        count = self.text.count
        for match in _OUTLINE.finditer(self.text, position):
            at = match.start()
            line += count("\n", last, at + 1)
            last = at + 1
            space, decorator, kind, name = match.groups()
            indent = len(space.expandtabs(8)) if "\t" in space else len(space)
            if decorator:
                decorators.setdefault(indent, line)
                continue
            start = decorators.pop(indent, line)
            if decorators:
                decorators.clear()
            self.scopes.append(Scope(line, start, indent, kind, name, offset=at))

    def _line_offset(self, line: int) -> int:
        """Offset in self.text of the newline that starts `line` (a line at or before a known scope)."""
        index = bisect.bisect_right(self.scope_lines, line) - 1
        if index >= 0 and self.scopes[index].line == line:
            return self.scopes[index].offset
        base_line, base = (self.scopes[index].line, self.scopes[index].offset) if index >= 0 else (1, 0)
        between = self.lines[base_line - 1 : line - 1]
        return base + sum(map(len, between)) + len(between)

    def header(self, scope: Scope) -> str:
        """The scope's decorators and def/class line."""
        return "\n".join(self.lines[scope.start - 1 : scope.line])


    def _indent_at(self, line: int) -> int:
        """The indent of `line`; for a blank line, that of the code above it (inside, if that opens a block)."""
        number = min(line, len(self.lines))
        while number >= 1:
            text = self.lines[number - 1]
            stripped = text.lstrip()
            if stripped and not stripped.startswith("#"):
                indent = len(text[: len(text) - len(stripped)].expandtabs(8))
                if number != line and stripped.rstrip().endswith(":"):
                    return indent + 1
                return indent
            number -= 1
        return 0

    def _end(self, scope: Scope) -> int:
        """The scope's last line: the one before the first later code line back at its indent."""
        if scope.end < 0:
            header_end = self.text.find("\n", scope.offset + 1)
            match = _closer(scope.indent).search(self.text, header_end) if header_end >= 0 else None
            if match is None:
                scope.end = 1 << 60
            else:
                scope.end = scope.line + self.text.count("\n", scope.offset + 1, match.start() + 1) - 1
        return scope.end

    def chain(self, line: int) -> list[Scope]:
        """The defs and classes holding `line`, outermost first."""
        at = self.entry(line)
        if at is not None:
            current, found = at.indent, [at]
        else:
            current, found = self._indent_at(line), []
        index = bisect.bisect_left(self.scope_lines, line if at is None else at.line)
        for scope in reversed(self.scopes[:index]):
            if current == 0:
                break
            if scope.indent < current and line <= self._end(scope):
                found.append(scope)
                current = scope.indent
        found.reverse()
        prefix = ""
        for scope in found:
            scope.qualname = prefix + scope.name
            prefix = scope.qualname + "."
        return found

    def entry(self, line: int) -> Scope | None:
        """The def/class whose header (decorators included) is on `line`."""
        index = bisect.bisect_right(self.scope_starts, line) - 1
        if index >= 0:
            scope = self.scopes[index]
            if scope.start <= line <= scope.line:
                return scope
        return None

    def chains_in(self, first: int, last: int) -> list[list[Scope]]:
        """The chains over lines first..last: at the first, at every def/class header, at the last."""
        points = [first]
        lo = bisect.bisect_right(self.scope_lines, first)
        hi = bisect.bisect_right(self.scope_lines, last)
        points.extend(s.line for s in self.scopes[lo:hi])
        if last != first:
            points.append(last)
        return [self.chain(point) for point in dict.fromkeys(points)]

    def hunk_chains(self, new_start: int, added: list[str], removed: list[str]) -> list[list[Scope]]:
        """The chains a `-U0` hunk touches (its added lines sit at new_start..)."""
        if added:
            filled = [new_start + i for i, text in enumerate(added) if text.strip()]
            return self.chains_in(filled[0], filled[-1]) if filled else []
        # A pure deletion, just after new line `new_start`: the deleted code sat inside
        # whatever encloses that line less deeply than the deleted lines were indented.
        text = next((t for t in removed if t.strip()), None)
        if text is None or new_start < 1:
            return []
        expanded = text.expandtabs(8)
        indent = len(expanded) - len(expanded.lstrip())
        return [[scope for scope in self.chain(new_start) if scope.indent < indent]]


# ------------------------------------------------------------------ the extractor


@dataclass
class ChangedFile:
    """One changed production or test file, with what the evidence needs."""

    path: str
    path_class: str
    diff: FileDiff
    blob: bytes | None = None  # the new blob, when fetched


def added_line_numbers(hunk: Hunk) -> range:
    return range(hunk.new_start, hunk.new_start + hunk.new_count)


def normalise_code(line: str) -> str | None:
    """A code line reduced for churn comparison; None when it carries no signal."""
    text = " ".join(line.split())
    if len(text) < 4 or text.startswith(("#", "//", '"""', "'''", "/*", "*")):
        return None
    if not any(c.isalnum() for c in text):
        return None
    return text


def line_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=5).hexdigest()


class _Capped:
    """An ordered set with a cap; remembers whether anything fell off."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: dict[str, None] = {}
        self.overflow = False

    def add(self, item: str) -> None:
        if item in self.items:
            return
        if len(self.items) >= self.cap:
            self.overflow = True
            return
        self.items[item] = None

    def list(self) -> list[str]:
        return list(self.items)


def flags_in_line(line: str) -> list[str]:
    """CLI flags a line declares: argparse `add_argument("--x")`, click options."""
    match = _ARGPARSE.search(line) or _CLICK.search(line)
    if match is None:
        return []
    args = match.group(1)
    dest = _DEST.search(args)
    if dest is not None:
        return [dest.group(2)]
    options = [m.group(2) for m in _OPTION_STRING.finditer(args)]
    long = [o for o in options if o.startswith("--")]
    if long:
        return [long[0].lstrip("-").replace("-", "_")]
    if options:
        return [options[0].lstrip("-").replace("-", "_")]
    positional = _POSITIONAL.match(args)
    if positional is not None:
        return [positional.group(2).replace("-", "_")]
    return []


def consumed_names(text: str, names: Iterable[str]) -> set[str]:
    """Which of `names` `text` reads: `.x` (not assigned), getattr(.., "x"), ["x"], .get("x")."""
    names = [n for n in dict.fromkeys(names) if n]
    if not names or not text:
        return set()
    pattern = _reads_of(tuple(names))
    found: set[str] = set()
    for match in pattern.finditer(text):
        found.add(next(g for g in match.groups() if g))
        if len(found) == len(names):
            break
    return found


@functools.lru_cache(maxsize=512)
def _reads_of(names: tuple[str, ...]) -> re.Pattern[str]:
    alternation = "|".join(re.escape(n) for n in names)
    return re.compile(
        rf"\.({alternation})\b(?!\s*=[^=])|\bgetattr\s*\([^,()]+,\s*['\"]({alternation})['\"]"
        rf"|\[\s*['\"]({alternation})['\"]\s*\](?!\s*=[^=])|\.get\s*\(\s*['\"]({alternation})['\"]"
    )


class EvidenceExtractor:
    """Builds one commit's DiffEvidence from its production and test hunks."""

    # Outlines of the latest version of recently changed Python files, by path: the next
    # commit to change a file re-reads it only from its first changed block on.
    OUTLINES_KEPT = 256

    def __init__(self, *, ast_max_bytes: int = 512_000, hashes_cap: int = 400) -> None:
        self.ast_max_bytes = ast_max_bytes
        self.hashes_cap = hashes_cap
        self._outlines: OrderedDict[str, tuple[str, PythonView]] = OrderedDict()

    @staticmethod
    def wants_blob(changed: ChangedFile) -> bool:
        """Whether the new blob is worth fetching (Python, hunks read, still exists)."""
        diff = changed.diff
        return (
            language_of(changed.path) == "python"
            and diff.hunks_read
            and bool(diff.hunks)
            and diff.new_oid is not None
            and diff.status != "D"
        )

    def extract(
        self,
        files: Sequence[ChangedFile],
        *,
        message: str = "",
        truncated: bool = False,
    ) -> DiffEvidence:
        symbols = _Capped(_MAX_LIST)
        tests = _Capped(_MAX_LIST)
        references = _Capped(_MAX_LIST)
        added_hashes = _Capped(self.hashes_cap)
        removed_hashes = _Capped(self.hashes_cap)
        flags = _Capped(_MAX_LIST)
        languages: set[str] = set()
        asserts_added = asserts_removed = weakening = 0
        used_ast = False
        production_added: list[str] = []
        blobs_read: list[bytes] = []

        for changed in files:
            diff = changed.diff
            language = language_of(changed.path)
            if language is not None:
                languages.add(language)
            if diff.unknown or diff.binary:
                truncated = truncated or diff.unknown
                continue
            if not diff.hunks_read:
                if diff.insertions or diff.deletions:
                    truncated = True
                continue
            is_test = changed.path_class == "test"
            view = self._view(changed, language)
            if view is not None:
                used_ast = True
            elif language == "python" and diff.status != "D" and diff.hunks:
                # A Python file seen only through git's hunk context: too big, or its blob is missing.
                truncated = True
            if changed.blob is not None and not is_test:
                blobs_read.append(changed.blob)

            file_asserts_added = file_asserts_removed = 0
            for hunk in diff.hunks:
                added = [_text(line) for line in hunk.added]
                removed = [_text(line) for line in hunk.removed]
                for text in added:
                    norm = normalise_code(text)
                    if norm is not None:
                        added_hashes.add(line_hash(norm))
                for text in removed:
                    norm = normalise_code(text)
                    if norm is not None:
                        removed_hashes.add(line_hash(norm))
                # Symbols and test functions: the Python outline where there is one, git's context otherwise.
                names = self._hunk_scopes(changed, hunk, view, added, removed, is_test)
                for name in names:
                    (tests if is_test else symbols).add(name)
                if is_test:
                    a = sum(1 for t in added if _ASSERT.search(t))
                    r = sum(1 for t in removed if _ASSERT.search(t))
                    file_asserts_added += a
                    file_asserts_removed += r
                    weakening += _weakening(added, removed)
                    for text in added:
                        for ident in _identifiers(text):
                            references.add(ident)
                else:
                    production_added.extend(added)
                    for text in added:
                        for flag in flags_in_line(text):
                            flags.add(flag)
                    if view is not None:
                        for name in self._new_fields(changed, hunk, added, view):
                            flags.add(name)
                    elif language == "python" and _CONFIG_FILE.search(changed.path):
                        for text in added:
                            match = _FIELD_LINE.match(text)
                            if match is not None and not text.lstrip().startswith(("return", "def ", "class ")):
                                flags.add(match.group(1))
            asserts_added += file_asserts_added
            asserts_removed += file_asserts_removed
            # Asserts that went away and did not come back elsewhere in the file.
            weakening += max(0, file_asserts_removed - file_asserts_added)

        flag_list = flags.list()
        consumed = consumed_names("\n".join(production_added), flag_list)
        remaining = [f for f in flag_list if f not in consumed]
        for blob in blobs_read:
            if not remaining:
                break
            consumed |= consumed_names(_text(blob), remaining)
            remaining = [f for f in flag_list if f not in consumed]
        # Reads of config-like receivers in this commit's added lines, whatever commit
        # added the flag: the scorer joins them over the iteration.
        for text in production_added:
            for match in _RECEIVER_READ.finditer(text):
                consumed.add(match.group(1))
            for match in _GETATTR_READ.finditer(text):
                consumed.add(match.group(1))
        consumed_list = [f for f in flag_list if f in consumed] + sorted(consumed - set(flag_list))

        revert = _REVERT.search(message)
        return DiffEvidence(
            symbols_changed=symbols.list(),
            test_functions=tests.list(),
            test_references=references.list(),
            asserts_added=asserts_added,
            asserts_removed=asserts_removed,
            test_weakening=weakening,
            flags_added=flag_list,
            flags_consumed=consumed_list[:_MAX_LIST],
            added_hashes=added_hashes.list(),
            removed_hashes=removed_hashes.list(),
            revert_of=revert.group(1).lower() if revert else None,
            languages=sorted(languages),
            ast=used_ast,
            truncated=truncated or added_hashes.overflow or removed_hashes.overflow,
        )

    def _view(self, changed: ChangedFile, language: str | None) -> PythonView | None:
        if language != "python" or changed.blob is None or len(changed.blob) > self.ast_max_bytes:
            return None
        diff = changed.diff
        last = max((h.new_start + h.new_count for h in diff.hunks), default=0)
        old_path = diff.old_path.decode("utf-8", "replace") if diff.old_path is not None else changed.path
        previous = self._outlines.pop(old_path, None)
        base, same_before = None, 0
        if previous is not None and diff.old_oid is not None and previous[0] == diff.old_oid and diff.hunks:
            first = diff.hunks[0]
            base, same_before = previous[1], first.new_start if first.new_count else first.new_start + 1
        view = PythonView(changed.blob.decode("utf-8", "replace"), upto=last + 1, base=base, same_before=same_before)
        if diff.new_oid is not None:
            self._outlines[changed.path] = (diff.new_oid, view)
            while len(self._outlines) > self.OUTLINES_KEPT:
                self._outlines.popitem(last=False)
        return view

    @staticmethod
    def _hunk_scopes(
        changed: ChangedFile, hunk: Hunk, view: PythonView | None, added: list[str], removed: list[str], is_test: bool
    ) -> list[str]:
        path = changed.path
        names: list[str] = []
        if view is not None:
            for chain in view.hunk_chains(hunk.new_start, added, removed):
                if is_test:
                    test = [d for d in chain if d.qualname.rsplit(".", 1)[-1].startswith("test")]
                    if test:
                        names.append(f"{path}::{test[-1].qualname}")
                elif chain:
                    names.append(f"{path}::{chain[-1].qualname}")
        else:
            context = _text(hunk.context)
            name = _context_name(context)
            if name is not None and (not is_test or _is_test_name(name)):
                names.append(f"{path}::{name}")
            for text in added:
                if is_test:
                    match = _TEST_NAME.search(text)
                    if match is not None:
                        names.append(f"{path}::{_test_match_name(match)}")
                else:
                    match = _DEF_LINE.match(text)
                    if match is not None:
                        names.append(f"{path}::{match.group(1)}")
        # Definitions removed outright are changed symbols too.
        for text in removed:
            match = _TEST_NAME.search(text) if is_test else _DEF_LINE.match(text)
            if match is not None:
                names.append(f"{path}::{_test_match_name(match) if is_test else match.group(1)}")
        return names

    @staticmethod
    def _new_fields(changed: ChangedFile, hunk: Hunk, added: list[str], view: PythonView) -> list[str]:
        """Annotated class-body fields on added lines, in config-like classes or files."""
        config_file = bool(_CONFIG_FILE.search(changed.path))
        out: list[str] = []
        for number, text in zip(added_line_numbers(hunk), added):
            match = _FIELD_LINE.match(text)
            if match is None or match.group(1).startswith("_"):
                continue
            chain = view.chain(number)
            if chain and chain[-1].kind == "class" and (config_file or _CONFIG_CLASS.search(view.header(chain[-1]))):
                out.append(match.group(1))
        return out


def _context_name(context: str) -> str | None:
    """A function or class name out of git's hunk-header context line."""
    if not context.strip():
        return None
    match = _DEF_LINE.match(context)
    if match is not None:
        return match.group(1)
    for candidate in reversed(_CALLISH.findall(context.split("(")[0] + "(")):
        if candidate not in _NOT_NAMES:
            return candidate
    return None


def _test_match_name(match: re.Match[str]) -> str:
    """The test's name out of a `_TEST_NAME` match (the quote group is skipped)."""
    groups = match.groups()
    return next((g for i, g in enumerate(groups) if g and i != 2), "")


def _is_test_name(name: str) -> bool:
    return name.lower().startswith("test")


def _identifiers(line: str) -> list[str]:
    code = _COMMENT.sub("", _STRING.sub(" ", line))
    return [n for n in _IDENT.findall(code) if n not in _STOP_REFERENCES and len(n) > 2 and not n.startswith("assert")]


def _weakening(added: list[str], removed: list[str]) -> int:
    """Skips added, tolerances loosened or dropped, approximate checks removed, in one hunk."""
    count = sum(1 for text in added if _SKIP_ADDED.search(text))
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for text in removed:
        for name, value in _TOLERANCE.findall(text):
            before.setdefault(name, _number(value))
    for text in added:
        for name, value in _TOLERANCE.findall(text):
            after.setdefault(name, _number(value))
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            continue
        looser = new < old if name in _TIGHTER_WHEN_LARGER else new > old
        count += int(looser)
    approx_removed = sum(1 for text in removed if _APPROX.search(text))
    approx_added = sum(1 for text in added if _APPROX.search(text))
    count += max(0, approx_removed - approx_added)
    return count


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
