"""Recordings written independently of the project's simulator (issue 13): another waveform model,
written by pyedflib and by MNE's exporter, with the hazards a neurophysiologist checks for."""
