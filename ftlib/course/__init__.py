"""The course wing: what exists for the notebooks, built on the library (``ftlib``) and never imported by it.

``article`` (the source article's code, kept as baselines), ``plots``, ``diagrams``, ``show`` (coloured token
masks), ``stats`` (padding and length tables), ``chat_widget`` (JupyterLab chat) and ``exercises`` (instant checks
for each notebook's exercises). The import contract in pyproject.toml (``lint-imports``) keeps the direction.
"""
