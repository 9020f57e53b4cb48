"""What a job's ``#DW`` directives ask for, read from ``attributes.system.dw``.

The service needs one fact from the directives: did the job ask for copy-offload
(``requires=copy-offload``)? Only then is a missing Workflow token an error. The jobtap plugin
reads the same word in C for its submit-time checks (``DIRECTIVE_WORD``, checked against
``vocabulary.py``).
"""

from __future__ import annotations

import re
from typing import Any, List, Set

from copy_offload.flux.vocabulary import DIRECTIVE_WORD as COPY_OFFLOAD

_SPLIT = re.compile(r"(?=#DW\s)")


class DirectiveError(ValueError):
    """The dw attribute has the wrong shape."""


def split_directives(dw: Any) -> List[str]:
    """Return the directives of a dw attribute (a string or a list of strings).

    One string may hold several directives (flux-coral2 splits on ``#DW ``), so both forms
    are split the same way. Raises DirectiveError for any other type.
    """
    if isinstance(dw, str):
        parts = [dw]
    elif isinstance(dw, list) and all(isinstance(x, str) for x in dw):
        parts = dw
    else:
        raise DirectiveError("attributes.system.dw must be a string or a list of strings")
    out = []
    for part in parts:
        out.extend(d.strip() for d in _SPLIT.split(part) if d.strip())
    return out


def requires(directives: List[str]) -> Set[str]:
    """All words of every ``requires=a,b`` argument."""
    words: Set[str] = set()
    for d in directives:
        for tok in d.split():
            if tok.startswith("requires="):
                words.update(w for w in tok[len("requires="):].split(",") if w)
    return words


def asks_copy_offload(dw: Any) -> bool:
    """True when a directive says ``requires=copy-offload``."""
    if dw is None:
        return False
    return COPY_OFFLOAD in requires(split_directives(dw))
