"""Jinja2 templates for every message and page we produce.

Templates live in the repository's ``templates/`` folder; a columnist may
point ``column.templates_dir`` at a folder of their own, searched first, to
change wording without touching code. HTML templates are autoescaped, so a
reader's name or subject can never become markup.
"""

from __future__ import annotations

import contextvars
import functools
import re
import textwrap
from pathlib import Path

import css_inline
import jinja2
import jinja2.compiler
import markupsafe

BUILTIN_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def template_environment(override_dir: Path | None = None) -> jinja2.Environment:
    """A Jinja2 environment over the override folder (if any) then the built-in templates."""
    loaders = []
    if override_dir is not None and str(override_dir) not in ("", "."):
        loaders.append(jinja2.FileSystemLoader(str(override_dir)))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2", "htm"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["reflow"] = reflow
    env.filters["tel"] = tel_uri
    # The same templates, rendered with a placeholder for every value put
    # into the HTML (see render_inlined); compiled once, beside the originals.
    slots = env.overlay(finalize=_slot)
    slots.code_generator_class = _ShapeCodeGenerator
    env.extend(slot_environment=slots)
    return env


#: Plain-text parts are wrapped here, never by hand in a template.
TEXT_WIDTH = 72
_BULLET = re.compile(r"[*>-] ")


def reflow(text: str, width: int = TEXT_WIDTH) -> str:
    """Wrap a plain-text body at ``width`` without ragged lines.

    Paragraphs are separated by blank lines. A paragraph written on one line
    is filled, so a long name or subject dropped into a sentence never leaves
    a short line behind it. A paragraph of several lines (a list, a
    signature, a link under its title) keeps its line breaks; each of its
    lines is wrapped on its own, with a hanging indent under an indent or a
    bullet. Words longer than the width (links) are never broken.
    """
    out = []
    for paragraph in re.split(r"\n[ \t]*\n", text.strip("\n")):
        lines = [line.rstrip() for line in paragraph.splitlines() if line.strip()]
        if len(lines) == 1:
            out.append(_wrap_line(lines[0], width))
        elif lines:
            out.append("\n".join(_wrap_line(line, width) for line in lines))
    return "\n\n".join(out) + "\n"


# Most lines of a message are the template's own and the same in every
# message; wrapping one costs ~25 us (textwrap), so the answers are kept.
# Bounded, so a stream of readers' subjects cannot grow it.
@functools.lru_cache(maxsize=256)
def _wrap_line(line: str, width: int) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    marker = _BULLET.match(line.lstrip())
    hanging = indent + (" " * len(marker.group(0)) if marker else "")
    if line.lstrip().startswith("> "):
        hanging = indent + "> "
    return _fill(line.strip(), width, indent, hanging)


