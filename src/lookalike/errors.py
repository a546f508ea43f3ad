"""The root of lookalike's own errors.

Every error the library raises for something a user can fix (a missing or damaged index, an unknown
model, a folder that cannot be trained on, an unreadable picture) derives from :class:`LookalikeError`
and carries a message written for that user, in the library's terms: no command-line flags. Where a
setting fixes it, ``parameters`` names that setting as the Python API spells it (``force``,
``val_split``); a face translates the names (the CLI shows ``--force``, ``--val-split``). A face
catches this one class: the CLI prints the message in one line, the web app turns it into a response.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Something the user can fix; ``str(error)`` says what and how, ``parameters`` which settings fix it."""

    def __init__(self, *args: object, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.parameters = tuple(parameters)
