"""The rule expression language: a hand-written tokenizer and recursive-descent parser.

Strategy rules are strings such as ``sma(close, $fast) crosses_above sma(close, $slow)`` or
``close > highest(close, 20)[1] and volume >= 1.5 * sma(volume, 20)``. They are parsed into a
small immutable AST, checked against a whitelist of functions and fields, and only then compiled
to polars (``falcon.strategy.compile``). Nothing here evaluates user text: there is no ``eval``,
``exec`` or Python ``compile`` anywhere in the strategy package.

Grammar (lowest precedence first)::

    condition  := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum [compare sum]
    compare    := "<" | "<=" | ">" | ">=" | "==" | "!=" | "crosses_above" | "crosses_below"
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | postfix
    postfix    := primary ("." NAME | "[" (INT | $param) "]")*
    primary    := NUMBER | $param | FIELD | NAME "(" [condition ("," condition)*] ")"
                | "(" condition ")"

``x[k]`` is ``x`` k bars ago (k >= 0: a negative shift would read the future and is rejected);
``$name`` is a strategy parameter; ``macd(close).hist`` picks a field of a multi-valued function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Attr",
    "BinOp",
    "Call",
    "ExprError",
    "Field",
    "Neg",
    "Node",
    "Not",
    "Num",
    "Param",
    "Shift",
    "parse",
    "to_text",
    "walk",
]

MAX_LENGTH = 1000  # characters in one expression
MAX_DEPTH = 32  # nesting of parentheses, calls and operators
MAX_NODES = 300

FIELDS = ("open", "high", "low", "close", "volume")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=", "crosses_above", "crosses_below")
KEYWORDS = {"and", "or", "not", "crosses_above", "crosses_below"}


class ExprError(ValueError):
    """An expression is not valid; ``column`` is 1-based when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        where = f" at column {column}" if column is not None else ""
        super().__init__(f"{message}{where}")
        self.column = column


# --- AST ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Num:
    """A number literal (int when written without a point or exponent)."""

    value: int | float


@dataclass(frozen=True, slots=True)
class Param:
    """``$name``: a strategy parameter."""

    name: str


@dataclass(frozen=True, slots=True)
class Field:
    """A bar field: open, high, low, close or volume."""

    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """A whitelisted function call."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Attr:
    """``target.name``: a field of a multi-valued function (``macd(close).hist``)."""

    target: Node
    name: str


@dataclass(frozen=True, slots=True)
class Shift:
    """``target[bars]``: the value ``bars`` bars ago."""

    target: Node
    bars: int | Param


@dataclass(frozen=True, slots=True)
class Neg:
    """``-operand``."""

    operand: Node


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand``."""

    operand: Node


@dataclass(frozen=True, slots=True)
class BinOp:
    """Arithmetic (+ - * /), comparison (incl. crosses_above/below) or logic (and, or)."""

    op: str
    left: Node
    right: Node


Node = Num | Param | Field | Call | Attr | Shift | Neg | Not | BinOp


def walk(node: Node) -> list[Node]:
    """Every node of the tree, parents before children."""
    out: list[Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, Call):
            stack.extend(reversed(n.args))
        elif isinstance(n, Attr | Shift):
            stack.append(n.target)
        elif isinstance(n, Neg | Not):
            stack.append(n.operand)
        elif isinstance(n, BinOp):
            stack.extend((n.right, n.left))
    return out


# --- tokenizer ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|[<>+\-*/()\[\],.])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, param, name, op, end
    text: str
    column: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, m.group(), pos + 1))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text) + 1))
    return tokens


