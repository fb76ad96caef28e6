"""`make bench`: speed and memory of Threshold, as JSON with the machine's details."""
