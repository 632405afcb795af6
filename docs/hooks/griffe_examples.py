"""Griffe extension: read a Google ``Example:`` section as ``Examples:``.

Our docstrings say ``Example:`` (the Google style guide uses both spellings);
griffe only knows ``Examples:`` and renders ``Example:`` as an admonition whose
``>>>`` lines become nested block quotes. Renaming before parsing keeps the
sources as they are and renders the doctests as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
