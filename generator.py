"""Realistic generated data (Faker, ``fr_FR``), reproducible by seed: ``python simulate.py``.

The design card's face. The generator is ``order_archiver/simulation/generator.py`` (pure: it
returns documents); the embedded database it fills is ``order_archiver/simulation/database.py``.
This module re-exports the generator's public names.
"""

from order_archiver.simulation.generator import *  # noqa: F403  (the generator's public names)
