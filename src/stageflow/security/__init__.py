"""``stageflow scan``: real scanners behind one protocol (:mod:`.scanners`), one merged report (:mod:`.report`)."""