def _fill(text: str, width: int, first: str, rest: str) -> str:
    return textwrap.fill(text, width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def tel_uri(number: str, scheme: str = "tel") -> str:
    """A ``tel:`` (or ``sms:``) URI for a number as people write it: "988", "+44 116 123"."""
    return f"{scheme}:" + re.sub(r"[^0-9+]", "", number)


# Gmail and Outlook drop <style> blocks (or parts of them), so every rule is
# copied onto the elements it styles. @media rules (dark mode, narrow
# screens) cannot be inlined and stay in the <style> block; they win over the
# inlined styles with !important.
_INLINER = css_inline.CSSInliner(keep_at_rules=True)


def inline_css(html: str) -> str:
    """The HTML with its stylesheet copied into style attributes (at-rules kept in <style>)."""
    return _INLINER.inline(html)


def render_inlined(env: jinja2.Environment, name: str, context: dict) -> str:
    """Render the HTML template ``name`` with ``context`` and inline its stylesheet: ``inline_css(render)``.

    Inlining parses the whole message and its stylesheet (0.1-0.3 ms a
    message), yet where the styles go depends only on the markup, which the
    template writes: a value put in with ``{{ }}`` is escaped text and
    cannot add an element, a class or a rule. So the template is rendered
    with a numbered placeholder for each value (its "shape"), the shape is
    inlined once, and each message is the inlined shape with its values put
    back, escaped as the inliner writes text and attribute values. A shape
    is kept only after the first message of that shape came out byte for
    byte as the plain inlining made it; anything the shapes cannot stand for
    (a value that is not plain printable text, a selector on attributes or
    content, a value in a class, id or style attribute, a comment or a
    script) takes the plain way.
    """
    slot_env = getattr(env, "slot_environment", None)
    if slot_env is None or (name in _UNSHAPED and _UNSHAPED[name] is env.get_template(name)):
        return inline_css(env.get_template(name).render(**context))
    values: list = []
    token = _VALUES.set(values)
    try:
        shape = slot_env.get_template(name).render(**context)
    except _Unshaped:
        _UNSHAPED[name] = env.get_template(name)
        return inline_css(env.get_template(name).render(**context))
    finally:
        _VALUES.reset(token)
    if _REFUSED in values:
        return inline_css(env.get_template(name).render(**context))
    known = _SHAPES.get(shape)
    if known:
        return _put_back(known, values)
    html = inline_css(_fill_in(shape, values))
    if known is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[shape] = _checked_shape(shape, values, html)
    return html


#: The list of the values of the shape being rendered (None: not rendering a shape).
_VALUES: contextvars.ContextVar[list | None] = contextvars.ContextVar("inline_values", default=None)
#: Put in the list instead of a value when the message must take the plain way.
_REFUSED = object()
_SLOT_START, _SLOT_END = "\ue000", "\ue001"
_SLOT = re.compile("\ue000([0-9]+)\ue001")
_MAX_SHAPES = 128
#: A shape whose inlined form did not give the plain bytes: always inlined in full.
_PLAIN = ()
#: Inlined shapes (by their rendered shape): a tuple of the text between the
#: values and, for each value, which value goes there and how the inliner escapes it.
_SHAPES: dict[str, tuple] = {}
#: Added to every value when a new shape is checked, so that the check meets
#: each character the inliner escapes, in text and in attributes.
_PROBE = "&amp;<b>\"'"
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.IGNORECASE | re.DOTALL)
#: Markup where a value cannot be put back as plain text or attribute value.
_OPAQUE = re.compile(r"<!--.*?-->|<(script|xmp|iframe|noembed|noframes|noscript|plaintext)\b.*?</\1\s*>",
                     re.IGNORECASE | re.DOTALL)
_ATTRIBUTE_BEFORE = re.compile(r"""\s([^\s"'=<>/]+)="[^"<>]*$""")
#: Attributes the inliner reads (selectors by class and id, existing styles).
_READ_ATTRIBUTES = frozenset({"class", "id", "style"})


class _Unshaped(Exception):
    """The template works on its own output (a filter block, a captured block, a macro): no shape stands for it."""


#: Templates found unshaped, by name: the template object (a changed file is a new object, and is tried again).
_UNSHAPED: dict[str, jinja2.Template] = {}


class _ShapeCodeGenerator(jinja2.compiler.CodeGenerator):
    """Jinja's compiler for the shape environment, refusing templates that rework rendered text.

    A placeholder stands for a value only if the value goes straight into
    the page. ``{% filter %}``, ``{% set x %}…{% endset %}``, macros, call
    blocks and ``self``/``super``/``caller`` hand rendered text (with the
    placeholders in it) to code that could measure or change it.
    """

    def _refuse(self, node, frame):
        raise _Unshaped(type(node).__name__)

    visit_FilterBlock = visit_AssignBlock = visit_Macro = visit_CallBlock = _refuse

    def visit_Name(self, node, frame):
        """As Jinja's, refusing the names that reach rendered blocks."""
        if node.name in ("self", "super", "caller", "varargs", "kwargs"):
            self._refuse(node, frame)
        super().visit_Name(node, frame)


