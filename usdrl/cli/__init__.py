"""The ``usdrl`` command line: ``main`` (the commands and their parser), ``data`` (prepare, import, inspect) and
``model`` (export, embed, recognize, detect)."""
