"""The error tree for problems a user can fix (bad input, missing files, wrong options).

Everything a user can fix is a :class:`DistilkitError`; the CLI prints its message as a single
line on stderr and exits with status 2, and anything else is a bug that keeps its traceback. The
subclasses say which part of a run was wrong, so a notebook or a script can catch just that::

    DistilkitError
    ├── ConfigError   an option, preset, config file or request that cannot be honoured
    ├── SourceError   real data that cannot be found, read or used (a source, its splits, labels)
    ├── ModelError    a model name the factory cannot resolve, or a model it cannot build
    └── HubError      a failed Hugging Face Hub call (not found, no permission, network, timeout), or a
                      repo whose content distilkit cannot use

:class:`ConfigError` and :class:`ModelError` are also ``ValueError``\\ s: a bad value, which code
that guarded a call with ``except ValueError`` keeps catching.
"""


class DistilkitError(Exception):
    """A user-facing error: the message says what is wrong and, where possible, what to do."""


class ConfigError(DistilkitError, ValueError):
    """An option, preset, config file or request that cannot be honoured (unknown key, wrong type,
    out of range, more images per class than the data has)."""


class SourceError(DistilkitError):
    """Real data that cannot be found, read or used: a missing folder or split, an undecodable file,
    columns that cannot be detected, classes without images."""


class ModelError(DistilkitError, ValueError):
    """A model name the factory cannot resolve, or a model it cannot build for the given images
    (the foreign error, e.g. timm's, is kept as the cause)."""


class HubError(DistilkitError):
    """A Hugging Face Hub call that failed (repo or revision not found, no permission, offline mode, a
    network failure, a timeout), or a repo whose content distilkit cannot use (no distilkit set for the
    asked config, a card with broken YAML). The message never contains the token."""