# --- parser ------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.nodes = 0

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def advance(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("op", "name") and self.tok.text in texts

    def expect(self, text: str) -> _Tok:
        if not self.at(text):
            raise ExprError(f"expected {text!r}, found {self._describe(self.tok)}", self.tok.column)
        return self.advance()

    @staticmethod
    def _describe(tok: _Tok) -> str:
        return "the end" if tok.kind == "end" else repr(tok.text)

    def node(self, n: Node) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExprError(f"expression too large (more than {MAX_NODES} parts)")
        return n

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                            self.tok.column)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExprError("empty expression")
        node = self.condition()
        if self.tok.kind != "end":
            raise ExprError(f"unexpected {self._describe(self.tok)}", self.tok.column)
        return node

    def condition(self) -> Node:
        self.enter()
        node = self.and_expr()
        while self.at("or"):
            self.advance()
            node = self.node(BinOp("or", node, self.and_expr()))
        self.depth -= 1
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.at("and"):
            self.advance()
            node = self.node(BinOp("and", node, self.not_expr()))
        return node

    def not_expr(self) -> Node:
        if self.at("not"):
            self.advance()
            self.enter()
            node = self.node(Not(self.not_expr()))
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        node = self.sum()
        if self.at(*COMPARISONS):
            op = self.advance().text
            node = self.node(BinOp(op, node, self.sum()))
            if self.at(*COMPARISONS):
                raise ExprError("comparisons cannot be chained: use 'and'", self.tok.column)
        return node

    def sum(self) -> Node:
        node = self.product()
        while self.at("+", "-"):
            op = self.advance().text
            node = self.node(BinOp(op, node, self.product()))
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.at("*", "/"):
            op = self.advance().text
            node = self.node(BinOp(op, node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.at("-"):
            self.advance()
            self.enter()
            node = self.node(Neg(self.unary()))
            self.depth -= 1
            return node
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while self.at(".", "["):
            if self.advance().text == ".":
                tok = self.advance()
                if tok.kind != "name":
                    raise ExprError(f"expected a field name after '.', found {self._describe(tok)}",
                                    tok.column)
                node = self.node(Attr(node, tok.text))
            else:
                node = self.node(Shift(node, self.bars_ago()))
                self.expect("]")
        return node

    def bars_ago(self) -> int | Param:
        tok = self.advance()
        if tok.kind == "param":
            return Param(tok.text[1:])
        if tok.kind == "num" and tok.text.isdigit():
            return int(tok.text)
        if tok.text == "-":
            raise ExprError("bars ago cannot be negative: that would read future bars", tok.column)
        raise ExprError(f"expected a whole number of bars ago, found {self._describe(tok)}",
                        tok.column)

    def primary(self) -> Node:
        tok = self.advance()
        if tok.kind == "num":
            text = tok.text
            value: int | float = int(text) if text.isdigit() else float(text)
            return self.node(Num(value))
        if tok.kind == "param":
            return self.node(Param(tok.text[1:]))
        if tok.kind == "op" and tok.text == "(":
            node = self.condition()
            self.expect(")")
            return node
        if tok.kind == "name" and tok.text not in KEYWORDS:
            if self.at("("):
                self.advance()
                self.enter()
                args: list[Node] = []
                if not self.at(")"):
                    args.append(self.condition())
                    while self.at(","):
                        self.advance()
                        args.append(self.condition())
                self.expect(")")
                self.depth -= 1
                return self.node(Call(tok.text, tuple(args)))
            return self.node(Field(tok.text))
        raise ExprError(f"unexpected {self._describe(tok)}", tok.column)


def parse(text: str) -> Node:
    """Parse one expression into its AST (names are checked later, by :mod:`.functions`).

    Raises :class:`ExprError` for anything that is not well-formed, too long or too deep.
    """
    if not isinstance(text, str):
        raise ExprError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression too long ({len(text)} characters, at most {MAX_LENGTH})")
    return _Parser(text).parse()


# --- pretty-printer ----------------------------------------------------------------------------

_PRECEDENCE = {"or": 1, "and": 2, **{op: 4 for op in COMPARISONS},
               "+": 5, "-": 5, "*": 6, "/": 6}


def _num_text(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def to_text(node: Node, params: dict[str, float] | None = None, _min: int = 0) -> str:
    """Canonical text of an AST; ``parse(to_text(n)) == n``.

    With ``params``, parameter references are replaced by their values (a resolved rule).
    """
    text, prec = _text(node, params)
    return f"({text})" if prec < _min else text


def _text(node: Node, params: dict[str, float] | None) -> tuple[str, int]:
    if isinstance(node, Num):
        return _num_text(node.value), 9
    if isinstance(node, Param):
        if params is not None and node.name in params:
            return _num_text(params[node.name]), 9
        return f"${node.name}", 9
    if isinstance(node, Field):
        return node.name, 9
    if isinstance(node, Call):
        return f"{node.name}({', '.join(to_text(a, params) for a in node.args)})", 9
    if isinstance(node, Attr):
        # "2.hist" would read as the number "2." then a name: parenthesise a number here.
        target = to_text(node.target, params, 10 if isinstance(node.target, Num) else 8)
        return f"{target}.{node.name}", 8
    if isinstance(node, Shift):
        bars = to_text(node.bars, params) if isinstance(node.bars, Param) else str(node.bars)
        return f"{to_text(node.target, params, 8)}[{bars}]", 8
    if isinstance(node, Neg):
        return f"-{to_text(node.operand, params, 7)}", 7
    if isinstance(node, Not):
        return f"not {to_text(node.operand, params, 3)}", 3
    prec = _PRECEDENCE[node.op]
    if prec == 4:  # comparisons do not chain: both sides bind tighter
        left, right = to_text(node.left, params, 5), to_text(node.right, params, 5)
    else:  # left-associative
        left, right = to_text(node.left, params, prec), to_text(node.right, params, prec + 1)
    return f"{left} {node.op} {right}", prec
