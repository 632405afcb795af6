"""The experiment configs shipped with sbi-exsitu (installed as ``sbi_exsitu.configs``).

Only TOML files live here; :func:`sbi_exsitu.config.packaged_config` finds them
through :mod:`importlib.resources`, so ``sbi-exsitu quickstart`` works from any
directory after ``pip install``.
"""
