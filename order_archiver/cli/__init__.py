"""The command line's declaration (``definition``); ``main`` parses with it and dispatches."""
