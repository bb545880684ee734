"""The harness: what runs the teaching core for real, and nothing a student needs to read first.

``config`` and ``build`` (a run's settings and the objects they make), ``trainer`` (the training loop
of ``scratchmlm.loop`` with a run directory, checkpoints, several processes and signals around it),
``run_dir`` and ``checkpoint`` (what a run leaves on disk), ``export`` and ``hf`` (sharing a model),
``distributed``, ``precision``, ``interrupt``, ``environment``, ``plots`` and ``cli`` (the command
line). The harness imports the core; the core never imports the harness.
"""
