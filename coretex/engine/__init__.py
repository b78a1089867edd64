"""The workflow engine's adapter: load a run, :func:`~coretex.workflow.decide.decide`, commit, execute.

:class:`~coretex.engine.engine.Engine` is the one entry point (gateway, coretexctl, control tasks
and the tick all go through it). The pure state machine lives in :mod:`coretex.workflow`.
"""
