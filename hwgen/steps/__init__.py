"""The steps users run (train, quantize, export, eval, build, sim, estimate, search) and the command line;
nothing else in hwgen imports them."""
