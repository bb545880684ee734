"""The classroom tools: graded checks (``checks/``), student copies (``assignment``) and the
tutorials' helpers (``notebook``). They import the teaching core, never the harness.
"""
