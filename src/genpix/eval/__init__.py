"""Evaluation of generators above the leaf metrics (genpix.metrics): feature networks, image sets,
the `genpix eval` report, `genpix bench` and the trilemma report."""
