"""The ``surgery`` command line: ``main.py`` parses and dispatches, ``args.py`` holds the argument
groups shared by commands, and each command lives in its own module (``check.py``, ``convert.py``, ...).
Nothing outside this package imports it."""
