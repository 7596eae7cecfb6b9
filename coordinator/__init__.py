"""The coordinator: plans, launches, stops and resumes runs; the ``chordload`` CLI.

A module per action: ``plan`` (window, estimate, chunk boundaries), ``launch`` (the run's
rows and its chord), ``watch`` (follow a run), ``stop``, ``resume``, ``schedule`` (beat
dispatch), ``cli``, ``demo``. The Python API is the same functions the CLI calls, each
taking the settings explicitly::

    from coordinator.launch import launch
    from coordinator.watch import wait
    from shared.config.settings import load_settings

    settings = load_settings("chordload.yaml")
    run = wait(launch("dim_customer", settings=settings), settings=settings)
"""
