"""``surgery batch``: the ``run`` pipeline over a model zoo and several targets.

``targets`` (named preset/emit/precision/backend/profile combinations), ``items`` (models found,
model x target items with their fingerprints), ``worker`` (one item in its own process),
``executors`` (local pool or Ray tasks), ``summary`` / ``summary_html`` (one summary, and the
comparison with a previous one).
"""