@jinja2.pass_eval_context  # also keeps Jinja from running it on constants at compile time
def _slot(eval_ctx, value):
    """The finalize of the shape environment: a placeholder for each plain value, the value kept."""
    values = _VALUES.get()
    if values is None or isinstance(value, jinja2.Undefined):
        return value
    if hasattr(value, "__html__"):
        # Markup given in the context is part of the shape, unless it carries
        # placeholders (rendered text handed on: the message takes the plain way).
        if _SLOT_START in str(value):
            values.append(_REFUSED)
        return value
    text = str(value)
    if _SLOT_START in text:  # would read as a placeholder
        values.append(_REFUSED)
        return value
    if not eval_ctx.autoescape or not text or not text.isprintable() or text.strip() != text:
        # Not escaped here (the stylesheet), empty, edged with spaces, or
        # holding characters the parser changes (CR, NUL, controls, no-break
        # spaces): written into the shape as it is, like template text.
        return value
    values.append(text)
    return f"{_SLOT_START}{len(values) - 1}{_SLOT_END}"


def _fill_in(shape: str, values: list) -> str:
    """The shape with its values put in as Jinja escapes them: the template's plain rendering."""
    return _SLOT.sub(lambda m: str(markupsafe.escape(values[int(m.group(1))])), shape)


def _checked_shape(shape: str, values: list, html: str) -> tuple:
    """The inlined shape, if putting values back gives what inlining the whole message gave; else _PLAIN."""
    try:
        made = _inlined_shape(shape)
        if made is None or _put_back(made, values) != html:
            return _PLAIN
        probes = [value + _PROBE for value in values]
        if _put_back(made, probes) != inline_css(_fill_in(shape, probes)):
            return _PLAIN
    except css_inline.InlineError:  # a placeholder where the inliner reads CSS
        return _PLAIN
    return made


def _inlined_shape(shape: str) -> tuple | None:
    """The inlined shape cut at its placeholders, or None if one cannot simply be put back."""
    for block in _STYLE_BLOCK.findall(shape):
        css = block[block.index(">") + 1: block.rindex("<")]
        if not _selectors_read_only_markup(css):
            return None
    if re.search(r"<link\b", shape, re.IGNORECASE):
        return None
    inlined = inline_css(shape)
    pieces, escapes, seen, last = [], [], set(), 0
    opaque = [m.span() for m in _OPAQUE.finditer(inlined)] + [m.span() for m in _STYLE_BLOCK.finditer(inlined)]
    for found in _SLOT.finditer(inlined):
        index = int(found.group(1))
        # A value in a <style> block, a comment or a script is not content.
        if index in seen or any(start <= found.start() < end for start, end in opaque):
            return None
        seen.add(index)
        before = inlined[:found.start()]
        if before.rfind("<") > before.rfind(">"):  # inside a tag: an attribute value
            attribute = _ATTRIBUTE_BEFORE.search(before[before.rfind("<"):])
            if attribute is None or attribute.group(1).lower() in _READ_ATTRIBUTES:
                return None
            escapes.append((index, _escaped_attribute))
        else:
            escapes.append((index, _escaped_content))
        pieces.append(inlined[last:found.start()])
        last = found.end()
    if seen != {int(index) for index in _SLOT.findall(shape)}:
        return None
    pieces.append(inlined[last:])
    return tuple(pieces), tuple(escapes)


def _selectors_read_only_markup(css: str) -> bool:
    """Whether every inlined rule selects by element, class, id and nesting only (no attribute or content test)."""
    depth, start = 0, 0
    for position, ch in enumerate(css):
        if ch == "{":
            if depth == 0:
                # After the last ";": a statement at-rule (@import, @charset) ends there.
                selector = css[start:position].rsplit(";", 1)[-1].strip()
                if not selector.startswith("@") and re.search(r"[\[:\\]", selector):
                    return False
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                start = position + 1
    return True


def _put_back(made: tuple, values: list) -> str | None:
    if not made:
        return None
    pieces, escapes = made
    out = [pieces[0]]
    for (index, escape), piece in zip(escapes, pieces[1:]):
        out.append(escape(values[index]))
        out.append(piece)
    return "".join(out)


# How the inliner writes text and attribute values back (the values here are
# printable and never hold a no-break space, which it writes as &nbsp;).
def _escaped_content(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaped_attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;")
