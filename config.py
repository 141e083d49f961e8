"""The settings: ``from config import Settings, load_settings``.

The design card's face. Every setting, its default, its parser and the one reading of the
environment, then of ``.env``, are in ``order_archiver/settings.py`` (docs/configuration.md
lists them); this module re-exports its public names for the code and the habits that import
``config``.
"""

from order_archiver.settings import *  # noqa: F403  (the public names of the settings)
