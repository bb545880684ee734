"""The one exception type scratchmlm raises for bad input.

Every message says what was wrong and how to fix it. The CLI prints these as a single line and
exits non-zero; anything else escaping is a bug in scratchmlm.
"""


class ScratchMLMError(ValueError):
    """Bad input or state that the user can fix; the message says how."""
