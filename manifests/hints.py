"""One 'did you mean' for every command line and config file of the project (the curation job's flags
and YAML keys, the trainer's config keys): the closest known word, by difflib's ratio."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `options` (similarity 0.6 or more), or ''."""
    close = difflib.get_close_matches(word, sorted(set(options)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
