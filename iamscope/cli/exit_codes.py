"""The ``iamscope`` command's exit codes, distinct so scripts and CI can tell outcomes
apart: 0 success; 1 lint errors, failed policy tests or doctor errors; 2 the input could
not be loaded (bad config, bad test file, bad arguments)."""

OK, FAILED, UNUSABLE = 0, 1, 2
